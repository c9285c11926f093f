"""Replica A is an upstream `arrakis-server` mock process killed mid-stream (SIGTERM: it
closes its streams cleanly, then exits; SIGKILL: the connection breaks). With replica B the
client still gets every sample, unmasked, equal to a direct fetch from B; without B it gets
an error naming A within a few seconds, never masked data."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pyarrow.flight as flight
import pytest

from router.protocol.gps import gps_now_ns
from tests.integration.behaviours import one_endpoint_map
from tests.integration.servers import HERE, running_router, upstream_mock

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

FAST = HERE / "channels_fast.toml"
CHANNEL = "H1:GDS-FAST"
SPAN = 300  # seconds of 16384 Hz
KILL_AFTER = 40  # blocks received by the client before A is signalled


@pytest.fixture(scope="module")
def replica_b() -> Iterator[str]:
    with upstream_mock(FAST) as b:
        yield b.url


def _start() -> int:
    return (gps_now_ns() // 10**9) - 3600  # an hour ago: archive data, not paced


def _stream_killing(url: str, start: int, pid: int, sig: int) -> np.ndarray:
    """Stream [start, start + SPAN) through the router, signalling ``pid`` mid-stream."""
    parts = []
    for i, block in enumerate(arrakis.Client(url).stream([CHANNEL], start, start + SPAN)):
        data = block.data[CHANNEL]
        assert not np.ma.is_masked(data), f"block {i} at {block.time_ns} has masked samples"
        parts.append(np.asarray(data))
        if i == KILL_AFTER:
            os.kill(pid, sig)
    return np.concatenate(parts)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_replica_killed_mid_stream_is_resumed_on_the_other(replica_b: str, sig: int) -> None:
    start = _start()
    with (
        upstream_mock(FAST) as a,
        running_router(one_endpoint_map(a.url, replica_b)) as (
            url,
            _,
            _,
        ),
    ):
        assert a.process is not None
        got = _stream_killing(url, start, a.process.pid, sig)
        a.process.wait(30)
    want = arrakis.Client(replica_b).fetch([CHANNEL], start, start + SPAN).data[CHANNEL]
    assert not np.ma.is_masked(want)
    assert len(got) == SPAN * 16384
    np.testing.assert_array_equal(got, np.asarray(want))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_only_replica_killed_mid_stream_is_an_error_naming_it(sig: int) -> None:
    start = _start()
    with upstream_mock(FAST) as a, running_router(one_endpoint_map(a.url)) as (url, _, _):
        assert a.process is not None
        with pytest.raises(flight.FlightError) as info:
            _stream_killing_timed(url, start, a.process.pid, sig)
        a.process.wait(30)
    assert a.url in str(info.value) and "delivered up to" in str(info.value)


def _stream_killing_timed(url: str, start: int, pid: int, sig: int) -> None:
    signalled: list[float] = []
    try:
        for i, block in enumerate(arrakis.Client(url).stream([CHANNEL], start, start + SPAN)):
            assert not np.ma.is_masked(block.data[CHANNEL]), f"block {i} masked"
            if i == KILL_AFTER:
                os.kill(pid, sig)
                signalled.append(time.monotonic())
    finally:
        if signalled:
            assert time.monotonic() - signalled[0] < 5  # an error within a few seconds
