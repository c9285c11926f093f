"""Blocks ⇄ single-row record batches (PROTOCOL §4.4), without per-sample Python work."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from router.protocol.arrow import DTYPES

__all__ = [
    "batch_columns",
    "block_batch",
    "block_duration",
    "blocks_batch",
    "null_block",
    "samples_per_block",
    "split_blocks",
]

NS = 1_000_000_000


def block_duration(strides: Iterable[int]) -> int:
    """Block duration in ns: the least common multiple of the strides."""
    values = list(strides)
    if not values:
        raise ValueError("block duration of no channels")
    if any(s is None or s <= 0 for s in values):
        raise ValueError(f"every stride must be a positive number of ns, got {values}")
    return math.lcm(*values)


def samples_per_block(rate: int, duration_ns: int) -> int:
    """Samples of a ``rate`` Hz channel in a block of ``duration_ns``; ValueError if fractional."""
    n, rem = divmod(rate * duration_ns, NS)
    if rem:
        raise ValueError(
            f"a block of {duration_ns} ns does not hold a whole number of samples at {rate} Hz"
        )
    return n


_NUMPY: dict[pa.DataType, np.dtype] = {t: np.dtype(name) for name, t in DTYPES.items()}
_OFFSETS: dict[int, pa.Array] = {}


def _offsets(n: int) -> pa.Array:
    arr = _OFFSETS.get(n)
    if arr is None:
        arr = pa.array([0, n], type=pa.int32())
        if len(_OFFSETS) < 4096:
            _OFFSETS[n] = arr
    return arr


def _values(
    name: str, value_type: pa.DataType, data: np.ndarray | pa.Array | None, n: int
) -> pa.Array:
    if data is None:
        return pa.nulls(n, type=value_type)
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    if isinstance(data, pa.Array):
        arr = data if data.type == value_type else data.cast(value_type)
    else:
        np_type = _NUMPY[value_type]
        if isinstance(data, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(data)
            raw = np.ma.getdata(data).astype(np_type, copy=False)
            arr = pa.array(raw, type=value_type, mask=mask if mask.any() else None)
        else:
            arr = pa.array(np.asarray(data).astype(np_type, copy=False), type=value_type)
    if len(arr) != n:
        raise ValueError(f"channel {name}: {len(arr)} samples, the block needs {n}")
    return arr


def blocks_batch(
    schema: pa.Schema,
    times_ns: Sequence[int],
    columns: Mapping[str, np.ndarray | pa.Array | None],
    samples: Mapping[str, int],
) -> pa.RecordBatch:
    """Several consecutive blocks as ONE batch of ``len(times_ns)`` rows (row i = block i).

    Each column holds ``len(times_ns) * samples[name]`` values (or is ``None``/missing for
    nulls).  Send its rows one by one (:func:`split_blocks`): building many blocks at once
    amortises the per-channel Arrow work, slicing a row costs next to nothing.
    """
    rows = len(times_ns)
    arrays: list[pa.Array] = [pa.array(times_ns, type=pa.int64())]
    for i in range(1, len(schema)):
        field = schema.field(i)
        n = samples[field.name]
        values = _values(field.name, field.type.value_type, columns.get(field.name), n * rows)
        offsets = (
            _offsets(n) if rows == 1 else pa.array(np.arange(0, n * rows + 1, n, dtype=np.int32))
        )
        arrays.append(pa.ListArray.from_arrays(offsets, values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def split_blocks(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """The rows of a multi-block batch as one-row batches (zero-copy slices)."""
    return [batch.slice(i, 1) for i in range(batch.num_rows)]


def block_batch(
    schema: pa.Schema,
    time_ns: int,
    columns: Mapping[str, np.ndarray | pa.Array | None],
    samples: Mapping[str, int],
) -> pa.RecordBatch:
    """One block as a ONE-row batch of ``schema`` (a stream schema, §4.3).

    A channel missing from ``columns`` (or ``None``) becomes a full-length list of nulls;
    masked samples of numpy masked arrays become nulls.  ``samples`` gives each channel's
    sample count in this block.
    """
    return blocks_batch(schema, [time_ns], columns, samples)


def null_block(schema: pa.Schema, time_ns: int, samples: Mapping[str, int]) -> pa.RecordBatch:
    """A block in which every sample of every channel is null (a gap)."""
    return block_batch(schema, time_ns, {}, samples)


def batch_columns(batch: pa.RecordBatch) -> tuple[int, dict[str, pa.Array]]:
    """``(time_ns, {channel: flat values})`` of a one-row block."""
    if batch.num_rows != 1:
        raise ValueError(f"a block is one row, this batch has {batch.num_rows}")
    time_ns = batch.column(0)[0].as_py()
    out: dict[str, pa.Array] = {}
    for name, col in zip(batch.schema.names[1:], batch.columns[1:], strict=True):
        out[name] = col.flatten()
    return int(time_ns), out
