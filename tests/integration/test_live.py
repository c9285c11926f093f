"""Live and open-ended streams through the router with the real ``arrakis`` client, in front
of our mocks (deterministic data, live pacing, fault injection): two downstreams holding
different channel groups, a stalled downstream, a catch-up across archive -> live, and
cancellation leaving nothing open. Each test streams a few seconds of real time."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from router.downstream import BatchStream, Call, Downstream, DownstreamPool, FlightDownstream
from router.protocol.gps import gps_now_ns
from scopemap import StreamRequest, plan_stream
from tests.integration.servers import running_router, wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")
defaults = pytest.importorskip("router_backends.defaults")

NS = 1_000_000_000
BLOCK_S = 0.0625


def _pick(subsystem: str) -> str:
    for meta in defaults.default_channels("H1"):
        if meta.name.startswith(f"H1:{subsystem}-") and meta.sample_rate <= 2048:
            return str(meta.name)
    raise AssertionError(f"no {subsystem} channel")


GDS, LSC = _pick("GDS"), _pick("LSC")
CHANNELS = [GDS, LSC]


def split_map(gds_url: str, lsc_url: str, retention: str = "{}") -> str:
    return f"""
{gds_url}:
  scopes: {{H1: [{{subsystem: GDS}}]}}
  retention: {retention}
{lsc_url}:
  scopes: {{H1: [{{subsystem: LSC}}]}}
  retention: {retention}
"""


class _Counted:
    def __init__(self, inner: BatchStream, pool: CountingPool) -> None:
        self.inner, self.pool, self.closed = inner, pool, False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return iter(self.inner)

    def read_many(self, limit: int) -> list[pa.RecordBatch]:
        return self.inner.read_many(limit)

    @property
    def received(self) -> int:
        return self.inner.received

    def cancel(self) -> None:
        self.inner.cancel()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inner.close()
            with self.pool.lock:
                self.pool.open -= 1


class _CountingDownstream:
    def __init__(self, inner: FlightDownstream, pool: CountingPool) -> None:
        self.inner, self.pool, self.url = inner, pool, inner.url

    def stream(self, command: bytes, call: Call) -> BatchStream:
        stream = self.inner.stream(command, call)
        with self.pool.lock:
            self.pool.open += 1
            self.pool.tickets.append(json.loads(command)["args"])
        return _Counted(stream, self.pool)

    def fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        return self.inner.fetch(command, call)

    def action(self, kind: str, call: Call) -> list[bytes]:
        return self.inner.action(kind, call)

    def exchange(
        self, command: bytes, batches: Sequence[pa.RecordBatch], call: Call
    ) -> list[pa.RecordBatch]:
        return self.inner.exchange(command, batches, call)

    def close(self) -> None:
        self.inner.close()


class CountingPool(DownstreamPool):
    """Real Flight downstreams; counts the stream calls the router holds open."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.open = 0
        self.tickets: list[dict[str, Any]] = []

    def _create(self, url: str) -> Downstream:
        return _CountingDownstream(FlightDownstream(url, self), self)


def _feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feed ") and t.is_alive()]


def _read(stream: Generator[Any, None, None], blocks: int) -> list[Any]:
    """``blocks`` blocks (1/16 s each: live, that many strides of real time) from a client
    stream, then close it (the client cancels its reads on close; merely dropping the
    generator leaves that to the GC)."""
    out: list[Any] = []
    try:
        for block in stream:
            out.append(block)
            if len(out) == blocks:
                break
    finally:
        stream.close()
    return out


def _check_against(full_url: str, blocks: list[Any], *, allow_masked: Sequence[str] = ()) -> None:
    """Contiguous block times; every unmasked sample equals the mock's own data."""
    times = [b.time_ns for b in blocks]
    step = int(BLOCK_S * NS)
    assert times == list(range(times[0], times[0] + step * len(times), step))
    want = arrakis.Client(full_url).fetch(CHANNELS, times[0] / NS, (times[-1] + step) / NS)
    for name in CHANNELS:
        got = np.ma.concatenate([b.data[name] for b in blocks])  # type: ignore[no-untyped-call]
        ref = np.asarray(want.data[name])
        assert got.shape == ref.shape, name
        if name not in allow_masked:
            assert not np.ma.is_masked(got), name
        ok = ~np.ma.getmaskarray(got)
        np.testing.assert_array_equal(np.asarray(got)[ok], ref[ok], err_msg=name)


@pytest.fixture(scope="module")
def mocks() -> Iterator[dict[str, str]]:
    with (
        testing.serve_mock() as gds,
        testing.serve_mock() as lsc,
        testing.serve_mock() as full,
        testing.serve_mock(faults="stall=3@16") as stalling,
    ):
        yield {"gds": gds, "lsc": lsc, "full": full, "stalling": stalling}


def test_live_stream_from_two_downstreams_is_contiguous_and_exact(
    mocks: dict[str, str],
) -> None:
    pool = CountingPool()
    with running_router(split_map(mocks["gds"], mocks["lsc"]), pool=pool) as (url, _, router):
        blocks = _read(arrakis.Client(url).stream(CHANNELS), 48)
        # the router asked each downstream for its own group, live
        assert sorted(t["channels"][0] for t in pool.tickets) == sorted(CHANNELS)
        assert all(t["start"] is None and t["end"] is None for t in pool.tickets)
        assert wait_until(lambda: pool.open == 0 and router.open_streams == 0, timeout=5)
    _check_against(mocks["full"], blocks)


def test_stalled_downstream_gives_null_filled_blocks_then_recovers(
    mocks: dict[str, str],
) -> None:
    yaml_text = split_map(mocks["gds"], mocks["stalling"])
    with running_router(yaml_text) as (url, _, _):
        blocks = _read(arrakis.Client(url).stream(CHANNELS), 112)
    masked = [bool(np.ma.is_masked(b.data[LSC])) for b in blocks]
    # the 3 s stall (after 16 blocks) became a run of null-filled LSC blocks, no error...
    assert sum(masked) >= 16, masked
    first = masked.index(True)
    assert not any(masked[:first]) and first >= 8
    # ...and LSC data flows again once the downstream is back
    assert not any(masked[-8:]), masked
    _check_against(mocks["full"], blocks, allow_masked=[LSC])


def test_catch_up_crosses_from_archive_to_live(mocks: dict[str, str]) -> None:
    with (
        testing.serve_mock(retention=(0, 20)) as live,
        testing.serve_mock(retention=(10, math.inf)) as archive,
    ):
        yaml_text = f"""
{live}:
  scopes: {{H1: [{{all: true}}]}}
  retention: {{newest: 0, oldest: 20}}
{archive}:
  scopes: {{H1: [{{all: true}}]}}
  retention: {{newest: 10, oldest: .inf}}
"""
        pool = CountingPool()
        with running_router(yaml_text, pool=pool) as (url, service, _):
            now = gps_now_ns()
            start = (now // NS - 25) * NS
            plan = plan_stream(
                service.routing.index, StreamRequest(tuple(CHANNELS), start, None), now
            )
            assert [s.groups[0].endpoints for s in plan.slices] == [(archive,), (live,)]
            stream = arrakis.Client(url).stream(CHANNELS, start / NS)
            blocks = []
            for block in stream:
                blocks.append(block)
                if block.time_ns >= now + NS:  # a second into live data
                    break
            stream.close()
            handovers = [t["start"] for t in pool.tickets if t["end"] is None]
    assert blocks[0].time_ns == start
    assert len(handovers) == 1 and start < handovers[0] <= now - 9 * NS
    _check_against(mocks["full"], blocks)


def test_client_cancel_closes_every_live_downstream_call_within_a_second(
    mocks: dict[str, str],
) -> None:
    pool = CountingPool()
    with running_router(split_map(mocks["gds"], mocks["lsc"]), pool=pool) as (url, _, router):
        cmd = {"request": "Stream", "args": {"channels": CHANNELS, "start": None, "end": None}}
        reader = flight.FlightClient(url).do_get(flight.Ticket(json.dumps(cmd).encode()))
        for _ in range(4):
            reader.read_chunk()
        assert pool.open == 2
        reader.cancel()
        assert wait_until(
            lambda: pool.open == 0 and router.open_streams == 0 and not _feed_threads(),
            timeout=1.0,
        )
        # the real client closing a live stream leaves nothing either
        _read(arrakis.Client(url).stream(CHANNELS), 8)
        assert wait_until(
            lambda: pool.open == 0 and router.open_streams == 0 and not _feed_threads(),
            timeout=1.0,
        )
