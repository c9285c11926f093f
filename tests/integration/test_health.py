"""Health-aware routing against real servers: a TCP blackhole replica is paid for once, a
Find/Count is asked only where its pattern can match (and fails naming a down endpoint it
needs), and ``/readyz`` follows endpoints going down and coming back within two health
intervals. Measured figures are printed (``pytest -s``) for the record."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyarrow.flight as flight
import pytest
from structlog.testing import capture_logs

from router.cli import main as router_main
from router.probes import health_pages
from router.service import RouterService
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")
defaults = pytest.importorskip("router_backends.defaults")


@contextmanager
def blackhole() -> Iterator[str]:
    """A TCP server that accepts connections and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"grpc://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        sock.close()


def closed_port_url() -> str:
    """A URL nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"grpc://127.0.0.1:{port}"


def claim(url: str, *domains: str) -> str:
    scopes = ", ".join(f"{d}: [{{all: true}}]" for d in domains)
    return f"{url}:\n  scopes: {{{scopes}}}\n  retention: {{newest: 0, oldest: .inf}}\n"


def h1_channel() -> str:
    return next(m.name for m in defaults.default_channels("H1") if m.sample_rate <= 256)


def test_a_blackholed_replica_costs_only_the_first_describe() -> None:
    channel = h1_channel()
    with blackhole() as a, testing.serve_mock() as b:
        arrakis.Client(b).describe([channel])  # the mock's first answer may be slow: not ours
        yaml_text = claim(a, "H1") + claim(b, "H1")
        with (
            running_router(
                yaml_text, downstream_timeout=2.0, describe_ttl=0.0, health_interval=0.0
            ) as (url, service, _),
            capture_logs() as logs,
        ):
            client = arrakis.Client(url)
            times = []
            for _ in range(20):
                started = time.monotonic()
                got = client.describe([channel])
                times.append(time.monotonic() - started)
                assert got[channel].name == channel
            states = {e.url: e.state.value for e in service.health.snapshot().endpoints}
            sample = service.metrics.registry.get_sample_value
            calls = "arrakis_router_downstream_call_seconds_count"
            assert sample(calls, {"endpoint": a, "call": "fetch", "outcome": "timed_out"}) == 1
            assert sample(calls, {"endpoint": b, "call": "fetch", "outcome": "ok"}) == 20
            assert sample("arrakis_router_endpoint_state", {"endpoint": a}) == 1  # suspect
            assert sample("arrakis_router_endpoint_up", {"endpoint": a}) == 1
    print(
        f"\ndescribe through the router, A blackholed: first {times[0]:.3f} s, next 19: "
        f"max {max(times[1:]):.3f} s, mean {sum(times[1:]) / 19:.4f} s"
    )
    assert 2.0 <= times[0] < 2.0 + 5.0  # paid A's deadline once, bounded
    assert max(times[1:]) < 0.5, times
    assert states == {a: "suspect", b: "healthy"}
    changed = [e for e in logs if e["event"] == "endpoint_health_changed"]
    assert [(e["endpoint"], e["new"], e["reason"]) for e in changed] == [
        (a, "suspect", "timed_out")
    ]


@pytest.fixture(scope="module")
def mock_h1_l1() -> Iterator[str]:
    with testing.serve_mock() as url:
        yield url


def test_find_and_count_go_only_where_the_pattern_can_match(mock_h1_l1: str) -> None:
    v1 = closed_port_url()
    yaml_text = claim(mock_h1_l1, "H1", "L1") + claim(v1, "V1")
    direct = arrakis.Client(mock_h1_l1)
    want_h1 = direct.count("H1:.*")  # first (the mock's first Find can be slow)
    want_gds = sorted(c.name for c in direct.find("L1:GDS.*"))
    with running_router(yaml_text, health_interval=0.0) as (url, _, _):
        client = arrakis.Client(url)
        assert client.count("H1:.*") == want_h1 > 0
        assert sorted(c.name for c in client.find("L1:GDS.*")) == want_gds != []
        started = time.monotonic()
        with pytest.raises(flight.FlightUnavailableError) as info:
            client.count(".*")
        elapsed = time.monotonic() - started
    text = str(info.value)
    assert v1 in text and "V1:*" in text and "Count '.*' needs" in text, text
    assert elapsed < 5.0  # a refused connection fails at once, not after a deadline
    assert "Traceback" not in text and len(text) < 4096


def readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(port: int, status: int, limit: float) -> float:
    """Seconds until ``/readyz`` answers ``status`` (polled every 50 ms), or fail."""
    started = time.monotonic()
    while time.monotonic() - started < limit + 5:
        if readyz(port)[0] == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"/readyz did not turn {status} within {limit + 5} s")


@contextmanager
def probes(service: RouterService) -> Iterator[int]:
    checker = service.health_checker()
    assert checker is not None
    server = service.metrics.serve(0, "127.0.0.1", health_pages(service.health))
    checker.start()
    try:
        yield server.port
    finally:
        checker.stop()
        server.close()


def test_readyz_follows_a_domain_going_down_and_coming_back(mock_h1_l1: str) -> None:
    interval = 1.0
    a_url, b_url = closed_port_url(), closed_port_url()
    yaml_text = claim(a_url, "H1") + claim(b_url, "H1") + claim(mock_h1_l1, "L1")
    a, b = ExitStack(), ExitStack()
    try:
        a.enter_context(testing.serve_mock(url=a_url))
        b.enter_context(testing.serve_mock(url=b_url))
        with (
            running_router(yaml_text, health_interval=interval, health_timeout=0.5) as (
                url,
                service,
                _,
            ),
            probes(service) as port,
            capture_logs() as logs,
        ):
            wait_for(port, 200, 2 * interval)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200 and r.read() == b"ok\n"
            assert router_main(["health", url, "--ready"]) == 0

            a.close()  # one H1 replica down: still ready, and the body says which is not up
            assert wait_until_state(service, a_url, "down", 2 * interval + 5)
            status, body = readyz(port)
            assert status == 200
            assert a_url in [e["endpoint"] for e in body["endpoints_not_up"]]

            b.close()  # H1's last endpoint down
            went_down = wait_for(port, 503, 2 * interval)
            status, body = readyz(port)
            assert status == 503 and body["domains_without_healthy_endpoint"] == ["H1"]
            assert router_main(["health", url, "--ready"]) == 1
            assert router_main(["health", url]) == 0  # alive, not ready

            a.enter_context(testing.serve_mock(url=a_url))  # one comes back
            came_back = wait_for(port, 200, 2 * interval)
            assert readyz(port)[1]["ready"] is True
    finally:
        a.close()
        b.close()
    print(
        f"\n/readyz: 503 {went_down:.2f} s after H1's last endpoint went down, 200 "
        f"{came_back:.2f} s after one came back (interval {interval} s)"
    )
    assert went_down <= 2 * interval
    assert came_back <= 2 * interval
    changes = [
        (e["endpoint"], e["old"], e["new"]) for e in logs if e["event"] == "endpoint_health_changed"
    ]
    expected = iter([(a_url, "down"), (b_url, "down"), (a_url, "healthy")])
    step = next(expected)
    for endpoint_url, _, new in changes:  # in this order (a loaded machine may add a blip)
        if (endpoint_url, new) == step:
            step = next(expected, None)  # type: ignore[arg-type]
    assert step is None, changes
    for endpoint_url in (a_url, b_url):  # each change logged once: old -> new, never new -> new
        mine = [(old, new) for u, old, new in changes if u == endpoint_url]
        assert all(old != new for old, new in mine)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(mine)), mine


def wait_until_state(service: RouterService, url: str, state: str, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = service.health.state_of(url)
        if found is not None and found.value == state:
            return True
        time.sleep(0.05)
    return False


ROUTER = [sys.executable, "-m", "router.cli"]


def test_router_serve_probes_and_metrics_with_a_dead_endpoint(tmp_path: Path) -> None:
    """The whole `router serve` path: checks start, /readyz says 503 naming the endpoint,
    /healthz 200, metrics per endpoint, the state change logged, SIGTERM still exits 0."""
    dead = closed_port_url()
    path = tmp_path / "map.yaml"
    path.write_text(claim(dead, "V1"))
    port = int(closed_port_url().rsplit(":", 1)[1])
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
    argv += ["--metrics-port", str(port), "--health-interval", "0.5", "--log-format", "json"]
    with testing.ServerProcess(argv, name="router") as proc:
        wait_for(port, 503, 5)
        status, body = readyz(port)
        assert status == 503 and body["domains_without_healthy_endpoint"] == ["V1"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f'arrakis_router_endpoint_up{{endpoint="{dead}"}} 0.0' in text
        assert f'arrakis_router_endpoint_state{{endpoint="{dead}"}} 2.0' in text
        assert "arrakis_router_ready 0.0" in text
        assert proc.process is not None
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(timeout=20) == 0
        log_text = proc.log_text()
    lines = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]
    changes = [x for x in lines if x.get("event") == "endpoint_health_changed"]
    assert changes and changes[0]["endpoint"] == dead and changes[0]["new"] == "down"
    assert "Connection refused" in changes[0]["reason"] or "connect" in changes[0]["reason"]


@pytest.mark.parametrize(
    "option",
    [
        ["--health-interval", "-1"],
        ["--health-timeout", "0"],
        ["--max-downstream-calls", "-1"],
        ["--eject-after", "0"],
        ["--ejection-time", "0"],
    ],
)
def test_serve_refuses_bad_health_options(tmp_path: Path, option: list[str]) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(claim(closed_port_url(), "V1"))
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0", *option]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert option[0] in res.stderr


def test_over_the_in_flight_cap_a_call_goes_to_the_next_replica_at_once() -> None:
    """``--max-downstream-calls 1``: an open stream holds A's only slot, so a Describe
    arriving meanwhile runs on B straight away instead of queueing behind it on A."""
    channel = h1_channel()
    with testing.serve_mock() as a, testing.serve_mock() as b:
        for url in (a, b):
            arrakis.Client(url).describe([channel])  # warm the mocks
        yaml_text = claim(a, "H1") + claim(b, "H1")
        with running_router(
            yaml_text, describe_ttl=0.0, health_interval=0.0, max_downstream_calls=1
        ) as (url, service, _):
            client = arrakis.Client(url)
            now = time.time() - 315_964_782  # roughly GPS now; the mock keeps everything
            blocks = client.stream([channel], round(now) - 3600, round(now) - 60)
            next(iter(blocks))  # the stream is open on A (first in the map), held there
            assert service.health.in_flight(a) == 1
            started = time.monotonic()
            assert client.describe([channel])[channel].name == channel
            elapsed = time.monotonic() - started
            blocks.close()
            assert wait_until_idle(service, a)
            sample = service.metrics.registry.get_sample_value
            calls = "arrakis_router_downstream_call_seconds_count"
            on_b = sample(calls, {"endpoint": b, "call": "fetch", "outcome": "ok"})
            overflows = sample("arrakis_router_downstream_overflows_total", {"endpoint": a})
            state_a = service.health.state_of(a)
    print(f"\ndescribe while A is at its cap: {elapsed:.3f} s, answered by B")
    assert on_b == 1 and overflows == 1
    assert state_a is not None and state_a.value == "healthy"  # the cap is not A's fault
    assert elapsed < 5.0


def wait_until_idle(service: RouterService, url: str, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while service.health.in_flight(url) and time.monotonic() < deadline:
        time.sleep(0.02)
    return service.health.in_flight(url) == 0
