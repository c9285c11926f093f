"""Combining block streams: merge groups by time, trim to a slice, drop boundary
duplicates, fill gaps. Every function takes and returns iterators of on-grid blocks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from router.stitch.blocks import Block

_END = object()


def merge_groups(streams: Iterable[Iterable[Block]]) -> Iterator[Block]:
    """Merge per-group block streams (each strictly increasing) into one stream by block time.

    A slot present in several streams yields one block carrying the union of their cells
    (groups hold disjoint channels). A slot missing from some stream simply lacks those
    cells: the output stage fills them with nulls.
    """
    iterators = [iter(s) for s in streams]
    if len(iterators) == 1:
        yield from iterators[0]
        return
    heads: list[Block | None] = [next(it, None) for it in iterators]
    while True:
        live = [h for h in heads if h is not None]
        if not live:
            return
        t = min(h.time for h in live)
        cells: dict[str, pa.Array] = {}
        for i, head in enumerate(heads):
            if head is not None and head.time == t:
                cells.update(head.cells)
                heads[i] = next(iterators[i], None)
        yield Block(t, cells)


def trim(blocks: Iterable[Block], lo: int | None, hi: int | None) -> Iterator[Block]:
    """Keep blocks with ``lo <= time < hi`` (``None``: unbounded)."""
    for block in blocks:
        if lo is not None and block.time < lo:
            continue
        if hi is not None and block.time >= hi:
            continue
        yield block


def _coalesce_cell(first: pa.Array | None, second: pa.Array | None) -> pa.Array | None:
    if first is None:
        return second
    if second is None or not first.flatten().null_count:
        return first
    a, b = first.flatten(), second.flatten()
    if len(a) != len(b):
        return first
    values = pc.coalesce(a, b)
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)


def _coalesce(first: Block, second: Block) -> Block:
    names = set(first.cells) | set(second.cells)
    cells = {n: c for n in names if (c := _coalesce_cell(first.cells.get(n), second.cells.get(n)))}
    same = cells.keys() == first.cells.keys() and all(cells[n] is first.cells[n] for n in cells)
    return first if same else Block(first.time, cells)


def coalesce_duplicates(blocks: Iterable[Block]) -> Iterator[Block]:
    """Strictly increasing output: a block repeating the previous slot (a slice boundary)
    is not emitted again; its samples only fill the nulls of the first copy. Blocks going
    back in time are dropped (first copy wins)."""
    held: Block | None = None
    for block in blocks:
        if held is None:
            held = block
        elif block.time == held.time:
            held = _coalesce(held, block)
        elif block.time > held.time:
            yield held
            held = block
        # else: earlier than what we hold -> late duplicate, dropped
    if held is not None:
        yield held


def fill_gaps(
    blocks: Iterable[Block], start: int, end: int | None, duration: int
) -> Iterator[Block]:
    """Every slot ``start, start + duration, …`` below ``end`` appears exactly once:
    missing slots (head, middle, tail) become empty blocks (all nulls downstream). Nothing
    more is read once the last slot is out (the stream is complete; the input may still be
    waiting for its end)."""
    expected = start
    for block in blocks:
        if block.time < expected:
            continue
        if end is not None and block.time >= end:
            break
        while expected < block.time:
            yield Block(expected, {})
            expected += duration
        yield block
        expected = block.time + duration
        if end is not None and expected >= end:
            return
    if end is not None:
        while expected < end:
            yield Block(expected, {})
            expected += duration


def join_at_boundary(first: Iterable[Block], second: Iterable[Block]) -> Iterator[Block]:
    """``first`` then ``second`` (each strictly increasing), the hand-over made seamless:
    ``second``'s blocks up to ``first``'s last slot are dropped, except that a block for that
    very slot fills the nulls of ``first``'s copy (a hand-over time inside a block). Unlike
    :func:`coalesce_duplicates`, nothing of ``second`` is held back (it may be live)."""
    held: Block | None = None
    for block in first:
        if held is not None:
            yield held
        held = block
    for block in second:
        if held is not None:
            if block.time < held.time:
                continue
            if block.time == held.time:
                block = _coalesce(held, block)
            else:
                yield held
            held = None
        yield block
    if held is not None:
        yield held
