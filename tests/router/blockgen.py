"""In-memory block builders shared by the router unit tests (deterministic sample values)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from router.protocol.arrow import stream_schema
from router.protocol.channel import ChannelMeta
from router.stitch import Grid

NS = 1_000_000_000


def meta(name: str, rate: int, stride: int, dtype: str = "float64") -> ChannelMeta:
    return ChannelMeta(name=name, data_type=dtype, sample_rate=rate, stride=stride)


def values(rate: int, t0: int, n: int) -> np.ndarray:
    """Sample k at time t0 + k/rate has value = its global sample index (exact in float64)."""
    first = t0 * rate // NS
    return np.arange(first, first + n, dtype=np.float64)


def downstream_batch(metas: Sequence[ChannelMeta], t: int, duration: int) -> pa.RecordBatch:
    """One downstream row at ``t`` of ``duration`` ns for ``metas`` (its own schema)."""
    schema = stream_schema(metas)
    arrays: list[pa.Array] = [pa.array([t], pa.int64())]
    for f in list(schema)[1:]:
        rate = int(f.metadata[b"rate"])
        n = rate * duration // NS
        vals = pa.array(values(rate, t, n), f.type.value_type)
        arrays.append(pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), vals))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def downstream_blocks(
    metas: Sequence[ChannelMeta], times: Iterable[int], duration: int
) -> list[pa.RecordBatch]:
    return [downstream_batch(metas, t, duration) for t in times]


def grid_for(metas: Sequence[ChannelMeta], duration: int) -> Grid:
    return Grid.from_schema(stream_schema(metas), duration)


def rows(batches: Iterable[pa.RecordBatch]) -> list[tuple[int, dict[str, list[float | None]]]]:
    """``[(time, {channel: samples})]`` of single-row batches."""
    out = []
    for b in batches:
        assert b.num_rows == 1
        t = b.column(0)[0].as_py()
        out.append((t, {n: b.column(n)[0].as_py() for n in b.schema.names[1:]}))
    return out
