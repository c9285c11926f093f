"""The server core's pieces, each alone: the block contract, pacing on one clock, the cancel
token, fault injection as a wrapper around any backend, counters, retention override."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import arrakis
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given
from hypothesis import strategies as st
from npy_backend import NpyBackend

from router.protocol.envelope import Envelope, StreamArgs
from router.protocol.errors import InternalError
from router.protocol.gps import FakeClock
from router_backends.catalog import Catalog, load_toml
from router_backends.faults import FaultPlan, FaultyBackend
from router_backends.interface import BlockStream, CallContext, Cancellation
from router_backends.mock import MockBackend
from router_backends.pacing import Released, paced
from router_backends.retention import Retention
from router_backends.testing import serve_backend
from router_backends.validation import aligned

from .conftest import CHANNELS_TOML, GPS0, NS, STRIDE
from .npy_data import CHANNELS, HOUR0, write_npy_dir

D = 250_000_000
SCHEMA = pa.schema([pa.field("time", pa.int64(), nullable=False)])


def _chunk(times: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(times, pa.int64())], schema=SCHEMA)


def _chunks(times: list[int], cuts: list[int]) -> list[pa.RecordBatch]:
    edges = [0, *sorted({c % (len(times) + 1) for c in cuts}), len(times)]
    return [_chunk(times[a:b]) for a, b in pairwise(edges)]


@given(
    first=st.integers(0, 10**6),
    count=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
)
def test_blocks_on_the_grid_pass_unchanged(first: int, count: int, cuts: list[int]) -> None:
    times = [(first + i) * D for i in range(count)]
    chunks = _chunks(times, cuts)
    out = list(aligned(iter(chunks), SCHEMA, D, first * D, (first + count) * D, "t"))
    assert [c.column(0).to_pylist() for c in out] == [
        c.column(0).to_pylist() for c in chunks if c.num_rows
    ]


@given(
    first=st.integers(1, 10**6),
    count=st.integers(2, 40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    at=st.integers(0, 39),
    fault=st.sampled_from(["off-grid", "repeat", "backwards", "early", "late"]),
)
def test_any_broken_block_time_is_an_internal_error_naming_the_backend(
    first: int, count: int, cuts: list[int], at: int, fault: str
) -> None:
    times = [(first + i) * D for i in range(count)]
    i = at % count
    if fault == "off-grid":
        times[i] += 1
    elif fault == "repeat":
        times.insert(i, times[i])
    elif fault == "backwards":
        times[i], times[i - 1 if i else 1] = times[i - 1 if i else 1], times[i]
    elif fault == "early":
        times.insert(0, (first - 1) * D)
    else:
        times.append((first + count) * D)
    with pytest.raises(InternalError, match="backend 'npy-x' broke the block contract"):
        list(
            aligned(iter(_chunks(times, cuts)), SCHEMA, D, first * D, (first + count) * D, "npy-x")
        )


def test_a_batch_with_another_schema_is_refused() -> None:
    other = pa.RecordBatch.from_arrays([pa.array([0], pa.int64())], names=["t"])
    with pytest.raises(InternalError, match="a batch has schema t: int64, the stream time"):
        list(aligned(iter([other]), SCHEMA, D, None, None, "x"))


class SteppingClock(FakeClock):
    """A fake clock that moves 10 ms every time it is read."""

    def now_ns(self) -> int:
        self.advance(10_000_000)
        return super().now_ns()


def _ctx(clock: FakeClock, cancel: Cancellation | None = None) -> CallContext:
    return CallContext("t", clock.now_ns(), clock, cancel or Cancellation(heartbeat_s=0.001))


def test_pacing_releases_history_at_once_and_live_blocks_after_their_end() -> None:
    t0 = GPS0 * NS
    latency = 30_000_000
    clock = SteppingClock(t0 + 2 * D + latency)
    released = Released()
    out = []
    for item in paced(
        iter([_chunk([t0, t0 + D]), _chunk([t0 + 2 * D])]), D, latency, _ctx(clock), released
    ):
        out.append((item, clock.now_ns()))
    assert isinstance(out[0][0], pa.RecordBatchReader)  # the past: one reader, no wait
    live, seen_at = out[1]
    assert isinstance(live, pa.RecordBatch)
    assert seen_at >= t0 + 3 * D + latency  # the block's end plus the latency had passed
    assert released == Released(blocks=3, cancelled=False)


def test_pacing_stops_waiting_when_the_call_is_cancelled() -> None:
    clock = FakeClock(GPS0 * NS)
    gone = threading.Event()
    cancel = Cancellation(client_gone=gone.is_set, heartbeat_s=0.001)
    released = Released()
    gen = paced(iter([_chunk([GPS0 * NS + D])]), D, 0, _ctx(clock, cancel), released)
    gone.set()
    assert list(gen) == []
    assert released == Released(blocks=0, cancelled=True)


def test_wait_until_uses_the_call_clock_and_the_cancel_token() -> None:
    clock = FakeClock(1000)
    stopping = threading.Event()
    ctx = _ctx(clock, Cancellation(stopping, heartbeat_s=0.001))
    assert ctx.wait_until(1000) and ctx.sleep(0)
    threading.Timer(0.05, clock.advance, [10**9]).start()
    assert ctx.sleep(0.5)  # woken by the fake clock moving, not by real time
    stopping.set()
    assert not ctx.wait_until(clock.now_ns() + NS) and ctx.cancelled()


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npy_dir(tmp_path_factory.mktemp("npy"))


def _npy_stream(url: str, seconds: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    start = (HOUR0 + 10) * NS
    for block in arrakis.Client(url).stream(sorted(CHANNELS), start / NS, start / NS + seconds):
        yield block.time_ns, {n: block.data[n] for n in CHANNELS}


def test_faults_wrap_any_backend_here_the_example(npy_dir: Path) -> None:
    with serve_backend(NpyBackend(npy_dir), faults=FaultPlan(nulls_every=2)) as server:
        blocks = list(_npy_stream(server.url, 5))
    assert [t for t, _ in blocks] == [(HOUR0 + 10 + i) * NS for i in range(5)]
    for i, (_, data) in enumerate(blocks):
        for values in data.values():
            assert np.ma.getmaskarray(values).all() == (i in (2, 4))
    with serve_backend(NpyBackend(npy_dir), faults=FaultPlan(error_after=2)) as server:
        seen = []
        with pytest.raises(flight.FlightUnavailableError, match="stream error after 2 blocks"):
            for t, _ in _npy_stream(server.url, 5):
                seen.append(t)
        assert len(seen) <= 2
        assert server.stats.errors == {"UnavailableError": 1}


def test_the_exit_fault_asks_the_process_to_stop_and_ends_the_stream(npy_dir: Path) -> None:
    with pytest.raises(ValueError, match="subprocess"):
        FaultyBackend(NpyBackend(npy_dir), FaultPlan(exit_after=1))
    with serve_backend(NpyBackend(npy_dir), faults=FaultPlan(exit_after=3), allow_exit=True) as s:
        with pytest.raises(flight.FlightUnavailableError, match="server exiting after 3 blocks"):
            list(_npy_stream(s.url, 5))
        # this process is still here: the command line, not the stream, ends the process
        assert s.exit_requested.wait(5)


class LyingMock(MockBackend):
    """Claims a block duration its blocks do not have; notes when its blocks are closed."""

    kind = "liar"

    def __init__(self) -> None:
        super().__init__(Catalog(load_toml(CHANNELS_TOML)))
        self.closed = threading.Event()

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = super().stream(args, ctx)

        def blocks() -> Iterator[pa.RecordBatch]:
            try:
                yield from inner.blocks
            finally:
                self.closed.set()

        gen = blocks()
        next(gen, None)  # started, so that closing it runs the finally clause
        return replace(inner, block_ns=3 * STRIDE, blocks=gen)


def test_a_backend_breaking_the_contract_is_internal_on_the_wire_and_counted() -> None:
    backend = LyingMock()
    env = Envelope("Stream", StreamArgs(("X1:TST-RAMP",), GPS0 * NS, (GPS0 + 1) * NS))
    with serve_backend(backend) as server:
        client = flight.connect(server.url)
        try:
            with pytest.raises(flight.FlightInternalError, match="backend 'liar' streams blocks"):
                client.do_get(flight.Ticket(env.encode())).read_all()
        finally:
            client.close()
        assert server.stats.errors == {"InternalError": 1}
        assert server.stats.streams_open == 0
        assert backend.closed.is_set()  # refused, and its blocks closed at once


def test_counters_and_the_retention_override() -> None:
    backend = MockBackend(Catalog(load_toml(CHANNELS_TOML)))
    clock = FakeClock((GPS0 + 100) * NS)
    window = Retention(0, 50)
    with serve_backend(backend, clock=clock, retention=window) as server:
        client = arrakis.Client(server.url)
        block = client.fetch(["X1:TST-RAMP"], GPS0 + 60, GPS0 + 61)
        assert len(block.data["X1:TST-RAMP"]) == 256
        with pytest.raises(flight.FlightUnavailableError, match="outside this server's retention"):
            client.fetch(["X1:TST-RAMP"], GPS0 + 10, GPS0 + 11)
        stats = server.stats.to_json()
    assert stats["blocks_sent"] == 1 / (STRIDE / NS) and stats["streams_open"] == 0
    assert stats["errors"] == {"UnavailableError": 1}
    assert stats["requests"]["GetFlightInfo"] >= 2
    assert backend.retention == Retention()  # the backend's own window is untouched
