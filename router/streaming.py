"""Executing a bounded stream plan: one feed per channel group, slices chained in time order,
everything stitched into one on-grid block stream (see :mod:`router.stitch`).

:class:`Feeds` opens every feed of a request (bounded and live alike, see
:mod:`router.live`): a :class:`~router.fanout.ReplicaFeed` (replica failover, open and idle
deadlines, the request's token) wrapped, when several groups are read at once, in a
:class:`~router.readahead.ReadAhead` (one bounded buffer, one reader thread).

A plan of one slice with one channel group (the common case) takes a short path: the
serving thread reads the feed itself and re-yields its rows while they are whole on-grid
blocks (:class:`router.stitch.direct.OnGridRelay`), falling back to the general pipeline,
in the same thread, at the first row that is not."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

import pyarrow as pa
import structlog

from router.chunkgate import ChunkGate
from router.context import RequestContext
from router.downstream import Call, DownstreamPool
from router.errors import UnavailableError
from router.fanout import ReplicaFeed, seconds
from router.inflight import blocks_in
from router.outstream import Item
from router.protocol.arrow import stream_schema
from router.protocol.blocks import block_duration
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import Envelope
from router.readahead import ReadAhead
from router.stitch import (
    Block,
    Grid,
    Rebucketer,
    coalesce_duplicates,
    fill_gaps,
    merge_groups,
    trim,
)
from router.stitch.direct import OnGridRelay
from router.stitch.output import block_to_batch
from router.stitch.rebucket import cell_length, stitch_rows
from router.timers import Timer
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


def chunk_rows(grid: Grid, budget: int) -> int:
    """Blocks per chunk: as many as fit ``budget`` bytes of samples (1 to 256)."""
    block = sum(c.samples * max(1, c.value_type.bit_width // 8) for c in grid.channels.values())
    return int(max(1, min(256, budget // max(1, block))))


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


@dataclass(frozen=True)
class StreamOptions:
    """How streams are executed (the service builds it from its settings)."""

    open_timeout: float = 10.0  # a stream's first batch within this (s)
    idle_timeout: float = 30.0  # then each next batch within this (s)
    queue_size: int = 16  # batches read ahead per group
    retry_backoff: float = 0.5  # before the once-more attempt on a restarting endpoint (s)
    # live streams (router.live): grace past a block's end + max_latency before a missing
    # group is null-filled (s), blocks held per group (backpressure), first reconnect delay
    # (s, doubled per refused reconnect up to live_reconnect_cap, with jitter)
    live_grace: float = 0.5
    live_buffer: int = 64
    live_reconnect: float = 0.5
    live_reconnect_cap: float = 30.0
    # historical one-group streams: blocks handed to the output stage per chunk (bytes of
    # samples)
    chunk_bytes: int = 512 * 1024
    # turns for those chunks, shared by every stream of the process (router.chunkgate;
    # ``router serve --chunk-slots``); None: every stream at once
    gate: ChunkGate | None = field(default=None, compare=False, repr=False)


class Feeds:
    """Opens the feeds of one request: same labels, commands, deadlines and token for the
    bounded and the live execution (both are given one, neither builds the other)."""

    def __init__(
        self,
        pool: DownstreamPool,
        ctx: RequestContext,
        call: Call,
        timer: Timer,
        grid: Grid,
        envelope: Envelope,
        options: StreamOptions,
    ) -> None:
        self.pool = pool
        self.ctx = ctx
        self.call = call
        self.timer = timer
        self.grid = grid
        self.envelope = envelope
        self.options = options
        self._batch_end = batch_end(grid)

    def __repr__(self) -> str:
        return f"<Feeds {self.ctx.request_id}>"

    def feed(
        self,
        channels: tuple[str, ...],
        endpoints: Sequence[str],
        start: int | None,
        end: int | None,
        *,
        what: str = "Stream",
    ) -> ReplicaFeed:
        """The feed of one channel group over ``[start, end)``: a replica taking over
        resumes where the last one stopped."""
        envelope = self.envelope

        def command_for(resume: int | None) -> bytes:
            at = resume if resume is not None else start
            return envelope.replace(channels=channels, start=at, end=end).encode()

        label = span_label(start, end, channels)
        return ReplicaFeed(
            self.pool,
            self.ctx,
            endpoints,
            command_for,
            dataclasses.replace(self.call, what=f"{what} {label}"),
            start=start,
            end=end,
            batch_end=self._batch_end,
            timer=self.timer,
            open_timeout=self.options.open_timeout,
            idle_timeout=self.options.idle_timeout,
            retry_backoff=self.options.retry_backoff,
            label=label,
        )

    def read_ahead(
        self, feed: ReplicaFeed, notify: Callable[[], None] | None = None, size: int = 0
    ) -> ReadAhead[pa.RecordBatch]:
        """``feed`` read by its own thread into a bounded buffer (started)."""
        return ReadAhead(
            iter(feed),
            self.ctx,
            size=size or self.options.queue_size,
            name=feed.label,
            interrupt=feed.cancel,
            notify=notify,
        ).start()


def endpoints_of(feeds: Iterable[ReplicaFeed]) -> list[str]:
    """The endpoints ``feeds`` read from last (for logs)."""
    return sorted({f.url for f in feeds if f.url is not None})


class SliceReader:
    """Reads bounded slices: one read-ahead feed per channel group, merged and trimmed;
    every buffer it opened is closed by :meth:`close` (and at the end of each slice)."""

    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds
        self.grid = feeds.grid
        self._open: list[ReadAhead[pa.RecordBatch]] = []
        self._rebucketers: list[Rebucketer] = []  # of the slices being read
        self._late_closed = 0  # late rows of the slices already read
        self.feeds_read: list[ReplicaFeed] = []  # (one per group and slice: bounded)

    @property
    def late_rows(self) -> int:
        """Downstream rows dropped as repeats of a slot already taken, every group."""
        return self._late_closed + sum(r.late_rows for r in self._rebucketers)

    def open(self, sl: StreamSlice) -> list[ReadAhead[pa.RecordBatch]]:
        lo = self.grid.floor(sl.start) if sl.start is not None else None
        feeds = [
            self.feeds.feed(group.channels, group.endpoints, lo, sl.end) for group in sl.groups
        ]
        self.feeds_read.extend(feeds)
        buffers = [self.feeds.read_ahead(feed) for feed in feeds]
        self._open.extend(buffers)
        log.debug(
            "slice_open", slice=f"[{seconds(sl.start)}, {seconds(sl.end)})", groups=len(buffers)
        )
        return buffers

    def blocks(self, sl: StreamSlice, buffers: list[ReadAhead[pa.RecordBatch]]) -> Iterator[Block]:
        lo = self.grid.floor(sl.start) if sl.start is not None else None
        states = [Rebucketer(self.grid, group.channels) for group in sl.groups]
        self._rebucketers.extend(states)
        try:
            merged = merge_groups(
                stitch_rows(buffer, state) for buffer, state in zip(buffers, states, strict=True)
            )
            yield from trim(merged, lo, sl.end)
        finally:
            for buffer in buffers:
                buffer.close()
                self._open.remove(buffer)
            self._late_closed += sum(state.late_rows for state in states)
            for state in states:
                self._rebucketers.remove(state)

    def read(self, sl: StreamSlice) -> Iterator[Block]:
        """One slice's merged, trimmed blocks (its feeds are opened now, closed at the end)."""
        return self.blocks(sl, self.open(sl))

    def close(self) -> None:
        for buffer in self._open:
            buffer.close()


class StreamExecution:
    """The stitched stream of one bounded plan. Iterate once; ``close()`` (idempotent, also
    run at the end of iteration) closes every downstream feed still open.

    ``historical``: the downstreams hold the whole range already (its end is past), so the
    short path may hand its blocks over in chunks (see :meth:`_counted`)."""

    def __init__(self, plan: StreamPlan, feeds: Feeds, *, historical: bool = False) -> None:
        self.plan = plan
        self.historical = historical
        self.grid = feeds.grid
        self.feeds = feeds
        self._ctx = feeds.ctx
        self._slices = SliceReader(feeds)
        self.blocks = 0
        self.gap_blocks = 0
        self._repeats = RepeatCounter()
        self._relayed = 0  # duplicates the short path dropped
        self._direct_feed: ReplicaFeed | None = None

    @property
    def duplicates_dropped(self) -> int:
        """Downstream blocks merged into an earlier copy of their slot, or dropped: the
        same count whichever path (short or general) served the stream."""
        return self._repeats.count + self._slices.late_rows + self._relayed

    def __repr__(self) -> str:
        return (
            f"<StreamExecution slices={len(self.plan.slices)} blocks={self.blocks} "
            f"feeds={self._feeds_read()}>"
        )

    def __iter__(self) -> Iterator[Item]:
        request = self.plan.request
        assert request.start is not None
        head = self.grid.floor(request.start)
        slices = self.plan.slices
        if len(slices) == 1 and len(slices[0].groups) == 1:
            return self._direct(slices[0], head)
        return self._general(head)

    def _general(self, head: int) -> Iterator[pa.RecordBatch]:
        request = self.plan.request
        token = self._ctx.token
        try:
            # Every slice's downstream calls start now (each bounded by its read-ahead):
            # a later slice is opened while its retention window still holds the data,
            # not after the earlier slices have been read.
            opened = [(sl, self._slices.open(sl)) for sl in self.plan.slices]
            merged = chain.from_iterable(self._slices.blocks(sl, b) for sl, b in opened)
            blocks = coalesce_duplicates(self._repeats.watch(merged))
            for block in fill_gaps(blocks, head, request.end, self.grid.duration):
                if token.cancelled:
                    raise self._ctx.error("Stream")
                if is_gap_block(block, self.grid):
                    self.gap_blocks += 1
                self.blocks += 1
                yield block_to_batch(block, self.grid)
        finally:
            self.close()

    def _direct(self, sl: StreamSlice, head: int) -> Iterator[Item]:
        """One slice, one group: read in this thread, rows passed through when whole. The
        request's token cancels the downstream read in progress (the feed then raises)."""
        (group,) = sl.groups
        lo = self.grid.floor(sl.start) if sl.start is not None else None
        feed = self.feeds.feed(group.channels, group.endpoints, lo, sl.end)
        self._direct_feed = feed
        batches = iter(feed)
        relay = OnGridRelay(batches, self.grid, head, self.plan.request.end, take=feed.take)
        rows = chunk_rows(self.grid, self.feeds.options.chunk_bytes) if self.historical else 1
        gate = self.feeds.options.gate if rows > 1 else None
        try:
            if gate is not None:
                yield from self._in_turns(relay.chunks(rows), gate)
            else:
                yield from self._counted(relay.chunks(rows) if rows > 1 else relay)
        finally:
            self.gap_blocks += relay.gap_blocks
            self._relayed = relay.duplicates
            if relay.fallback is not None:
                log.info("stream_fallback", slice=feed.label, reason=relay.fallback)
            batches.close()
            feed.stop_reading()
            self.close()

    def _counted(self, items: Iterable[Item]) -> Iterator[Item]:
        """``items`` (blocks, or chunks of them from :meth:`OnGridRelay.chunks`), counted;
        the request's token is looked at once per item.

        Chunks: this generator runs in a gRPC thread, which takes the GIL (and, under
        CPython 3.11, a fresh frame stack) for every ``next()``. Given a chunk (a Run of the
        downstream's own batches, or a Table), the native output stage (router.outstream)
        has pyarrow write its record batches one by one in C++ (one block per batch on the
        wire: PROTOCOL §4.4), so the serving thread takes the GIL once per chunk instead of
        once per block; the chunk's rows were read from the downstream in one call too
        (ReplicaFeed.take). The chunk is read here, not by a reader thread of its own: under
        many concurrent streams a second thread per stream cost more in thread switches
        than its overlap of reading and writing gained (interleaved A/B in bench/README.md,
        "Fourth round": equal at one stream, 10 to 35 % less CPU per GB at 8 and 32)."""
        token = self._ctx.token
        for item in items:
            if token.cancelled:
                raise self._ctx.error("Stream")
            self.blocks += blocks_in(item)
            yield item

    def _in_turns(self, chunks: Iterator[Item], gate: ChunkGate) -> Iterator[Item]:
        """:meth:`_counted` with each chunk read, checked and written in a turn of ``gate``:
        the turn is taken before the chunk is read and ends when the output stage asks for
        the next one, so the chunk has been written (router.chunkgate)."""
        token = self._ctx.token
        counted = self._counted(chunks)
        while True:
            with gate.turn(lambda: token.cancelled):
                item = next(counted, None)
                if item is None:
                    return
                yield item

    def close(self) -> None:
        if self.gap_blocks and not getattr(self, "_gaps_logged", False):
            self._gaps_logged = True
            log.warning(
                "stream_gaps_filled",
                gap_blocks=self.gap_blocks,
                endpoints=endpoints_of(self._feeds_read()),
                request_id=self._ctx.request_id,
            )
        self._slices.close()
        for feed in self._feeds_read():
            feed.cancel()

    def _feeds_read(self) -> list[ReplicaFeed]:
        direct = [self._direct_feed] if self._direct_feed is not None else []
        return direct + self._slices.feeds_read
