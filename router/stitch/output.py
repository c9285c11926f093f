"""Blocks to single-row record batches in the stream schema."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from router.stitch.blocks import Block, Grid


def block_to_batch(block: Block, grid: Grid) -> pa.RecordBatch:
    """One row: ``time`` and every channel of the grid, all-null cells where data is missing."""
    if block.source is not None:
        return block.source
    arrays: list[pa.Array] = [pa.array([block.time], pa.int64())]
    fields = grid.schema
    for i, name in enumerate(grid.channels, start=1):
        cell = block.cells.get(name)
        if cell is None:
            cell = grid.null_cell(name)
        elif cell.type != fields[i].type:
            cell = cell.cast(fields[i].type)
        arrays.append(cell)
    return pa.RecordBatch.from_arrays(arrays, schema=grid.schema)


def to_batches(blocks: Iterable[Block], grid: Grid) -> Iterator[pa.RecordBatch]:
    for block in blocks:
        yield block_to_batch(block, grid)
