"""Executing live and open-ended streams (``start`` null, or ``end`` null).

Two phases, one output::

    catch-up (start in the past):  archive slices, read one at a time; after each, the rest
                                   [cursor, end) is planned again at the clock's now, so a
                                   retention boundary that moved meanwhile is honoured
    hand-over:                     the first open-ended slice of a re-plan starts at the
                                   cursor; its block meets the archive's last one in
                                   join_at_boundary (no gap, no duplicate)
    live:                          one read-ahead feed per channel group, read concurrently into a
                                   LiveMerge, which emits each slot when every group has it
                                   or at its deadline (null-filling late groups)

One injected clock drives every deadline. A live group whose downstream fails (or ends an
open-ended stream) is null-filled by the deadlines and reconnected with exponential backoff
and jitter (:func:`router.replicas.backoff_s`), resuming at the merge head; while it waits it
holds no thread, no downstream call and no buffer. The loop sleeps on one event, set by a
feed that has something, by the request's token (client gone, server draining, deadline) or
by the next merge deadline / reconnect time, never by a polling period; every feed (thread +
downstream call) is closed on every exit path. Bounded and live execution share their
pieces by composition: both are given one :class:`~router.streaming.Feeds`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import structlog

from router.errors import ArrakisError, UnavailableError
from router.fanout import ReplicaFeed, seconds
from router.protocol.channel import ChannelMeta
from router.protocol.gps import Clock
from router.readahead import END, ReadAhead
from router.replicas import backoff_s, is_retryable
from router.stitch import Block, LiveMerge, Rebucketer, join_at_boundary
from router.stitch.merge import coalesce_duplicates, fill_gaps
from router.stitch.output import block_to_batch
from router.streaming import Feeds, RepeatCounter, SliceReader, is_gap_block
from scopemap import StreamPlan, StreamSlice

log = structlog.get_logger("router.live")
NS = 1_000_000_000

PlanAt = Callable[[int], StreamPlan]


def max_latency_ns(metas: Sequence[ChannelMeta]) -> int:
    """The channels' latency budget (0 when none advertises one)."""
    return max((m.max_latency or 0 for m in metas), default=0)


def catch_up(plan: StreamPlan, plan_at: PlanAt) -> Iterator[StreamSlice]:
    """The slices of an open-ended stream in reading order: bounded slices one at a time, the
    remainder re-planned (``plan_at(cursor)``, at the clock's now) after each, until the
    first slice of a plan is the open-ended one, which is yielded last (the hand-over).

    Each re-plan starts exactly where the previous slice ended, so the slices still tile the
    request; a bounded slice is never empty, so the cursor strictly increases.
    """
    while plan.slices:
        if plan.uncovered:
            raise UnavailableError(
                "the stream can no longer be served from "
                f"{seconds(plan.request.start)} GPS s on: {_uncovered(plan)}"
            )
        first = plan.slices[0]
        yield first
        if first.end is None or first.end == plan.request.end:
            return
        plan = plan_at(first.end)


def _uncovered(plan: StreamPlan) -> str:
    return "; ".join(
        f"{', '.join(u.channels)} in [{seconds(u.start)}, {seconds(u.end)}): {u.reason.value}"
        for u in plan.uncovered
    )


@dataclass
class _LiveGroup:
    """One channel group of the live slice: its feed (replaced on reconnect) and re-blocker."""

    index: int
    channels: tuple[str, ...]
    endpoints: tuple[str, ...]
    rebucketer: Rebucketer
    feed: ReplicaFeed | None = None
    buffer: ReadAhead[pa.RecordBatch] | None = None
    retry_at: float | None = None  # monotonic time of the next reconnect
    reconnects: int = 0
    failures: int = 0  # reconnects since the group last delivered a batch

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
        self.feed = self.buffer = None


class LiveExecution:
    """The stitched stream of a live (``start`` null) or open-ended request. Iterate once;
    ``close()`` (idempotent, also run at the end of iteration) closes every feed."""

    def __init__(
        self,
        plan: StreamPlan,
        feeds: Feeds,
        *,
        clock: Clock,
        max_latency: int,
        plan_at: PlanAt,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.plan = plan
        self.grid = feeds.grid
        self.feeds = feeds
        self._ctx = feeds.ctx
        self._options = feeds.options
        self._clock = clock
        self._plan_at = plan_at
        self._monotonic = feeds.timer.monotonic
        self._jitter = jitter
        self.allowance = max_latency + round(self._options.live_grace * NS)
        self._archive = SliceReader(feeds)
        self._groups: list[_LiveGroup] = []
        self._wake = threading.Event()
        self._closed = False
        self.merge: LiveMerge | None = None
        self.handover: int | None = None
        self.blocks = 0
        self._gap_blocks = 0
        self._repeats = RepeatCounter()
        self._head = 0

    def __repr__(self) -> str:
        return (
            f"<LiveExecution blocks={self.blocks} handover={self.handover} merge={self.merge} "
            f"feeds={[g.feed for g in self._groups]}>"
        )

    @property
    def gap_blocks(self) -> int:
        """Blocks sent with some channel null-filled (catch-up gaps + live slots a group
        missed)."""
        return self._gap_blocks

    @property
    def duplicates_dropped(self) -> int:
        """Boundary copies merged in the catch-up and at the hand-over + late live blocks
        dropped by the merge."""
        live = self.merge.stats.late_blocks if self.merge else 0
        late_rows = sum(g.rebucketer.late_rows for g in self._groups)
        return self._repeats.count + live + late_rows + self._archive.late_rows

    # ------------------------------------------------------------------ output
    def __iter__(self) -> Iterator[pa.RecordBatch]:
        request = self.plan.request
        first = request.start if request.start is not None else self._clock.now_ns()
        head = self._head = self.grid.floor(first)
        live_slice: list[StreamSlice] = []

        def archive() -> Iterator[Block]:
            for sl in catch_up(self.plan, self._plan_at):
                if sl.end is None or sl.start is None:
                    live_slice.append(sl)
                    return
                yield from self._archive.read(sl)

        def live() -> Iterator[Block]:
            if live_slice:
                yield from self._live(live_slice[0])

        try:
            repeats = self._repeats
            blocks = join_at_boundary(
                coalesce_duplicates(repeats.watch(archive())), repeats.watch(live())
            )
            if request.start is not None:  # (the live merge itself emits every slot)
                blocks = fill_gaps(blocks, head, request.end, self.grid.duration)
            token = self._ctx.token
            for block in blocks:
                if token.cancelled:
                    raise self._ctx.error("Stream")
                if is_gap_block(block, self.grid):
                    self._gap_blocks += 1
                self.blocks += 1
                yield block_to_batch(block, self.grid)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._archive.close()
        for group in self._groups:
            group.close()

    # ------------------------------------------------------------------ live phase
    def _live(self, sl: StreamSlice) -> Iterator[Block]:
        request = self.plan.request
        now = self._clock.now_ns()
        start = self.grid.floor(sl.start) if sl.start is not None else None
        head = start if start is not None else self._head
        self.handover = start
        merge = self.merge = LiveMerge(
            len(sl.groups),
            self.grid.duration,
            head,
            allowance=self.allowance,
            now=now,
            end=request.end,
            buffer=self._options.live_buffer,
            align=start is None,
        )
        for i, group in enumerate(sl.groups):
            rebucketer = Rebucketer(self.grid, group.channels)
            g = _LiveGroup(i, group.channels, group.endpoints, rebucketer)
            self._groups.append(g)
            self._open(g, start)
        log.info(
            "live_start",
            groups=len(sl.groups),
            head=seconds(head),
            handover=seconds(start) if start is not None else None,
            allowance_s=self.allowance / NS,
        )
        absent: set[int] = set()
        unregister = self._ctx.token.on_cancel(self._wake.set)
        try:
            while True:
                self._ctx.check("Stream")
                self._wake.clear()
                for g in self._groups:
                    self._drain(g, merge)
                now = self._clock.now_ns()
                yield from merge.pop_ready(now)
                absent = self._log_absence(merge, absent)
                if merge.done or (
                    merge.exhausted
                    and request.end is None
                    and not any(g.feed is not None or g.retry_at is not None for g in self._groups)
                ):
                    return
                self._wake.wait(self._wait_s(merge, now))
        finally:
            unregister()
            log.info("live_done", **_stats(merge))
            for g in self._groups:
                g.close()

    def _wait_s(self, merge: LiveMerge, now: int) -> float | None:
        """Until the next merge deadline or reconnect (None: until something wakes us)."""
        waits: list[float] = []
        deadline = merge.deadline()
        if deadline is not None:
            waits.append(max(0.0, (deadline - now) / NS))
        for g in self._groups:
            if g.retry_at is not None:
                waits.append(max(0.0, g.retry_at - self._monotonic()))
        return min(waits) if waits else None

    def _open(self, g: _LiveGroup, start: int | None) -> None:
        g.feed = self.feeds.feed(
            g.channels, g.endpoints, start, self.plan.request.end, what="Stream live"
        )
        g.buffer = self.feeds.read_ahead(g.feed, notify=self._wake.set)
        g.retry_at = None

    def _drain(self, g: _LiveGroup, merge: LiveMerge) -> None:
        if g.buffer is None:
            if g.retry_at is not None and self._monotonic() >= g.retry_at:
                g.reconnects += 1
                log.info(
                    "live_reconnect",
                    endpoints=list(g.endpoints),
                    resume=seconds(merge.head),
                    attempt=g.reconnects,
                )
                merge.restart(g.index)
                self._open(g, merge.head)
            return
        while merge.wants(g.index):
            item = g.buffer.poll()
            if item is None:
                return
            if isinstance(item, pa.RecordBatch):
                g.failures = 0
                for block in g.rebucketer.push(item):
                    merge.push(g.index, block)
                continue
            # the feed has ended, normally or not
            g.close()
            if item is END and self.plan.request.end is not None:
                for block in g.rebucketer.finish():
                    merge.push(g.index, block)
                merge.finish(g.index)
                return
            error = (
                item
                if isinstance(item, ArrakisError)
                else UnavailableError(
                    f"{g.endpoints[0]}: the live stream of {', '.join(g.channels[:3])} ended"
                )
            )
            if isinstance(item, BaseException) and not isinstance(item, ArrakisError):
                raise item
            if not is_retryable(error):
                raise error
            g.failures += 1
            delay = backoff_s(
                g.failures,
                self._jitter(),
                self._options.live_reconnect,
                self._options.live_reconnect_cap,
            )
            g.retry_at = self._monotonic() + delay
            log.warning(
                "live_group_lost",
                endpoints=list(g.endpoints),
                channels=list(g.channels[:3]),
                error=str(error)[:500],
                retry_s=round(delay, 3),
                failures=g.failures,
            )
            return

    def _log_absence(self, merge: LiveMerge, before: set[int]) -> set[int]:
        now_absent = set(merge.absent())
        for i in sorted(now_absent - before):
            g = self._groups[i]
            log.warning(
                "live_group_late",
                endpoints=list(g.endpoints),
                channels=list(g.channels[:3]),
                **_stats(merge),
            )
        for i in sorted(before - now_absent):
            g = self._groups[i]
            log.info(
                "live_group_back",
                endpoints=list(g.endpoints),
                channels=list(g.channels[:3]),
                **_stats(merge),
            )
        return now_absent


def _stats(merge: LiveMerge) -> dict[str, int]:
    s = merge.stats
    return {
        "emitted": s.emitted,
        "complete": s.complete,
        "null_filled": s.null_filled,
        "late_blocks": s.late_blocks,
    }


__all__ = ["LiveExecution", "catch_up", "max_latency_ns"]
