"""The server core: one Arrakis Flight server over any :class:`Backend`.

Transport only: each RPC makes the call's context (request id, clock, cancel token, logger),
parses the envelope, runs the checks of :mod:`router_backends.validation`, asks the backend,
and translates errors once, here.  Streams go through :func:`validation.aligned` (the block
contract) and :func:`pacing.paced` (release on time); faults, when asked for, wrap the
backend (:class:`router_backends.faults.FaultyBackend`).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from router.protocol.arrow import (
    COUNT_SCHEMA,
    METADATA_SCHEMA,
    PARTITION_SCHEMA,
    PUBLISH_SCHEMA,
    count_batch,
    metadata_batches,
    metas_from_batches,
    partition_batch,
    publish_batch,
    stream_schema,
)
from router.protocol.envelope import (
    SCHEMA_VERSION,
    DescribeArgs,
    FindArgs,
    PublishArgs,
    StreamArgs,
    parse_envelope,
)
from router.protocol.errors import (
    ArrakisError,
    InvalidRequestError,
    ServerError,
    UnsupportedError,
    to_flight_error,
)
from router.protocol.flightinfo import REUSE_CONNECTION_URI, flight_info
from router.protocol.gps import Clock, SystemClock
from router.protocol.reqid import (
    REQUEST_ID_MIDDLEWARE_KEY,
    RequestIdMiddlewareFactory,
    request_id_from_context,
)
from router_backends import __version__
from router_backends.faults import FaultPlan, FaultyBackend
from router_backends.interface import Backend, BlockStream, CallContext, Cancellation
from router_backends.pacing import Released, paced
from router_backends.retention import Retention
from router_backends.validation import aligned, check_request, check_stream, first_block

__all__ = ["ACTIONS", "BackendServer", "ServerStats"]

NS = 1_000_000_000
ARRAKIS_CLIENT_VERSION = "0.21.0"
ACTIONS = {
    "server-info": "server, protocol and backend versions, capabilities and domains",
    "scope-map": "the scopes and retention this server serves",
    "replays": "named replay windows known to this server",
}
#: exit status of a process stopped by the ``exit`` fault
EXIT_FAULT_STATUS = 3
log = structlog.get_logger("router_backends")


@dataclass
class ServerStats:
    """Counters of one server (``repr`` shows them; also logged when it stops)."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    streams_open: int = 0
    blocks_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, rpc: str) -> None:
        with self._lock:
            self.requests[rpc] = self.requests.get(rpc, 0) + 1

    def error(self, exc: BaseException) -> None:
        with self._lock:
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def stream_opened(self) -> None:
        with self._lock:
            self.streams_open += 1

    def stream_closed(self, blocks: int) -> None:
        with self._lock:
            self.streams_open -= 1
            self.blocks_sent += blocks

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "errors": dict(self.errors),
                "streams_open": self.streams_open,
                "blocks_sent": self.blocks_sent,
            }


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` made idempotent: the first call runs it, later calls do nothing."""
    lock = threading.Lock()
    done = False

    def call() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        fn()

    return call


def _close_iterator(it: object) -> None:
    """Close a generator (or any iterator with ``close``); others need nothing."""
    closer = getattr(it, "close", None)
    if callable(closer):
        closer()


def _json_result(doc: Any) -> Iterator[flight.Result]:
    yield flight.Result(json.dumps(doc).encode())


class BackendServer(flight.FlightServerBase):  # type: ignore[misc]
    """An Arrakis Flight server over ``backend``.

    Binding happens in the constructor (``port`` is then known); use as a context manager
    or call :meth:`shutdown`.  ``clock`` is the one clock of the server (pacing, retention,
    fault delays); ``latency_s`` delays the release of every block past its end; ``faults``
    wraps the backend in a :class:`FaultyBackend`; ``allow_exit`` permits the ``exit``
    fault, which ends the stream and sets :attr:`exit_requested` (the command line then
    stops the process with status 3); ``retention`` replaces the backend's own window.
    """

    def __init__(
        self,
        backend: Backend,
        location: str = "grpc://127.0.0.1:0",
        *,
        clock: Clock | None = None,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        allow_exit: bool = False,
        heartbeat_s: float = 0.1,
        retention: Retention | None = None,
        **kwargs: Any,
    ) -> None:
        faults = faults or FaultPlan()
        self.exit_requested = threading.Event()
        if faults.active:
            on_exit = self.exit_requested.set if allow_exit else None
            backend = FaultyBackend(backend, faults, on_exit=on_exit)
        middleware = dict(kwargs.pop("middleware", {}) or {})
        middleware[REQUEST_ID_MIDDLEWARE_KEY] = RequestIdMiddlewareFactory()
        super().__init__(location, middleware=middleware, **kwargs)
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        self.latency_ns = round(latency_s * NS)
        self.faults = faults
        self.heartbeat_s = heartbeat_s
        #: the window served: ``retention`` if given, else the backend's own
        self.retention = retention if retention is not None else backend.retention
        self.stats = ServerStats()
        self._stopping = threading.Event()
        self._host = location.split("://", 1)[-1].rsplit(":", 1)[0]
        self._scheme = location.split("://", 1)[0] if "://" in location else "grpc"

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._host}:{self.port}"

    def shutdown(self) -> None:
        """Stop: live streams end at their next heartbeat, then gRPC shuts down."""
        self._stopping.set()
        super().shutdown()
        self.backend.close()

    def __repr__(self) -> str:
        return (
            f"<BackendServer {self.backend.kind} port={self.port} latency_ns={self.latency_ns}"
            f" faults={self.faults.describe()} stopping={self._stopping.is_set()}"
            f" stats={self.stats.to_json()}>"
        )

    # ------------------------------------------------------------------ helpers

    def _ctx(self, context: Any, rpc: str) -> CallContext:
        rid = request_id_from_context(context)
        self.stats.request(rpc)
        cancel = Cancellation(self._stopping, context.is_cancelled, self.heartbeat_s)
        return CallContext(
            rid,
            self.clock.now_ns(),
            self.clock,
            cancel,
            log.bind(request_id=rid, backend=self.backend.kind),
        )

    def _fail(self, exc: BaseException, ctx: CallContext, rpc: str) -> flight.FlightError:
        self.stats.error(exc)
        if isinstance(exc, ArrakisError | flight.FlightError):
            ctx.log.info("request_failed", rpc=rpc, error=str(exc), error_type=type(exc).__name__)
        else:
            ctx.log.error("request_crashed", rpc=rpc, exc_info=exc)
        return to_flight_error(exc, ctx.request_id)

    # ------------------------------------------------------------------ RPCs

    def list_flights(self, context: Any, criteria: bytes) -> Iterator[flight.FlightInfo]:
        return iter(())

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    def get_flight_info(
        self, context: Any, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        ctx = self._ctx(context, "GetFlightInfo")
        try:
            if descriptor.descriptor_type != flight.DescriptorType.CMD:
                raise InvalidRequestError("invalid request: expected a command descriptor")
            env = parse_envelope(descriptor.command)
            ctx.log.info("get_flight_info", request=env.request)
            metas = check_request(env, self.backend, ctx, self.retention)
            if isinstance(env.args, DescribeArgs):
                self.backend.describe(env.args, ctx)  # unknown channels fail here already
            schema = {
                "Find": METADATA_SCHEMA,
                "Describe": METADATA_SCHEMA,
                "Count": COUNT_SCHEMA,
                "Publish": PUBLISH_SCHEMA,
                "Partition": PARTITION_SCHEMA,
            }.get(env.request)
            if schema is None:
                assert metas is not None
                schema = stream_schema(metas)
            return flight_info(descriptor, schema, [env.encode()])
        except Exception as exc:
            raise self._fail(exc, ctx, "GetFlightInfo") from None

    def get_schema(self, context: Any, descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        return flight.SchemaResult(self.get_flight_info(context, descriptor).schema)

    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        ctx = self._ctx(context, "DoAction")
        try:
            ctx.log.info("do_action", action=action.type)
            if action.type == "server-info":
                return _json_result(self._server_info())
            if action.type == "scope-map":
                return _json_result(self._scope_map())
            if action.type == "replays":
                return _json_result(
                    {
                        k: {"start": s / NS, "end": e / NS}
                        for k, (s, e) in self.backend.replays().items()
                    }
                )
            raise ServerError("action not valid")
        except Exception as exc:
            raise self._fail(exc, ctx, "DoAction") from None

    def _server_info(self) -> dict[str, Any]:
        caps = ["find", "count", "describe", "stream"]
        if self.backend.can_publish:
            caps += ["publish", "partition"]
        return {
            "server_version": __version__,
            "arrakis_version": ARRAKIS_CLIENT_VERSION,
            "arrakis_schema_version": SCHEMA_VERSION,
            "backend": self.backend.kind,
            "backend_version": self.backend.version,
            "capabilities": caps,
            "domains": sorted(self.backend.scopes()),
            "auth": False,
            "auth_mode": None,
            "auth_methods": None,
        }

    def _scope_map(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "scopes": {
                d: [{"subsystem": s} for s in subs] for d, subs in self.backend.scopes().items()
            },
            "retention": self.retention.to_json(),
        }
        if self.backend.replays():
            entry["replay_ids"] = sorted(self.backend.replays())
        if self.backend.publishers():
            entry["allowed_publishers"] = list(self.backend.publishers())
        return {"endpoints": {REUSE_CONNECTION_URI: entry}, "local_endpoint": REUSE_CONNECTION_URI}

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.FlightDataStream:
        ctx = self._ctx(context, "DoGet")
        try:
            env = parse_envelope(ticket.ticket)
            ctx.log.info("do_get", request=env.request)
            metas = check_request(env, self.backend, ctx, self.retention)
            args = env.args
            if isinstance(args, StreamArgs):
                assert metas is not None
                return self._stream(args, metas, ctx)
            if env.request == "Find":
                assert isinstance(args, FindArgs)
                return self._table(METADATA_SCHEMA, metadata_batches(self.backend.find(args, ctx)))
            if env.request == "Count":
                assert isinstance(args, FindArgs)
                return self._table(COUNT_SCHEMA, [count_batch(self.backend.count(args, ctx))])
            if env.request == "Describe":
                assert isinstance(args, DescribeArgs)
                return self._table(
                    METADATA_SCHEMA, metadata_batches(self.backend.describe(args, ctx))
                )
            if env.request == "Publish":
                assert isinstance(args, PublishArgs)
                props = dict(self.backend.publish(args, ctx))
                return self._table(PUBLISH_SCHEMA, [publish_batch(props)])
            raise UnsupportedError("Partition is served by DoExchange")
        except Exception as exc:
            raise self._fail(exc, ctx, "DoGet") from None

    def _stream(self, args: StreamArgs, metas: Any, ctx: CallContext) -> flight.GeneratorStream:
        stream = self.backend.stream(args, ctx)
        close = _once(stream.close) if stream.close is not None else None
        try:
            check_stream(stream, metas, self.backend.kind)
        except BaseException:
            _close_iterator(stream.blocks)
            if close is not None:
                close()
            raise
        blocks = self._serve_blocks(stream, args, close, ctx)
        if close is not None:
            # `_serve_blocks` closes the stream on every exit once it has started; a client
            # that goes away before the first read never starts it, so the stream is also
            # closed when the unstarted generator is collected.
            weakref.finalize(blocks, close)
        return flight.GeneratorStream(stream.schema, blocks)

    @staticmethod
    def _table(schema: pa.Schema, batches: list[pa.RecordBatch]) -> flight.RecordBatchStream:
        return flight.RecordBatchStream(pa.Table.from_batches(batches, schema=schema))

    def do_exchange(
        self,
        context: Any,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.MetadataRecordBatchWriter,
    ) -> None:
        ctx = self._ctx(context, "DoExchange")
        try:
            env = parse_envelope(descriptor.command)
            ctx.log.info("do_exchange", request=env.request)
            if env.request != "Partition":
                raise UnsupportedError(f"DoExchange serves Partition requests, not {env.request}")
            assert isinstance(env.args, PublishArgs)
            if not self.backend.can_publish:
                raise UnsupportedError("partition not supported for server backend")
            try:
                table = reader.read_all()
                metas = metas_from_batches(table.to_batches())
            except (pa.ArrowException, ValueError, KeyError) as exc:
                raise InvalidRequestError(f"invalid Partition exchange: {exc}") from None
            out = self.backend.partition(env.args, metas, ctx)
            writer.begin(PARTITION_SCHEMA)
            writer.write_batch(partition_batch(list(out)))
        except Exception as exc:
            raise self._fail(exc, ctx, "DoExchange") from None

    # ------------------------------------------------------------------ streaming

    def _serve_blocks(
        self,
        stream: BlockStream,
        args: StreamArgs,
        close: Callable[[], None] | None,
        ctx: CallContext,
    ) -> Iterator[pa.RecordBatch | pa.RecordBatchReader]:
        """The block contract, pacing and error translation around a backend's blocks."""
        lo = None if args.start is None else first_block(args.start, stream.block_ns)
        checked = aligned(
            stream.blocks, stream.schema, stream.block_ns, lo, args.end, self.backend.kind
        )
        released = Released()
        self.stats.stream_opened()
        try:
            yield from paced(checked, stream.block_ns, self.latency_ns, ctx, released)
            event = "stream_cancelled" if released.cancelled else "stream_done"
            ctx.log.info(event, blocks=released.blocks)
        except GeneratorExit:
            ctx.log.info("stream_closed", blocks=released.blocks)
            raise
        except Exception as exc:
            raise self._fail(exc, ctx, "DoGet stream") from None
        finally:
            self.stats.stream_closed(released.blocks)
            checked.close()
            _close_iterator(stream.blocks)  # the backend's generator cleans up now, not at GC
            if close is not None:
                close()
