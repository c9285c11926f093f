"""The real arrakis client through the router in front of real arrakis-server mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow.flight as flight
import pytest

from router.protocol.gps import gps_now_ns
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

CHANNELS = ["H1:GDS-RAMP", "H1:LSC-SINE", "L1:GDS-SLOW"]
BLOCK = 0.25  # lcm of the strides of CHANNELS, seconds


def split_map(live: str, archive: str) -> str:
    return f"""
{live}:
  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}
  retention: {{newest: 0, oldest: 600}}
{archive}:
  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}
  retention: {{newest: 600, oldest: .inf}}
"""


def groups_map(a: str, b: str) -> str:
    return f"""
{a}:
  scopes: {{H1: [{{subsystem: GDS}}]}}
  retention: {{}}
{b}:
  scopes: {{H1: [{{subsystem: LSC}}], L1: [{{all: true}}]}}
  retention: {{}}
"""


@pytest.fixture(scope="module")
def split_router(upstream_mocks: tuple[str, str]) -> Iterator[str]:
    with running_router(split_map(*upstream_mocks)) as (url, _, _):
        yield url


def _now_s() -> int:
    return gps_now_ns() // 1_000_000_000


def _same(got: object, want: object) -> None:
    assert got.time_ns == want.time_ns  # type: ignore[attr-defined]
    assert sorted(got.data) == sorted(want.data)  # type: ignore[attr-defined]
    for name in want.data:  # type: ignore[attr-defined]
        a, b = got.data[name], want.data[name]  # type: ignore[attr-defined]
        assert len(a) == len(b), name
        assert not np.ma.is_masked(a), f"{name} has gaps"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_fetch_across_retention_boundary_equals_direct_fetch(
    split_router: str, upstream_mocks: tuple[str, str]
) -> None:
    """§8.9: no silent truncation at the boundary, no time-split FlightInfo crash."""
    now = _now_s()
    start, end = now - 610, now - 590
    got = arrakis.Client(split_router).fetch(CHANNELS, start, end)
    want = arrakis.Client(upstream_mocks[1]).fetch(CHANNELS, start, end)
    _same(got, want)
    assert got.duration == pytest.approx(20)


def test_non_aligned_start_is_served_from_the_grid_slot_below(
    split_router: str, upstream_mocks: tuple[str, str]
) -> None:
    now = _now_s()
    start, end = now - 605.03, now - 595
    got = arrakis.Client(split_router).fetch(CHANNELS, start, end)
    aligned = np.floor(start / BLOCK) * BLOCK
    want = arrakis.Client(upstream_mocks[1]).fetch(CHANNELS, aligned, end)
    _same(got, want)


def test_channel_groups_on_different_endpoints_are_merged(
    upstream_mocks: tuple[str, str],
) -> None:
    with running_router(groups_map(*upstream_mocks)) as (url, _, _):
        now = _now_s()
        got = arrakis.Client(url).fetch(CHANNELS, now - 30, now - 25)
    want = arrakis.Client(upstream_mocks[0]).fetch(CHANNELS, now - 30, now - 25)
    _same(got, want)


def test_stream_ticket_is_one_reuse_endpoint_with_every_channel(split_router: str) -> None:
    now = _now_s()
    cmd = {
        "request": "Stream",
        "args": {"channels": CHANNELS, "start": (now - 700) * 10**9, "end": (now - 500) * 10**9},
    }
    info = flight.FlightClient(split_router).get_flight_info(
        flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
    )
    assert len(info.endpoints) == 1
    endpoint = info.endpoints[0]
    assert [loc.uri.decode() for loc in endpoint.locations] == ["arrow-flight-reuse-connection://?"]
    ticket = json.loads(endpoint.ticket.ticket)
    assert ticket["args"]["channels"] == CHANNELS
    assert ticket["args"]["start"] == cmd["args"]["start"]  # type: ignore[index]


def test_metadata_operations(split_router: str) -> None:
    client = arrakis.Client(split_router)
    described = client.describe(CHANNELS)
    assert sorted(described) == sorted(CHANNELS)
    assert described["L1:GDS-SLOW"].stride == 250_000_000
    assert client.count(".*") == 3  # both mocks hold all three: no double counting
    assert sorted(c.name for c in client.find("H1:.*")) == CHANNELS[:2]
    info = client.server_info()
    assert info["domains"] == ["H1", "L1"] and info["router_mode"] == "proxy"
    assert sorted(client.scope_map()["endpoints"]) == sorted(client.endpoints())
    assert client.domains() == ["H1", "L1"]


def test_describe_unknown_channel_lists_it(split_router: str) -> None:
    with pytest.raises(flight.FlightUnavailableError, match=r"H1:GDS-NOPE"):
        arrakis.Client(split_router).describe(["H1:GDS-RAMP", "H1:GDS-NOPE"])


def test_uncovered_time_range_fails_at_flight_info(upstream_mocks: tuple[str, str]) -> None:
    archive_only = f"""
{upstream_mocks[1]}:
  scopes: {{H1: [{{all: true}}]}}
  retention: {{newest: 600, oldest: .inf}}
"""
    with running_router(archive_only) as (url, _, _):
        now = _now_s()
        cmd = {
            "request": "Stream",
            "args": {
                "channels": ["H1:GDS-RAMP"],
                "start": (now - 700) * 10**9,
                "end": (now - 10) * 10**9,
            },
        }
        with pytest.raises(flight.FlightUnavailableError) as info:
            flight.FlightClient(url).get_flight_info(
                flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
            )
    text = str(info.value)
    assert "H1:GDS-RAMP" in text and "retains" in text and "[request: " in text


def test_live_stream_gets_one_endpoint_with_a_null_start(split_router: str) -> None:
    """PROTOCOL §5.5 points 1-2: one reuse endpoint, every channel, ``start`` null."""
    cmd = {"request": "Stream", "args": {"channels": CHANNELS, "start": None, "end": None}}
    info = flight.FlightClient(split_router).get_flight_info(
        flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
    )
    (endpoint,) = info.endpoints
    assert endpoint.locations[0].uri.decode().startswith("arrow-flight-reuse-connection")
    args = json.loads(endpoint.ticket.ticket)["args"]
    assert args["start"] is None and args["end"] is None
    assert sorted(args["channels"]) == sorted(CHANNELS)


@pytest.mark.parametrize(
    "command",
    [
        b"not json",
        b'{"request": "Stream"}',
        b'{"request": "Bogus", "args": {}}',
        b'{"request": "Describe", "args": {"channels": ["NOCOLON"], "time": null}}',
        b'{"request": "Count", "args": {"pattern": "(", "data_type": [], "min_rate": 0, '
        b'"max_rate": 10, "publisher": [], "time": null}}',
    ],
)
def test_malformed_requests_get_clear_errors_and_router_survives(
    split_router: str, command: bytes
) -> None:
    client = flight.FlightClient(split_router)
    with pytest.raises(flight.FlightError) as info:
        client.get_flight_info(flight.FlightDescriptor.for_command(command))
    assert "[request: " in str(info.value) and "Traceback" not in str(info.value)
    with pytest.raises(flight.FlightError):
        list(client.do_get(flight.Ticket(command)).read_all().to_batches())
    assert arrakis.Client(split_router).server_info()["backend"] is None


def test_unknown_argument_message_matches_upstream(split_router: str) -> None:
    cmd = {
        "request": "Stream",
        "version": "0.5.0",
        "args": {"channels": CHANNELS, "start": 1, "end": 2, "time": 5},
    }
    with pytest.raises(flight.FlightServerError, match=r"unknown Stream argument\(s\): time"):
        flight.FlightClient(split_router).get_flight_info(
            flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
        )


def test_redirect_mode(upstream_mocks: tuple[str, str]) -> None:
    with running_router(split_map(*upstream_mocks), mode="redirect") as (url, _, _):
        now = _now_s()
        fc = flight.FlightClient(url)

        def info(start: int, end: int) -> flight.FlightInfo:
            cmd = {
                "request": "Stream",
                "args": {"channels": CHANNELS, "start": start * 10**9, "end": end * 10**9},
            }
            return fc.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(cmd).encode()))

        one_slice = info(now - 30, now - 20)
        assert [e.locations[0].uri.decode() for e in one_slice.endpoints] == [upstream_mocks[0]]
        two_slices = info(now - 610, now - 590)
        assert len(two_slices.endpoints) == 1
        assert two_slices.endpoints[0].locations[0].uri.decode().startswith("arrow-flight-reuse")
        client = arrakis.Client(url)
        got = client.fetch(CHANNELS, now - 610, now - 600)
        want = arrakis.Client(upstream_mocks[1]).fetch(CHANNELS, now - 610, now - 600)
        _same(got, want)
        got = client.fetch(CHANNELS, now - 30, now - 28)
        want = arrakis.Client(upstream_mocks[1]).fetch(CHANNELS, now - 30, now - 28)
        _same(got, want)
