"""The mock through the real ``arrakis`` client, and raw pyarrow for malformed requests."""

from __future__ import annotations

import json
import time

import arrakis
import numpy as np
import pyarrow.flight as flight
import pytest

from router.protocol.envelope import DescribeArgs, Envelope, FindArgs, StreamArgs
from router.protocol.gps import gps_now_ns
from router_backends.catalog import load_toml
from router_backends.signals import samples_for
from router_backends.testing import serve_mock

from .conftest import CHANNELS_TOML, GPS0, NS, STRIDE

pytestmark = pytest.mark.integration


def test_find_count_describe_defaults(default_url: str) -> None:
    client = arrakis.Client(default_url)
    total = client.count()
    assert total == client.count("H1:") + client.count("L1:") > 1000
    gds = list(client.find("H1:GDS-CALIB_STRAIN"))
    assert [c.name for c in gds] == [
        "H1:GDS-CALIB_STRAIN",
        "H1:GDS-CALIB_STRAIN_CLEAN",
        "H1:GDS-CALIB_STRAIN_NOLINES",
    ]
    assert client.count("H1:", data_type="float64") == 3
    assert client.count("L1:", min_rate=16384) == client.count(
        "L1:", min_rate=16384, max_rate=16384
    )
    assert client.count(publisher=["MOCK_L1"]) == client.count("L1:")
    meta = client.describe(["L1:GDS-CALIB_STRAIN"])["L1:GDS-CALIB_STRAIN"]
    assert (meta.sample_rate, meta.stride, meta.max_latency, meta.publisher) == (
        16384,
        STRIDE,
        NS,
        "MOCK_L1",
    )


def _expected(name: str, start_s: int, blocks: int) -> np.ndarray:
    spec = {s.name: s for s in load_toml(CHANNELS_TOML)}[name]
    meta = spec.meta_at(start_s * NS)
    return samples_for(spec, meta, [start_s * NS + i * STRIDE for i in range(blocks)])


def test_fetch_values_follow_func(toml_url: str) -> None:
    client = arrakis.Client(toml_url)
    start = GPS0 + 10
    block = client.fetch(["X1:TST-RAMP", "X1:TST-SINE", "X1:TST-CONST_I32"], start, start + 2)
    assert block.time_ns == start * NS and block.duration_ns == 2 * NS
    ramp = block.data["X1:TST-RAMP"]
    t = start + np.arange(512) / 256
    np.testing.assert_allclose(ramp, t - GPS0, atol=1e-6)
    sine = block.data["X1:TST-SINE"]
    ts = start + (np.arange(2048) // 64) * 0.0625 + (np.arange(2048) % 64) / 1024
    np.testing.assert_allclose(sine, np.sin(2 * np.pi * 4 * ts).astype(np.float32), atol=2e-3)
    np.testing.assert_array_equal(block.data["X1:TST-CONST_I32"], np.full(32, 7, np.int32))
    np.testing.assert_array_equal(block.data["X1:TST-RAMP"], _expected("X1:TST-RAMP", start, 32))


def test_fetch_noise_regenerates_and_unaligned_start(toml_url: str) -> None:
    client = arrakis.Client(toml_url)
    block = client.fetch(["X1:TST-NOISE", "X1:SLOW-STRIDE"], GPS0 + 0.03, GPS0 + 1)
    # block duration = lcm(62.5 ms, 125 ms); the first block starts on the grid below start
    assert block.time_ns == GPS0 * NS
    np.testing.assert_array_equal(block.data["X1:TST-NOISE"], _expected("X1:TST-NOISE", GPS0, 16))


def test_metadata_changes_at_declared_time(toml_url: str) -> None:
    client = arrakis.Client(toml_url)
    t_change = GPS0 + 100

    def rate(t: float) -> int:
        return int(client.describe(["X1:CHG-RATE"], time=t)["X1:CHG-RATE"].sample_rate)

    assert rate(t_change - 0.001) == 256
    assert rate(t_change) == 512
    assert client.count("X1:CHG", min_rate=512, time=t_change - 1) == 0
    assert client.count("X1:CHG", min_rate=512, time=t_change) == 1
    assert client.count("X1:", publisher=["OTHER"], time=t_change + 100) == 1
    after = client.fetch(["X1:CHG-RATE"], t_change + 1, t_change + 2)
    assert after.data["X1:CHG-RATE"].size == 512
    # a raw stream across the change: list lengths follow the rate valid at each block
    raw = flight.connect(toml_url)
    env = Envelope("Stream", StreamArgs(("X1:CHG-RATE",), (t_change - 1) * NS, (t_change + 1) * NS))
    table = raw.do_get(flight.Ticket(env.encode())).read_all()
    lengths = [len(x) for x in table.column("X1:CHG-RATE").to_pylist()]
    assert lengths == [16] * 16 + [32] * 16
    raw.close()


def test_retention_refusals() -> None:
    with serve_mock(CHANNELS_TOML, retention="600,3600") as url:
        client = arrakis.Client(url)
        now_s = gps_now_ns() // NS
        ok = client.fetch(["X1:TST-RAMP"], now_s - 1000, now_s - 999)
        assert ok.data["X1:TST-RAMP"].size == 256
        with pytest.raises(flight.FlightUnavailableError, match=r"newest 600 s, oldest 3600 s"):
            client.fetch(["X1:TST-RAMP"], now_s - 100, now_s - 99)
        with pytest.raises(flight.FlightUnavailableError, match=r"outside this server's retention"):
            client.fetch(["X1:TST-RAMP"], now_s - 5000, now_s - 4999)
        with pytest.raises(flight.FlightUnavailableError, match=r"\[now, open end\)"):
            next(iter(client.stream(["X1:TST-RAMP"])))
        scope = json.loads(
            next(flight.connect(url).do_action(flight.Action("scope-map", b""))).body.to_pybytes()
        )
        endpoint = scope["endpoints"]["arrow-flight-reuse-connection://?"]
        assert endpoint["retention"] == {"newest": 600, "oldest": 3600}
        assert endpoint["scopes"]["X1"] == [{"subsystem": s} for s in ("CHG", "SLOW", "TST")]


def _blocks(url: str, start_s: int, n: int) -> list[tuple[int, np.ndarray]]:
    client = arrakis.Client(url)
    out = []
    for b in client.stream(["X1:TST-RAMP"], GPS0 + start_s, GPS0 + start_s + n * STRIDE / NS):
        out.append((b.time_ns, b.data["X1:TST-RAMP"]))
    return out


@pytest.mark.parametrize("fault", ["drop=4", "nulls=3"])
def test_fault_gaps(fault: str) -> None:
    with serve_mock(CHANNELS_TOML, faults=fault) as url:
        blocks = _blocks(url, 5, 10)
    every = int(fault.split("=")[1])
    assert [t for t, _ in blocks] == [(GPS0 + 5) * NS + i * STRIDE for i in range(10)]
    for i, (_, data) in enumerate(blocks):
        masked = np.ma.getmaskarray(data)
        assert masked.all() if (i and i % every == 0) else not masked.any()


def test_fault_delay_and_stall() -> None:
    with serve_mock(CHANNELS_TOML, faults="delay=0.2/4,stall=0.6@6") as url:
        t0 = time.monotonic()
        blocks = _blocks(url, 5, 8)
        elapsed = time.monotonic() - t0
    assert len(blocks) == 8 and not any(np.ma.is_masked(d) for _, d in blocks)
    assert elapsed >= 0.2 * 2 + 0.6  # blocks 0 and 4 delayed, stall before block 6


def test_fault_error_after_n_blocks() -> None:
    with serve_mock(CHANNELS_TOML, faults="error=3") as url:
        seen = 0
        with pytest.raises(
            flight.FlightUnavailableError, match="injected fault: stream error after 3"
        ):
            for _ in arrakis.Client(url).stream(["X1:TST-RAMP"], GPS0, GPS0 + 2):
                seen += 1
        assert seen <= 3


def test_exit_fault_refused_in_process() -> None:
    with pytest.raises(ValueError, match="subprocess"), serve_mock(faults="exit=3"):
        pass


def test_live_pacing_releases_blocks_after_their_end() -> None:
    latency = 0.25
    with serve_mock(CHANNELS_TOML, latency=latency) as url:
        raw = flight.connect(url)
        env = Envelope("Stream", StreamArgs(("X1:TST-RAMP",), None, None))
        reader = raw.do_get(flight.Ticket(env.encode()))
        lags = []
        for _ in range(4):
            batch = reader.read_chunk().data
            lags.append(gps_now_ns() - (batch.column(0)[0].as_py() + STRIDE))
        reader.cancel()
        raw.close()
    assert all(lag >= latency * NS - 5_000_000 for lag in lags), lags
    assert all(lag < latency * NS + 0.5 * NS for lag in lags), lags


def test_shutdown_is_prompt_with_a_stalled_live_stream() -> None:
    import threading

    with serve_mock(CHANNELS_TOML, faults="stall=120@1") as url:
        raw = flight.connect(url)
        env = Envelope("Stream", StreamArgs(("X1:TST-RAMP",), None, None))
        reader = raw.do_get(flight.Ticket(env.encode()))
        reader.read_chunk()
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                reader.read_all()
            except flight.FlightError as exc:
                errors.append(exc)

        thread = threading.Thread(target=drain)
        thread.start()
        t0 = time.monotonic()
    # leaving serve_mock shut the server down although a stream was stalled
    assert time.monotonic() - t0 < 5
    thread.join(5)
    raw.close()
    assert not thread.is_alive(), "the stalled reader never saw the stream end"


def _raw_error(url: str, call: str, payload: bytes) -> flight.FlightError:
    client = flight.connect(url)
    try:
        if call == "info":
            client.get_flight_info(flight.FlightDescriptor.for_command(payload))
        elif call == "get":
            client.do_get(flight.Ticket(payload)).read_all()
        else:
            list(client.do_action(flight.Action(payload.decode(), b"")))
    except flight.FlightError as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("no error")


def _doc(request: str, **args: object) -> bytes:
    return json.dumps({"request": request, "args": args, "version": "0.5.0"}).encode()


@pytest.mark.parametrize(
    ("call", "payload", "cls", "text"),
    [
        ("info", b"not json", flight.FlightServerError, "invalid request: not JSON"),
        ("get", b"\xff\xfe", flight.FlightServerError, "invalid request: not UTF-8"),
        (
            "info",
            b'{"request": "Nope", "args": {}}',
            flight.FlightServerError,
            "invalid request: request: 'Nope' is not one of",
        ),
        (
            "get",
            _doc("Stream", channels=["X1:TST-RAMP"], start="x", end=None),
            flight.FlightServerError,
            "invalid Stream request: args.start: 'x' is not of type",
        ),
        (
            "info",
            _doc("Stream", channels=["X1:TST-RAMP"], start=1, end=None, time=3),
            flight.FlightServerError,
            "Flight error: unknown Stream argument(s): time "
            "(request schema 0.5.0; server schema 0.5.0)",
        ),
        (
            "get",
            _doc("Describe", channels=["NOCOLON"], time=None),
            flight.FlightServerError,
            "channel name(s) without ':'",
        ),
        (
            "info",
            _doc("Describe", channels=["X1:TST-RAMP", "X1:NOPE-A", "Y1:B"], time=None),
            flight.FlightUnavailableError,
            "channel(s) {X1:NOPE-A, Y1:B} are not available on this server",
        ),
        (
            "get",
            _doc("Stream", channels=["X1:NOPE"], start=None, end=None),
            flight.FlightUnavailableError,
            "channel(s) {X1:NOPE} are not available",
        ),
        (
            "info",
            _doc("Stream", channels=["X1:TST-RAMP"], start=None, end=None, replay_id="R"),
            flight.FlightServerError,
            "Flight error: replay_id 'R' was provided but no replay registry is configured",
        ),
        (
            "info",
            _doc("Publish", publisher_id="P"),
            flight.FlightServerError,
            "Flight error: publish not supported for server backend",
        ),
        ("action", b"bogus", flight.FlightServerError, "Flight error: action not valid"),
    ],
)
def test_malformed_requests_get_clear_errors(
    toml_url: str, call: str, payload: bytes, cls: type[flight.FlightError], text: str
) -> None:
    exc = _raw_error(toml_url, call, payload)
    assert type(exc) is cls
    assert text in str(exc)
    assert "[request: " in str(exc) and "Traceback" not in str(exc)
    # and the server keeps serving
    assert arrakis.Client(toml_url).count("X1:") == 6


def test_actions_and_flight_info(toml_url: str) -> None:
    raw = flight.connect(toml_url)
    info = json.loads(next(raw.do_action(flight.Action("server-info", b""))).body.to_pybytes())
    assert info["backend"] == "mock" and info["domains"] == ["X1"]
    assert info["capabilities"] == ["find", "count", "describe", "stream"]
    assert json.loads(next(raw.do_action(flight.Action("replays", b""))).body.to_pybytes()) == {}
    assert [a.type for a in raw.list_actions()] == ["server-info", "scope-map", "replays"]
    env = Envelope("Stream", StreamArgs(("X1:TST-SINE", "X1:TST-RAMP"), GPS0 * NS, None))
    fi = raw.get_flight_info(flight.FlightDescriptor.for_command(env.encode()))
    assert len(fi.endpoints) == 1
    assert fi.endpoints[0].locations[0].uri == b"arrow-flight-reuse-connection://?"
    assert json.loads(fi.endpoints[0].ticket.ticket) == env.to_json()
    assert fi.schema.names == ["time", "X1:TST-RAMP", "X1:TST-SINE"]
    d = Envelope("Describe", DescribeArgs(("X1:TST-RAMP",), None))
    assert raw.get_flight_info(flight.FlightDescriptor.for_command(d.encode())).endpoints
    f = Envelope("Find", FindArgs("X1:TST"))
    table = raw.do_get(flight.Ticket(f.encode())).read_all()
    assert table.column("channel").to_pylist() == [
        "X1:TST-RAMP",
        "X1:TST-SINE",
        "X1:TST-CONST_I32",
        "X1:TST-NOISE",
    ]
    raw.close()
