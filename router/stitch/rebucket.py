"""Re-blocking: downstream rows of any duration and alignment onto the output grid.

Rationale: downstreams normally send one row per block, on their own stride grid, which
equals the output grid when a group's strides match the others'. Then each row is passed
through unchanged (fast path). Otherwise (mixed strides, a downstream disagreeing with the
advertised stride, a resumed stream starting mid-block) every row is cut into per-slot
*segments* located by sample index, and a slot is emitted once no later row can reach it
(the input is in time order) or once every channel of the slot is complete.
Rows that reach back before the last emitted slot are late; their samples are dropped and
counted, never emitted out of order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from router.stitch.blocks import NS_PER_S, Block, Grid

_OFFSETS_CACHE: dict[int, pa.Array] = {}


def cell_length(cell: pa.Array) -> int:
    """Samples in a list array's rows, read from its offsets buffer. ``len(cell.flatten())``
    goes through the compute layer, which releases the GIL: on the per-block path of a
    multi-threaded server every such release can cost a thread switch."""
    if not pa.types.is_list(cell.type):
        return len(cell.flatten())
    offsets = np.frombuffer(cell.buffers()[1], np.int32, cell.offset + len(cell) + 1)
    return int(offsets[-1]) - int(offsets[cell.offset])


def _offsets(n: int) -> pa.Array:
    arr = _OFFSETS_CACHE.get(n)
    if arr is None:
        arr = pa.array([0, n], pa.int32())
        _OFFSETS_CACHE[n] = arr
    return arr


@dataclass
class _Slot:
    """Segments gathered for one grid slot: channel -> [(position, values)]."""

    segments: dict[str, list[tuple[int, pa.Array]]] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)


class Rebucketer:
    """Stateful re-blocker for one group; feed rows with :meth:`push`, then :meth:`finish`."""

    def __init__(self, grid: Grid, channels: Iterable[str] | None = None) -> None:
        self.grid = grid
        wanted = set(grid.channels) if channels is None else set(channels)
        self.channels = frozenset(wanted & set(grid.channels))
        self.last_emitted: int | None = None
        self.late_samples = 0
        self.late_rows = 0  # rows wholly at or before the last emitted slot (repeats): dropped
        self._slots: dict[int, _Slot] = {}

    def __repr__(self) -> str:
        return (
            f"<Rebucketer channels={len(self.channels)} last_emitted={self.last_emitted} "
            f"pending={sorted(self._slots)} late_samples={self.late_samples} "
            f"late_rows={self.late_rows}>"
        )

    # ------------------------------------------------------------------ input
    def push(self, batch: pa.RecordBatch) -> Iterator[Block]:
        """Consume one downstream batch (any number of rows); yield the slots it completes."""
        if batch.num_rows == 0:
            return
        names = [n for n in batch.schema.names if n in self.channels]
        times = batch.column("time").to_pylist()
        whole = batch.num_rows == 1 and batch.schema.equals(self.grid.schema, check_metadata=True)
        for row, t in enumerate(times):
            cells = {
                n: batch.column(n) if batch.num_rows == 1 else batch.column(n).slice(row, 1)
                for n in names
            }
            yield from self._push_row(int(t), cells, batch if whole else None)

    def finish(self) -> Iterator[Block]:
        """Emit every pending slot (end of input)."""
        yield from self._flush_before(None)

    # ------------------------------------------------------------------ internals
    def _push_row(
        self, t: int, cells: dict[str, pa.Array], source: pa.RecordBatch | None
    ) -> Iterator[Block]:
        grid = self.grid
        first_slot = grid.floor(t)
        yield from self._flush_before(first_slot)
        if self.last_emitted is not None and first_slot <= self.last_emitted:
            source = None  # partly late: only the still-open part may be used
            late = self.late_samples
            kept = 0
            for name, cell in cells.items():
                if not cell.null_count:
                    kept += self._add_segments(t, name, cell.flatten())
            if not kept and self.late_samples > late:
                self.late_rows += 1
            yield from self._flush_complete()
            return
        elif t == first_slot and not self._slots and self._fits(cells):
            if source is not None and len(cells) != len(grid.channels):
                source = None
            self.last_emitted = t
            yield Block(t, cells, source)
            return
        for name, cell in cells.items():
            if cell.null_count:
                continue  # a null list carries no samples
            self._add_segments(t, name, cell.flatten())
        yield from self._flush_complete()

    def _fits(self, cells: dict[str, pa.Array]) -> bool:
        for name, cell in cells.items():
            layout = self.grid.channels[name]
            if cell.null_count or cell.type.value_type != layout.value_type:
                return False
            if cell_length(cell) != layout.samples:
                return False
        return True

    def _add_segments(self, t: int, name: str, values: pa.Array) -> int:
        """Place ``values`` into their slots; returns how many samples were not late."""
        grid = self.grid
        layout = grid.channels[name]
        if values.type != layout.value_type:
            values = values.cast(layout.value_type)
        base = grid.floor(t)
        # sample offset of the row's first sample inside slot `base` (rounded to a sample)
        offset = ((t - base) * layout.rate + NS_PER_S // 2) // NS_PER_S
        spb = layout.samples
        n = len(values)
        j = kept = 0
        while j < n:
            k, pos = divmod(offset + j, spb)
            take = min(spb - pos, n - j)
            slot_time = base + k * grid.duration
            if self.last_emitted is not None and slot_time <= self.last_emitted:
                self.late_samples += take
            else:
                slot = self._slots.setdefault(slot_time, _Slot())
                slot.segments.setdefault(name, []).append((pos, values.slice(j, take)))
                slot.filled[name] = slot.filled.get(name, 0) + take
                kept += take
            j += take
        return kept

    def _is_complete(self, slot: _Slot) -> bool:
        chans = self.grid.channels
        return all(slot.filled.get(n, 0) >= chans[n].samples for n in self.channels)

    def _flush_complete(self) -> Iterator[Block]:
        complete = [t for t, s in self._slots.items() if self._is_complete(s)]
        if complete:
            yield from self._flush_before(max(complete) + 1)

    def _flush_before(self, limit: int | None) -> Iterator[Block]:
        for t in sorted(self._slots):
            if limit is not None and t >= limit:
                break
            slot = self._slots.pop(t)
            self.last_emitted = t
            yield Block(t, {n: self._build(n, segs) for n, segs in slot.segments.items()})

    def _build(self, name: str, segments: list[tuple[int, pa.Array]]) -> pa.Array:
        layout = self.grid.channels[name]
        pieces: list[pa.Array] = []
        cursor = 0
        for pos, values in sorted(segments, key=lambda s: s[0]):
            if pos + len(values) <= cursor:
                continue  # fully overlapped by an earlier segment: first copy wins
            if pos < cursor:
                values = values.slice(cursor - pos)
                pos = cursor
            if pos > cursor:
                pieces.append(pa.nulls(pos - cursor, layout.value_type))
            pieces.append(values)
            cursor = pos + len(values)
        if cursor < layout.samples:
            pieces.append(pa.nulls(layout.samples - cursor, layout.value_type))
        flat = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
        return pa.ListArray.from_arrays(_offsets(layout.samples), flat)


def stitch_rows(batches: Iterable[pa.RecordBatch], state: Rebucketer) -> Iterator[Block]:
    """``batches`` re-blocked by ``state`` (whose counters the caller reads)."""
    for batch in batches:
        yield from state.push(batch)
    yield from state.finish()


def rebucket(
    batches: Iterable[pa.RecordBatch], grid: Grid, channels: Iterable[str] | None = None
) -> Iterator[Block]:
    """On-grid, strictly increasing blocks of ``channels`` from downstream batches."""
    return stitch_rows(batches, Rebucketer(grid, channels))
