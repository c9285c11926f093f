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
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from operator import attrgetter, is_, itemgetter, methodcaller
from typing import Any

import numpy as np
import pyarrow as pa

from router.outstream import Run, _ListRun, run_check
from router.stitch.blocks import Block, Grid
from router.stitch.merge import fill_gaps
from router.stitch.output import block_to_batch
from router.stitch.rebucket import Rebucketer, cell_length, stitch_rows

#: the most blocks :meth:`OnGridRelay.chunks` puts in one chunk
CHUNK_MAX = 256
#: chunks of fewer blocks are checked block by block: the one-pass check costs ~50 us a chunk
#: plus ~3 us a channel, the per-block one ~2 us a block (bench/README.md, "Fifth round")
VECTOR_MIN = 16

_ONE = 1
_NUM_ROWS = attrgetter("num_rows")
_SCHEMA = attrgetter("schema")
_BUFFERS = methodcaller("buffers")
_SECOND = itemgetter(1)


def _table(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    return batches[0] if len(batches) == 1 else pa.Table.from_batches(batches, schema)


def _in_chunks(
    blocks: Generator[pa.RecordBatch, None, Any], rows: int, schema: pa.Schema
) -> Generator[pa.RecordBatch | pa.Table, None, Any]:
    """``blocks`` ``rows`` at a time (see :func:`_table`); returns what ``blocks`` returns.
    Closing it closes ``blocks``."""
    out: list[pa.RecordBatch] = []
    try:
        while True:
            try:
                out.append(next(blocks))
            except StopIteration as stop:
                if out:
                    yield _table(out, schema)
                return stop.value
            if len(out) == rows:
                yield _table(out, schema)
                out = []
    finally:
        blocks.close()


class OnGridRelay:
    """The stitched stream of one group's downstream batches over ``[start, end)``
    (``start`` on the grid; ``end`` None: unbounded). Iterate once.

    ``gap_blocks`` counts the null blocks emitted; ``fallback`` says why the general
    pipeline took over (None while every row passed through)."""

    def __init__(
        self,
        batches: Iterable[pa.RecordBatch],
        grid: Grid,
        start: int,
        end: int | None,
        take: Callable[[int], Sequence[pa.RecordBatch]] | None = None,
    ) -> None:
        self.grid = grid
        self.start = start
        self.end = end
        self.gap_blocks = 0
        self.repeats = 0  # short path: rows at or before a slot already taken (dropped)
        self.passed = 0
        self.fallback: str | None = None
        self._batches = batches
        #: ``take(n)``: the next up to n rows of ``batches`` in one call (chunks() reads
        #: with it when given: router.fanout.ReplicaFeed.take)
        self._take = take
        self._state: Rebucketer | None = None  # the general pipeline's, once it took over
        self._samples = [(i, c.samples) for i, c in enumerate(grid.channels.values(), start=1)]
        self._nones = [None] * len(self._samples)
        self._buffer_count = 3 + 4 * len(self._samples)
        self._offsets = np.array([(0, n) for _, n in self._samples], np.int32).tobytes()
        #: per channel, [0, samples] as int32 repeated: a run's raw offsets (see chunks())
        self._patterns = [
            np.array([0, n], np.int32).tobytes() * CHUNK_MAX for _, n in self._samples
        ]
        #: the one-pass check in C++ (router._chunkstream) when built, else None
        self.native_check = run_check(grid.schema, grid.duration, [n for _, n in self._samples])
        #: chunks shorter than this are checked block by block (cheaper for a few rows in
        #: Python; the native check is cheaper from one row on)
        self.vector_min = 1 if self.native_check is not None else VECTOR_MIN
        self._expected = start  # the next slot to emit
        self._last: int | None = None  # the latest slot taken from the input

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
        odd = yield from self._blocks(batches)
        if isinstance(odd, pa.RecordBatch):
            yield from self._hand_over(odd, batches)
            return
        yield from self._tail()

    def chunks(self, rows: int) -> Iterator[pa.RecordBatch | pa.Table | _ListRun]:
        """The same stream handed over ``rows`` blocks at a time, each chunk a ``pa.Table``
        of one-block batches, or a :class:`~router.outstream.Run` of the downstream's own
        batches when the native check took them whole (a lone block as itself).

        Rationale: the per-block check in :meth:`_blocks` costs ~2 us of interpreter time
        per block, and under many concurrent streams every such microsecond is also GIL
        contention (bench/README.md, "Fifth round"). Here the downstream rows are read
        ``rows`` at a time without a Python frame per row, and a chunk that is exactly the
        next run of whole on-grid blocks (the usual case) is checked in one pass
        (:meth:`_whole_run`: every row one block in the grid's schema, times consecutive
        from the next slot without nulls, every channel list unmasked with the grid's
        samples). Any other chunk goes through the per-block path unchanged, so the
        output and the counters are those of ``iter(self)``. Rows are read only up to the
        slots still missing, so a downstream that keeps its stream open after the end is
        not waited for unless it skipped slots."""
        batches, take = iter(self._batches), self._take
        schema, duration, end = self.grid.schema, self.grid.duration, self.end
        rows = max(1, min(rows, CHUNK_MAX))
        chunk: Sequence[pa.RecordBatch]
        while True:
            want = rows if end is None else min(rows, -(-(end - self._expected) // duration))
            if want <= 0:
                chunk = []
            elif take is not None:
                chunk = take(want)
            else:
                chunk = list(islice(batches, want))
            if not chunk:
                break
            run = self._whole_run(chunk) if len(chunk) >= self.vector_min else None
            if run is not None:
                yield run
                if end is not None and self._expected >= end:
                    return
                continue
            rest = iter(chunk)
            odd = yield from _in_chunks(self._blocks(rest), rows, schema)
            if isinstance(odd, pa.RecordBatch):
                yield from _in_chunks(self._hand_over(odd, chain(rest, batches)), rows, schema)
                return
            if odd is True:
                break
        yield from _in_chunks(self._tail(), rows, schema)

    def _whole_run(self, chunk: Sequence[pa.RecordBatch]) -> pa.Table | _ListRun | None:
        """``chunk`` as one item if it is exactly the next ``len(chunk)`` slots as whole
        blocks (then taken: the state moves past them), else None: a :class:`Run` of the
        batches as they are when the native check decides, else a Table."""
        schema, duration, expected = self.grid.schema, self.grid.duration, self._expected
        if self.native_check is not None:
            nbytes = self.native_check.check(chunk, expected, self.end)
            if nbytes < 0:
                return None
            k = len(chunk)
            self._expected, self._last = expected + k * duration, expected + (k - 1) * duration
            self.passed += k
            run = chunk if type(chunk) is Run else Run(chunk)
            run.nbytes = nbytes
            return run
        if not (
            all(map(_ONE.__eq__, map(_NUM_ROWS, chunk)))
            and all(map(schema.equals, map(_SCHEMA, chunk), repeat(True)))
        ):
            return None
        table = pa.Table.from_batches(chunk, schema)
        times = table.column(0)
        k = len(chunk)
        # raw values, 8 bytes a row when unsliced (ChunkedArray.to_numpy would import pandas)
        raw = b"".join(map(_SECOND, map(_BUFFERS, times.chunks)))
        if times.null_count or len(raw) != 8 * k:
            return None
        t = np.frombuffer(raw, np.int64)
        stop = int(t[-1]) + duration
        if int(t[0]) != expected or stop != expected + k * duration:
            return None
        if self.end is not None and int(t[-1]) >= self.end:
            return None
        if k > 1 and not bool((np.diff(t) == duration).all()):
            return None
        size = 8 * k  # [0, samples] as two int32 per row
        for i, pattern in enumerate(self._patterns, start=1):
            cells = table.column(i)
            # a one-row list's raw offsets are exactly [0, samples] when whole and unsliced
            offsets = b"".join(map(_SECOND, map(_BUFFERS, cells.chunks)))
            if cells.null_count or offsets != pattern[:size]:
                return None
        self._expected, self._last = stop, int(t[-1])
        self.passed += k
        return table

    def _blocks(self, batches: Iterator[pa.RecordBatch]) -> Generator[pa.RecordBatch, None, Any]:
        """The per-block path over ``batches`` from the current state; returns None when
        ``batches`` ran out, True when the stream's rows are all in (complete, or a row at
        or past the end: the tail is the caller's), else the first row that is not a whole
        block (the state is left just before it)."""
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
                    return batch
                if last is not None and t <= last:
                    self.repeats += 1
                    continue  # late (a repeat or out of order): the first copy won
                last = t
                if t < expected:
                    continue  # before the start
                if end is not None and t >= end:
                    return True  # the tail is filled by the caller
                while expected < t:
                    yield self._gap(expected)
                    expected += duration
                self.passed += 1
                yield batch
                expected = t + duration
                if end is not None and expected >= end:
                    return True  # complete: the downstream's end of stream is not waited for
            return None
        finally:
            self._expected, self._last = expected, last

    def _hand_over(
        self, odd: pa.RecordBatch, batches: Iterator[pa.RecordBatch]
    ) -> Generator[pa.RecordBatch, None, None]:
        expected = self._expected
        self.fallback = f"row of {odd.num_rows} at slot {expected}: not a whole block"
        yield from self._general(chain([odd], batches), self._last, expected)

    def _tail(self) -> Generator[pa.RecordBatch, None, None]:
        """Null blocks from the next slot to the end (none when unbounded)."""
        if self.end is not None:
            while self._expected < self.end:
                yield self._gap(self._expected)
                self._expected += self.grid.duration

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
