"""Executing a stream plan: one GroupFeed per channel group, slices chained in time order,
everything stitched into one on-grid block stream (see :mod:`router.stitch`).

A plan of one slice with one channel group (the common case) takes a short path: the
serving thread reads the downstream itself (an inline feed) and re-yields its rows while they
are whole on-grid blocks (:class:`router.stitch.direct.OnGridRelay`), falling back to the
general pipeline, in the same thread, at the first row that is not."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
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


def slice_label(sl: StreamSlice, channels: Sequence[str]) -> str:
    shown = ", ".join(channels[:3]) + (f" +{len(channels) - 3}" if len(channels) > 3 else "")
    return f"[{seconds(sl.start)}, {seconds(sl.end)}) {{{shown}}}"


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
        self.duplicates_dropped = 0

    def __repr__(self) -> str:
        return (
            f"<StreamExecution slices={len(self.plan.slices)} blocks={self.blocks} "
            f"feeds={self._feeds}>"
        )

    def _open_slice(self, sl: StreamSlice, *, inline: bool = False) -> list[GroupFeed]:
        """Create and start one feed per channel group of the slice (``inline``: read by the
        consumer's thread, see :class:`GroupFeed`)."""
        grid = self.grid
        lo = grid.floor(sl.start) if sl.start is not None else None
        feeds: list[GroupFeed] = []
        for group in sl.groups:

            def command_for(
                resume: int | None, channels: tuple[str, ...] = group.channels
            ) -> bytes:
                start = resume if resume is not None else lo
                return self._envelope.replace(channels=channels, start=start, end=sl.end).encode()

            label = slice_label(sl, group.channels)
            feeds.append(
                GroupFeed(
                    self._pool,
                    group.endpoints,
                    command_for,
                    dataclasses.replace(self._call, what=f"Stream {label}"),
                    batch_end=batch_end(grid),
                    should_stop=self._should_stop,
                    idle_timeout=self._options.idle_timeout,
                    queue_size=self._options.queue_size,
                    poll=self._options.poll,
                    label=label,
                    inline=inline,
                )
            )
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
            blocks = coalesce_duplicates(self._count_repeats(merged))
            channels = len(self.grid.channels)
            for block in fill_gaps(blocks, head, request.end, self.grid.duration):
                if self._should_stop():
                    raise CancelledError("the client cancelled the stream")
                if block.source is None and len(block.cells) < channels:
                    self.gap_blocks += 1  # some channel is null-filled in this block
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

    def _count_repeats(self, blocks: Iterator[Block]) -> Iterator[Block]:
        """Pass ``blocks`` through, counting those at or before the latest slot seen: the
        ones :func:`coalesce_duplicates` merges into the first copy or drops."""
        latest: int | None = None
        for block in blocks:
            if latest is not None and block.time <= latest:
                self.duplicates_dropped += 1
            else:
                latest = block.time
            yield block

    def close(self) -> None:
        for feed in self._feeds:
            feed.close()
