"""The one seam between fan-out and transport: the ``Downstream`` interface, its pyarrow
Flight implementation and the pool that keeps one client per endpoint URL.

Every pyarrow/gRPC failure is translated here, on the call *and* inside stream iteration,
into our error tree with a text naming the endpoint and what was being done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from router.errors import (
    ArrakisError,
    CancelledError,
    InternalError,
    UnavailableError,
    from_flight_error,
)
from router.outstream import read_rows
from router.protocol.auth import AUTHORIZATION_HEADER
from router.protocol.reqid import REQUEST_ID_HEADER

REUSE_MARKER = "arrow-flight-reuse-connection://?"
# gRPC waits up to 120 s between reconnects to a server that was down; a recovered endpoint
# must serve within a health interval of coming back, so the wait is capped at 1 s.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]
# gRPC grows a stream's receive window with its bandwidth-delay estimate (to many MB on a
# fast link), and a downstream may send that far ahead of what the router has forwarded:
# 32 concurrent streams held ~500 MB of received data (issue 11). A fixed window per stream
# bounds it; ``router serve --downstream-window`` trades memory for throughput. The default
# is two historical chunks (router.streaming.StreamOptions.chunk_bytes): with one, reading a
# chunk (more than 512 KiB on the wire) drained the window and then waited for the
# downstream to send again, chunk after chunk; with two it sends the next chunk while the
# router writes the last (one 16 kHz channel, 32 readers: 0.85 -> 0.98 of the bare relay,
# 20 channels' peak RSS unchanged at 170 MB; bench/README.md, "Eighth round").
WINDOW_BYTES = 1024 * 1024
#: the bounds of a fixed window (HTTP/2's smallest default window; 64 MiB)
WINDOW_MIN, WINDOW_MAX = 64 * 1024, 64 * 1024 * 1024


def window_options(window: int = WINDOW_BYTES) -> list[tuple[str, int]]:
    """gRPC channel options giving each downstream stream a fixed receive window of
    ``window`` bytes; 0: none (gRPC's own window, grown by bandwidth-delay probing)."""
    if window == 0:
        return []
    if not WINDOW_MIN <= window <= WINDOW_MAX:
        raise ValueError(
            f"downstream window: 0 or {WINDOW_MIN} to {WINDOW_MAX} bytes, got {window}"
        )
    return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window)]


WINDOW = window_options()

# (endpoint URL, call kind) -> ended: called as a downstream call starts; ``ended(error or
# None)`` once as it ends (metrics: in-flight calls, latency, outcome)
Ended = Callable[[BaseException | None], None]
Observer = Callable[[str, str], Ended]


@dataclass(frozen=True)
class Call:
    """Per-call context handed to a downstream: request id, the unary-call timeout (s) and
    the client's ``authorization`` header, forwarded unchanged (never shown in the repr)."""

    request_id: str
    timeout: float | None = None
    what: str = ""
    observe: Observer | None = field(default=None, compare=False, repr=False)
    authorization: str | None = field(default=None, repr=False)

    def options(self, timeout: bool = True) -> flight.FlightCallOptions:
        headers = [(REQUEST_ID_HEADER.encode(), self.request_id.encode())]
        if self.authorization is not None:
            headers.append((AUTHORIZATION_HEADER.encode(), self.authorization.encode()))
        return flight.FlightCallOptions(timeout=self.timeout if timeout else None, headers=headers)


class BatchStream(Protocol):
    """An open downstream stream. Iterating yields record batches; ``read_many(n)`` returns
    the next up to ``n`` of them (fewer only at the end; [] once ended), the same stream in
    lists: read it one way or the other. ``cancel`` may be called from another thread and
    makes a blocked read end promptly; ``close`` is idempotent."""

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...

    def read_many(self, limit: int) -> Sequence[pa.RecordBatch]: ...

    @property
    def received(self) -> int:
        """Batches received from the downstream so far, counted as they arrive (also
        during a ``read_many`` in progress: the idle watch reads it from another thread)."""
        ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class Downstream(Protocol):
    url: str

    def stream(self, command: bytes, call: Call) -> BatchStream:
        """GetFlightInfo(command), then DoGet of its single endpoint; the stream stays open."""
        ...

    def fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        """GetFlightInfo(command), then every endpoint's DoGet read to the end (metadata)."""
        ...

    def action(self, kind: str, call: Call) -> list[bytes]: ...

    def exchange(
        self, command: bytes, batches: Sequence[pa.RecordBatch], call: Call
    ) -> list[pa.RecordBatch]: ...

    def close(self) -> None: ...


def translate(exc: BaseException, url: str, what: str) -> BaseException:
    """Our error for a failure of a downstream call on ``url`` doing ``what`` (``exc``
    itself when it is ours already or not a transport failure)."""
    if isinstance(exc, ArrakisError):
        return exc
    context = f"{what} on {url}" if what else url
    if isinstance(exc, flight.FlightError):
        return from_flight_error(exc, context)
    if isinstance(exc, pa.ArrowException | OSError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return InternalError(f"{context}: {first}")
    return exc


@contextmanager
def translated(url: str, what: str) -> Iterator[None]:
    """Map any failure of a downstream call to our error tree, naming ``url`` and ``what``."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, url, what)
        if error is exc:
            raise
        raise error from exc


@contextmanager
def observed(call: Call, url: str, kind: str) -> Iterator[None]:
    """Report how the call ended to ``call.observe`` (if any); errors pass through."""
    if call.observe is None:
        yield
        return
    ended = call.observe(url, kind)
    try:
        yield
    except BaseException as exc:
        ended(exc)
        raise
    ended(None)


class FlightStream:
    """A downstream DoGet in progress (see :class:`BatchStream`)."""

    def __init__(
        self,
        url: str,
        what: str,
        reader: flight.FlightStreamReader,
        observe: Observer | None = None,
        calls: OpenCalls | None = None,
    ) -> None:
        self.url = url
        self.what = what
        self._reader = reader
        self._cancelled = threading.Event()
        self._closed = False
        self._observe = observe(url, "stream") if observe is not None else None
        self._calls = calls
        self._rows: pa.RecordBatchReader | None = None  # read_many's view of the reader
        self._done = False  # read_many saw the end
        self._iter: Iterator[pa.RecordBatch] | None = None  # read_many without the module
        self._received = np.zeros(1, np.int64)  # written by read_rows without the GIL
        self._pending: Exception | None = None  # read_many: a failure for the next call
        if calls is not None:
            calls.opened()

    def _ended(self, exc: BaseException | None) -> None:
        calls, self._calls = self._calls, None  # count once
        if calls is not None:
            calls.ended()
        ended, self._observe = self._observe, None  # report once
        if ended is not None:
            ended(exc)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        read = self._reader.read_chunk
        while not self._closed:
            try:
                chunk = read()
            except StopIteration:
                self._ended(None)
                return
            except Exception as exc:  # translated here, not per chunk (hot loop)
                if self._failure(exc):
                    return
            data = chunk.data
            if data is not None:
                yield data

    def _failure(self, exc: Exception) -> bool:
        """Raise ``exc`` translated; True (the stream ended) when it came from a cancel."""
        error = translate(exc, self.url, self.what)
        if self._cancelled.is_set() and isinstance(error, ArrakisError):
            self._ended(CancelledError(self.what))
            return True
        self._ended(error)
        if error is exc:
            raise
        raise error from exc

    def read_many(self, limit: int) -> Sequence[pa.RecordBatch]:
        """Up to ``limit`` batches read with the GIL released once (router._chunkstream;
        row by row without it). Rows read before a failure are returned first; the next
        call raises the failure, translated as when iterating."""
        pending, self._pending = self._pending, None
        if pending is not None:
            raise pending
        if self._closed or self._done:
            return []
        batches: Sequence[pa.RecordBatch] = []
        try:
            if read_rows is None:
                if self._iter is None:
                    self._iter = iter(self)  # raises translated
                listed: list[pa.RecordBatch] = []
                batches = listed
                for batch in self._iter:
                    listed.append(batch)
                    self._received[0] += 1
                    if len(listed) >= limit:
                        break
                return listed
            stop = 2
            try:
                if self._rows is None:
                    self._rows = self._reader.to_reader()  # waits for the schema
                batches, stop = read_rows(self._rows, limit, self._received)
            except Exception:
                pass
            if stop == 1:
                self._done = True
                self._ended(None)
            elif stop == 2:
                self._raise_failure()
        except Exception as exc:
            if not batches:
                raise
            self._pending = exc  # the rows read before it go first
        return batches

    @property
    def received(self) -> int:
        return int(self._received[0])

    def _raise_failure(self) -> None:
        # the Flight reader gives the stream's final status again, with its Flight class
        # (the bulk reader's view of it is a plain OSError)
        try:
            self._reader.read_chunk()
        except StopIteration:
            self._done = True
            self._ended(None)
            return
        except Exception as exc:
            self._done = self._failure(exc)
            return
        error = InternalError(f"{self.what} on {self.url}: the stream failed")
        self._ended(error)
        raise error

    def cancel(self) -> None:
        self._cancelled.set()
        with contextlib.suppress(Exception):  # cancelling a finished call may fail
            self._reader.cancel()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.cancel()
            self._ended(CancelledError(self.what))  # no-op when it already ended

    def __repr__(self) -> str:
        return f"<FlightStream {self.url} {self.what} cancelled={self._cancelled.is_set()}>"


class FlightDownstream:
    """A downstream Arrakis server reached with one (lazily connecting) Flight client."""

    def __init__(self, url: str, pool: DownstreamPool) -> None:
        self.url = url
        self._pool = pool
        tls = {"tls_root_certs": pool.tls_root_certs} if pool.tls_root_certs else {}
        options = [("grpc.keepalive_time_ms", 300_000), *RECONNECT, *window_options(pool.window)]
        self._client = flight.FlightClient(url, generic_options=options, **tls)

    def __repr__(self) -> str:
        return f"<FlightDownstream {self.url}>"

    def _client_for(self, endpoint: flight.FlightEndpoint) -> tuple[str, flight.FlightClient]:
        if not endpoint.locations:
            return self.url, self._client
        uri = endpoint.locations[0].uri.decode()
        if uri.startswith("arrow-flight-reuse-connection"):
            return self.url, self._client
        other = self._pool.get(uri)
        assert isinstance(other, FlightDownstream)
        return other.url, other._client

    def _info(self, command: bytes, call: Call) -> flight.FlightInfo:
        with translated(self.url, f"GetFlightInfo{_what(call)}"):
            return self._client.get_flight_info(
                flight.FlightDescriptor.for_command(command), call.options()
            )

    def stream(self, command: bytes, call: Call) -> BatchStream:
        with observed(call, self.url, "stream_open"):
            info = self._info(command, call)
            if len(info.endpoints) != 1:
                raise UnavailableError(
                    f"GetFlightInfo{_what(call)} on {self.url}: expected one stream endpoint, "
                    f"got {len(info.endpoints)} (a downstream must serve a router slice in one "
                    "piece)"
                )
            endpoint = info.endpoints[0]
            what = f"DoGet{_what(call)}"
            with translated(self.url, f"{what}: its stream location"):
                url, client = self._client_for(endpoint)
            with translated(url, what):
                reader = client.do_get(endpoint.ticket, call.options(timeout=False))
        return FlightStream(url, what, reader, call.observe, self._pool.calls)

    def fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        with observed(call, self.url, "fetch"), self._pool.calls.counted():
            return self._fetch(command, call)

    def _fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        info = self._info(command, call)
        out: list[pa.RecordBatch] = []
        for endpoint in info.endpoints:
            with translated(self.url, f"DoGet{_what(call)}: its stream location"):
                url, client = self._client_for(endpoint)
            with translated(url, f"DoGet{_what(call)}"):
                table = client.do_get(endpoint.ticket, call.options()).read_all()
            out.extend(table.to_batches())
        return out

    def action(self, kind: str, call: Call) -> list[bytes]:
        with observed(call, self.url, "action"), translated(self.url, f"DoAction {kind}"):
            results = self._client.do_action(flight.Action(kind, b""), call.options())
            return [r.body.to_pybytes() for r in results]

    def exchange(
        self, command: bytes, batches: Sequence[pa.RecordBatch], call: Call
    ) -> list[pa.RecordBatch]:
        with observed(call, self.url, "exchange"), translated(self.url, f"DoExchange{_what(call)}"):
            descriptor = flight.FlightDescriptor.for_command(command)
            writer, reader = self._client.do_exchange(descriptor, call.options())
            with writer:
                if batches:
                    writer.begin(batches[0].schema)
                    for batch in batches:
                        writer.write_batch(batch)
                writer.done_writing()
                table = reader.read_all()
            return list(table.to_batches())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken channel may fail
            self._client.close()


def _what(call: Call) -> str:
    return f" {call.what}" if call.what else ""


class OpenCalls:
    """How many downstream calls are open right now (thread-safe; tests prove a request left
    none behind)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __repr__(self) -> str:
        return f"<OpenCalls {self.count}>"

    def opened(self) -> None:
        with self._lock:
            self.count += 1

    def ended(self) -> None:
        with self._lock:
            self.count -= 1

    @contextmanager
    def counted(self) -> Iterator[None]:
        self.opened()
        try:
            yield
        finally:
            self.ended()


#: retired clients kept open for calls still using them (closed oldest first beyond this)
RETIRED_KEPT = 8


class DownstreamPool:
    """One :class:`Downstream` per URL, created on first use, reused by every request.
    ``tls_root_certs``: PEM roots for ``grpc+tls://`` downstreams (None: the system roots);
    ``window``: each downstream stream's receive window in bytes (0: gRPC's growing one; see
    :func:`window_options`). ``calls`` counts the downstream calls open now."""

    def __init__(self, tls_root_certs: bytes | None = None, window: int = WINDOW_BYTES) -> None:
        window_options(window)  # refuses a window out of bounds here, not at first use
        self.tls_root_certs = tls_root_certs
        self.window = window
        self._lock = threading.Lock()
        self._members: dict[str, Downstream] = {}
        self._retired: list[Downstream] = []
        self.calls = OpenCalls()

    def __repr__(self) -> str:
        return f"<DownstreamPool {sorted(self._members)} open_calls={self.calls.count}>"

    def discard(self, url: str, member: Downstream) -> None:
        """Forget ``member`` (if it still serves ``url``): the next :meth:`get` connects
        afresh. It is not closed at once (other calls may still be reading from it); the
        oldest retired clients are closed once more than ``RETIRED_KEPT`` wait."""
        with self._lock:
            if self._members.get(url) is member:
                del self._members[url]
                self._retired.append(member)
            closing = self._retired[:-RETIRED_KEPT] if len(self._retired) > RETIRED_KEPT else []
            del self._retired[: len(closing)]
        for old in closing:
            old.close()

    def get(self, url: str) -> Downstream:
        with self._lock:
            member = self._members.get(url)
            if member is None:
                member = self._create(url)
                self._members[url] = member
            return member

    def _create(self, url: str) -> Downstream:
        return FlightDownstream(url, self)

    def report(self, url: str, kind: str) -> None:
        """A failure of ``url`` seen above the transport (a stream silent past the idle
        timeout: ``timed_out``; one ending before its end: ``early_end``). The health-aware
        pool (:class:`router.healthpool.HealthPool`) records it; this one has no use for it."""

    def retain(self, urls: set[str]) -> None:
        """Close and forget the members whose URL is no longer in use (after a reload)."""
        with self._lock:
            gone = [u for u in self._members if u not in urls]
            dropped = [self._members.pop(u) for u in gone]
        for member in dropped:
            member.close()

    def close(self) -> None:
        self.retain(set())
        with self._lock:
            retired, self._retired = self._retired, []
        for member in retired:
            member.close()


class StaticPool(DownstreamPool):
    """A pool over given downstream objects (tests: scripted in-memory downstreams)."""

    def __init__(self, members: dict[str, Downstream]) -> None:
        super().__init__()
        self._members = dict(members)

    def _create(self, url: str) -> Downstream:
        raise UnavailableError(f"{url}: no such downstream")

    def discard(self, url: str, member: Downstream) -> None:
        """Given members have no connection to renew: they stay."""
