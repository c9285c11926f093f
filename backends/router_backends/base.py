"""The server base: one Arrakis Flight server over a small :class:`Backend` interface.

The server owns everything protocol-shaped (envelope parsing and validation, request ids,
retention and replay checks, FlightInfo, Arrow schemas, live pacing, fault injection, error
translation, logging); a backend only answers questions about its channels and produces
blocks.  A file-backed backend plugs in by implementing ``find``, ``describe``, ``stream``
and ``scopes``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

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
from router.protocol.blocks import batch_columns, null_block, split_blocks
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import (
    SCHEMA_VERSION,
    DescribeArgs,
    Envelope,
    FindArgs,
    PublishArgs,
    StreamArgs,
    parse_envelope,
)
from router.protocol.errors import (
    ArrakisError,
    InvalidRequestError,
    ReplayError,
    ServerError,
    UnavailableError,
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
from router_backends.faults import FaultPlan
from router_backends.retention import Retention

__all__ = ["ACTIONS", "Backend", "BackendServer", "BlockStream", "CallContext"]

NS = 1_000_000_000
ARRAKIS_CLIENT_VERSION = "0.21.0"
ACTIONS = {
    "server-info": "server, protocol and backend versions, capabilities and domains",
    "scope-map": "the scopes and retention this server serves",
    "replays": "named replay windows known to this server",
}
log = structlog.get_logger("router_backends")


@dataclass
class CallContext:
    """What a backend may know about the call it serves."""

    request_id: str
    #: GPS now, read once when the call started
    now_ns: int
    #: true once the client cancelled or the server is stopping
    cancelled: Callable[[], bool] = lambda: False
    #: the server's clock, read afresh (GPS ns)
    now: Callable[[], int] = lambda: 0
    log: Any = field(default=None, repr=False)


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


@dataclass
class BlockStream:
    """A backend's answer to a Stream: the schema and its blocks, each ``block_ns`` long,
    in increasing time.  Every item of ``blocks`` is a batch of one or more consecutive
    blocks (row i = block i; see ``router.protocol.blocks.blocks_batch``): chunks let the
    server send historical data without per-block Python work.  ``close`` is called on
    every exit."""

    schema: pa.Schema
    block_ns: int
    blocks: Iterator[pa.RecordBatch]
    close: Callable[[], None] | None = None


class Backend(ABC):
    """The questions a data server answers; see the module docstring."""

    #: reported as ``backend`` by ``server-info``
    kind: ClassVar[str] = "backend"
    version: ClassVar[str] = __version__
    retention: Retention = Retention()

    @abstractmethod
    def find(self, args: FindArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """Channels matching the filters, metadata valid at ``args.time`` (None: now)."""

    def count(self, args: FindArgs, ctx: CallContext) -> int:
        return len(self.find(args, ctx))

    @abstractmethod
    def describe(self, args: DescribeArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """Metadata of the named channels in request order; raise
        ``ChannelsNotAvailableError`` naming the unknown ones."""

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """The metadata a stream starting at ``args.start`` uses (checked in GetFlightInfo
        and DoGet); default: Describe at the start time."""
        return self.describe(DescribeArgs(args.channels, args.start, args.replay_id), ctx)

    @abstractmethod
    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        """Blocks from ``floor(start / D) * D`` while block start < end (D = lcm of strides);
        live (``start`` None) from the block containing now.  No pacing: the server
        releases each block once its end has passed."""

    @abstractmethod
    def scopes(self) -> Mapping[str, Sequence[str]]:
        """domain -> subsystems served."""

    def replays(self) -> Mapping[str, tuple[int, int]]:
        """replay id -> (start ns, end ns); empty: no registry."""
        return {}

    def publishers(self) -> Sequence[str]:
        return ()

    @property
    def can_publish(self) -> bool:
        return False

    def publish(self, args: PublishArgs, ctx: CallContext) -> Mapping[str, str]:
        raise UnsupportedError("publish not supported for server backend")

    def partition(
        self, args: PublishArgs, channels: Sequence[ChannelMeta], ctx: CallContext
    ) -> Sequence[ChannelMeta]:
        raise UnsupportedError("partition not supported for server backend")

    def close(self) -> None:
        return None


def _json_result(doc: Any) -> Iterator[flight.Result]:
    yield flight.Result(json.dumps(doc).encode())


class BackendServer(flight.FlightServerBase):  # type: ignore[misc]
    """An Arrakis Flight server over ``backend``.

    Binding happens in the constructor (``port`` is then known); use as a context manager
    or call :meth:`shutdown`.  ``latency_s`` delays the release of every block past its
    end; ``faults`` is applied to every stream; ``allow_exit`` permits the ``exit`` fault.
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
        **kwargs: Any,
    ) -> None:
        faults = faults or FaultPlan()
        if faults.exit_after is not None and not allow_exit:
            raise ValueError("the exit fault would end this process: run it as a subprocess")
        middleware = dict(kwargs.pop("middleware", {}) or {})
        middleware[REQUEST_ID_MIDDLEWARE_KEY] = RequestIdMiddlewareFactory()
        super().__init__(location, middleware=middleware, **kwargs)
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        self.latency_ns = round(latency_s * NS)
        self.faults = faults
        self.heartbeat_s = heartbeat_s
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
            f" faults={self.faults.describe()} stopping={self._stopping.is_set()}>"
        )

    # ------------------------------------------------------------------ helpers

    def _ctx(self, context: Any) -> CallContext:
        rid = request_id_from_context(context)

        def cancelled() -> bool:
            return self._stopping.is_set() or bool(context.is_cancelled())

        return CallContext(
            rid, self.clock.now_ns(), cancelled, self.clock.now_ns, log.bind(request_id=rid)
        )

    def _fail(self, exc: BaseException, ctx: CallContext, rpc: str) -> flight.FlightError:
        if isinstance(exc, ArrakisError | flight.FlightError):
            ctx.log.info("request_failed", rpc=rpc, error=str(exc), error_type=type(exc).__name__)
        else:
            ctx.log.error("request_crashed", rpc=rpc, exc_info=exc)
        return to_flight_error(exc, ctx.request_id)

    def _check(self, env: Envelope, ctx: CallContext) -> Sequence[ChannelMeta] | None:
        """Checks shared by GetFlightInfo and DoGet; the stream metadata for a Stream."""
        args = env.args
        ret = self.backend.retention
        if isinstance(args, DescribeArgs | StreamArgs) and args.replay_id is not None:
            replays = self.backend.replays()
            if not replays:
                raise ReplayError(
                    f"replay_id {args.replay_id!r} was provided but no replay registry is "
                    "configured on this server"
                )
            if args.replay_id not in replays:
                raise ReplayError(
                    f"unknown replay_id {args.replay_id!r}; available replays: {sorted(replays)}"
                )
        if isinstance(args, FindArgs | DescribeArgs) and args.time is not None:
            ret.check_time(args.time, ctx.now_ns, f"{env.request} request")
        if isinstance(args, StreamArgs):
            ret.check_span(args.start, args.end, ctx.now_ns, "stream")
            if not args.channels:
                raise InvalidRequestError("invalid Stream request: args.channels: no channels")
            metas = self.backend.stream_metadata(args, ctx)
            missing = [m.name for m in metas if not m.stride]
            if missing:
                raise ServerError(f"channel(s) without a stride cannot stream: {missing}")
            return metas
        if isinstance(args, PublishArgs) and not self.backend.can_publish:
            raise UnsupportedError(f"{env.request.lower()} not supported for server backend")
        return None

    # ------------------------------------------------------------------ RPCs

    def list_flights(self, context: Any, criteria: bytes) -> Iterator[flight.FlightInfo]:
        return iter(())

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    def get_flight_info(
        self, context: Any, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        ctx = self._ctx(context)
        try:
            if descriptor.descriptor_type != flight.DescriptorType.CMD:
                raise InvalidRequestError("invalid request: expected a command descriptor")
            env = parse_envelope(descriptor.command)
            ctx.log.info("get_flight_info", request=env.request)
            metas = self._check(env, ctx)
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
        ctx = self._ctx(context)
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
            "retention": self.backend.retention.to_json(),
        }
        if self.backend.replays():
            entry["replay_ids"] = sorted(self.backend.replays())
        if self.backend.publishers():
            entry["allowed_publishers"] = list(self.backend.publishers())
        return {"endpoints": {REUSE_CONNECTION_URI: entry}, "local_endpoint": REUSE_CONNECTION_URI}

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.FlightDataStream:
        ctx = self._ctx(context)
        try:
            env = parse_envelope(ticket.ticket)
            ctx.log.info("do_get", request=env.request)
            metas = self._check(env, ctx)
            args = env.args
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
            if env.request == "Stream":
                assert isinstance(args, StreamArgs) and metas is not None
                stream = self.backend.stream(args, ctx)
                if stream.close is not None:
                    stream = replace(stream, close=_once(stream.close))
                blocks = self._serve_blocks(stream, ctx)
                if stream.close is not None:
                    # `_serve_blocks` closes the stream on every exit once it has started; a
                    # client that goes away before the first read never starts it, so the
                    # stream is also closed when the unstarted generator is collected.
                    weakref.finalize(blocks, stream.close)
                return flight.GeneratorStream(stream.schema, blocks)
            raise UnsupportedError("Partition is served by DoExchange")
        except Exception as exc:
            raise self._fail(exc, ctx, "DoGet") from None

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
        ctx = self._ctx(context)
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

    def _wait_until(self, until_ns: int, ctx: CallContext) -> bool:
        """Sleep until the clock reaches ``until_ns``, waking every heartbeat to notice a
        cancelled call or a stopping server; False if the wait was abandoned."""
        while True:
            if ctx.cancelled():
                return False
            remaining = until_ns - self.clock.now_ns()
            if remaining <= 0:
                return True
            self._stopping.wait(min(remaining / NS, self.heartbeat_s))

    def _sleep(self, seconds: float, ctx: CallContext) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if ctx.cancelled():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._stopping.wait(min(remaining, self.heartbeat_s))

    def _serve_blocks(
        self, stream: BlockStream, ctx: CallContext
    ) -> Iterator[pa.RecordBatch | pa.RecordBatchReader]:
        """Pacing, faults and error translation around a backend's blocks.

        A chunk whose blocks have all been released already (historical data, no faults)
        goes out as a reader of one-row slices (``max_chunksize=1``): pyarrow slices and
        writes the rows in C++, with no Python object per block; otherwise each block is
        paced and checked for faults on its own.
        """
        sent = 0
        try:
            for chunk in stream.blocks:
                if chunk.num_rows == 0:
                    continue
                last = chunk.column(0)[chunk.num_rows - 1].as_py()
                if (
                    not self.faults.active
                    and last + stream.block_ns + self.latency_ns <= self.clock.now_ns()
                    and not ctx.cancelled()
                ):
                    yield pa.Table.from_batches([chunk]).to_reader(max_chunksize=1)
                    sent += chunk.num_rows
                    continue
                for block in split_blocks(chunk):
                    out = self._one_block(block, sent, stream.block_ns, ctx)
                    if out is _STOP:
                        ctx.log.info("stream_cancelled", blocks=sent)
                        return
                    sent += 1
                    if out is not None:
                        yield out
            ctx.log.info("stream_done", blocks=sent)
        except GeneratorExit:
            ctx.log.info("stream_closed", blocks=sent)
            raise
        except Exception as exc:
            raise self._fail(exc, ctx, "DoGet stream") from None
        finally:
            if stream.close is not None:
                stream.close()

    def _one_block(
        self, block: pa.RecordBatch, index: int, block_ns: int, ctx: CallContext
    ) -> pa.RecordBatch | object | None:
        """The block to send (None: dropped; _STOP: give up) after pacing and faults."""
        t = block.column(0)[0].as_py()
        if not self._wait_until(t + block_ns + self.latency_ns, ctx):
            return _STOP
        faults = self.faults
        if not faults.active:
            return block
        if faults.exit_after is not None and index >= faults.exit_after:
            ctx.log.warning("fault_exit", blocks=index)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
        if faults.error_after is not None and index >= faults.error_after:
            raise UnavailableError(
                f"injected fault: stream error after {faults.error_after} blocks"
            )
        if faults.stall_after is not None and index == faults.stall_after:
            ctx.log.info("fault_stall", seconds=faults.stall_s)
            if not self._sleep(faults.stall_s, ctx):
                return _STOP
        if faults.drops(index):
            return None
        if faults.nulls(index):
            block = _nulls_like(block)
        delay = faults.delay_for(index)
        if delay and not self._sleep(delay, ctx):
            return _STOP
        return block


_STOP = object()


def _nulls_like(block: pa.RecordBatch) -> pa.RecordBatch:
    t, cols = batch_columns(block)
    return null_block(block.schema, t, {name: len(values) for name, values in cols.items()})
