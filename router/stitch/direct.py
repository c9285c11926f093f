"""The common case on a short path: downstream rows that already are the output blocks.

Rationale: with one slice and one channel group, a well-behaved downstream sends exactly
the stream the client wants: one row per grid slot, in the output schema, every channel list
full length. Then the general pipeline (re-block → merge → drop duplicates → fill gaps →
rebuild) only re-yields the downstream's batches, at a cost per block that dominates a fast
stream. :class:`OnGridRelay` re-yields such rows unchanged after cheap checks (one schema
comparison, the time value, each channel's offsets), fills missing slots with null blocks,
drops rows before ``start`` and rows going back in time, and stops at ``end``. The first row
that is not a whole on-grid block (several rows, another schema or duration, a null list,
a time off the grid) hands it and the rest of the input to the general pipeline, seeded
with what was already emitted, so the output is exactly what the general path gives.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from operator import attrgetter, is_
from typing import TypeAlias, TypeVar

import numpy as np
import pyarrow as pa

from router.stitch.blocks import Block, Grid
from router.stitch.merge import fill_gaps
from router.stitch.output import block_to_batch
from router.stitch.rebucket import Rebucketer, cell_length, stitch_rows

T = TypeVar("T")
Chunk: TypeAlias = (
    list[pa.RecordBatch] | pa.Table
)  # blocks handed on at once (see OnGridRelay.runs)

# Blocks per chunk from which a run is checked at once: below it the per-block check costs
# less (measured per block, run check against per-block: 1 channel, 128 blocks: 0.7
# against 3.0 us; 4 channels, 32 blocks: 2.6 against 3.1 us; 20 channels, 6 blocks: 19
# against 10 us).
VECTORISED_ROWS = 16
_schema = attrgetter("schema")


def chunks_of(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter); closing it closes ``items``."""
    it = iter(items)
    try:
        while chunk := list(islice(it, size)):
            yield chunk
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class OnGridRelay:
    """The stitched stream of one group's downstream batches over ``[start, end)``
    (``start`` on the grid; ``end`` None: unbounded). Iterate once.

    ``gap_blocks`` counts the null blocks emitted; ``fallback`` says why the general
    pipeline took over (None while every row passed through)."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], grid: Grid, start: int, end: int | None
    ) -> None:
        self.grid = grid
        self.start = start
        self.end = end
        self.gap_blocks = 0
        self.repeats = 0  # short path: rows at or before a slot already taken (dropped)
        self.passed = 0
        self.fallback: str | None = None
        self._batches = batches
        self._state: Rebucketer | None = None  # the general pipeline's, once it took over
        self._expected = start  # the next slot to emit
        self._last: int | None = None  # the latest slot taken from the input
        self._stopped = False  # the end is reached: read no more
        self._rejected: pa.RecordBatch | None = None  # the row the short path could not take
        self._is_grid_schema = functools.partial(grid.schema.equals, check_metadata=True)
        self._samples = [(i, c.samples) for i, c in enumerate(grid.channels.values(), start=1)]
        self._nones = [None] * len(self._samples)
        self._buffer_count = 3 + 4 * len(self._samples)
        self._offsets = np.array([(0, n) for _, n in self._samples], np.int32).tobytes()
        self._pairs = [np.array((0, n), np.int32).tobytes() for _, n in self._samples]

    @property
    def duplicates(self) -> int:
        """Downstream rows dropped as repeats of a slot already taken (the same count on
        the short path and in the general pipeline it hands over to)."""
        late = self._state.late_rows if self._state is not None else 0
        return self.repeats + late

    def __repr__(self) -> str:
        return (
            f"<OnGridRelay passed={self.passed} gap_blocks={self.gap_blocks} "
            f"fallback={self.fallback!r}>"
        )

    def _checked_time(self, batch: pa.RecordBatch) -> int | None:
        """The time of a one-row ``batch`` in the grid's schema if no channel list is null
        and each has the grid's samples per block, checked channel by channel (rows the
        buffer check in ``__iter__`` cannot decide: sliced rows, validity bitmaps)."""
        for i, samples in self._samples:
            cell = batch.column(i)
            if cell.null_count or cell_length(cell) != samples:
                return None
        t: int | None = batch.column(0)[0].as_py()
        return t

    def _gap(self, t: int) -> pa.RecordBatch:
        self.gap_blocks += 1
        return block_to_batch(Block(t, {}), self.grid)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        batches = iter(self._batches)
        yield from self._blocks(batches)
        yield from self._rest(batches)

    def _blocks(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass ``batches`` through while they are whole on-grid blocks, from the state the
        last call left (``_expected``, ``_last``). Returns when they are exhausted, at the
        end of the stream (``_stopped``), or at a row that is not a whole block (kept in
        ``_rejected``; ``batches`` holds the rest of the input)."""
        # This loop runs in a gRPC thread, where (CPython 3.11) the first Python function
        # call of every ``next()`` allocates the thread's frame stack (mmap/munmap, ~10 us):
        # the whole-block check is inlined and calls only C methods. It looks at every
        # buffer of the row at once: struct validity, time validity, time values, then per
        # channel list validity, offsets, item validity, items. A valid one-row list whose
        # offsets buffer holds exactly 2 x int32 has offset 0, so "no list validity bitmap
        # and every offsets buffer is [0, samples]" decides it; anything else (a sliced row,
        # a bitmap) is checked channel by channel.
        duration, end, schema = self.grid.duration, self.end, self.grid.schema
        count, offsets, order = self._buffer_count, self._offsets, sys.byteorder
        nones = self._nones
        expected = self._expected  # the next slot to emit
        last = self._last  # the latest slot taken from the input (late rows: older)
        try:
            for batch in batches:
                t: int | None = None
                if batch.num_rows == 1 and batch.schema.equals(schema, check_metadata=True):
                    b = batch.to_struct_array().buffers()
                    if (
                        len(b) == count
                        and b[1] is None
                        and b[2] is not None
                        and len(b[2]) == 8
                        and all(map(is_, b[3::4], nones))
                        and b"".join(b[4::4]) == offsets
                    ):
                        t = int.from_bytes(b[2], order, signed=True)
                    else:
                        t = self._checked_time(batch)
                    if t is not None and t % duration:
                        t = None
                if t is None:
                    self.fallback = f"row of {batch.num_rows} at slot {expected}: not a whole block"
                    self._rejected = batch
                    return
                if last is not None and t <= last:
                    self.repeats += 1
                    continue  # late (a repeat or out of order): the first copy won
                last = t
                if t < expected:
                    continue  # before the start
                if end is not None and t >= end:
                    self._stopped = True
                    return
                while expected < t:
                    yield self._gap(expected)
                    expected += duration
                self.passed += 1
                yield batch
                expected = t + duration
                if end is not None and expected >= end:
                    self._stopped = True
                    return  # complete: the downstream's end of stream is not waited for
        finally:
            self._expected, self._last = expected, last

    def _rest(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """After :meth:`_blocks`: the general pipeline from a rejected row on (over it and
        ``batches``), else the null blocks up to the end."""
        rejected, self._rejected = self._rejected, None
        if rejected is not None:
            yield from self._general(chain([rejected], batches), self._last, self._expected)
            return
        if self.end is not None:
            while self._expected < self.end:
                yield self._gap(self._expected)
                self._expected += self.grid.duration

    def wanted(self, most: int) -> int:
        """How many more downstream rows to read at once, at most ``most``: no more than the
        slots left before the end, so a run of whole blocks ends where the stream does."""
        if self.end is None or self._state is not None:
            return most
        left = (self.end - self._expected) // self.grid.duration
        return int(max(1, min(most, left)))

    def runs(self, runs: Iterable[list[pa.RecordBatch]], rows: int) -> Iterator[Chunk]:
        """The same stream as iterating, from lists of downstream batches, in chunks of
        about ``rows`` blocks: a list that is a run of whole blocks filling the next slots
        is checked at once (:meth:`_whole_run`) and passed on as one ``Table`` of its own
        batches; any other goes through the per-block path (:meth:`_blocks`), so the output
        and the counters are the same batch for batch."""
        runs = iter(runs)
        vectorised = rows >= VECTORISED_ROWS
        for batches in runs:
            if vectorised and len(batches) > 1:
                table = self._whole_run(batches)
                if table is not None:
                    yield table
                    if self._stopped:
                        break
                    continue
            rest = iter(batches)
            yield from chunks_of(self._blocks(rest), rows)
            if self._stopped:
                break
            if self._rejected is not None:
                yield from chunks_of(self._rest(chain(rest, chain.from_iterable(runs))), rows)
                return
        yield from chunks_of(self._rest(iter(())), rows)

    def _whole_run(self, batches: list[pa.RecordBatch]) -> pa.Table | None:
        """``batches`` as one Table if they are whole blocks of the grid's schema filling
        the slots from the next one on, in order and before the end (what :meth:`_blocks`
        would pass through unchanged, one by one), else None. One pass over the time column
        and each channel's list offsets."""
        n, duration, end = len(batches), self.grid.duration, self.end
        first = self._expected
        stop = first + n * duration
        if end is not None and stop > end:
            return None
        try:
            table = pa.Table.from_batches(batches)
        except pa.ArrowInvalid:  # not one schema
            return None
        if table.num_rows != n or not all(map(self._is_grid_schema, map(_schema, batches))):
            return None
        if set(map(len, batches)) != {1}:
            return None
        # Each row's buffers as IPC leaves them: the time value alone, list offsets
        # [0, samples]; anything else (a sliced row for one) is left to the per-block path,
        # which decides it. Read as bytes: ChunkedArray.to_numpy would import pandas
        # (~35 MB of RSS for good).
        time = table.column(0)
        times = np.arange(first, stop, duration, dtype=np.int64).tobytes()
        if time.null_count or b"".join([c.buffers()[1] for c in time.chunks]) != times:
            return None
        for (i, _), pair in zip(self._samples, self._pairs, strict=True):
            column = table.column(i)
            if column.null_count or b"".join([c.buffers()[1] for c in column.chunks]) != pair * n:
                return None
        self._expected = stop
        self._last = stop - duration
        self.passed += n
        if end is not None and stop >= end:
            self._stopped = True
        return table

    def _general(
        self, batches: Iterable[pa.RecordBatch], last: int | None, expected: int
    ) -> Iterator[pa.RecordBatch]:
        """The general pipeline from here on, in the state the short path left."""
        grid = self.grid
        state = self._state = Rebucketer(grid)
        state.last_emitted = last
        channels = len(grid.channels)
        # one group: the re-blocker's output is strictly increasing already (no de-dup stage)
        for block in fill_gaps(stitch_rows(batches, state), expected, self.end, grid.duration):
            if block.source is None and len(block.cells) < channels:
                self.gap_blocks += 1
            yield block_to_batch(block, grid)
