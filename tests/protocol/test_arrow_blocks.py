"""Arrow schemas, metadata batches and block ⇄ batch conversion."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.protocol.arrow import (
    COUNT_SCHEMA,
    DTYPES,
    METADATA_SCHEMA,
    arrow_type,
    count_batch,
    dtype_name,
    metadata_batches,
    metas_from_batches,
    partition_batch,
    publish_batch,
    stream_schema,
)
from router.protocol.blocks import (
    batch_columns,
    block_batch,
    block_duration,
    null_block,
    samples_per_block,
)
from router.protocol.channel import ChannelMeta, split_channel_name


def test_dtype_names() -> None:
    assert arrow_type("float32") == pa.float32() and str(arrow_type("float32")) == "float"
    assert dtype_name(pa.float64()) == "float64"
    for name, t in DTYPES.items():
        assert dtype_name(t) == name == np.dtype(t.to_pandas_dtype()).name
    with pytest.raises(ValueError):
        arrow_type("complex64")


def test_metadata_batches_split_and_round_trip() -> None:
    metas = [
        ChannelMeta(f"H1:SYS-C{i}", "float32", 256, 62_500_000, 10**9, "P", None, None, None)
        for i in range(2345)
    ]
    batches = metadata_batches(metas)
    assert [b.num_rows for b in batches] == [1000, 1000, 345]
    assert all(b.schema == METADATA_SCHEMA for b in batches)
    assert metas_from_batches(batches) == metas
    assert metadata_batches([]) == []


def test_metas_from_subset_of_columns() -> None:
    b = pa.RecordBatch.from_pydict(
        {"channel": ["H1:A"], "data_type": ["int32"], "sample_rate": [16], "extra": [1]}
    )
    assert metas_from_batches([b]) == [ChannelMeta("H1:A", "int32", 16)]
    with pytest.raises(ValueError, match="sample_rate"):
        metas_from_batches([pa.RecordBatch.from_pydict({"channel": ["H1:A"], "data_type": ["x"]})])


def test_fixed_schemas() -> None:
    assert count_batch(7).schema == COUNT_SCHEMA
    assert count_batch(7).to_pylist() == [{"count": 7}]
    assert publish_batch({"bootstrap.servers": "k:9092"}).to_pylist() == [
        {"properties": [("bootstrap.servers", "k:9092")]}
    ]
    p = partition_batch([ChannelMeta("H1:A", "float32", 16, partition_id="p0", partition_index=3)])
    assert p.to_pylist() == [
        {
            "channel": "H1:A",
            "data_type": "float32",
            "sample_rate": 16,
            "partition_id": "p0",
            "partition_index": 3,
        }
    ]


def test_stream_schema_sorted_with_rate() -> None:
    s = stream_schema([ChannelMeta("H1:Z", "float64", 16384), ChannelMeta("H1:A", "int32", 512)])
    assert s.names == ["time", "H1:A", "H1:Z"]
    assert not s.field("time").nullable
    assert s.field("H1:A").type == pa.list_(pa.field("item", pa.int32()))
    assert s.field("H1:Z").metadata == {b"rate": b"16384"}


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("H1:GDS-CALIB_STRAIN", ("H1", "GDS")),
        ("H1:LSC_FOO-BAR", ("H1", "LSC")),
        ("H1:GDS", ("H1", "GDS")),
        ("H1:_X", ("H1", "")),
        ("H1:A:B-C", ("H1:A", "B")),
        (":X-Y", ("", "X")),
    ],
)
def test_split_channel_name(name: str, parts: tuple[str, str]) -> None:
    assert split_channel_name(name) == parts


def test_split_channel_name_rejects_no_colon() -> None:
    with pytest.raises(ValueError, match="NOCOLON"):
        split_channel_name("NOCOLON")


def test_block_arithmetic() -> None:
    assert block_duration([62_500_000, 125_000_000, 62_500_000]) == 125_000_000
    assert samples_per_block(16384, 62_500_000) == 1024
    with pytest.raises(ValueError):
        samples_per_block(100, 62_500_000)
    with pytest.raises(ValueError):
        block_duration([])


CHANNELS = [
    ChannelMeta("H1:B-F32", "float32", 256, 62_500_000),
    ChannelMeta("H1:A-F64", "float64", 16384, 62_500_000),
    ChannelMeta("H1:C-I32", "int32", 512, 62_500_000),
    ChannelMeta("H1:D-U64", "uint64", 1024, 62_500_000),
]
SCHEMA = stream_schema(CHANNELS)
SAMPLES = {m.name: samples_per_block(m.sample_rate, 62_500_000) for m in CHANNELS}


@st.composite
def block_columns(draw: st.DrawFn) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {}
    for m in CHANNELS:
        kind = draw(st.sampled_from(["data", "masked", "none"]))
        n = SAMPLES[m.name]
        seed = draw(st.integers(0, 2**32 - 1))
        values = np.random.default_rng(seed).integers(0, 1000, n).astype(m.data_type)
        if kind == "none":
            out[m.name] = None
        elif kind == "masked":
            out[m.name] = np.ma.masked_array(values, mask=np.arange(n) % 3 == 0)
        else:
            out[m.name] = values
    return out


def _ipc(batch: pa.RecordBatch) -> pa.RecordBatch:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_next_batch()


@given(block_columns(), st.integers(0, 2**62))
def test_block_batch_round_trip_through_ipc(cols: dict[str, np.ndarray | None], t: int) -> None:
    batch = block_batch(SCHEMA, t, cols, SAMPLES)
    assert batch.num_rows == 1 and batch.schema == SCHEMA
    got_t, got = batch_columns(_ipc(batch))
    assert got_t == t
    for m in CHANNELS:
        arr = got[m.name]
        assert len(arr) == SAMPLES[m.name] and arr.type == arrow_type(m.data_type)
        src = cols[m.name]
        if src is None:
            assert arr.null_count == len(arr)
        elif isinstance(src, np.ma.MaskedArray):
            assert arr.to_pylist() == [
                None if k else v for v, k in zip(src.data.tolist(), src.mask.tolist(), strict=True)
            ]
        else:
            assert arr.to_pylist() == src.tolist()


def test_block_batch_through_the_real_client() -> None:
    from arrakis.block import SeriesBlock
    from arrakis.channel import Channel

    cols = {
        "H1:B-F32": np.arange(16, dtype=np.float32),
        "H1:A-F64": np.ma.masked_array(np.ones(1024), mask=np.arange(1024) == 5),
        "H1:C-I32": None,
        "H1:D-U64": pa.array(np.arange(64, dtype=np.uint64)),
    }
    batch = block_batch(SCHEMA, 1_400_000_000_000_000_000, cols, SAMPLES)
    channels = {
        m.name: Channel(m.name, data_type=np.dtype(m.data_type), sample_rate=m.sample_rate)
        for m in CHANNELS
    }
    block = SeriesBlock.from_column_batch(_ipc(batch), channels)
    assert block.time_ns == 1_400_000_000_000_000_000
    assert block.duration_ns == 62_500_000
    np.testing.assert_array_equal(block.data["H1:B-F32"], np.arange(16, dtype=np.float32))
    f64 = block.data["H1:A-F64"]
    assert np.ma.is_masked(f64) and np.ma.getmaskarray(f64).sum() == 1
    assert np.ma.getmaskarray(block.data["H1:C-I32"]).all()


def test_block_batch_rejects_wrong_length_and_null_block() -> None:
    with pytest.raises(ValueError, match="H1:B-F32: 3 samples, the block needs 16"):
        block_batch(SCHEMA, 0, {"H1:B-F32": np.zeros(3)}, SAMPLES)
    nb = null_block(SCHEMA, 5, SAMPLES)
    t, cols = batch_columns(nb)
    assert t == 5 and all(c.null_count == SAMPLES[n] for n, c in cols.items())
    with pytest.raises(ValueError):
        batch_columns(pa.concat_batches([nb, nb]))


def test_block_batch_casts_dtypes() -> None:
    batch = block_batch(SCHEMA, 0, {"H1:C-I32": np.arange(32, dtype=np.float64)}, SAMPLES)
    _, cols = batch_columns(batch)
    assert cols["H1:C-I32"].type == pa.int32()


def test_blocks_batch_rows_are_blocks() -> None:
    from router.protocol.blocks import blocks_batch, split_blocks

    times = [0, 62_500_000, 125_000_000]
    cols = {"H1:B-F32": np.arange(48, dtype=np.float32), "H1:A-F64": None}
    batch = blocks_batch(SCHEMA, times, cols, SAMPLES)
    assert batch.num_rows == 3
    rows = split_blocks(batch)
    assert [r.num_rows for r in rows] == [1, 1, 1]
    t, got = batch_columns(_ipc(rows[1]))
    assert t == 62_500_000
    assert got["H1:B-F32"].to_pylist() == list(range(16, 32))
    assert got["H1:A-F64"].null_count == 1024
    assert rows[2].equals(
        block_batch(SCHEMA, 125_000_000, {"H1:B-F32": np.arange(32, 48)}, SAMPLES)
    )


def test_flight_info_helper() -> None:
    import pyarrow.flight as flight

    from router.protocol.flightinfo import REUSE_CONNECTION_URI, flight_info

    info = flight_info(flight.FlightDescriptor.for_command(b"x"), SCHEMA, [b"a", b"b"])
    assert [e.ticket.ticket for e in info.endpoints] == [b"a", b"b"]
    assert info.endpoints[0].locations[0].uri.decode() == REUSE_CONNECTION_URI
    assert info.schema == SCHEMA and info.total_records == -1
