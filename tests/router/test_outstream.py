"""The output stage of a DoGet (router.outstream): the native stage (router._chunkstream)
sends what pyarrow's GeneratorStream sends, batch for batch and error for error, over a real
Flight server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from router import downstream, outstream
from router.downstream import FlightStream
from router.errors import UnavailableError

SCHEMA = pa.schema([("time", pa.int64()), ("H1:X", pa.list_(pa.float32()))])
OTHER = pa.schema([("time", pa.int64()), ("H1:Y", pa.list_(pa.float32()))])

Source = Callable[[], Iterator[pa.RecordBatch | pa.Table]]


def block(t: int, schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array([t], pa.int64()), pa.array([[float(t)] * 4], pa.list_(pa.float32()))],
        schema=schema,
    )


def table(start: int, rows: int) -> pa.Table:
    return pa.Table.from_batches([block(t) for t in range(start, start + rows)], SCHEMA)


class Server(flight.FlightServerBase):  # type: ignore[misc]
    """Serves ``sources[ticket]()`` through the output stage named by the ticket's prefix."""

    def __init__(self) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.sources: dict[str, Source] = {}

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> object:
        stage, name = ticket.ticket.decode().split(":", 1)
        return outstream.data_stream(SCHEMA, self.sources[name](), native=stage == "native")


@contextmanager
def serving() -> Iterator[tuple[Server, flight.FlightClient]]:
    server = Server()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = flight.connect(f"grpc://127.0.0.1:{server.port}")
    try:
        yield server, client
    finally:
        client.close()
        server.shutdown()
        thread.join(10)


def read(client: flight.FlightClient, ticket: str) -> tuple[list[pa.RecordBatch], Exception | None]:
    """Every batch as it came off the wire, and the error that ended the stream."""
    reader = client.do_get(flight.Ticket(ticket.encode()))
    got: list[pa.RecordBatch] = []
    try:
        while True:
            got.append(reader.read_chunk().data)
    except StopIteration:
        return got, None
    except Exception as exc:
        return got, exc


def test_the_native_stage_is_built() -> None:
    # CI builds it (make venv); a pure-Python install would serve through GeneratorStream
    assert outstream.NATIVE, outstream.WHY_NOT_NATIVE


def test_a_module_built_for_another_pyarrow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from router import _chunkstream

    monkeypatch.setattr(_chunkstream, "PYARROW_VERSION", "1.0.0")
    module, why = outstream._load()
    assert module is None
    assert "built for pyarrow 1.0.0" in why and pa.__version__ in why


ERRORS = [
    flight.FlightUnavailableError("downstream grpc://a:1 went away [request: r1]"),
    flight.FlightTimedOutError("downstream grpc://a:1 sent nothing for 30 s"),
    flight.FlightCancelledError("the router is shutting down"),
    flight.FlightInternalError("internal error (KeyError)"),
    flight.FlightServerError("stream refused"),
    flight.FlightUnauthenticatedError("who are you"),
    flight.FlightUnauthorizedError("not for you"),
    flight.FlightError("request error: bad"),
    flight.FlightUnavailableError("with extra info", b"\x00extra"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_mid_stream_reaches_the_client_as_from_generator_stream(
    error: flight.FlightError,
) -> None:
    def source() -> Iterator[pa.RecordBatch | pa.Table]:
        yield table(0, 3)
        yield block(3)
        raise error

    with serving() as (server, client):
        server.sources["s"] = source
        started = time.monotonic()
        native, native_error = read(client, "native:s")
        took = time.monotonic() - started
        python, python_error = read(client, "python:s")
    # what the client sees: the rows before the error, then the same class and text
    assert [b.column(0)[0].as_py() for b in native] == [0, 1, 2, 3]
    assert native == python
    assert type(native_error) is type(python_error)
    assert str(native_error) == str(python_error)
    assert getattr(native_error, "extra_info", None) == getattr(python_error, "extra_info", None)
    assert str(error).split(" [")[0] in str(native_error)
    assert "Traceback" not in str(native_error)
    assert took < 5  # at once: nothing waits for a timeout


def test_a_bug_in_the_stream_is_internal_without_its_text_and_logged() -> None:
    def source() -> Iterator[pa.RecordBatch]:
        yield block(0)
        raise RuntimeError("secret /srv/path detail")

    with serving() as (server, client), capture_logs() as logs:
        server.sources["bug"] = source
        got, error = read(client, "native:bug")
    assert len(got) == 1
    assert isinstance(error, flight.FlightInternalError)
    assert "internal error (RuntimeError)" in str(error)
    assert "secret" not in str(error) and "Traceback" not in str(error)
    failed = [e for e in logs if e["event"] == "stream_output_failed"]
    assert (
        failed and failed[0]["error_type"] == "RuntimeError" and failed[0]["log_level"] == "error"
    )


def test_an_item_of_another_schema_is_internal_not_sent() -> None:
    def source() -> Iterator[pa.RecordBatch]:
        yield block(0)
        yield block(1, OTHER)
        yield block(2)

    with serving() as (server, client):
        server.sources["other"] = source
        got, error = read(client, "native:other")
    assert [b.column(0)[0].as_py() for b in got] == [0]
    assert isinstance(error, flight.FlightInternalError)
    assert "internal error (stream item of another schema)" in str(error)


def test_a_client_that_leaves_closes_the_source() -> None:
    closed = threading.Event()
    pulled: list[int] = []

    def source() -> Iterator[pa.Table]:
        try:
            for start in range(0, 10**9, 64):
                pulled.append(start)
                yield table(start, 64)
        finally:
            closed.set()

    with serving() as (server, client):
        server.sources["endless"] = source
        reader = client.do_get(flight.Ticket(b"native:endless"))
        first = reader.read_chunk().data
        reader.cancel()
        started = time.monotonic()
        assert closed.wait(10), "the source was not closed after the client left"
        took = time.monotonic() - started
    assert first.column(0)[0].as_py() == 0
    assert took < 10
    # it pulled what gRPC's flow control let through before the cancel, not the source
    assert len(pulled) < 10_000, len(pulled)


ITEM = st.one_of(
    st.tuples(st.just("table"), st.integers(min_value=0, max_value=40)),
    st.tuples(st.just("run"), st.integers(min_value=0, max_value=40)),
    st.tuples(st.just("batch"), st.just(1)),
)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(ITEM, min_size=0, max_size=12))
def test_native_output_equals_generator_stream(shape: list[tuple[str, int]]) -> None:
    # Tables of n rows (0: an empty Table), Runs of n batches (0: empty), lone batches
    def source() -> Iterator[outstream.Item]:
        t = 0
        for kind, n in shape:
            if kind == "batch":
                yield block(t)
            elif kind == "table":
                yield table(t, n)
            else:
                yield outstream.Run([block(k) for k in range(t, t + n)])
            t += n

    with serving() as (server, client):
        server.sources["s"] = source
        native, native_error = read(client, "native:s")
        python, python_error = read(client, "python:s")
    assert native_error is None and python_error is None
    assert native == python
    # one block per batch on the wire (PROTOCOL 4.4), in order, none lost
    assert [b.num_rows for b in native] == [1] * len(native)
    assert [b.column(0)[0].as_py() for b in native] == list(range(len(native)))
    assert len(native) == sum(n for _, n in shape)


@pytest.mark.parametrize(
    "item, why",
    [
        (lambda: outstream.Run([block(1), block(2, OTHER), block(3)]), "another schema"),
        (lambda: [block(1), block(2), block(3)], "stream item"),  # a list is no Run
    ],
    ids=["other-schema", "a-list"],
)
def test_a_bad_run_is_internal_and_none_of_it_is_sent(item: Callable[[], object], why: str) -> None:
    def source() -> Iterator[object]:
        yield block(0)
        yield item()
        yield block(4)

    with serving() as (server, client):
        server.sources["bad"] = source  # type: ignore[assignment]
        got, error = read(client, "native:bad")
    assert [b.column(0)[0].as_py() for b in got] == [0]
    assert isinstance(error, flight.FlightInternalError)
    assert str(error).startswith("internal error (stream item") and why in str(error)


def test_a_run_holds_record_batches_only() -> None:
    with pytest.raises(TypeError, match=r"expected pyarrow\.RecordBatch, got Table"):
        outstream.Run([block(0), table(1, 1)])


def test_the_native_stage_empties_a_run_it_took() -> None:
    """The batches of a Run become the stage's own (freed without the GIL once sent)."""
    runs = [outstream.Run([block(t) for t in range(k, k + 3)]) for k in (0, 3)]

    with serving() as (server, client):
        server.sources["runs"] = lambda: iter(runs)
        got, error = read(client, "native:runs")
    assert error is None and [b.column(0)[0].as_py() for b in got] == list(range(6))
    assert [len(run) for run in runs] == [0, 0]


def test_a_run_counts_as_its_blocks_and_measured_bytes() -> None:
    from router.inflight import blocks_in

    batches = [block(t) for t in range(5)]
    run = outstream.Run(batches, nbytes=123)
    assert blocks_in(run) == 5 and outstream.size_of(run) == 123
    assert blocks_in(table(0, 5)) == 5 and blocks_in(batches[0]) == 1
    assert outstream.size_of(table(0, 5)) == sum(b.get_total_buffer_size() for b in batches)
    assert run.num_rows == 5 and run.to_batches() == batches


# ------------------------------------------------- reading a downstream in bulk (read_many)


def _flight_stream(client: flight.FlightClient, ticket: str) -> FlightStream:
    return FlightStream("grpc://down:1", "DoGet s", client.do_get(flight.Ticket(ticket.encode())))


@pytest.mark.parametrize("native", [True, False], ids=["native-read", "python-read"])
def test_read_many_gives_rows_then_the_downstream_error_named(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows read before a failure come first; the next call raises the downstream's error
    with its class and the endpoint; the received count saw every row."""
    if not native:
        monkeypatch.setattr(downstream, "read_rows", None)

    def source() -> Iterator[pa.Table]:
        yield table(0, 5)
        raise flight.FlightUnavailableError("archive offline")

    with serving() as (server, client):
        server.sources["s"] = source
        stream = _flight_stream(client, "python:s")
        first = stream.read_many(3)
        second = stream.read_many(10)
        with pytest.raises(UnavailableError) as info:
            stream.read_many(10)
    assert [b.column(0)[0].as_py() for b in [*first, *second]] == [0, 1, 2, 3, 4]
    assert len(first) == 3 and stream.received == 5
    assert "archive offline" in str(info.value) and "grpc://down:1" in str(info.value)


@pytest.mark.parametrize("native", [True, False], ids=["native-read", "python-read"])
def test_read_many_reads_to_the_end_in_lists(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not native:
        monkeypatch.setattr(downstream, "read_rows", None)
    with serving() as (server, client):
        server.sources["s"] = lambda: iter([table(0, 7), block(7)])
        stream = _flight_stream(client, "python:s")
        sizes = []
        while batches := stream.read_many(3):
            sizes.append(len(batches))
        assert stream.read_many(3) == []
    assert sizes == [3, 3, 2] and stream.received == 8


def test_a_cancel_ends_a_read_many_in_progress_promptly() -> None:
    release = threading.Event()

    def source() -> Iterator[pa.Table]:
        yield table(0, 4)
        release.wait(20)  # the downstream stalls
        yield table(4, 4)

    with serving() as (server, client):
        server.sources["s"] = source
        stream = _flight_stream(client, "python:s")
        got: list[list[pa.RecordBatch]] = []
        reader = threading.Thread(target=lambda: got.append(stream.read_many(100)))
        reader.start()
        deadline = time.monotonic() + 10
        while stream.received < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.received == 4  # seen while the read is still in progress
        started = time.monotonic()
        stream.cancel()
        reader.join(10)
        took = time.monotonic() - started
        release.set()
    assert not reader.is_alive() and took < 5
    # the rows read before the cancel are returned; then the stream has ended
    assert [len(x) for x in got] == [4]
    assert stream.read_many(100) == []
