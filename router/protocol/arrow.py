"""Arrow schemas of responses (PROTOCOL §4) and channel metadata ⇄ record batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from router.protocol.channel import ChannelMeta

__all__ = [
    "COUNT_SCHEMA",
    "DTYPES",
    "FILTER_DTYPES",
    "METADATA_ROWS_PER_BATCH",
    "METADATA_SCHEMA",
    "PARTITION_SCHEMA",
    "PUBLISH_SCHEMA",
    "arrow_type",
    "count_batch",
    "dtype_name",
    "metadata_batches",
    "metas_from_batches",
    "partition_batch",
    "publish_batch",
    "stream_schema",
]

#: numpy dtype name -> Arrow type, for every numeric type a stream may carry
DTYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}
#: the dtypes a Find/Count filter may name (PROTOCOL §2.2)
FILTER_DTYPES = ("uint32", "uint64", "int32", "int64", "float32", "float64")
_NAMES = {t: name for name, t in DTYPES.items()}

METADATA_ROWS_PER_BATCH = 1000

METADATA_SCHEMA = pa.schema(
    [
        pa.field("channel", pa.string(), nullable=False),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("partition_id", pa.string()),
        pa.field("partition_index", pa.uint32()),
        pa.field("publisher", pa.string()),
        pa.field("stride", pa.uint64()),
        pa.field("max_latency", pa.uint64()),
        pa.field("replay_id", pa.string()),
    ]
)
COUNT_SCHEMA = pa.schema([pa.field("count", pa.int64())])
PUBLISH_SCHEMA = pa.schema(
    [pa.field("properties", pa.map_(pa.string(), pa.string()), nullable=False)]
)
PARTITION_SCHEMA = pa.schema(
    [
        pa.field("channel", pa.string(), nullable=False),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("partition_id", pa.string()),
        pa.field("partition_index", pa.uint32()),
    ]
)


def arrow_type(dtype: str) -> pa.DataType:
    """Arrow type of a numpy dtype name (``float32`` -> ``float``)."""
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unsupported data type {dtype!r}") from None


def dtype_name(t: pa.DataType) -> str:
    """numpy dtype name of an Arrow type (``double`` -> ``float64``)."""
    try:
        return _NAMES[t]
    except KeyError:
        raise ValueError(f"unsupported Arrow type {t}") from None


def _column(metas: Sequence[ChannelMeta], field: pa.Field) -> pa.Array:
    attr = "name" if field.name == "channel" else field.name
    return pa.array([getattr(m, attr) for m in metas], type=field.type)


def metadata_batches(metas: Sequence[ChannelMeta]) -> list[pa.RecordBatch]:
    """Find/Describe answer: batches of at most 1000 rows in the given order."""
    out = []
    for lo in range(0, len(metas), METADATA_ROWS_PER_BATCH):
        chunk = metas[lo : lo + METADATA_ROWS_PER_BATCH]
        out.append(
            pa.RecordBatch.from_arrays(
                [_column(chunk, f) for f in METADATA_SCHEMA], schema=METADATA_SCHEMA
            )
        )
    return out


_META_KEYS = (
    "data_type",
    "sample_rate",
    "stride",
    "max_latency",
    "publisher",
    "partition_id",
    "partition_index",
    "replay_id",
)


def metas_from_batches(batches: Iterable[pa.RecordBatch]) -> list[ChannelMeta]:
    """Rows of metadata batches as :class:`ChannelMeta` (any subset of the columns that
    includes ``channel``, ``data_type`` and ``sample_rate``; unknown columns are ignored)."""
    out: list[ChannelMeta] = []
    for batch in batches:
        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        for key in ("channel", "data_type", "sample_rate"):
            if key not in cols:
                raise ValueError(f"metadata batch lacks the {key!r} column")
        for i, name in enumerate(cols["channel"]):
            kw: dict[str, Any] = {k: cols[k][i] for k in _META_KEYS if k in cols}
            out.append(ChannelMeta(name=name, **kw))
    return out


def count_batch(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], schema=COUNT_SCHEMA)


def publish_batch(properties: dict[str, str]) -> pa.RecordBatch:
    arr = pa.array([list(properties.items())], type=PUBLISH_SCHEMA.field(0).type)
    return pa.RecordBatch.from_arrays([arr], schema=PUBLISH_SCHEMA)


def partition_batch(metas: Sequence[ChannelMeta]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [_column(metas, f) for f in PARTITION_SCHEMA], schema=PARTITION_SCHEMA
    )


def stream_schema(metas: Sequence[ChannelMeta]) -> pa.Schema:
    """§4.3: ``time`` int64 not null, then one ``list<item: T>`` per channel sorted by name,
    each with field metadata ``rate``."""
    fields = [pa.field("time", pa.int64(), nullable=False)]
    for m in sorted(metas, key=lambda m: m.name):
        fields.append(
            pa.field(
                m.name,
                pa.list_(pa.field("item", arrow_type(m.data_type))),
                nullable=True,
                metadata={"rate": str(m.sample_rate)},
            )
        )
    return pa.schema(fields)
