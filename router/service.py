"""The router service: every Arrakis operation as parse-free, Flight-free-ish methods.

Handlers here take a parsed envelope and a request id, plan with :mod:`scopemap` (GPS now is
read once per request from the injected clock), execute with the fan-out and the stitcher,
and return values; the Flight adapter (:mod:`router.server`) only translates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from router.actions import ACTIONS, action_body
from router.admission import Admission
from router.downstream import REUSE_MARKER, Call, DownstreamPool
from router.errors import (
    CannotServeError,
    ChannelsNotAvailableError,
    InvalidRequestError,
    PlanIncompleteError,
    ServerError,
    UnsupportedError,
)
from router.fanout import fetch_first
from router.limits import Limits, accept, align_down, align_up
from router.live import LiveExecution, max_latency_ns
from router.metadata import DescribeCache, describe_groups, find_targets
from router.metrics import RouterMetrics
from router.protocol.arrow import (
    COUNT_SCHEMA,
    METADATA_SCHEMA,
    count_batch,
    metadata_batches,
)
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import (
    DescribeArgs,
    Envelope,
    FindArgs,
    PublishArgs,
    StreamArgs,
)
from router.protocol.gps import Clock, SystemClock
from router.stitch import Grid
from router.streaming import StreamExecution, StreamOptions, make_grid, seconds
from scopemap import (
    DescribeRequest,
    FindPlan,
    FindRequest,
    PublishRequest,
    RoutingIndex,
    ScopeMap,
    StreamPlan,
    StreamRequest,
    Uncovered,
    plan_describe,
    plan_find,
    plan_publish,
    plan_stream,
)

log = structlog.get_logger("router.service")

MODES = ("proxy", "redirect")


@dataclass(frozen=True)
class Settings:
    mode: str = "proxy"
    describe_ttl: float = 60.0
    downstream_timeout: float = 10.0
    workers: int = 32
    # stream execution: same names as StreamOptions fields, whose defaults are the only ones
    idle_timeout: float = StreamOptions.idle_timeout
    queue_size: int = StreamOptions.queue_size
    live_grace: float = StreamOptions.live_grace
    live_buffer: int = StreamOptions.live_buffer
    live_reconnect: float = StreamOptions.live_reconnect
    # request limits, checked at the door (router.limits)
    limits: Limits = dataclasses.field(default_factory=Limits)


@dataclass(frozen=True)
class Routing:
    """The active scope map and its index, swapped as one value on reload."""

    scope_map: ScopeMap
    index: RoutingIndex

    @classmethod
    def of(cls, scope_map: ScopeMap) -> Routing:
        return cls(scope_map, RoutingIndex(scope_map))


def _reuse(command: bytes) -> flight.FlightEndpoint:
    return flight.FlightEndpoint(command, [flight.Location(REUSE_MARKER)])


def _credential_scope(authorization: str | None) -> str | None:
    """What keeps cached metadata of callers with different credentials apart: a digest of
    the forwarded ``authorization`` header (never the token itself), None without one."""
    if authorization is None:
        return None
    return hashlib.sha256(authorization.encode()).hexdigest()


def uncovered_text(uncovered: Sequence[Uncovered]) -> str:
    parts = []
    for u in uncovered:
        end = seconds(u.end) if u.end is not None else "open"
        parts.append(
            f"{', '.join(u.channels)} in [{seconds(u.start)}, {end}) GPS s: {u.reason.value}"
        )
    return "cannot serve the whole request: " + "; ".join(parts)


class RouterService:
    """Everything the Flight adapter calls. Thread-safe; the routing value is swapped whole."""

    def __init__(
        self,
        scope_map: ScopeMap,
        settings: Settings | None = None,
        *,
        pool: DownstreamPool | None = None,
        clock: Clock | None = None,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if self.settings.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.settings.mode!r}")
        self._routing = Routing.of(scope_map)
        self._swap_lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = pool or DownstreamPool()
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics if metrics is not None else RouterMetrics()
        self.cache = DescribeCache(self.settings.describe_ttl)
        self.executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="fanout")
        limits = self.settings.limits
        self.admission = Admission(limits.max_streams, limits.max_streams_per_client)
        self.stream_options = StreamOptions(
            **{
                f.name: getattr(self.settings, f.name)
                for f in dataclasses.fields(StreamOptions)
                if hasattr(self.settings, f.name)
            }
        )

    def __repr__(self) -> str:
        return (
            f"<RouterService mode={self.settings.mode} "
            f"endpoints={len(self.routing.scope_map.endpoints)} cache={self.cache!r}>"
        )

    # ------------------------------------------------------------------ state
    @property
    def routing(self) -> Routing:
        return self._routing

    def replace_map(self, scope_map: ScopeMap) -> None:
        """Make a validated map active (atomic swap); cached metadata is dropped, and so are
        the answers of Describes still running against the old map (cache generation)."""
        routing = Routing.of(scope_map)
        with self._swap_lock:
            self._routing = routing
        self.cache.clear()
        self.pool.retain({ep.url for ep in scope_map.endpoints})

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    def call(self, request_id: str, what: str = "", authorization: str | None = None) -> Call:
        """The downstream call context; ``authorization`` (the client's header) is forwarded
        unchanged on every downstream call of the request."""
        return Call(
            request_id,
            self.settings.downstream_timeout,
            what,
            self.metrics.downstream_call,
            authorization,
        )

    # ------------------------------------------------------------------ the door
    def accept(self, data: bytes, what: str) -> Envelope:
        """The request in ``data`` (a descriptor command or ticket), refused before any
        planning when it breaks a limit (router.limits)."""
        return accept(data, what, self.settings.limits, self.clock.now_ns())

    # ------------------------------------------------------------------ GetFlightInfo
    def flight_info(
        self, envelope: Envelope, request_id: str, authorization: str | None = None
    ) -> list[flight.FlightEndpoint]:
        args = envelope.args
        command = envelope.encode()
        redirect = self.settings.mode == "redirect"
        if isinstance(args, StreamArgs):
            plan, grid, _ = self._stream_plan(args, request_id, authorization)
            if redirect and len(plan.slices) == 1:
                start = grid.floor(args.start) if args.start is not None else None
                # a direct-read group: the Kafka brokers first (the client reads them
                # itself), then the group's servers (PROTOCOL §8.5)
                return [
                    flight.FlightEndpoint(
                        envelope.replace(channels=g.channels, start=start).encode(),
                        [*g.direct_read, *g.endpoints],
                    )
                    for g in plan.slices[0].groups
                ]
            return [_reuse(command)]
        if isinstance(args, DescribeArgs):
            routing = self.routing
            dplan = plan_describe(
                routing.index,
                DescribeRequest(args.channels, args.time, args.replay_id),
                self.clock.now_ns(),
            )
            self._check_describe(dplan.uncovered)
            if redirect and dplan.groups:
                times = dplan.group_times or tuple(args.time for _ in dplan.groups)
                return [
                    flight.FlightEndpoint(
                        envelope.replace(channels=g.channels, time=t).encode(), g.endpoints
                    )
                    for g, t in zip(dplan.groups, times, strict=True)
                ]
            return [_reuse(command)]
        if isinstance(args, FindArgs):
            self._find_plan(args)
            return [_reuse(command)]
        if isinstance(args, PublishArgs):
            url = self._publish_endpoint(envelope)
            if redirect:
                return [flight.FlightEndpoint(command, [url])]
            return [_reuse(command)]
        raise InvalidRequestError(f"unsupported request {envelope.request}")  # pragma: no cover

    # ------------------------------------------------------------------ DoGet
    def do_get(
        self,
        envelope: Envelope,
        request_id: str,
        should_stop: Callable[[], bool],
        authorization: str | None = None,
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        args = envelope.args
        if isinstance(args, StreamArgs):
            plan, grid, metas = self._stream_plan(args, request_id, authorization)
            call = self.call(request_id, "Stream", authorization)
            execution: StreamExecution | LiveExecution
            if args.start is None or args.end is None:
                execution = LiveExecution(
                    plan,
                    grid,
                    envelope,
                    self.pool,
                    call,
                    self.stream_options,
                    should_stop,
                    clock=self.clock,
                    max_latency=max_latency_ns(metas),
                    plan_at=lambda start: self._replan(args, start),
                )
            else:
                execution = StreamExecution(
                    plan, grid, envelope, self.pool, call, self.stream_options, should_stop
                )
            log.info(
                "stream_start",
                channels=len(args.channels),
                slices=len(plan.slices),
                groups=sum(len(s.groups) for s in plan.slices),
                block_ns=grid.duration,
                live=args.start is None,
                open_ended=args.end is None,
            )
            return grid.schema, self._observed(execution)
        if isinstance(args, DescribeArgs):
            described = self.describe(args, request_id, authorization)
            return METADATA_SCHEMA, iter(metadata_batches([described[c] for c in args.channels]))
        if isinstance(args, FindArgs):
            found = self.find(args, envelope.version, request_id, authorization)
            if envelope.request == "Count":
                return COUNT_SCHEMA, iter([count_batch(len(found))])
            return METADATA_SCHEMA, iter(metadata_batches(found))
        if isinstance(args, PublishArgs):
            url = self._publish_endpoint(envelope)
            _, batches = fetch_first(
                self.pool,
                [url],
                envelope.encode(),
                self.call(request_id, "Publish", authorization),
            )
            if not batches:
                raise ServerError(f"Publish on {url}: empty answer")
            return batches[0].schema, iter(batches)
        raise InvalidRequestError(f"unsupported request {envelope.request}")  # pragma: no cover

    def _observed(self, execution: StreamExecution | LiveExecution) -> Iterator[pa.RecordBatch]:
        """``execution``'s batches; its stitching counters go to the metrics as they grow
        (a live stream may never end) and once more at the end."""
        return self.metrics.stream_reporter(execution).relay(execution)

    # ------------------------------------------------------------------ DoExchange / actions
    def exchange(
        self,
        envelope: Envelope,
        batches: Sequence[pa.RecordBatch],
        request_id: str,
        authorization: str | None = None,
    ) -> list[pa.RecordBatch]:
        if envelope.request != "Partition":
            raise UnsupportedError(f"DoExchange is only used for Partition, not {envelope.request}")
        url = self._publish_endpoint(envelope)
        return self.pool.get(url).exchange(
            envelope.encode(), batches, self.call(request_id, "Partition", authorization)
        )

    def action(self, kind: str) -> bytes:
        body = action_body(kind, self.routing.scope_map, self.settings.mode)
        if body is None:
            raise ServerError("action not valid")
        return body

    @staticmethod
    def list_actions() -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    # ------------------------------------------------------------------ execution helpers
    def describe(
        self,
        args: DescribeArgs,
        request_id: str,
        authorization: str | None = None,
        *,
        now: int | None = None,
    ) -> dict[str, ChannelMeta]:
        """Channel metadata, from the cache or the downstreams. ``now``: the GPS now of the
        request this Describe serves (a stream plans and describes at one now); by default the
        clock's. The map is read here, after the cache generation (see below)."""
        scope = _credential_scope(authorization)
        # read before the routing: a reload swaps the map, then clears (bumps) the cache
        generation = self.cache.generation
        found, missing = self.cache.lookup(args.channels, args.time, args.replay_id, scope)
        if not missing:
            return found
        dplan = plan_describe(
            self.routing.index,
            DescribeRequest(tuple(missing), args.time, args.replay_id),
            self.clock.now_ns() if now is None else now,
        )
        self._check_describe(dplan.uncovered)
        times = dplan.group_times or tuple(args.time for _ in dplan.groups)
        envelope = Envelope("Describe", args)
        fresh = describe_groups(
            self.pool,
            self.executor,
            envelope,
            [(g.channels, g.endpoints, t) for g, t in zip(dplan.groups, times, strict=True)],
            self.call(request_id, "Describe", authorization),
        )
        self.cache.store(fresh.values(), args.time, args.replay_id, scope, generation=generation)
        log.debug("describe_fetched", channels=len(fresh), groups=len(dplan.groups))
        return {**found, **fresh}

    def find(
        self,
        args: FindArgs,
        version: str | None,
        request_id: str,
        authorization: str | None = None,
    ) -> list[ChannelMeta]:
        fplan = self._find_plan(args)
        return find_targets(
            self.pool,
            self.executor,
            Envelope("Find", args, version),
            [(t.endpoints, t.time, t.replay_id) for t in fplan.targets],
            self.call(request_id, "Find", authorization),
        )

    def _find_plan(self, args: FindArgs) -> FindPlan:
        fplan = plan_find(
            self.routing.index, FindRequest(args.time, args.replay_id), self.clock.now_ns()
        )
        if not fplan.targets:
            raise CannotServeError(
                "Could not serve request (channels + time) from any known endpoint."
            )
        return fplan

    @staticmethod
    def _check_describe(uncovered: Sequence[Uncovered]) -> None:
        if uncovered:
            channels = [c for u in uncovered for c in u.channels]
            reasons = sorted({u.reason.value for u in uncovered})
            raise ChannelsNotAvailableError(channels, "; ".join(reasons))

    def _stream_plan(
        self, args: StreamArgs, request_id: str, authorization: str | None = None
    ) -> tuple[StreamPlan, Grid, list[ChannelMeta]]:
        if not args.channels:
            raise InvalidRequestError("invalid Stream request: args.channels: no channels")
        # one map and one GPS now for the request's plan and its aligned re-plan (a reload
        # swapping the map in between must not mix two maps)
        routing, now = self.routing, self.clock.now_ns()
        plan = self._replan(args, args.start, routing, now)
        if plan.uncovered:
            raise PlanIncompleteError(uncovered_text(plan.uncovered))
        found = self.describe(
            DescribeArgs(args.channels, args.start, args.replay_id),
            request_id,
            authorization,
            now=now,
        )
        metas = [found[c] for c in args.channels]
        grid = make_grid(metas)
        return self._aligned(plan, args, grid, routing, now), grid, metas

    def _aligned(
        self, plan: StreamPlan, args: StreamArgs, grid: Grid, routing: Routing, now: int
    ) -> StreamPlan:
        """A bounded stream's blocks cover ``[floor(start), ceil(end))`` on the grid (whole
        blocks, as one downstream would send them): plan that span, so the part of the last
        block past ``end`` comes from whoever holds it rather than ending as nulls where a
        group's own stride is shorter than the grid. The exact plan stays when the aligned
        span is not fully covered (then only ``[start, end)`` is promised)."""
        if args.start is None or args.end is None:
            return plan
        lo, hi = align_down(args.start, grid.duration), align_up(args.end, grid.duration)
        if (lo, hi) == (args.start, args.end):
            return plan
        request = dataclasses.replace(plan.request, start=lo, end=hi)
        aligned = plan_stream(routing.index, request, now)
        return plan if aligned.uncovered else aligned

    def _replan(
        self,
        args: StreamArgs,
        start: int | None,
        routing: Routing | None = None,
        now: int | None = None,
    ) -> StreamPlan:
        """The plan of ``args`` from ``start`` on, on ``routing`` at ``now`` (default: the
        active map at the clock's now, as a live stream's catch-up re-plans where each slice
        ends: retention boundaries move with the clock)."""
        routing = routing or self.routing
        return plan_stream(
            routing.index,
            StreamRequest(
                args.channels,
                start,
                args.end,
                replay_id=args.replay_id,
                replay_start=args.replay_start,
                replay_end=args.replay_end,
            ),
            self.clock.now_ns() if now is None else now,
        )

    def _publish_endpoint(self, envelope: Envelope) -> str:
        args = envelope.args
        assert isinstance(args, PublishArgs)
        pplan = plan_publish(
            self.routing.index,
            PublishRequest(args.publisher_id, args.replay_id),
            self.clock.now_ns(),
        )
        if pplan.endpoint is None:
            raise UnsupportedError(
                f"{envelope.request.lower()}: no endpoint is authoritative for publisher "
                f"{args.publisher_id!r}"
            )
        return pplan.endpoint
