"""Executing a stream plan: one GroupFeed per channel group, slices chained in time order,
everything stitched into one on-grid block stream (see :mod:`router.stitch`).

A plan of one slice with one channel group (the common case) takes a short path: the
serving thread reads the downstream itself (an inline feed) and re-yields its rows while they
are whole on-grid blocks (:class:`router.stitch.direct.OnGridRelay`), falling back to the
general pipeline, in the same thread, at the first row that is not."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import pyarrow as pa
import structlog

from router.downstream import Call, DownstreamPool
from router.errors import CancelledError, UnavailableError
from router.fanout import GroupFeed
from router.protocol.arrow import stream_schema
from router.protocol.blocks import block_duration
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import Envelope
from router.stitch import (
    Block,
    Grid,
    coalesce_duplicates,
    fill_gaps,
    merge_groups,
    rebucket,
    trim,
)
from router.stitch.direct import OnGridRelay
from router.stitch.output import block_to_batch
from router.stitch.rebucket import cell_length
from scopemap import StreamPlan, StreamSlice

log = structlog.get_logger("router.streaming")
NS = 1_000_000_000


def make_grid(metas: Sequence[ChannelMeta]) -> Grid:
    """The output grid: blocks of the lcm of the advertised strides, schema of §4.3."""
    no_stride = [m.name for m in metas if not m.stride]
    if no_stride:
        raise UnavailableError(
            f"channel(s) {{{', '.join(no_stride)}}} have no stride in their metadata; "
            "they cannot be streamed"
        )
    return _grid(tuple((m.name, m.data_type, m.sample_rate, int(m.stride or 0)) for m in metas))


@functools.lru_cache(maxsize=32)
def _grid(layout: tuple[tuple[str, str, int, int], ...]) -> Grid:
    """The grid of ``(name, dtype, rate, stride)`` channels, built once per layout: a
    request's GetFlightInfo and its DoGet (and every repeat of a request) share it. Grids
    are immutable but for their cache of null cells, which any stream may fill."""
    metas = [ChannelMeta(name, dtype, rate, stride) for name, dtype, rate, stride in layout]
    duration = block_duration(stride for *_, stride in layout)
    try:
        return Grid.from_schema(stream_schema(metas), duration)
    except ValueError as exc:
        raise UnavailableError(f"cannot build the stream blocks: {exc}") from None


def seconds(t: int | None) -> str:
    if t is None:
        return "now"
    whole, frac = divmod(t, NS)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


def span_label(start: int | None, end: int | None, channels: Sequence[str]) -> str:
    """``[start, end) {A, B, C +N}``: a feed's span and (the first three of) its channels."""
    shown = ", ".join(channels[:3]) + (f" +{len(channels) - 3}" if len(channels) > 3 else "")
    return f"[{seconds(start)}, {seconds(end)}) {{{shown}}}"


def slice_label(sl: StreamSlice, channels: Sequence[str]) -> str:
    return span_label(sl.start, sl.end, channels)


def is_gap_block(block: Block, grid: Grid) -> bool:
    """Whether some channel of an output block is null-filled (no downstream delivered it)."""
    return block.source is None and len(block.cells) < len(grid.channels)


def batch_end(grid: Grid) -> Callable[[pa.RecordBatch], int | None]:
    """The time just after the last row of a downstream batch (where a replica resumes)."""
    rates: Mapping[str, int] = {n: c.rate for n, c in grid.channels.items()}

    def end(batch: pa.RecordBatch) -> int | None:
        if batch.num_rows == 0:
            return None
        last = batch.num_rows - 1
        t = int(batch.column(0)[last].as_py())
        for name in batch.schema.names[1:]:
            rate = rates.get(name)
            if rate:
                n = cell_length(batch.column(name).slice(last, 1))
                return t + n * NS // rate
        return None

    return end


class RepeatCounter:
    """Counts the blocks at or before the latest slot already seen: those that
    :func:`coalesce_duplicates` and :func:`join_at_boundary` merge into the first copy or
    drop. Streams read one after another (archive, then live) share one counter."""

    def __init__(self) -> None:
        self.latest: int | None = None
        self.count = 0

    def __repr__(self) -> str:
        return f"<RepeatCounter latest={self.latest} count={self.count}>"

    def watch(self, blocks: Iterable[Block]) -> Iterator[Block]:
        """``blocks`` passed through, counted."""
        for block in blocks:
            if self.latest is not None and block.time <= self.latest:
                self.count += 1
            else:
                self.latest = block.time
            yield block


@dataclass
class StreamOptions:
    idle_timeout: float = 30.0
    queue_size: int = 16
    poll: float = 0.05
    # live streams (router.live): grace past a block's end + max_latency before a missing
    # group is null-filled (s), blocks held per group (backpressure), reconnect delay (s)
    live_grace: float = 0.5
    live_buffer: int = 64
    live_reconnect: float = 1.0


class StreamExecution:
    """The stitched stream of one plan. Iterate once; ``close()`` (idempotent, also run at the
    end of iteration) closes every downstream feed still open."""

    def __init__(
        self,
        plan: StreamPlan,
        grid: Grid,
        envelope: Envelope,
        pool: DownstreamPool,
        call: Call,
        options: StreamOptions,
        should_stop: Callable[[], bool],
    ) -> None:
        self.plan = plan
        self.grid = grid
        self._envelope = envelope
        self._pool = pool
        self._call = call
        self._options = options
        self._should_stop = should_stop
        self._feeds: list[GroupFeed] = []
        self.blocks = 0
        self.gap_blocks = 0
        self._repeats = RepeatCounter()

    @property
    def duplicates_dropped(self) -> int:
        """Downstream blocks merged into an earlier copy of their slot, or dropped."""
        return self._repeats.count

    def __repr__(self) -> str:
        return (
            f"<StreamExecution slices={len(self.plan.slices)} blocks={self.blocks} "
            f"feeds={self._feeds}>"
        )

    def group_feed(
        self,
        channels: tuple[str, ...],
        endpoints: Sequence[str],
        start: int | None,
        end: int | None,
        *,
        what: str = "Stream",
        inline: bool = False,
        notify: threading.Event | None = None,
    ) -> GroupFeed:
        """The (not yet started) feed of one channel group over ``[start, end)``: a replica
        taking over resumes where the last one stopped. Bounded and live streams open their
        feeds here, so they label, command and configure them the same way."""
        envelope = self._envelope

        def command_for(resume: int | None) -> bytes:
            at = resume if resume is not None else start
            return envelope.replace(channels=channels, start=at, end=end).encode()

        label = span_label(start, end, channels)
        return GroupFeed(
            self._pool,
            endpoints,
            command_for,
            dataclasses.replace(self._call, what=f"{what} {label}"),
            batch_end=batch_end(self.grid),
            should_stop=self._should_stop,
            idle_timeout=self._options.idle_timeout,
            queue_size=self._options.queue_size,
            poll=self._options.poll,
            label=label,
            notify=notify,
            inline=inline,
        )

    def _open_slice(self, sl: StreamSlice, *, inline: bool = False) -> list[GroupFeed]:
        """Create and start one feed per channel group of the slice (``inline``: read by the
        consumer's thread, see :class:`GroupFeed`)."""
        lo = self.grid.floor(sl.start) if sl.start is not None else None
        feeds = [
            self.group_feed(group.channels, group.endpoints, lo, sl.end, inline=inline)
            for group in sl.groups
        ]
        self._feeds.extend(feeds)
        log.debug(
            "slice_open",
            slice=f"[{seconds(sl.start)}, {seconds(sl.end)})",
            groups=len(feeds),
            inline=inline,
        )
        for feed in feeds:
            feed.start()
        return feeds

    def _slice_blocks(self, sl: StreamSlice, feeds: list[GroupFeed]) -> Iterator[Block]:
        lo = self.grid.floor(sl.start) if sl.start is not None else None
        try:
            merged = merge_groups(
                rebucket(feed, self.grid, group.channels)
                for feed, group in zip(feeds, sl.groups, strict=True)
            )
            yield from trim(merged, lo, sl.end)
        finally:
            for feed in feeds:
                feed.close()

    def read_slice(self, sl: StreamSlice) -> Iterator[Block]:
        """One slice's merged, trimmed blocks (its feeds are opened now, closed at the end)."""
        return self._slice_blocks(sl, self._open_slice(sl))

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        request = self.plan.request
        assert request.start is not None
        head = self.grid.floor(request.start)
        slices = self.plan.slices
        if len(slices) == 1 and len(slices[0].groups) == 1:
            return self._direct(slices[0], head)
        return self._general(head)

    def _general(self, head: int) -> Iterator[pa.RecordBatch]:
        request = self.plan.request
        try:
            # Every slice's downstream calls start now (each bounded by its feed's queue):
            # a later slice is opened while its retention window still holds the data,
            # not after the earlier slices have been read.
            opened = [(sl, self._open_slice(sl)) for sl in self.plan.slices]
            merged = chain.from_iterable(self._slice_blocks(sl, feeds) for sl, feeds in opened)
            blocks = coalesce_duplicates(self._repeats.watch(merged))
            for block in fill_gaps(blocks, head, request.end, self.grid.duration):
                if self._should_stop():
                    raise CancelledError("the client cancelled the stream")
                if is_gap_block(block, self.grid):
                    self.gap_blocks += 1
                self.blocks += 1
                yield block_to_batch(block, self.grid)
        finally:
            self.close()

    def _direct(self, sl: StreamSlice, head: int) -> Iterator[pa.RecordBatch]:
        """One slice, one group: read in this thread, rows passed through when whole. The
        feed's watchdog polls ``should_stop`` (no call per block, see router.server.guarded)
        and cancels the downstream read, which ends the feed with CancelledError."""
        (feed,) = self._open_slice(sl, inline=True)
        batches = iter(feed)
        relay = OnGridRelay(batches, self.grid, head, self.plan.request.end)
        try:
            for batch in relay:
                if feed.client_left:
                    raise CancelledError("the client cancelled the stream")
                self.blocks += 1
                yield batch
        finally:
            self.gap_blocks += relay.gap_blocks
            if relay.fallback is not None:
                log.info("stream_fallback", slice=feed.label, reason=relay.fallback)
            batches.close()
            self.close()

    def close(self) -> None:
        for feed in self._feeds:
            feed.close()
