"""Prometheus metrics: scrape the HTTP endpoint of a router after a few requests."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.errors import ShuttingDownError
from router.metrics import RouterMetrics, outcome_of
from router.protocol.errors import ChannelsNotAvailableError
from router.protocol.gps import FakeClock
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")

NS = 1_000_000_000
NOW_S = 1_400_000_000
CHANNELS_TOML = """\
[common]
publisher = "MET"
data_type = "float32"
stride = 62500000
max_latency = 1000000000

["X1:GDS-A"]
sample_rate = 256

["X1:GDS-B"]
sample_rate = 16
data_type = "int32"
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def mocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    toml = tmp_path_factory.mktemp("metrics") / "channels.toml"
    toml.write_text(CHANNELS_TOML)
    clock = FakeClock(NOW_S * NS)
    with (
        testing.serve_mock(toml, retention=(0, 600), clock=clock) as live,
        testing.serve_mock(toml, retention=(600, float("inf")), clock=clock) as archive,
    ):
        yield live, archive


def test_scraped_metrics_after_a_few_requests(mocks: tuple[str, str]) -> None:
    live, archive = mocks
    yaml_text = (
        f"{live}:\n  scopes: {{X1: [{{all: true}}]}}\n  retention: {{newest: 0, oldest: 600}}\n"
        f"{archive}:\n  scopes: {{X1: [{{all: true}}]}}\n"
        "  retention: {newest: 600, oldest: .inf}\n"
    )
    with running_router(yaml_text, clock=FakeClock(NOW_S * NS)) as (url, service, _):
        exposition = service.metrics.serve(0, "127.0.0.1")
        try:
            client = arrakis.Client(url)
            assert client.count("X1:") == 2
            # 2 s across the retention bound: two slices, stitched
            start = NOW_S - 601
            block = client.fetch(["X1:GDS-A", "X1:GDS-B"], start, start + 2)
            assert block.data["X1:GDS-A"].size == 512
            with pytest.raises(flight.FlightUnavailableError):
                client.describe(["X1:NOPE-X"])
            samples = scrape(exposition.port)
        finally:
            exposition.close()

    requests = "arrakis_router_requests_total"
    assert value(samples, requests, rpc="GetFlightInfo", kind="Count", outcome="OK") == 1
    assert value(samples, requests, rpc="DoGet", kind="Count", outcome="OK") == 1
    assert value(samples, requests, rpc="GetFlightInfo", kind="Stream", outcome="OK") == 1
    assert value(samples, requests, rpc="DoGet", kind="Stream", outcome="OK") == 1
    # X1 is in scope, so the unknown channel is refused by the downstream, in the DoGet
    assert value(samples, requests, rpc="DoGet", kind="Describe", outcome="UNAVAILABLE") == 1
    # both channels have 62.5 ms strides: 2 s = 32 blocks
    assert value(samples, "arrakis_router_stream_blocks_total", stream="bounded") == 32
    # blocks of 2 channels (256 Hz float32, 16 Hz int32) plus the time column
    sent = value(samples, "arrakis_router_stream_bytes_total", stream="bounded")
    assert sent >= 32 * (16 * 4 + 1 * 4 + 8), sent
    assert value(samples, "arrakis_router_stream_duration_seconds_count", stream="bounded") == 1
    assert value(samples, "arrakis_router_stream_first_block_seconds_count", stream="bounded") == 1
    assert value(samples, "arrakis_router_stream_blocks_total", stream="count") == 1
    assert value(samples, "arrakis_router_in_flight_requests", rpc="DoGet") == 0
    assert value(samples, "arrakis_router_gap_blocks_total") == 0
    assert value(samples, "arrakis_router_open_streams") == 0
    # the stream used both downstreams, each once, successfully
    for endpoint in (live, archive):
        assert (
            value(
                samples,
                "arrakis_router_downstream_calls_total",
                endpoint=endpoint,
                call="stream",
                outcome="OK",
            )
            == 1
        ), endpoint
    fetches = sum(
        v
        for (name, labels), v in samples.items()
        if name == "arrakis_router_downstream_calls_total" and ("call", "fetch") in labels
    )
    assert fetches >= 2  # the Count's Find and at least one Describe
    latency = "arrakis_router_rpc_duration_seconds_count"
    assert value(samples, latency, rpc="GetFlightInfo", kind="Stream") == 1
    assert value(samples, latency, rpc="GetFlightInfo", kind="Describe") >= 2
    assert value(samples, latency, rpc="DoGet", kind="Stream") == 1
    # downstream latency and in-flight, per endpoint and call kind
    for endpoint in (live, archive):
        count = "arrakis_router_downstream_call_duration_seconds_count"
        assert value(samples, count, endpoint=endpoint, call="stream") == 1, endpoint
        assert value(samples, count, endpoint=endpoint, call="stream_open") == 1, endpoint
        assert value(samples, "arrakis_router_downstream_in_flight", endpoint=endpoint) == 0


def test_gap_blocks_are_counted(tmp_path: Path) -> None:
    toml = tmp_path / "channels.toml"
    toml.write_text(CHANNELS_TOML)
    # the downstream omits every 4th block: the router null-fills them and counts them
    with testing.serve_mock(toml, faults="drop=4", clock=FakeClock(NOW_S * NS)) as gappy:
        yaml_text = f"{gappy}:\n  scopes: {{X1: [{{all: true}}]}}\n  retention: {{}}\n"
        with running_router(yaml_text, clock=FakeClock(NOW_S * NS)) as (url, service, _):
            exposition = service.metrics.serve(0, "127.0.0.1")
            try:
                block = arrakis.Client(url).fetch(["X1:GDS-A"], NOW_S - 100, NOW_S - 99)
                samples = scrape(exposition.port)
            finally:
                exposition.close()
    assert block.has_gaps
    assert value(samples, "arrakis_router_stream_blocks_total", stream="bounded") == 16
    assert value(samples, "arrakis_router_gap_blocks_total") == 3  # blocks 4, 8, 12
    assert value(samples, "arrakis_router_boundary_duplicates_dropped_total") == 0


def test_outcome_labels() -> None:
    # gRPC status names, as the client sees them
    assert outcome_of(None) == "OK"
    assert outcome_of(ChannelsNotAvailableError(["X1:A"], "no")) == "UNAVAILABLE"
    assert outcome_of(ShuttingDownError()) == "UNAVAILABLE"
    assert outcome_of(flight.FlightInternalError("x")) == "INTERNAL"
    assert outcome_of(flight.FlightServerError("x")) == "UNKNOWN"
    assert outcome_of(flight.FlightTimedOutError("x")) == "DEADLINE_EXCEEDED"
    assert outcome_of(flight.FlightUnauthorizedError("x")) == "PERMISSION_DENIED"
    assert outcome_of(ValueError("boom")) == "INTERNAL"  # the edge sends it as INTERNAL
    assert outcome_of(GeneratorExit()) == "CANCELLED"
    # each instance has its own registry: two services never share counters
    a, b = RouterMetrics(), RouterMetrics()
    a.stream_sent("live", 1, 10)
    assert a.registry is not b.registry
    assert b.stream_blocks.labels("live")._value.get() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_router_serve_metrics_port(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("grpc://127.0.0.1:1:\n  scopes: {H1: [{all: true}]}\n  retention: {}\n")
    port = _free_port()
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--metrics-port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("serving grpc://127.0.0.1:"), line
        client = flight.connect(line.removeprefix("serving "))
        list(client.do_action(flight.Action("server-info", b"")))
        client.close()
        samples = scrape(port)
        assert (
            value(
                samples,
                "arrakis_router_requests_total",
                rpc="DoAction",
                kind="server-info",
                outcome="OK",
            )
            == 1
        )
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class Counts:
    """A stream's stitching counters, set by hand (StitchCounts)."""

    def __init__(self) -> None:
        self.gap_blocks = 0
        self.duplicates_dropped = 0


def test_stream_reporter_adds_what_grew_since_the_last_report() -> None:
    metrics = RouterMetrics()
    stream = Counts()
    reporter = metrics.stream_reporter(stream)
    reporter.report()  # nothing yet
    assert metrics.gap_blocks._value.get() == 0
    stream.gap_blocks, stream.duplicates_dropped = 2, 1
    reporter.report()
    reporter.report()  # nothing new: not counted twice
    assert (metrics.gap_blocks._value.get(), metrics.duplicates_dropped._value.get()) == (2, 1)
    stream.gap_blocks = 5
    reporter.report()
    assert (metrics.gap_blocks._value.get(), metrics.duplicates_dropped._value.get()) == (5, 1)
    with pytest.raises(ValueError, match="negative"):
        metrics.stitched(-1, 0)


def test_a_live_stream_reports_its_counters_while_it_runs() -> None:
    """A live stream may never end: its counters reach the metrics batch by batch (the hook
    the service wraps every stream execution in), and once more when it ends."""
    metrics = RouterMetrics()
    stream = Counts()

    def batches() -> Iterator[int]:
        try:
            for i in range(3):
                stream.gap_blocks, stream.duplicates_dropped = i, 2 * i  # grown by batch i
                yield i
        finally:
            stream.gap_blocks = 3  # counted while closing (as the direct path does)

    out = metrics.stream_reporter(stream).relay(batches(), every=1)
    assert [next(out), next(out), next(out)] == [0, 1, 2]
    # still running: the counters have already moved (batch 2's growth was reported with it)
    assert (metrics.gap_blocks._value.get(), metrics.duplicates_dropped._value.get()) == (2, 4)
    out.close()  # the client leaves: the stream is closed first, then reported
    assert (metrics.gap_blocks._value.get(), metrics.duplicates_dropped._value.get()) == (3, 4)
