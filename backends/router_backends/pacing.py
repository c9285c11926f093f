"""Pacing: a block goes out once its end (plus the server's latency) has passed.

A chunk whose blocks have all been released already (historical data) goes out as a reader
of one-row slices (``max_chunksize=1``): pyarrow slices and writes the rows in C++, with no
Python object per block.  Otherwise each block waits on the call's clock, waking every
heartbeat to notice a cancelled call or a stopping server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from router.protocol.blocks import split_blocks
from router_backends.interface import CallContext

__all__ = ["Released", "paced"]


@dataclass
class Released:
    """How many blocks went out and whether the call was cancelled first."""

    blocks: int = 0
    cancelled: bool = False


def paced(
    chunks: Iterator[pa.RecordBatch],
    block_ns: int,
    latency_ns: int,
    ctx: CallContext,
    released: Released,
) -> Iterator[pa.RecordBatch | pa.RecordBatchReader]:
    """``chunks`` released on time; ends early (``released.cancelled``) on cancellation."""
    for chunk in chunks:
        rows = chunk.num_rows
        if rows == 0:
            continue
        last = chunk.column(0)[rows - 1].as_py()
        if last + block_ns + latency_ns <= ctx.now() and not ctx.cancelled():
            yield pa.Table.from_batches([chunk]).to_reader(max_chunksize=1)
            released.blocks += rows
            continue
        for block in split_blocks(chunk) if rows > 1 else [chunk]:
            t = block.column(0)[0].as_py()
            if not ctx.wait_until(t + block_ns + latency_ns):
                released.cancelled = True
                return
            yield block
            released.blocks += 1
