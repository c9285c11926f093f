"""The one-slice one-group short path: OnGridRelay against the general pipeline on the same
rows, its fall-backs, and StreamExecution reading the downstream in the consumer's thread
(cancellation and early exit close the downstream; nothing is left running)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.context import CLIENT_LEFT, RequestContext
from router.downstream import StaticPool
from router.errors import CancelledError, UnavailableError
from router.outstream import Run
from router.protocol.envelope import Envelope, StreamArgs
from router.stitch import Rebucketer, fill_gaps, to_batches
from router.stitch.direct import OnGridRelay
from router.stitch.rebucket import stitch_rows
from router.streaming import StreamExecution
from scopemap import RoutingIndex, StreamRequest, load_text, plan_stream
from tests.router.blockgen import downstream_batch, downstream_blocks, grid_for, meta, rows
from tests.router.scripted import HANG, ScriptedDownstream, feeds_for

S = 62_500_000
A = meta("H1:A-X", 256, S)
B = meta("H1:B-Y", 512, S, "float32")
GRID = grid_for([A, B], S)
T0 = 100 * S


def _general(batches: list[pa.RecordBatch], start: int, end: int | None) -> list[Any]:
    return _counted(batches, start, end)[0]


def _counted(
    batches: list[pa.RecordBatch], start: int, end: int | None
) -> tuple[list[Any], tuple[int, int, int]]:
    """The general pipeline's rows and counters ``(blocks, gap_blocks, duplicates)``."""
    state = Rebucketer(GRID)
    out = list(fill_gaps(stitch_rows(batches, state), start, end, S))
    gaps = sum(1 for b in out if b.source is None and len(b.cells) < len(GRID.channels))
    return rows(to_batches(out, GRID)), (len(out), gaps, state.late_rows)


def _relay(
    batches: list[pa.RecordBatch], start: int, end: int | None, native: bool = True
) -> OnGridRelay:
    """The relay; ``native=False``: its one-pass check in Python, as when the native
    module (router._chunkstream) is not built."""
    relay = OnGridRelay(batches, GRID, start, end)
    if native:
        assert relay.native_check is not None, "router._chunkstream is not built"
    else:
        relay.native_check = None
    return relay


def _null_list(t: int) -> pa.RecordBatch:
    batch = downstream_batch([A, B], t, S)
    cells = [batch.column(0), pa.nulls(1, batch.schema.field(1).type), batch.column(2)]
    return pa.RecordBatch.from_arrays(cells, schema=batch.schema)


def test_whole_blocks_pass_through_unchanged() -> None:
    batches = downstream_blocks([A, B], [T0 + k * S for k in range(5)], S)
    relay = _relay(batches, T0, T0 + 5 * S)
    out = list(relay)
    assert all(o is b for o, b in zip(out, batches, strict=True))
    assert relay.fallback is None and relay.gap_blocks == 0 and relay.passed == 5


def test_gaps_head_middle_and_tail_are_null_blocks() -> None:
    batches = downstream_blocks([A, B], [T0 + S, T0 + 3 * S], S)
    relay = _relay(batches, T0, T0 + 6 * S)
    out = list(relay)
    assert rows(out) == _general(batches, T0, T0 + 6 * S)
    assert [t for t, _ in rows(out)] == [T0 + k * S for k in range(6)]
    assert relay.gap_blocks == 4 and relay.passed == 2 and relay.fallback is None
    assert all(b.schema.equals(GRID.schema, check_metadata=True) for b in out)


def test_repeats_and_rows_going_back_are_dropped_without_falling_back() -> None:
    times = [T0, T0 + S, T0 + S, T0, T0 + 2 * S]
    batches = downstream_blocks([A, B], times, S)
    relay = _relay(batches, T0, T0 + 3 * S)
    out = list(relay)
    assert [t for t, _ in rows(out)] == [T0, T0 + S, T0 + 2 * S]
    assert out[1] is batches[1]  # the first copy won
    assert relay.fallback is None
    assert rows(out) == _general(batches, T0, T0 + 3 * S)


def test_rows_before_start_and_from_end_on_are_trimmed() -> None:
    batches = downstream_blocks([A, B], [T0 + k * S for k in range(-2, 6)], S)
    relay = _relay(batches, T0, T0 + 3 * S)
    assert [t for t, _ in rows(relay)] == [T0, T0 + S, T0 + 2 * S]


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(lambda: downstream_batch([A, B], T0 + 2 * S + S // 4, S), id="off-grid"),
        pytest.param(lambda: downstream_batch([A, B], T0 + 2 * S, 2 * S), id="double-duration"),
        pytest.param(lambda: downstream_batch([A, B], T0 + 2 * S, S // 2), id="half-duration"),
        pytest.param(lambda: downstream_batch([A], T0 + 2 * S, S), id="other-schema"),
        pytest.param(lambda: _null_list(T0 + 2 * S), id="null-list"),
        pytest.param(
            lambda: pa.concat_batches(downstream_blocks([A, B], [T0 + 2 * S, T0 + 3 * S], S)),
            id="two-rows",
        ),
    ],
)
def test_a_row_that_is_not_a_whole_block_hands_over_to_the_general_path(odd: Any) -> None:
    head = downstream_blocks([A, B], [T0, T0 + S], S)
    tail = downstream_blocks([A, B], [T0 + 4 * S, T0 + 5 * S], S)
    batches = [*head, odd(), *tail]
    relay = _relay(batches, T0, T0 + 7 * S)
    out = list(relay)
    assert relay.fallback is not None and relay.passed == 2
    assert out[0] is head[0] and out[1] is head[1]
    assert rows(out) == _general(batches, T0, T0 + 7 * S)
    assert all(b.num_rows == 1 for b in out)


def test_a_sliced_row_is_checked_channel_by_channel() -> None:
    """A row whose buffers are not laid out as IPC leaves them (a slice of a bigger batch)
    is decided by the per-channel check, and still passes through."""
    both = pa.concat_batches(downstream_blocks([A, B], [T0, T0 + S], S))
    batches = [both.slice(0, 1), both.slice(1, 1)]
    relay = _relay(batches, T0, T0 + 2 * S)
    out = list(relay)
    assert relay.fallback is None and out[1] is batches[1]


# The rows a downstream may send for one group: whole blocks, repeats, going back, gaps,
# and now and then something only the general path handles.
ROW = st.one_of(
    st.tuples(st.just("whole"), st.integers(-2, 12)),
    st.tuples(st.sampled_from(["off-grid", "double", "half", "null-list"]), st.integers(-2, 12)),
)


def _row(kind: str, k: int) -> pa.RecordBatch:
    t = T0 + k * S
    if kind == "off-grid":
        return downstream_batch([A, B], t + S // 2, S)
    if kind == "double":
        return downstream_batch([A, B], t, 2 * S)
    if kind == "half":
        return downstream_batch([A, B], t, S // 2)
    if kind == "null-list":
        return _null_list(t)
    return downstream_batch([A, B], t, S)


@given(
    st.lists(ROW, max_size=14),
    st.booleans(),
    st.integers(1, 12),
)
def test_short_path_equals_general_path(spec: list[Any], sort: bool, n: int) -> None:
    if sort:
        spec = sorted(spec, key=lambda r: r[1])
    batches = [_row(kind, k) for kind, k in spec]
    end = T0 + n * S
    relay = _relay(batches, T0, end)
    got = rows(relay)
    want, counters = _counted(batches, T0, end)
    assert got == want
    # the same counters too: blocks, null-filled blocks, repeats dropped
    assert (len(got), relay.gap_blocks, relay.duplicates) == counters


def _flat(out: list[Any]) -> list[pa.RecordBatch]:
    """The record batches on the wire: a Table or a Run is written batch by batch."""
    return [b for x in out for b in (x.to_batches() if isinstance(x, pa.Table | Run) else [x])]


@given(
    st.lists(ROW, max_size=14),
    st.booleans(),
    st.one_of(st.none(), st.integers(1, 12)),
    st.integers(1, 6),
    st.integers(1, 4),
    st.booleans(),
)
def test_chunks_equal_the_block_by_block_stream(
    spec: list[Any], sort: bool, n: int | None, per_chunk: int, vector_min: int, native: bool
) -> None:
    """Chunked (one-pass runs, block-by-block otherwise, hand-over) == block by block:
    the same rows, the same counters, no chunk over ``per_chunk`` blocks; with the one-pass
    check in C++ or in Python."""
    if sort:
        spec = sorted(spec, key=lambda r: r[1])
    batches = [_row(kind, k) for kind, k in spec]
    end = None if n is None else T0 + n * S
    plain = _relay(batches, T0, end)
    want = rows(plain)
    chunked = _relay(batches, T0, end, native)
    chunked.vector_min = vector_min
    out = list(chunked.chunks(per_chunk))
    assert all(isinstance(x, pa.RecordBatch) or x.num_rows <= per_chunk for x in out)
    assert all(b.num_rows == 1 for b in _flat(out))
    assert rows(_flat(out)) == want
    assert (chunked.gap_blocks, chunked.duplicates, chunked.fallback) == (
        plain.gap_blocks,
        plain.duplicates,
        plain.fallback,
    )


NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native-check", "python-check"])


@NATIVE
def test_a_whole_run_is_taken_in_one_pass_as_the_same_batches(native: bool) -> None:
    batches = downstream_blocks([A, B], [T0 + k * S for k in range(10)], S)
    relay = _relay(batches, T0, T0 + 10 * S, native)
    out = list(relay.chunks(4))
    assert [x.num_rows for x in out] == [4, 4, 2]
    # the native check hands the batches on as they are, with their size measured
    assert all(isinstance(x, Run if native else pa.Table) for x in out)
    if native:
        assert [x.nbytes for x in out] == [sum(b.get_total_buffer_size() for b in x) for x in out]
    sent = _flat(out)
    # the downstream's own buffers go out: no copy
    assert all(
        s.column(2).buffers()[-1].address == b.column(2).buffers()[-1].address
        for s, b in zip(sent, batches, strict=True)
    )
    assert relay.passed == 10 and relay.gap_blocks == 0 and relay.fallback is None


def _with_bitmap(t: int) -> pa.RecordBatch:
    """A whole block whose first channel carries an all-valid list bitmap."""
    batch = downstream_batch([A, B], t, S)
    cell = batch.column(1)
    masked = pa.ListArray.from_arrays(cell.offsets, cell.values, mask=pa.array([False]))
    return pa.RecordBatch.from_arrays(
        [batch.column(0), masked, batch.column(2)], schema=batch.schema
    )


def _sliced(t: int) -> pa.RecordBatch:
    """A whole block sliced out of a two-row batch (its raw offsets hold three values)."""
    two = pa.Table.from_batches(downstream_blocks([A, B], [t - S, t], S)).combine_chunks()
    return two.to_batches()[0].slice(1, 1)


@pytest.mark.parametrize(
    "odd",
    [
        lambda t: _with_bitmap(t),
        lambda t: _sliced(t),
        lambda t: pa.RecordBatch.from_arrays(
            downstream_batch([A, B], t, S).columns,
            schema=downstream_batch([A, B], t, S).schema.with_metadata({"x": "1"}),
        ),
        _null_list,
        lambda t: downstream_batch([A, B], t + S // 2, S),  # off the grid
    ],
)
@NATIVE
def test_a_run_with_one_odd_row_is_checked_block_by_block(odd: Any, native: bool) -> None:
    """One odd row in a run of 6: the one-pass check declines the chunk, the block-by-block
    path decides (passes it, or hands over to the general pipeline) as ``iter`` does."""
    batches = downstream_blocks([A, B], [T0 + k * S for k in range(6)], S)
    batches[3] = odd(T0 + 3 * S)
    plain = _relay(batches, T0, T0 + 6 * S)
    want = rows(plain)
    chunked = _relay(batches, T0, T0 + 6 * S, native)
    chunked.vector_min = 2
    assert rows(_flat(list(chunked.chunks(6)))) == want
    assert (chunked.passed, chunked.fallback) == (plain.passed, plain.fallback)


# Rows for the one-pass check: whole blocks at any slot, and each kind of odd row.
CHECK_ROW = st.one_of(
    st.tuples(st.just("whole"), st.integers(-2, 12)),
    st.tuples(
        st.sampled_from(["off-grid", "double", "half", "null-list", "bitmap", "sliced", "meta"]),
        st.integers(-2, 12),
    ),
)


def _check_row(kind: str, k: int) -> pa.RecordBatch:
    t = T0 + k * S
    if kind == "bitmap":
        return _with_bitmap(t)
    if kind == "sliced":
        return _sliced(t)
    if kind == "meta":
        batch = downstream_batch([A, B], t, S)
        return pa.RecordBatch.from_arrays(
            batch.columns, schema=batch.schema.with_metadata({"x": "1"})
        )
    return _row(kind, k)


@given(
    st.lists(CHECK_ROW, min_size=1, max_size=10),
    st.integers(-1, 3),
    st.one_of(st.none(), st.integers(0, 14)),
)
def test_the_native_check_decides_as_the_python_check(
    spec: list[Any], first: int, n: int | None
) -> None:
    """The C++ one-pass check takes exactly the chunks the Python one takes, and leaves the
    same state; runs of whole blocks from the next slot are taken."""
    batches = [_check_row(kind, k) for kind, k in spec]
    start, end = T0 + first * S, None if n is None else T0 + n * S
    native, python = _relay(batches, start, end, True), _relay(batches, start, end, False)
    got, want = native._whole_run(list(batches)), python._whole_run(list(batches))
    assert (got is None) == (want is None)
    if want is not None:
        assert got is not None and got.to_batches() == want.to_batches()
        assert isinstance(got, Run)
        assert got.nbytes == sum(b.get_total_buffer_size() for b in got)
    state = (native._expected, native._last, native.passed)
    assert state == (python._expected, python._last, python.passed)
    # a whole block with an all-valid list bitmap is a whole block
    run = all(kind in ("whole", "bitmap") and k == first + i for i, (kind, k) in enumerate(spec))
    assert (got is not None) == (run and (end is None or T0 + (first + len(spec) - 1) * S < end))


PANDAS_PROBE = """
import sys
import pyarrow as pa
from router.stitch.direct import OnGridRelay
from tests.router.blockgen import grid_for, meta

S = 62_500_000
grid = grid_for([meta("H1:A-X", 256, S)], S)
batches = list(pa.ipc.open_stream(sys.stdin.buffer.read()))
assert "pandas" not in sys.modules, "imported before the relay ran"
relay = OnGridRelay(batches, grid, 100 * S, 140 * S)
out = list(relay.chunks(32))
assert [x.num_rows for x in out] == [32, 8] and relay.passed == 40, out
print("pandas" in sys.modules)
"""


def test_the_one_pass_check_does_not_import_pandas() -> None:
    """``ChunkedArray.to_numpy()`` imports pandas (+35 MB RSS in the router, for good):
    the run check must not. Batches read from IPC, as the router gets them, in a fresh
    interpreter (building arrays with ``pa.array`` imports pandas on its own)."""
    sink = pa.BufferOutputStream()
    a = meta("H1:A-X", 256, S)
    with pa.ipc.new_stream(sink, grid_for([a], S).schema) as writer:
        for batch in downstream_blocks([a], [T0 + k * S for k in range(40)], S):
            writer.write_batch(batch)
    done = subprocess.run(
        [sys.executable, "-c", PANDAS_PROBE],
        input=sink.getvalue().to_pybytes(),
        capture_output=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip() == "False"


# ---------------------------------------------------------------------- StreamExecution

URL, REPLICA = "grpc://a:1", "grpc://b:1"
MAP = "".join(
    f"{url}:\n  scopes:\n    H1:\n      - all: true\n  retention: {{}}\n" for url in (URL, REPLICA)
)


def _execution(
    downstreams: list[ScriptedDownstream],
    nblocks: int,
    ctx: RequestContext | None = None,
    *,
    historical: bool = False,
    chunk_bytes: int = 256 * 1024,
) -> StreamExecution:
    result = load_text(MAP, "m.yaml")
    assert result.scope_map is not None
    channels = (A.name, B.name)
    end = T0 + nblocks * S
    plan = plan_stream(RoutingIndex(result.scope_map), StreamRequest(channels, T0, end), T0)
    assert len(plan.slices) == 1 and len(plan.slices[0].groups) == 1
    members = {d.url: d for d in downstreams}
    members.setdefault(REPLICA, ScriptedDownstream(REPLICA))
    envelope = Envelope("Stream", StreamArgs(channels, T0, end))
    feeds = feeds_for(StaticPool(dict(members)), GRID, envelope, ctx=ctx, chunk_bytes=chunk_bytes)
    return StreamExecution(plan, feeds, historical=historical)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feed ") and t.is_alive()]


def test_one_group_is_read_in_the_consumer_thread() -> None:
    batches = downstream_blocks([A, B], [T0, T0 + 2 * S], S)
    downstream = ScriptedDownstream(URL, [batches])
    execution = _execution([downstream], 3)
    out = list(execution)
    assert out[0] is batches[0] and out[2] is batches[1]
    assert execution.blocks == 3 and execution.gap_blocks == 1
    assert downstream.commands[0]["args"]["start"] == T0
    assert downstream.open == 0 and _threads() == []


def test_short_path_fails_over_resuming_after_the_last_block() -> None:
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(4)], S)
    first = ScriptedDownstream(URL, [[*blocks[:2], UnavailableError(f"{URL}: gone")]])
    replica = ScriptedDownstream(REPLICA, [blocks[2:]])
    execution = _execution([first, replica], 4)
    assert execution.plan.slices[0].groups[0].endpoints[0] == URL
    out = list(execution)
    assert [t for t, _ in rows(out)] == [T0 + k * S for k in range(4)]
    assert replica.commands[0]["args"]["start"] == T0 + 2 * S
    assert first.open == replica.open == 0 and _threads() == []


def test_client_cancel_closes_the_downstream() -> None:
    blocks = downstream_blocks([A, B], [T0], S)
    downstream = ScriptedDownstream(URL, [[blocks[0], HANG]])
    ctx = RequestContext("req-1")
    execution = _execution([downstream], 10, ctx)
    got = []
    with pytest.raises(CancelledError):
        for batch in execution:
            got.append(batch)
            ctx.cancel(CLIENT_LEFT)
    assert len(got) == 1
    assert downstream.open == 0 and _threads() == []


def test_early_exit_closes_the_downstream() -> None:
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(10)], S)
    downstream = ScriptedDownstream(URL, [[*blocks, HANG]])
    batches = iter(_execution([downstream], 20))
    next(batches)
    batches.close()  # type: ignore[attr-defined]
    assert downstream.open == 0 and _threads() == []


# --------------------------------------------------------------------------- chunks
# A historical stream's blocks are read by a thread and handed to pyarrow as Tables of
# one-block batches: the same batches on the wire, the same counters, nothing left open.
BLOCK_BYTES = 16 * 8 + 32 * 4  # GRID: 16 float64 + 32 float32 samples per block


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 256])
def test_chunked_stream_sends_the_same_batches(per_chunk: int) -> None:
    times = [T0 + k * S for k in (0, 1, 3, 4, 5, 6, 6, 7, 9)]  # gaps, a repeat
    batches = downstream_blocks([A, B], times, S)
    plain = _execution([ScriptedDownstream(URL, [batches])], 11)
    chunked = _execution(
        [ScriptedDownstream(URL, [batches])],
        11,
        historical=True,
        chunk_bytes=per_chunk * BLOCK_BYTES,
    )
    expected = list(plain)
    out = list(chunked)
    assert all(b.num_rows == 1 for b in _flat(out))
    assert rows(_flat(out)) == rows(expected)
    if per_chunk > 1:
        assert any(isinstance(x, pa.Table | Run) for x in out)
    assert (chunked.blocks, chunked.gap_blocks, chunked.duplicates_dropped) == (
        plain.blocks,
        plain.gap_blocks,
        plain.duplicates_dropped,
    )
    assert _threads() == []


def test_chunked_stream_fails_over_and_falls_back_like_the_plain_one() -> None:
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(6)], S)
    odd = [*blocks[:2], _null_list(T0 + 2 * S), *blocks[3:4]]
    first = ScriptedDownstream(URL, [[*odd, UnavailableError(f"{URL}: gone")]])
    replica = ScriptedDownstream(REPLICA, [blocks[4:]])
    execution = _execution([first, replica], 6, historical=True, chunk_bytes=2 * BLOCK_BYTES)
    out = _flat(list(execution))
    assert [t for t, _ in rows(out)] == [T0 + k * S for k in range(6)]
    assert replica.commands[0]["args"]["start"] == T0 + 4 * S
    assert first.open == replica.open == 0 and _threads() == []


def test_chunked_stream_cancel_and_early_exit_close_everything() -> None:
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(10)], S)
    downstream = ScriptedDownstream(URL, [[*blocks, HANG]])
    ctx = RequestContext("req-1")
    execution = _execution([downstream], 20, ctx, historical=True, chunk_bytes=4 * BLOCK_BYTES)
    with pytest.raises(CancelledError):
        for _ in execution:
            ctx.cancel(CLIENT_LEFT)
    assert downstream.open == 0 and _threads() == []

    downstream = ScriptedDownstream(URL, [[*blocks, HANG]])
    batches = iter(_execution([downstream], 20, historical=True, chunk_bytes=4 * BLOCK_BYTES))
    next(batches)
    batches.close()  # type: ignore[attr-defined]
    assert downstream.open == 0 and _threads() == []


def _spy_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the chunks the one-pass check took, as they are taken."""
    taken: list[int] = []
    whole_run = OnGridRelay._whole_run

    def spy(self: OnGridRelay, chunk: list[pa.RecordBatch]) -> pa.Table | None:
        run = whole_run(self, chunk)
        if run is not None:
            taken.append(run.num_rows)
        return run

    monkeypatch.setattr(OnGridRelay, "_whole_run", spy)
    return taken


def test_one_pass_chunk_spans_a_failover_and_equals_the_plain_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run of 40 whole blocks whose downstream fails after 20: the replica resumes at the
    21st, the chunk read across the failover is still one run (one Table of 40, taken in
    one pass), the rows equal a plain read, and both downstreams are closed."""
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(40)], S)
    first = ScriptedDownstream(URL, [[*blocks[:20], UnavailableError(f"{URL}: gone")]])
    replica = ScriptedDownstream(REPLICA, [blocks[20:]])
    execution = _execution([first, replica], 40, historical=True, chunk_bytes=64 * BLOCK_BYTES)
    taken = _spy_runs(monkeypatch)
    out = list(execution)
    assert taken == [40]
    assert [type(x) for x in out] == [Run] and out[0].num_rows == 40
    assert rows(_flat(out)) == rows(blocks)
    assert replica.commands[0]["args"]["start"] == T0 + 20 * S
    assert (execution.blocks, execution.gap_blocks, execution.duplicates_dropped) == (40, 0, 0)
    assert first.open == replica.open == 0 and _threads() == []


def test_one_pass_chunks_stop_at_a_client_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 16 taken in one pass; the client leaves after the first: the stream raises
    CancelledError at the next chunk and the downstream (hanging after 40 blocks) is closed."""
    blocks = downstream_blocks([A, B], [T0 + k * S for k in range(40)], S)
    downstream = ScriptedDownstream(URL, [[*blocks, HANG]])
    ctx = RequestContext("req-1")
    execution = _execution([downstream], 100, ctx, historical=True, chunk_bytes=16 * BLOCK_BYTES)
    taken = _spy_runs(monkeypatch)
    got = []
    with pytest.raises(CancelledError):
        for item in execution:
            got.append(item)
            ctx.cancel(CLIENT_LEFT)
    assert len(got) == 1 and isinstance(got[0], pa.Table | Run) and got[0].num_rows == 16
    assert taken[0] == 16 and execution.blocks == 16
    assert downstream.open == 0 and _threads() == []
