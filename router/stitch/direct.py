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

import sys
from collections.abc import Iterable, Iterator
from itertools import chain
from operator import is_

import numpy as np
import pyarrow as pa

from router.stitch.blocks import Block, Grid
from router.stitch.merge import fill_gaps
from router.stitch.output import block_to_batch
from router.stitch.rebucket import Rebucketer, cell_length, stitch_rows


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
        self._samples = [(i, c.samples) for i, c in enumerate(grid.channels.values(), start=1)]
        self._nones = [None] * len(self._samples)
        self._buffer_count = 3 + 4 * len(self._samples)
        self._offsets = np.array([(0, n) for _, n in self._samples], np.int32).tobytes()

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
        expected = self.start  # the next slot to emit
        last: int | None = None  # the latest slot taken from the input (late rows: older)
        batches = iter(self._batches)
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
                yield from self._general(chain([batch], batches), last, expected)
                return
            if last is not None and t <= last:
                self.repeats += 1
                continue  # late (a repeat or out of order): the first copy won
            last = t
            if t < expected:
                continue  # before the start
            if end is not None and t >= end:
                break
            while expected < t:
                yield self._gap(expected)
                expected += duration
            self.passed += 1
            yield batch
            expected = t + duration
            if end is not None and expected >= end:
                return  # complete: the downstream's end of stream is not waited for
        if end is not None:
            while expected < end:
                yield self._gap(expected)
                expected += duration

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
