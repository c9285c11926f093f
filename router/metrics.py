"""Prometheus metrics of one router service instance.

Every :class:`RouterMetrics` owns its own ``CollectorRegistry`` (no process-global state, so
tests and several services in one process never collide). ``router serve --metrics-port N``
exposes it over HTTP at ``http://HOST:N/metrics``; port 0 (the default) means off.

| metric | type | labels |
| --- | --- | --- |
| ``arrakis_router_requests_total`` | counter | ``rpc``, ``kind`` (Find, Stream, ...), ``outcome`` |
| ``arrakis_router_rpc_duration_seconds`` | histogram | ``rpc``, ``kind`` |
| ``arrakis_router_in_flight_requests`` | gauge | ``rpc`` |
| ``arrakis_router_open_streams`` | gauge | |
| ``arrakis_router_stream_duration_seconds`` | histogram | ``stream`` |
| ``arrakis_router_stream_first_block_seconds`` | histogram | ``stream`` |
| ``arrakis_router_stream_blocks_total`` | counter | ``stream`` |
| ``arrakis_router_stream_bytes_total`` | counter | ``stream`` |
| ``arrakis_router_gap_blocks_total`` | counter | |
| ``arrakis_router_boundary_duplicates_dropped_total`` | counter | |
| ``arrakis_router_downstream_calls_total`` | counter | ``endpoint``, ``call``, ``outcome`` |
| ``arrakis_router_downstream_call_duration_seconds`` | histogram | ``endpoint``, ``call`` |
| ``arrakis_router_downstream_in_flight`` | gauge | ``endpoint`` |
| ``arrakis_router_reloads_total`` | counter | ``result`` (success, failure) |
| ``arrakis_router_last_reload_success_timestamp_seconds`` | gauge | |
| ``arrakis_router_scope_map_info`` | gauge (info) | ``fingerprint``, ``endpoints`` |
| ``arrakis_router_draining`` | gauge | |
| ``arrakis_router_build_info`` | gauge (info) | ``version``, ``python``, ``pyarrow`` |
| ``process_*`` | (prometheus_client) | CPU, memory, open fds, start time |

``outcome`` is the gRPC status name the client receives: ``OK``, ``CANCELLED``,
``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``INVALID_ARGUMENT``, ``UNAUTHENTICATED``,
``PERMISSION_DENIED``, ``UNIMPLEMENTED``, ``INTERNAL`` or ``UNKNOWN`` (a generic server
refusal). ``rpc`` is the Flight method (``GetFlightInfo``, ``DoGet``, ``DoAction``,
``DoExchange``); a DoGet lasts until its stream ends. ``stream`` names what a DoGet sends:
``bounded`` or ``live`` (Stream requests; live = open start or end) or the request kind in
lower case (``describe``, ``find``, ``count``, ``publish``).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer, make_server

import pyarrow as pa
import pyarrow.flight as flight
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    _get_best_family,
    _SilentHandler,
)
from prometheus_client.registry import Collector

from router import __version__
from router.errors import CancelledError, to_flight_error
from router.outstream import NATIVE
from router.recenterrors import RecentErrors

log = structlog.get_logger("router.metrics")

__all__ = [
    "MetricsServer",
    "RouterMetrics",
    "StitchCounts",
    "StreamReporter",
    "outcome_of",
    "stream_kind",
]

T = TypeVar("T")

# GetFlightInfo is planned in-process: sub-millisecond buckets matter (target median < 2 ms);
# a DoGet lasts as long as its stream (minutes for a large fetch, days for a live one).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    30.0,
    120.0,
    600.0,
    3600.0,
)
STREAM_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)

_FLIGHT_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (flight.FlightCancelledError, "CANCELLED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightInternalError, "INTERNAL"),
    (flight.FlightServerError, "UNKNOWN"),
)
# what pyarrow sends for exceptions that are not Flight errors (see pyarrow's
# ConvertStatus / Status::ToGrpcStatus)
_ARROW_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
    (pa.ArrowInvalid, "INVALID_ARGUMENT"),
)
OUTCOMES = (
    "OK",
    *sorted({label for _, label in _FLIGHT_OUTCOMES + _ARROW_OUTCOMES}),
)


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label (gRPC status name) of a call that ended with ``exc``."""
    if exc is None:
        return "OK"
    if isinstance(exc, CancelledError | GeneratorExit):
        return "CANCELLED"
    if not isinstance(exc, Exception):
        return "INTERNAL"
    if not isinstance(exc, flight.FlightError):
        for cls, label in _ARROW_OUTCOMES:
            if isinstance(exc, cls):
                return label
        exc = to_flight_error(exc, None)
    for cls, label in _FLIGHT_OUTCOMES:
        if isinstance(exc, cls):
            return label
    return "UNKNOWN"


def stream_kind(request: str, live: bool) -> str:
    """The ``stream`` label of a DoGet of ``request`` (``live``: a Stream with an open end)."""
    if request == "Stream":
        return "live" if live else "bounded"
    return request.lower()


# An extra page of the metrics port: () -> (status line, headers, body), e.g. the status page.
Page = Callable[[], tuple[str, list[tuple[str, str]], bytes]]


def _with_pages(metrics_app: Any, pages: Mapping[str, Page]) -> Any:
    """A WSGI app serving ``pages`` by exact path and everything else as metrics."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        page = pages.get(environ.get("PATH_INFO") or "/")
        if page is None:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        try:
            status, headers, body = page()
        except Exception as exc:  # a broken page must not take the port down
            log.error("http_page_failed", path=environ.get("PATH_INFO"), error=str(exc)[:300])
            status, headers, body = "500 Internal Server Error", [], b"internal error\n"
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


class MetricsServer:
    """The HTTP exposition of one registry (plus extra ``pages`` by path, e.g. ``/``);
    ``close()`` stops it (idempotent)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        addr: str = "0.0.0.0",
        pages: Mapping[str, Page] | None = None,
    ) -> None:
        app = make_wsgi_app(registry)
        if pages:
            app = _with_pages(app, pages)

        class Server(ThreadingWSGIServer):  # the address family of ``addr`` (IPv4 or IPv6)
            pass

        Server.address_family, host = _get_best_family(addr, port)  # type: ignore[no-untyped-call]
        self._httpd: WSGIServer | None = make_server(
            host, port, app, Server, handler_class=_SilentHandler
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        self.port: int = self._httpd.server_port

    def __repr__(self) -> str:
        return f"<MetricsServer port={self.port} running={self._httpd is not None}>"

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            self._thread.join(5)


class RouterMetrics:
    """The metrics of one service instance, on a registry of its own.

    ``multiprocess_dir``: the values are kept in prometheus_client's multiprocess files
    (``router.workers.enable_multiprocess`` was called in this process): ``exposed``, the
    registry ``serve`` shows, then sums the values of every process writing to that
    directory (the front and its data workers) and adds this process's own collectors
    (build and scope-map info, process figures, endpoint health). Without it ``exposed`` is
    ``registry``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.exposed = r
        if multiprocess_dir is not None:
            from prometheus_client import multiprocess

            self.exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposed, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        own = self.exposed
        self.requests = Counter(
            "arrakis_router_requests",
            "Client calls by RPC, request kind and outcome (gRPC status name)",
            ["rpc", "kind", "outcome"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "arrakis_router_rpc_duration_seconds",
            "Client call duration by RPC and request kind, seconds (a DoGet: until its "
            "stream ends)",
            ["rpc", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "arrakis_router_in_flight_requests",
            "Client calls being served (a DoGet until its stream ends)",
            ["rpc"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.open_streams = Gauge(
            "arrakis_router_open_streams",
            "DoGet streams currently open",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stream_seconds = Histogram(
            "arrakis_router_stream_duration_seconds",
            "DoGet stream duration from the call to its end, seconds",
            ["stream"],
            buckets=STREAM_BUCKETS,
            registry=r,
        )
        self.first_block_seconds = Histogram(
            "arrakis_router_stream_first_block_seconds",
            "Time from a DoGet call to its first record batch, seconds",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_blocks = Counter(
            "arrakis_router_stream_blocks",
            "Record batches (stream blocks) sent to clients",
            ["stream"],
            registry=r,
        )
        self.stream_bytes = Counter(
            "arrakis_router_stream_bytes",
            "Arrow buffer bytes of the record batches sent to clients",
            ["stream"],
            registry=r,
        )
        self.gap_blocks = Counter(
            "arrakis_router_gap_blocks",
            "Stream blocks sent with at least one channel filled with nulls (no downstream "
            "delivered it)",
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "arrakis_router_boundary_duplicates_dropped",
            "Downstream blocks dropped (merged) as repeats of an already emitted slot, "
            "e.g. at slice boundaries",
            registry=r,
        )
        self.downstream_calls = Counter(
            "arrakis_router_downstream_calls",
            "Calls to downstream servers by endpoint, call and outcome (gRPC status name)",
            ["endpoint", "call", "outcome"],
            registry=r,
        )
        self.downstream_seconds = Histogram(
            "arrakis_router_downstream_call_duration_seconds",
            "Downstream call duration by endpoint and call (stream: the whole read)",
            ["endpoint", "call"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.downstream_in_flight = Gauge(
            "arrakis_router_downstream_in_flight",
            "Downstream calls in progress by endpoint",
            ["endpoint"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter(
            "arrakis_router_reloads",
            "Scope-map reload attempts by result (success, failure)",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.last_reload = Gauge(
            "arrakis_router_last_reload_success_timestamp_seconds",
            "Unix time the active scope map was loaded (at start or by the last good reload)",
            registry=r,
            multiprocess_mode="max",
        )
        self.scope_map = Info(
            "arrakis_router_scope_map",
            "The active scope map: sha256 fingerprint of the file and its endpoint count",
            registry=own,
        )
        self.draining = Gauge(
            "arrakis_router_draining",
            "1 while the router drains (after SIGTERM): new calls are refused",
            registry=r,
            multiprocess_mode="livemax",
        )
        Info("arrakis_router_build", "Router build", registry=own).info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "pyarrow": pa.__version__,
                # "native": router._chunkstream is built and usable here (see --output)
                "output": "native" if NATIVE else "python",
            }
        )
        ProcessCollector(registry=own)
        self._lock = threading.Lock()
        self.recent_errors = RecentErrors()  # shown on the status page

    def __repr__(self) -> str:
        return f"<RouterMetrics open_streams={self.open_streams._value.get():g}>"

    def request(self, rpc: str, kind: str, exc: BaseException | None) -> None:
        self.requests.labels(rpc, kind, outcome_of(exc)).inc()

    def started(self, rpc: str) -> None:
        self.in_flight.labels(rpc).inc()

    def ended(self, rpc: str, kind: str, exc: BaseException | None, seconds: float) -> None:
        """A client call ended (``exc``: how; None: success) after ``seconds``."""
        self.in_flight.labels(rpc).dec()
        self.rpc_seconds.labels(rpc, kind).observe(seconds)
        self.requests.labels(rpc, kind, outcome_of(exc)).inc()

    def calls_in_flight(self) -> int:
        """Client calls being served, all RPCs together (the drain waits for 0)."""
        total = 0.0
        for metric in self.in_flight.collect():
            total += sum(s.value for s in metric.samples)
        return int(total)

    def downstream_call(self, endpoint: str, call: str) -> Callable[[BaseException | None], None]:
        """A downstream call starts: the returned function reports how it ended (once)."""
        gauge = self.downstream_in_flight.labels(endpoint)
        gauge.inc()
        started = time.perf_counter()
        done = threading.Lock()

        def ended(exc: BaseException | None) -> None:
            if not done.acquire(blocking=False):
                return
            gauge.dec()
            self.downstream_seconds.labels(endpoint, call).observe(time.perf_counter() - started)
            self.downstream_calls.labels(endpoint, call, outcome_of(exc)).inc()
            if exc is not None and not isinstance(exc, CancelledError | GeneratorExit):
                self.recent_errors.record(endpoint, call, exc)

        return ended

    def stream_sent(self, stream: str, blocks: int, nbytes: int) -> None:
        if blocks:
            self.stream_blocks.labels(stream).inc(blocks)
        if nbytes:
            self.stream_bytes.labels(stream).inc(nbytes)

    def reloaded(self, ok: bool, fingerprint: str = "", endpoints: int = 0) -> None:
        """A scope map was loaded (``ok``; at start too) or a reload was rejected."""
        self.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())
            self.scope_map.info({"fingerprint": fingerprint, "endpoints": str(endpoints)})

    def stitched(self, gap_blocks: int, duplicates_dropped: int) -> None:
        """Count gap blocks and dropped duplicates (increments, never negative)."""
        if gap_blocks < 0 or duplicates_dropped < 0:
            raise ValueError(f"negative increment: {gap_blocks=}, {duplicates_dropped=}")
        if gap_blocks:
            self.gap_blocks.inc(gap_blocks)
        if duplicates_dropped:
            self.duplicates_dropped.inc(duplicates_dropped)

    def stream_reporter(self, stream: StitchCounts) -> StreamReporter:
        return StreamReporter(self, stream)

    def register(self, collector: Collector) -> None:
        """A collector of this process's own state (read at scrape time), exposed as is."""
        self.exposed.register(collector)

    def serve(
        self, port: int, addr: str = "0.0.0.0", pages: Mapping[str, Page] | None = None
    ) -> MetricsServer:
        """Expose the metrics over HTTP (port 0 picks a free port), plus ``pages``."""
        return MetricsServer(self.exposed, port, addr, pages)


class StitchCounts(Protocol):
    """What a stream execution (bounded or live) counts while stitching; both only grow."""

    @property
    def gap_blocks(self) -> int: ...

    @property
    def duplicates_dropped(self) -> int: ...


class StreamReporter:
    """Feeds one stream's stitching counters to the metrics while it runs: ``report()`` (call
    it as often as wanted, and once more at the end) adds what grew since the last call. A
    live stream may run for days; its counters move as it goes, not only when it ends."""

    def __init__(self, metrics: RouterMetrics, stream: StitchCounts) -> None:
        self._metrics = metrics
        self._stream = stream
        self.gap_blocks = 0
        self.duplicates_dropped = 0

    def __repr__(self) -> str:
        return (
            f"<StreamReporter gap_blocks={self.gap_blocks} "
            f"duplicates_dropped={self.duplicates_dropped}>"
        )

    def relay(self, batches: Iterable[T], every: int = 64) -> Iterator[T]:
        """``batches`` passed through, reporting before every ``every``-th batch and once at
        the end, however the stream ends: after closing the stream's generator, so that what
        it counts while closing is reported too.

        Not before every batch: this runs on the per-block hot path, where each Python call
        costs a frame allocation in the fresh thread state pyarrow gives every ``next()``.
        """
        it = iter(batches)
        try:
            for n, batch in enumerate(it):
                if not n % every:
                    self.report()
                yield batch
        finally:
            if isinstance(it, Generator):
                it.close()
            self.report()

    def report(self) -> None:
        gaps, dups = self._stream.gap_blocks, self._stream.duplicates_dropped
        self._metrics.stitched(gaps - self.gap_blocks, dups - self.duplicates_dropped)
        self.gap_blocks, self.duplicates_dropped = gaps, dups


DownstreamObserver = Callable[[str, str], Callable[[BaseException | None], None]]
