"""The stream a DoGet hands to pyarrow: the router's output stage.

A DoGet's batches (one block each, Tables of them, or :class:`Run` chunks of downstream rows:
router.streaming) go to the client through one of two stages, both writing the same bytes:

* **native** (the default when built): ``router._chunkstream``, a small C++
  ``RecordBatchReader`` that pulls one item at a time from the Python iterator and lets
  pyarrow's C++ ``RecordBatchStream`` write a Table's batches without the GIL. pyarrow's
  ``GeneratorStream`` takes the GIL twice for every batch it sends (also when draining a
  Table); with one block per batch and many concurrent streams, those hand-overs were most
  of what the router cost beyond a bare relay (bench/README.md, "Sixth and seventh round").
* **python**: ``pyarrow.flight.GeneratorStream``; used when the native module is not built
  (``ARRAKIS_ROUTER_PURE=1``) or was built for another pyarrow major version.

Errors keep their meaning on both: a Flight error raised by the stream reaches the client
with the class and text pyarrow's GeneratorStream gives it (the native stage is handed
``(code, message, extra_info)`` and builds the same status), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from router.protocol.errors import to_flight_error

log = structlog.get_logger("router.outstream")

# arrow::flight::FlightStatusCode, most specific class first (as pyarrow maps them)
_CODES: tuple[tuple[type[flight.FlightError], int], ...] = (
    (flight.FlightInternalError, 0),
    (flight.FlightTimedOutError, 1),
    (flight.FlightCancelledError, 2),
    (flight.FlightServerError, 6),
    (flight.FlightUnauthenticatedError, 3),
    (flight.FlightUnauthorizedError, 4),
    (flight.FlightUnavailableError, 5),
)
UNKNOWN = -1  # a base FlightError: pyarrow sends UNKNOWN "Flight error: <text>"


class _ListRun(list):  # type: ignore[type-arg]
    """:class:`Run` where the native module is not usable: the same members, held in a
    list. (No one-pass native check makes one then; it serves tests and the type.)"""

    __slots__ = ("nbytes",)

    def __init__(self, batches: Iterable[pa.RecordBatch] = (), nbytes: int = 0) -> None:
        super().__init__(batches)
        self.nbytes = nbytes

    @property
    def num_rows(self) -> int:
        return len(self)

    def to_batches(self) -> list[pa.RecordBatch]:
        return list(self)


Item: TypeAlias = "pa.RecordBatch | pa.Table | _ListRun"  # _ListRun: any Run


def size_of(item: Item) -> int:
    """Bytes of one stream item: its buffers (``get_total_buffer_size``: O(buffers);
    ``.nbytes`` is ~20x dearer), or what the check measured for a :class:`Run`."""
    return item.nbytes if isinstance(item, _ListRun | Run) else item.get_total_buffer_size()


def _load() -> tuple[object | None, str]:
    """The native module and '' when usable, else None and why not."""
    try:
        from router import _chunkstream
    except ImportError as exc:
        return None, f"not built ({exc})"
    built = _chunkstream.PYARROW_VERSION
    if built.split(".")[0] != pa.__version__.split(".")[0]:
        return None, f"built for pyarrow {built}, running {pa.__version__} (rebuild: make native)"
    return _chunkstream, ""


_NATIVE, WHY_NOT_NATIVE = _load()
#: whether the native output stage can be used in this process
NATIVE = _NATIVE is not None
#: ``read_rows(reader, limit, received) -> (batches, stop)``: a downstream's batches read
#: with the GIL released once, counted into ``received[0]`` as they arrive
#: (router.downstream.FlightStream.read_many); None without the module
ReadRows: TypeAlias = Callable[
    [pa.RecordBatchReader, int, Any], tuple[Sequence[pa.RecordBatch], int]
]
read_rows: ReadRows | None = getattr(_NATIVE, "read_rows", None)
#: A chunk of one-block record batches that go out as they are, in order: the rows of a
#: downstream that the one-pass check (router.stitch.direct) took whole, as ``read_rows``
#: returned them (``router._chunkstream.Rows``: held in C++, a Python object per row only
#: on access). The native stage sends them without building a Table and takes them over
#: (the Run is left empty), so they are freed in its thread without the GIL once sent.
#: ``nbytes``: their size, from the check; ``num_rows``, ``to_batches()`` as a Table's.
Run: type[_ListRun] = getattr(_NATIVE, "Rows", _ListRun)


def run_check(schema: pa.Schema, duration: int, samples: list[int]) -> Any | None:
    """The native one-pass check of whole-block runs for one grid
    (``router._chunkstream.RunCheck``: ``check(chunk, expected, end) -> bool``), or None
    when the native module is not usable (the Python check then runs)."""
    if _NATIVE is None:
        return None
    return _NATIVE.RunCheck(schema, duration, samples)  # type: ignore[attr-defined]


def flight_status(exc: flight.FlightError) -> tuple[int, str, bytes]:
    """``exc`` as the native stage's error item: the status pyarrow builds for it when a
    GeneratorStream raises it."""
    extra = getattr(exc, "extra_info", b"") or b""
    extra = extra if isinstance(extra, bytes) else str(extra).encode()
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, str(exc), extra
    return UNKNOWN, f"Flight error: {exc}", b""


def _items(batches: Iterable[Item]) -> Iterator[Item | tuple[int, str, bytes]]:
    """``batches``, ending with the error item if they raise a Flight error. The router's
    edge (router.server.guarded) turns every failure into one, so anything else is our bug:
    logged here, sent as INTERNAL without its text."""
    try:
        yield from batches
    except flight.FlightError as exc:
        yield flight_status(exc)
    except Exception as exc:
        log.error("stream_output_failed", error_type=type(exc).__name__, exc_info=True)
        yield flight_status(to_flight_error(exc, None))  # "internal error (Type)"


def data_stream(
    schema: pa.Schema, batches: Iterator[Item], *, native: bool = True
) -> flight.FlightDataStream:
    """The Flight data stream sending ``batches`` (of ``schema``) to the client: the native
    stage when ``native`` and built, else pyarrow's GeneratorStream."""
    if native and _NATIVE is not None:
        reader = _NATIVE.chunk_reader(schema, _items(batches))  # type: ignore[attr-defined]
        return flight.RecordBatchStream(reader)
    return flight.GeneratorStream(schema, _tables(schema, batches))


def _tables(schema: pa.Schema, batches: Iterable[Item]) -> Iterator[pa.RecordBatch | pa.Table]:
    """``batches`` as GeneratorStream takes them: a :class:`Run` as a Table."""
    for item in batches:
        yield pa.Table.from_batches(item, schema) if type(item) is Run else item


if __name__ == "__main__":  # python -m router.outstream: which output stage serves (exit 1: python)
    import sys

    if NATIVE:
        print(f"output stage: native (router._chunkstream, pyarrow {pa.__version__})")
    else:
        sys.exit(f"output stage: python (GeneratorStream): native stage {WHY_NOT_NATIVE}")
