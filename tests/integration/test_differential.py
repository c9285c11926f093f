"""The differential property (house-plan invariant 2): for any scope-map layout and any time
range, a fetch through the router equals the same fetch from one mock holding everything —
identical timestamps, values, dtypes and gaps — and a layout that leaves a hole makes the
router refuse at GetFlightInfo, naming the channels and the range, instead of returning
partial data.

A fixed pool of in-process mocks is started once per module, each serving the same channel
catalog with a *strict* retention window; a generated scope map gives every endpoint exactly
its mock's window, so a routing mistake (asking a downstream for a time it does not hold) is
caught as a refusal, not masked by a mock that happens to have the data. Router and mocks
share one FakeClock fixed on a whole second: the mocks' retention checks and pacing and the
router's planning agree on ``now`` (whole seconds also keep every retention bound on the
stride grid, as in a real deployment where bounds are whole seconds).

Coverage is decided by an oracle written here from the scope-map semantics (a channel is
servable at an instant when some endpoint claims it, at any specificity, and retains the
instant), not by asking the planner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.flight as flight
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from router.protocol.gps import FakeClock
from tests.integration.servers import running_router, wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")

NS = 1_000_000_000
NOW_S = 1_400_000_000  # fixed GPS now, on a whole second
NOW = NOW_S * NS

# Mixed rates (16 Hz .. 4096 Hz), strides (62.5 ms and 125 ms) and dtypes; no `func`
# except one ramp, so values are the mock's deterministic pool (cheap) and the ramp makes
# any time shift visible as a value difference.
CHANNELS_TOML = """\
[common]
publisher = "DIFF"
data_type = "float32"
stride = 62500000
max_latency = 1000000000

["X1:GDS-STRAIN"]
sample_rate = 4096
data_type = "float64"
func = "t - 1400000000"

["X1:GDS-STATE"]
sample_rate = 16
data_type = "int32"
stride = 125000000

["X1:LSC-DARM"]
sample_rate = 2048

["X1:LSC-SLOW"]
sample_rate = 64
stride = 125000000

["X1:PEM-ACC"]
sample_rate = 256
data_type = "uint32"

["Y1:GDS-STRAIN"]
sample_rate = 1024
data_type = "float64"
stride = 125000000

["Y1:ASC-PIT"]
sample_rate = 16
data_type = "int64"
"""
CHANNELS = (
    "X1:GDS-STRAIN",
    "X1:GDS-STATE",
    "X1:LSC-DARM",
    "X1:LSC-SLOW",
    "X1:PEM-ACC",
    "Y1:GDS-STRAIN",
    "Y1:ASC-PIT",
)
# `func` channels are evaluated at block start + i / rate in float64, so their last bits
# depend on how a downstream cuts blocks (62.5 ms for a group alone, 125 ms in the reference):
# compared to 1e-6 (a one-sample shift would be 2.4e-4), every other channel exactly.
RAMPS = frozenset({"X1:GDS-STRAIN"})
SUBSYSTEMS = {"X1": ("GDS", "LSC", "PEM"), "Y1": ("GDS", "ASC")}

# Retention windows (newest, oldest) in seconds of age, one mock each: live / archive
# overlapping by 300 s / archive meeting the live one exactly at 600 s / everything /
# a short live buffer / a replica of the overlapping archive.
WINDOWS: tuple[tuple[float, float], ...] = (
    (0, 600),
    (300, math.inf),
    (600, math.inf),
    (0, math.inf),
    (0, 300),
    (300, math.inf),
)
BOUNDARY_AGES = (900, 605, 600, 300, 120, 5)


@dataclass(frozen=True)
class Pool:
    urls: tuple[str, ...]  # one mock per WINDOWS entry
    full: str  # the reference: same catalog, no retention limit


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    toml = tmp_path_factory.mktemp("differential") / "channels.toml"
    toml.write_text(CHANNELS_TOML)
    clock = FakeClock(NOW)
    with ExitStack() as stack:
        urls = tuple(
            stack.enter_context(testing.serve_mock(toml, retention=w, clock=clock)) for w in WINDOWS
        )
        full = stack.enter_context(testing.serve_mock(toml, clock=clock))
        yield Pool(urls, full)


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class EndpointLayout:
    mock: int  # index into WINDOWS / Pool.urls
    scopes: tuple[tuple[str, tuple[str, ...]], ...]  # (domain, YAML flow entries)

    def claims(self, channel: str) -> bool:
        domain, rest = channel.rsplit(":", 1)
        subsystem = rest.replace("_", "-").split("-", 1)[0]
        for d, entries in self.scopes:
            if d != domain:
                continue
            for entry in entries:
                if entry == "{all: true}" or entry == f"{{subsystem: {subsystem}}}":
                    return True
                if entry == f"{{channel: '{channel}'}}":
                    return True
        return False

    def window_ns(self) -> tuple[float, float]:
        """Absolute ``[lo, hi)`` this endpoint retains at NOW (live: unbounded above)."""
        newest, oldest = WINDOWS[self.mock]
        lo = -math.inf if math.isinf(oldest) else NOW - int(oldest) * NS
        hi = math.inf if newest == 0 else NOW - int(newest) * NS
        return lo, hi


@dataclass(frozen=True)
class Layout:
    endpoints: tuple[EndpointLayout, ...]

    def yaml(self, pool: Pool) -> str:
        lines = []
        for ep in self.endpoints:
            newest, oldest = WINDOWS[ep.mock]
            lines.append(f"{pool.urls[ep.mock]}:")
            lines.append("  scopes:")
            for domain, entries in ep.scopes:
                lines.append(f"    {domain}: [{', '.join(entries)}]")
            old = ".inf" if math.isinf(oldest) else str(int(oldest))
            lines.append(f"  retention: {{newest: {int(newest)}, oldest: {old}}}")
        return "\n".join(lines) + "\n"

    def holes(self, channel: str, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` no endpoint claiming ``channel`` retains."""
        windows = sorted(ep.window_ns() for ep in self.endpoints if ep.claims(channel))
        holes: list[tuple[int, int]] = []
        cursor = start
        for lo, hi in windows:
            if cursor >= end:
                break
            if lo > cursor:
                holes.append((cursor, int(min(lo, end))))
            cursor = end if hi == math.inf else max(cursor, int(hi))
        if cursor < end:
            holes.append((cursor, end))
        return holes


def entries(domain: str) -> st.SearchStrategy[str]:
    chans = [c for c in CHANNELS if c.startswith(domain + ":")]
    return st.one_of(
        st.just("{all: true}"),
        st.just("{all: true}"),
        st.sampled_from([f"{{subsystem: {s}}}" for s in SUBSYSTEMS[domain]]),
        st.sampled_from([f"{{channel: '{c}'}}" for c in chans]),
    )


@st.composite
def endpoint_layouts(draw: st.DrawFn, mock: int) -> EndpointLayout:
    domains = draw(st.sampled_from([("X1", "Y1"), ("X1", "Y1"), ("X1",), ("Y1",)]))
    scopes = tuple(
        (d, tuple(draw(st.lists(entries(d), min_size=1, max_size=2, unique=True)))) for d in domains
    )
    return EndpointLayout(mock, scopes)


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    mocks = draw(st.lists(st.integers(0, len(WINDOWS) - 1), min_size=1, max_size=4, unique=True))
    return Layout(tuple(draw(endpoint_layouts(m)) for m in mocks))


@st.composite
def time_ranges(draw: st.DrawFn) -> tuple[float, float]:
    """``(start, end)`` in GPS seconds (what the client takes): near a retention bound,
    exactly on one, or off the stride grid; at most 8 s long, ending at least 1 s before
    now (the mocks pace blocks against the fake clock)."""
    age = draw(st.sampled_from(BOUNDARY_AGES))
    offset_ms = draw(st.sampled_from([0, 0, -30, 30, -1000]) | st.integers(-6000, 6000))
    start_ms = (NOW_S - age) * 1000 + offset_ms
    start_ms = min(start_ms, (NOW_S - 2) * 1000)
    length_ms = draw(st.sampled_from([1, 62, 63, 125, 1000]) | st.integers(1, 8000))
    end_ms = min(start_ms + length_ms, (NOW_S - 1) * 1000)
    if draw(st.booleans()) and end_ms > start_ms + 1:  # sometimes end exactly on a bound
        bound = (NOW_S - draw(st.sampled_from(BOUNDARY_AGES))) * 1000
        if start_ms < bound < end_ms:
            end_ms = bound
    return start_ms / 1000, end_ms / 1000


def ns(t: float) -> int:
    """The client's seconds -> ns conversion (arrakis.block.time_as_ns)."""
    return int(arrakis.block.time_as_ns(t))


# --------------------------------------------------------------------------- comparison


def assert_same_block(got: object, want: object, channels: Sequence[str]) -> None:
    assert got.time_ns == want.time_ns, (got.time_ns, want.time_ns)  # type: ignore[attr-defined]
    assert got.duration_ns == want.duration_ns  # type: ignore[attr-defined]
    for name in channels:
        a, b = got.data[name], want.data[name]  # type: ignore[attr-defined]
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, name
        mask_a, mask_b = np.ma.getmaskarray(a), np.ma.getmaskarray(b)
        np.testing.assert_array_equal(mask_a, mask_b, err_msg=f"gaps of {name}")
        values_a, values_b = np.ma.getdata(a)[~mask_a], np.ma.getdata(b)[~mask_b]
        if name in RAMPS:
            np.testing.assert_allclose(values_a, values_b, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(values_a, values_b, err_msg=f"values of {name}")


# --------------------------------------------------------------------------- properties


# Every path a stream can take: served by the router the client asked (in-process), or by
# a data worker whose location the router handed out (``router serve --data-workers``);
# written by the native output stage (router._chunkstream) or by pyarrow's GeneratorStream
# (the fallback when the native stage is not built).
PATHS = pytest.mark.parametrize(
    "path",
    [{}, {"data_workers": 2}, {"native_output": False}],
    ids=["in-process", "data-workers", "generator-stream"],
)


@PATHS
@given(layout=layouts(), span=time_ranges(), data=st.data())
def test_router_fetch_equals_one_full_mock(
    pool: Pool, path: dict[str, Any], layout: Layout, span: tuple[float, float], data: st.DataObject
) -> None:
    start, end = span
    servable = [c for c in CHANNELS if not layout.holes(c, ns(start), ns(end))]
    assume(servable)
    channels = data.draw(st.lists(st.sampled_from(servable), min_size=1, max_size=4, unique=True))
    router = running_router(layout.yaml(pool), clock=FakeClock(NOW), **path)
    with router as (url, _, server):
        got = arrakis.Client(url).fetch(channels, start, end)
        # the client stops reading once it has [start, end): the router's end of stream (and
        # its clean-up) may come a moment after the client returned
        assert wait_until(lambda: server.open_streams == 0, timeout=5)
        if path.get("data_workers"):  # the workers served every stream, the front none
            front, workers = server.streams_served()
            assert front == 0 and workers >= 1, (front, workers)
    want = arrakis.Client(pool.full).fetch(channels, start, end)
    assert_same_block(got, want, channels)
    assert not got.has_gaps  # everything was covered: no data may be missing


def _stream_command(channels: Sequence[str], start: int, end: int) -> bytes:
    args = {
        "channels": list(channels),
        "start": start,
        "end": end,
        "replay_start": None,
        "replay_end": None,
        "replay_id": None,
    }
    return json.dumps({"request": "Stream", "args": args, "version": "0.5.0"}).encode()


def _seconds(t: int) -> str:
    whole, frac = divmod(t, NS)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


@PATHS
@given(layout=layouts(), span=time_ranges(), nudge=st.sampled_from([0, 0, 1, -1]), data=st.data())
def test_router_refuses_a_layout_with_a_hole(
    pool: Pool,
    path: dict[str, Any],
    layout: Layout,
    span: tuple[float, float],
    nudge: int,
    data: st.DataObject,
) -> None:
    start, end = ns(span[0]) + nudge, ns(span[1])
    assume(start < end)
    holes = {c: layout.holes(c, start, end) for c in CHANNELS}
    unservable = [c for c, h in holes.items() if h]
    assume(unservable)
    channels = data.draw(
        st.lists(st.sampled_from(unservable), min_size=1, max_size=2, unique=True).flatmap(
            lambda bad: st.lists(st.sampled_from(CHANNELS), max_size=2).map(
                lambda extra: list(dict.fromkeys([*bad, *extra]))
            )
        )
    )
    router = running_router(layout.yaml(pool), clock=FakeClock(NOW), **path)
    with router as (url, _, server):
        client = flight.connect(url)
        try:
            with pytest.raises(flight.FlightUnavailableError) as info:
                client.get_flight_info(
                    flight.FlightDescriptor.for_command(_stream_command(channels, start, end))
                )
            message = str(info.value)
            for name in channels:
                for lo, hi in holes[name]:
                    assert name in message, (name, message)
                    assert f"[{_seconds(lo)}, {_seconds(hi)})" in message, (lo, hi, message)
            for name in channels:
                if not holes[name]:
                    assert f"{name} in [" not in message and f"{name}," not in message
            # the real client never gets partial data either. It asks in float seconds, which
            # may round a hole of a few ns away (found by the property: a start 1 ns before a
            # retention edge at 1.4e9 s is that edge as a float): the span it really asks for
            # decides whether it must be refused or served whole.
            asked = ns(start / NS), ns(end / NS)
            if any(layout.holes(c, *asked) for c in channels):
                with pytest.raises(flight.FlightError):
                    arrakis.Client(url).fetch(channels, start / NS, end / NS)
            else:
                block = arrakis.Client(url).fetch(channels, start / NS, end / NS)
                assert set(block.channels) == set(channels)
        finally:
            client.close()
        assert server.open_streams == 0


def test_a_hole_the_clients_float_seconds_round_away(pool: Pool) -> None:
    """Found by the property: one endpoint retaining the last 600 s, a request starting 1 ns
    before that edge. In ns the router refuses it (the hole is named); the real client asks
    in float seconds, where that start is the edge itself, so it gets the whole span, equal
    to a direct read."""
    layout = Layout((EndpointLayout(0, (("X1", ("{all: true}",)), ("Y1", ("{all: true}",)))),))
    channels = ["X1:GDS-STRAIN"]
    start, end = ns(1399999400.0) - 1, ns(1399999400.001)
    assert layout.holes(channels[0], start, end) == [(start, start + 1)]
    assert not layout.holes(channels[0], ns(start / NS), ns(end / NS))
    with running_router(layout.yaml(pool), clock=FakeClock(NOW)) as (url, _, server):
        client = flight.connect(url)
        try:
            with pytest.raises(flight.FlightUnavailableError, match="X1:GDS-STRAIN in \\["):
                client.get_flight_info(
                    flight.FlightDescriptor.for_command(_stream_command(channels, start, end))
                )
        finally:
            client.close()
        got = arrakis.Client(url).fetch(channels, start / NS, end / NS)
        assert server.open_streams == 0
    want = arrakis.Client(pool.full).fetch(channels, start / NS, end / NS)
    assert_same_block(got, want, channels)


def test_last_block_is_whole_when_a_group_has_a_shorter_stride(pool: Pool) -> None:
    """Found by the property: LSC-DARM (62.5 ms, alone on one endpoint) in a 125 ms grid,
    request ending 1 ms after a block start. The downstream sends only the first 62.5 ms
    block before ``end``; the router must plan the whole last block, not null its tail."""
    layout = Layout(
        (
            EndpointLayout(1, (("X1", ("{all: true}",)), ("Y1", ("{all: true}",)))),
            EndpointLayout(2, (("X1", ("{subsystem: GDS}",)), ("Y1", ("{all: true}",)))),
        )
    )
    channels = ["X1:GDS-STRAIN", "X1:GDS-STATE", "X1:LSC-DARM"]
    start, end = NOW_S - 900.0, NOW_S - 899.999
    with running_router(layout.yaml(pool), clock=FakeClock(NOW)) as (url, _, _):
        got = arrakis.Client(url).fetch(channels, start, end)
    want = arrakis.Client(pool.full).fetch(channels, start, end)
    assert_same_block(got, want, channels)
    assert not got.has_gaps
