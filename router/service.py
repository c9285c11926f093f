"""The router service: every Arrakis operation as parse-free, Flight-free-ish methods.

Handlers here take a parsed envelope and a request id, plan with :mod:`scopemap` (GPS now is
read once per request from the injected clock), execute with the fan-out and the stitcher,
and return values; the Flight adapter (:mod:`router.server`) only translates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from router.actions import ACTIONS, action_body
from router.admission import Admission
from router.chunkgate import ChunkGate
from router.context import FINISHED, SERVER_STOPPING, LiveContexts, RequestContext
from router.downstream import REUSE_MARKER, Call, DownstreamPool
from router.errors import (
    ArrakisError,
    CannotServeError,
    ChannelsNotAvailableError,
    InvalidRequestError,
    PlanIncompleteError,
    ServerError,
    ShuttingDownError,
    UnsupportedError,
)
from router.fanout import fetch_first, seconds
from router.healthcheck import HealthChecker
from router.healthpolicy import Policy
from router.healthpool import HealthPool, call_histogram
from router.healthregistry import HealthCollector, HealthRegistry
from router.inflight import InFlight
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
from router.replicaorder import reorder
from router.stitch import Grid
from router.streaming import Feeds, StreamExecution, StreamOptions, make_grid
from router.timers import Timer, TimerHandle
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
from scopemap.prune import prune_find

log = structlog.get_logger("router.service")

MODES = ("proxy", "redirect")


def default_chunk_slots() -> int:
    """One turn per CPU this process may run on (``router serve --chunk-slots``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    mode: str = "proxy"
    describe_ttl: float = 60.0
    # each downstream metadata call, and each stream open (its first batch), within this
    downstream_timeout: float = 10.0
    # one request's overall deadline (s; None: none), streams and metadata calls apart
    request_timeout: float | None = None
    metadata_request_timeout: float = 30.0
    workers: int = 32
    # stream execution (see StreamOptions)
    idle_timeout: float = StreamOptions.idle_timeout
    queue_size: int = StreamOptions.queue_size
    retry_backoff: float = StreamOptions.retry_backoff
    live_grace: float = StreamOptions.live_grace
    live_buffer: int = StreamOptions.live_buffer
    live_reconnect: float = StreamOptions.live_reconnect
    live_reconnect_cap: float = StreamOptions.live_reconnect_cap
    # historical chunks read, checked and written at once (router.chunkgate); 0: no limit
    chunk_slots: int = dataclasses.field(default_factory=default_chunk_slots)
    # how often the service asks gRPC whether the clients of its calls are still there
    client_watch_s: float = 0.1
    # request limits, checked at the door (router.limits)
    limits: Limits = dataclasses.field(default_factory=Limits)

    # endpoint health (router.healthpolicy, router.healthcheck)
    health_interval: float = 5.0  # s between active checks of every endpoint; 0: none
    health_timeout: float = 1.0  # deadline of one check (at most half the interval)
    max_downstream_calls: int = 100  # in flight per endpoint (gRPC's default stream limit)
    eject_after: int = 3  # consecutive failed calls that eject an endpoint
    ejection_time: float = 10.0  # s, first ejection; grows on repeats, at most 300 s

    def stream_options(self) -> StreamOptions:
        return StreamOptions(
            open_timeout=self.downstream_timeout,
            idle_timeout=self.idle_timeout,
            queue_size=self.queue_size,
            retry_backoff=self.retry_backoff,
            live_grace=self.live_grace,
            live_buffer=self.live_buffer,
            live_reconnect=self.live_reconnect,
            live_reconnect_cap=self.live_reconnect_cap,
            gate=ChunkGate(self.chunk_slots) if self.chunk_slots > 0 else None,
        )

    def timeout_for(self, request: str) -> float | None:
        """The overall deadline of a request of this kind (``--request-timeout`` for every
        kind when given; otherwise none for streams, ``metadata_request_timeout`` for the
        rest)."""
        if self.request_timeout is not None:
            return self.request_timeout
        return None if request == "Stream" else self.metadata_request_timeout

    def health_policy(self) -> Policy:
        return Policy(
            eject_after=self.eject_after,
            base_ejection=self.ejection_time,
            max_ejection=max(300.0, self.ejection_time),
            active_checks=self.health_interval > 0,
        )


@dataclass(frozen=True)
class Routing:
    """The active scope map and its index, swapped as one value on reload."""

    scope_map: ScopeMap
    index: RoutingIndex
    loaded_at_ns: int = 0  # GPS ns, shown on the status page

    @classmethod
    def of(cls, scope_map: ScopeMap, loaded_at_ns: int = 0) -> Routing:
        return cls(scope_map, RoutingIndex(scope_map), loaded_at_ns)


def _reuse(ticket: bytes) -> flight.FlightEndpoint:
    return flight.FlightEndpoint(ticket, [flight.Location(REUSE_MARKER)])


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
        timer: Timer | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if self.settings.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.settings.mode!r}")
        # drain (router.drain): ``draining`` refuses new calls; the open-ended streams'
        # contexts are cancelled at once (they end at a block boundary), every other one at
        # the drain deadline (``cancel_all``)
        self.draining = threading.Event()
        self.endless = LiveContexts()
        self.clock: Clock = clock or SystemClock()
        self._routing = Routing.of(scope_map, self.clock.now_ns())
        self._swap_lock = threading.Lock()
        self.inflight = InFlight()  # streams being served, for the status page
        self.metrics = metrics if metrics is not None else RouterMetrics()
        self.health = HealthRegistry(
            self.settings.health_policy(), max_calls=self.settings.max_downstream_calls
        )
        self.health.track(scope_map)
        self.metrics.register(HealthCollector(self.health))
        self.pool: DownstreamPool = HealthPool(
            pool or DownstreamPool(), self.health, call_histogram(self.metrics.registry)
        )
        self.cache = DescribeCache(self.settings.describe_ttl)
        self.executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="fanout")
        self.stream_options = self.settings.stream_options()
        # one timer for every deadline of the service; the requests in flight, so that a
        # draining server can cancel them all (``cancel_all``)
        self.timer = timer or Timer()
        self.requests = LiveContexts()
        self._sweep: TimerHandle | None = None
        limits = self.settings.limits
        self.admission = Admission(limits.max_streams, limits.max_streams_per_client)
        # where the DoGet of a Stream ticket is served: None (or a hook answering None)
        # here, through the connection the client already has; the front of data workers
        # (router.workers) sets it to hand out its workers' locations in turn
        self.stream_location: Callable[[], str | None] | None = None

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
        routing = Routing.of(scope_map, self.clock.now_ns())
        with self._swap_lock:
            self._routing = routing
        self.health.track(scope_map)
        self.cache.clear()
        self.pool.retain({ep.url for ep in scope_map.endpoints})

    def cancel_all(self, reason: str = SERVER_STOPPING) -> int:
        """Cancel every request in flight (and every one that starts later): each stops
        its downstream calls and threads within a second. Returns how many were live."""
        return self.requests.cancel_all(reason)

    def health_checker(self) -> HealthChecker | None:
        """The active checker of this service's endpoints (not started), None when
        ``health_interval`` is 0."""
        if self.settings.health_interval <= 0:
            return None
        assert isinstance(self.pool, HealthPool)
        return HealthChecker(
            self.health,
            self.pool.inner,
            self.settings.health_interval,
            self.settings.health_timeout,
        )

    def close(self) -> None:
        self.cancel_all()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.timer.close()
        self.pool.close()

    def context(
        self,
        request_id: str,
        request: str,
        authorization: str | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> RequestContext:
        """A new request's context, tracked until :meth:`finish`: its deadline
        (``Settings.timeout_for``) is set on the service timer, and ``gone()`` (the client
        left?) is asked by the service's one periodic sweep; either cancels its token."""
        ctx = RequestContext.with_timeout(
            request_id, self.settings.timeout_for(request), authorization, self.timer.monotonic
        )
        if ctx.deadline is not None:
            handle = self.timer.call_at(ctx.deadline, lambda: ctx.deadline_passed())
            ctx.token.on_cancel(handle.cancel)
        if gone is not None:
            with self._swap_lock:
                if self._sweep is None:
                    self._sweep = self.timer.every(
                        self.settings.client_watch_s, self.requests.sweep
                    )
        self.requests.add(ctx, gone)
        return ctx

    def finish(self, ctx: RequestContext) -> None:
        """The request is over: stop tracking it and release what waits on its token."""
        self.requests.discard(ctx)
        ctx.cancel(FINISHED)

    def begin_drain(self) -> None:
        """Start draining: every new call is refused (UNAVAILABLE "server shutting down"),
        live streams end at their next block boundary with :class:`ShuttingDownError`;
        bounded streams run on until :meth:`cancel_all` (the drain deadline)."""
        self.draining.set()
        self.endless.cancel_all(SERVER_STOPPING)

    def admit(self) -> None:
        """Refuse a new call once draining (the client retries on another router)."""
        if self.draining.is_set():
            raise ShuttingDownError()

    def call(self, ctx: RequestContext, what: str = "") -> Call:
        """The downstream call context; the client's ``authorization`` header is forwarded
        unchanged on every downstream call of the request."""
        return Call(
            ctx.request_id,
            self.settings.downstream_timeout,
            what,
            self.metrics.downstream_call,
            ctx.authorization,
        )

    # ------------------------------------------------------------------ the door
    def accept(self, data: bytes, what: str) -> Envelope:
        """The request in ``data`` (a descriptor command or ticket), refused before any
        planning when it breaks a limit (router.limits)."""
        return accept(data, what, self.settings.limits, self.clock.now_ns())

    # ------------------------------------------------------------------ GetFlightInfo
    def flight_info(self, envelope: Envelope, ctx: RequestContext) -> list[flight.FlightEndpoint]:
        self.admit()
        args = envelope.args
        # the DoGet of a router-issued ticket logs under this call's request id
        ticket = envelope.ticket(ctx.request_id)
        redirect = self.settings.mode == "redirect"
        if isinstance(args, StreamArgs):
            plan, grid, _, _ = self._stream_plan(args, ctx)
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
            return [self._stream_endpoint(ticket)]
        if isinstance(args, DescribeArgs):
            routing = self.routing
            dplan = plan_describe(
                routing.index,
                DescribeRequest(args.channels, args.time, args.replay_id),
                self.clock.now_ns(),
            )
            self._check_describe(dplan.uncovered)
            dplan = reorder(dplan, self.health.order)
            if redirect and dplan.groups:
                times = dplan.group_times or tuple(args.time for _ in dplan.groups)
                return [
                    flight.FlightEndpoint(
                        envelope.replace(channels=g.channels, time=t).encode(), g.endpoints
                    )
                    for g, t in zip(dplan.groups, times, strict=True)
                ]
            return [_reuse(ticket)]
        if isinstance(args, FindArgs):
            self._find_plan(args)
            return [_reuse(ticket)]
        if isinstance(args, PublishArgs):
            url = self._publish_endpoint(envelope)
            if redirect:
                return [flight.FlightEndpoint(envelope.encode(), [url])]
            return [_reuse(ticket)]
        raise InvalidRequestError(f"unsupported request {envelope.request}")  # pragma: no cover

    def _stream_endpoint(self, ticket: bytes) -> flight.FlightEndpoint:
        """A Stream's ticket at a data worker's location, or here when none serves."""
        location = self.stream_location() if self.stream_location is not None else None
        if location is None:
            return _reuse(ticket)
        return flight.FlightEndpoint(ticket, [flight.Location(location)])

    # ------------------------------------------------------------------ DoGet
    def do_get(
        self, envelope: Envelope, ctx: RequestContext
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        self.admit()
        args = envelope.args
        if isinstance(args, StreamArgs):
            plan, grid, metas, now = self._stream_plan(args, ctx)
            feeds = Feeds(
                self.pool,
                ctx,
                self.call(ctx, "Stream"),
                self.timer,
                grid,
                envelope,
                self.stream_options,
            )
            execution: StreamExecution | LiveExecution
            endless = args.start is None or args.end is None
            if endless:
                self.endless.add(ctx)  # a drain ends it at once (bounded ones may finish)
                execution = LiveExecution(
                    plan,
                    feeds,
                    clock=self.clock,
                    max_latency=max_latency_ns(metas),
                    plan_at=lambda start: reorder(self._replan(args, start), self.health.order),
                )
            else:
                # past its end (and the channels' latency), the downstreams hold it all
                assert args.end is not None
                historical = args.end + max_latency_ns(metas) <= now
                execution = StreamExecution(plan, feeds, historical=historical)
            log.info(
                "stream_start",
                channels=len(args.channels),
                slices=len(plan.slices),
                groups=sum(len(s.groups) for s in plan.slices),
                block_ns=grid.duration,
                live=args.start is None,
                open_ended=args.end is None,
            )
            stitched = self._observed(execution, ctx, endless)
            return grid.schema, self.inflight.track(
                ctx.request_id, args.channels, args.start, args.end, stitched
            )
        if isinstance(args, DescribeArgs):
            described = self.describe(args, ctx)
            return METADATA_SCHEMA, iter(metadata_batches([described[c] for c in args.channels]))
        if isinstance(args, FindArgs):
            found = self.find(args, envelope.version, ctx, kind=envelope.request)
            if envelope.request == "Count":
                return COUNT_SCHEMA, iter([count_batch(len(found))])
            return METADATA_SCHEMA, iter(metadata_batches(found))
        if isinstance(args, PublishArgs):
            url = self._publish_endpoint(envelope)
            _, batches = fetch_first(
                self.pool, [url], envelope.encode(), self.call(ctx, "Publish"), ctx
            )
            if not batches:
                raise ServerError(f"Publish on {url}: empty answer")
            return batches[0].schema, iter(batches)
        raise InvalidRequestError(f"unsupported request {envelope.request}")  # pragma: no cover

    def _observed(
        self, execution: StreamExecution | LiveExecution, ctx: RequestContext, endless: bool
    ) -> Iterator[pa.RecordBatch]:
        """``execution``'s batches; its stitching counters go to the metrics as they grow
        (a live stream may never end) and once more at the end."""
        relayed = self.metrics.stream_reporter(execution).relay(execution)
        return self._shutdown_aware(relayed, ctx, endless)

    def _shutdown_aware(
        self, batches: Iterator[pa.RecordBatch], ctx: RequestContext, endless: bool
    ) -> Iterator[pa.RecordBatch]:
        """A stream ended by the drain (not by its client) ends with ShuttingDownError: the
        client reconnects instead of mistaking it for its own cancellation or for the end
        (an open-ended stream never ends by itself, so a quiet end is not an answer)."""
        try:
            yield from batches
        except ArrakisError:
            if ctx.token.reason == SERVER_STOPPING:
                raise ShuttingDownError() from None
            raise
        finally:
            self.endless.discard(ctx)
        if endless and ctx.token.reason == SERVER_STOPPING:
            raise ShuttingDownError()

    # ------------------------------------------------------------------ DoExchange / actions
    def exchange(
        self,
        envelope: Envelope,
        batches: Sequence[pa.RecordBatch],
        ctx: RequestContext,
    ) -> list[pa.RecordBatch]:
        self.admit()
        if envelope.request != "Partition":
            raise UnsupportedError(f"DoExchange is only used for Partition, not {envelope.request}")
        url = self._publish_endpoint(envelope)
        call = self.call(ctx, "Partition")
        return self.pool.get(url).exchange(envelope.encode(), batches, call)

    def action(self, kind: str) -> bytes:
        self.admit()
        health = self.health.snapshot().readiness_json() if kind == "server-info" else None
        body = action_body(kind, self.routing.scope_map, self.settings.mode, health)
        if body is None:
            raise ServerError("action not valid")
        return body

    @staticmethod
    def list_actions() -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    # ------------------------------------------------------------------ execution helpers
    def describe(
        self, args: DescribeArgs, ctx: RequestContext, *, now: int | None = None
    ) -> dict[str, ChannelMeta]:
        """Channel metadata, from the cache or the downstreams. ``now``: the GPS now of the
        request this Describe serves (a stream plans and describes at one now); by default the
        clock's. The map is read here, after the cache generation (see below)."""
        scope = _credential_scope(ctx.authorization)
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
        dplan = reorder(dplan, self.health.order)
        self._check_describe(dplan.uncovered)
        times = dplan.group_times or tuple(args.time for _ in dplan.groups)
        envelope = Envelope("Describe", args)
        fresh = describe_groups(
            self.pool,
            self.executor,
            envelope,
            [(g.channels, g.endpoints, t) for g, t in zip(dplan.groups, times, strict=True)],
            self.call(ctx, "Describe"),
            ctx,
        )
        self.cache.store(fresh.values(), args.time, args.replay_id, scope, generation=generation)
        log.debug("describe_fetched", channels=len(fresh), groups=len(dplan.groups))
        return {**found, **fresh}

    def find(
        self,
        args: FindArgs,
        version: str | None,
        ctx: RequestContext,
        *,
        kind: str = "Find",
    ) -> list[ChannelMeta]:
        """Find (or Count: ``kind``, named in errors) on the endpoints whose scopes can hold
        a match, one replica per disjoint scope group, healthiest first."""
        routing = self.routing
        fplan = reorder(self._find_plan(args, routing), self.health.order)
        targets = prune_find(routing.index, fplan, args.pattern)
        log.debug("find_targets", targets=len(targets), pruned=len(fplan.targets) - len(targets))
        return find_targets(
            self.pool,
            self.executor,
            Envelope(kind, args, version),
            [(t.endpoints, t.time, t.replay_id, scopes) for t, scopes in targets],
            self.call(ctx, "Find"),
            ctx,
        )

    def _find_plan(self, args: FindArgs, routing: Routing | None = None) -> FindPlan:
        fplan = plan_find(
            (routing or self.routing).index,
            FindRequest(args.time, args.replay_id),
            self.clock.now_ns(),
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
        self, args: StreamArgs, ctx: RequestContext
    ) -> tuple[StreamPlan, Grid, list[ChannelMeta], int]:
        """The request's plan, output grid and channels, and the GPS now it was planned at."""
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
            ctx,
            now=now,
        )
        metas = [found[c] for c in args.channels]
        grid = make_grid(metas)
        return (
            reorder(self._aligned(plan, args, grid, routing, now), self.health.order),
            grid,
            metas,
            now,
        )

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
