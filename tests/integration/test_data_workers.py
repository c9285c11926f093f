"""``router serve --data-workers N`` as operators run it: a real front process, its real
worker processes, a mock downstream, the real ``arrakis`` client.

Each failure path answers what the client sees, how long it takes and what the operator
sees (the JSON log, ``/metrics``). The stream contents through the workers are also checked
against the differential property (tests/integration/test_differential.py, data-worker path).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.flight as flight
import pytest

from router.downstream import REUSE_MARKER
from router.protocol.gps import gps_now_ns
from router_backends.testing import ServerProcess, serve_mock
from tests.integration.behaviours import free_port
from tests.integration.servers import wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

NS = 1_000_000_000
STRAIN = "H1:GDS-CALIB_STRAIN"  # 16384 Hz float64 in the mock's default channel set


@pytest.fixture(scope="module")
def mock() -> Iterator[str]:
    with serve_mock() as url:
        yield url


def _map(path: Path, url: str, domains: tuple[str, ...] = ("H1",)) -> Path:
    scopes = ", ".join(f"{d}: [{{all: true}}]" for d in domains)
    path.write_text(f"{url}:\n  scopes: {{{scopes}}}\n  retention: {{}}\n")
    return path


def _front(map_path: Path, *extra: str, workers: int = 2) -> ServerProcess:
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(map_path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--log-format", "json", "--watch-interval", "0"]
    argv += ["--data-workers", str(workers), "--drain-timeout", "5"]
    return ServerProcess([*argv, *extra], name="router-front", start_timeout=90)


def _events(proc: ServerProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of the front and its workers (they share its standard error)."""
    out = []
    for line in proc.log_text().splitlines():
        if line.strip():
            doc = json.loads(line)  # every line the processes write is one JSON object
            if event is None or doc.get("event") == event:
                out.append(doc)
    return out


def _stream_info(url: str, channels: list[str], start: int, end: int) -> flight.FlightInfo:
    request = {"request": "Stream", "args": {"channels": channels, "start": start, "end": end}}
    client = flight.connect(url)
    try:
        return client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(request)))
    finally:
        client.close()


def _location(info: flight.FlightInfo) -> str:
    (endpoint,) = info.endpoints
    (location,) = endpoint.locations
    return str(location.uri.decode())


def _exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _metrics(port: int) -> dict[str, float]:
    text = _exposition(port)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _historical(seconds: int) -> tuple[int, int]:
    """A range that ended a minute ago, on whole seconds."""
    end = (gps_now_ns() // NS - 60) * NS
    return end - seconds * NS, end


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _worker_pids(proc: ServerProcess) -> dict[str, int]:
    """location -> pid of every worker that announced itself (latest first wins)."""
    return {e["location"]: e["pid"] for e in _events(proc, "data_worker_serving")}


def test_streams_go_to_the_workers_in_turn_and_equal_a_direct_read(
    mock: str, tmp_path: Path
) -> None:
    port = free_port()
    with _front(_map(tmp_path / "map.yaml", mock), "--metrics-port", str(port)) as front:
        workers = _worker_pids(front)
        assert len(workers) == 2 and all(not _gone(pid) for pid in workers.values())
        start, end = _historical(16)
        # every Stream gets a worker's location, in turn; never the front's own port
        handed = [_location(_stream_info(front.url, [STRAIN], start, end)) for _ in range(4)]
        assert set(handed) == set(workers), (handed, workers)
        assert handed[0] != handed[1] and handed[0] == handed[2]
        assert front.url not in handed
        # metadata calls stay on the front (reuse the client's connection)
        client = flight.connect(front.url)
        request = {"request": "Describe", "args": {"channels": [STRAIN], "time": None}}
        info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(request)))
        client.close()
        assert [loc.uri.decode() for loc in info.endpoints[0].locations] == [REUSE_MARKER]

        # the real client follows the location; what it gets equals a direct read
        got = arrakis.Client(front.url).fetch([STRAIN], start / NS, end / NS)
        want = arrakis.Client(mock).fetch([STRAIN], start / NS, end / NS)
        assert got.time_ns == want.time_ns and got.duration_ns == want.duration_ns
        np.testing.assert_array_equal(got.data[STRAIN], want.data[STRAIN])
        assert not got.has_gaps

        # the operator: one /metrics summing every process, the workers' lines tagged
        assert wait_until(lambda: _metrics(port)["arrakis_router_open_streams"] == 0, 10)
        values = _metrics(port)
        ok = 'arrakis_router_requests_total{kind="Stream",outcome="OK",rpc="DoGet"}'
        assert values[ok] == 1  # served by a worker, counted on the front's page
        planned = 'arrakis_router_requests_total{kind="Stream",outcome="OK",rpc="GetFlightInfo"}'
        assert values[planned] == 5
        assert values["arrakis_router_data_workers"] == 2
        assert values["arrakis_router_data_workers_up"] == 2
        assert values['arrakis_router_stream_bytes_total{stream="bounded"}'] > 16 * 16384 * 8
        for k in (0, 1):
            assert values[f'arrakis_router_data_worker_resident_memory_bytes{{worker="{k}"}}'] > 0
            assert values[f'arrakis_router_data_worker_cpu_seconds_total{{worker="{k}"}}'] > 0
        # the summed exposition is valid (no family twice, types and names as promtool wants)
        promtool = shutil.which("promtool")
        assert promtool, "promtool is not installed (Debian: apt-get install prometheus)"
        check = subprocess.run(
            [promtool, "check", "metrics"], input=_exposition(port), capture_output=True, text=True
        )
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check
        # the status page lists the workers and says where their streams are
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
        assert "Data workers (2)" in page and page.count('<tr class="worker">') == 2
        assert all(f"<code>{location}</code>" in page for location in workers)
        assert "not listed below" in page
        done = [e for e in _events(front, "stream_done") if "worker" in e]
        assert len(done) == 1 and done[0]["worker"] in (0, 1)
        started = _events(front, "router_started")
        assert len(started) == 1 and sorted(started[0]["data_workers"]) == sorted(workers)


def test_a_worker_killed_mid_stream_fails_the_stream_and_is_restarted(
    mock: str, tmp_path: Path
) -> None:
    port = free_port()
    with _front(_map(tmp_path / "map.yaml", mock), "--metrics-port", str(port)) as front:
        workers = _worker_pids(front)
        start, end = _historical(2000)  # 2000 s x 16384 Hz x 8 B: 262 MB, far past any buffer
        info = _stream_info(front.url, [STRAIN], start, end)
        location = _location(info)
        client = flight.connect(location)
        reader = client.do_get(info.endpoints[0].ticket)
        received = reader.read_chunk().data.num_rows
        killed_at = time.monotonic()
        os.kill(workers[location], signal.SIGKILL)  # the worker serving this stream
        # the client: an error, not a clean (silently short) end of stream
        with pytest.raises(flight.FlightUnavailableError):
            while True:
                chunk = reader.read_chunk()
                received += chunk.data.num_rows
        failed_after = time.monotonic() - killed_at
        client.close()
        assert received < 2000 * 16  # 16 blocks per second: the stream did not complete
        assert failed_after < 10, failed_after

        # the operator: the exit is logged, the slot restarted on a new port, counted
        assert wait_until(lambda: len(_events(front, "data_worker_serving")) == 3, 30)
        (exited,) = _events(front, "data_worker_exited")
        assert exited["pid"] == workers[location] and exited["exit"] == "signal SIGKILL"
        assert exited["level"] == "error"
        slot = exited["worker"]
        newest = [e for e in _events(front, "data_worker_serving") if e["worker"] == slot][-1]
        assert newest["pid"] != exited["pid"] and newest["location"] != location
        values = _metrics(port)
        assert values[f'arrakis_router_data_worker_restarts_total{{worker="{slot}"}}'] == 1
        assert values["arrakis_router_data_workers_up"] == 2
        # the dead location is never handed out again; the new worker serves
        now = {_location(_stream_info(front.url, [STRAIN], *_historical(4))) for _ in range(4)}
        assert location not in now and len(now) == 2
        got = arrakis.Client(front.url).fetch([STRAIN], *(t / NS for t in _historical(4)))
        assert got.data[STRAIN].shape == (4 * 16384,)


def test_a_worker_that_stops_answering_is_taken_out_then_replaced(
    mock: str, tmp_path: Path
) -> None:
    """A hung worker (SIGSTOP: it accepts connections and answers nothing) gets no new
    streams from its first failed liveness probe, and is killed and restarted after three."""
    port = free_port()
    with _front(_map(tmp_path / "map.yaml", mock), "--metrics-port", str(port)) as front:
        workers = _worker_pids(front)
        hung, pid = sorted(workers.items())[0]
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            assert wait_until(lambda: _events(front, "data_worker_not_answering"), 15)
            noticed = time.monotonic() - stopped_at
            # the client: every new stream goes to the worker that answers
            handed = {
                _location(_stream_info(front.url, [STRAIN], *_historical(4))) for _ in range(4)
            }
            assert handed == set(workers) - {hung}
            got = arrakis.Client(front.url).fetch([STRAIN], *(t / NS for t in _historical(4)))
            assert got.data[STRAIN].shape == (4 * 16384,)
            assert wait_until(lambda: _events(front, "data_worker_unresponsive"), 30)
            killed = time.monotonic() - stopped_at
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        # the operator: a warning per failed probe, one error, the exit, a new process
        (unresponsive,) = _events(front, "data_worker_unresponsive")
        assert unresponsive["pid"] == pid and unresponsive["strikes"] == 3
        assert unresponsive["level"] == "error"
        warnings = _events(front, "data_worker_not_answering")
        assert [e["strikes"] for e in warnings] == [1, 2] and warnings[0]["level"] == "warning"
        assert noticed < 2 + 2 + 3 and killed < 3 * (2 + 2) + 3, (noticed, killed)
        assert wait_until(lambda: len(_events(front, "data_worker_serving")) == 3, 30)
        (exited,) = _events(front, "data_worker_exited")
        assert exited["pid"] == pid and exited["exit"] == "signal SIGKILL"
        assert wait_until(lambda: _metrics(port)["arrakis_router_data_workers_up"] == 2, 10)


def test_a_reload_reaches_every_worker_before_the_front_swaps(mock: str, tmp_path: Path) -> None:
    map_path = _map(tmp_path / "map.yaml", mock, ("H1",))
    with _front(map_path) as front:
        l1 = sorted(c.name for c in arrakis.Client(mock).find("L1:.*"))[0]
        start, end = _historical(4)
        with pytest.raises(flight.FlightUnavailableError, match=l1):
            _stream_info(front.url, [l1], start, end)
        _map(map_path, mock, ("H1", "L1"))
        assert front.process is not None
        front.process.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: any("worker" not in e for e in _events(front, "scope_map_reloaded")), 30
        )
        # right after the front's swap every worker already serves the new map
        for _ in range(2):
            info = _stream_info(front.url, [l1], start, end)
            client = flight.connect(_location(info))
            table = client.do_get(info.endpoints[0].ticket).read_all()
            client.close()
            assert table.num_rows == 4 * 16  # 4 s of 62.5 ms blocks
        reloaded = _events(front, "scope_map_reloaded")
        front_line = next(e for e in reloaded if "worker" not in e)
        worker_lines = [e for e in reloaded if "worker" in e]
        assert sorted(e["worker"] for e in worker_lines) == [0, 1]
        assert all(e["timestamp"] <= front_line["timestamp"] for e in worker_lines)
        (fanned,) = _events(front, "data_workers_reloaded")
        assert fanned["workers"] == 2


def test_sigterm_stops_front_and_workers_and_a_dead_front_takes_its_workers(
    mock: str, tmp_path: Path
) -> None:
    map_path = _map(tmp_path / "map.yaml", mock)
    with _front(map_path) as front:
        pids = list(_worker_pids(front).values())
        assert front.process is not None
        sent = time.monotonic()
        front.process.send_signal(signal.SIGTERM)
        assert front.process.wait(timeout=30) == 0
        took = time.monotonic() - sent
        assert took < 5 + 3, took  # --drain-timeout 5, nothing open
        assert wait_until(lambda: all(_gone(pid) for pid in pids), 5)
        stopped = _events(front, "router_stopped")
        assert sorted(e.get("worker", -1) for e in stopped) == [-1, 0, 1]

    with _front(map_path) as front:
        pids = list(_worker_pids(front).values())
        assert front.process is not None
        front.process.kill()  # no chance to tell its workers: they see their pipe close
        front.process.wait(timeout=10)
        assert wait_until(lambda: all(_gone(pid) for pid in pids), 10)
        gone = _events(front, "front_gone")
        assert sorted(e["worker"] for e in gone) == [0, 1]


def test_a_worker_that_cannot_start_stops_the_front_with_a_reason(
    mock: str, tmp_path: Path
) -> None:
    busy = flight.FlightServerBase("grpc://127.0.0.1:0")  # holds the first worker's port
    try:
        front = _front(_map(tmp_path / "map.yaml", mock), "--data-worker-port", str(busy.port))
        started = time.monotonic()
        done = subprocess.run(front.argv, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    finally:
        busy.shutdown()
    assert done.returncode == 1 and "serving" not in done.stdout
    assert took < 30, took  # not the 60 s start-up timeout: the worker's exit is noticed
    # gRPC's own bind report is not JSON: read the JSON lines
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in lines if e["event"] == "startup_failed"]
    # the worker says why, the front which worker did not start and how
    assert any(e.get("worker") == 0 and "cannot bind" in e["error"] for e in failed), failed
    (front_line,) = [e for e in failed if "worker" not in e]
    assert front_line["error"].startswith("data worker 0 did not start: it exited with")
    # nothing is left running: the other worker was stopped, not killed
    assert not [e for e in lines if e["event"] == "data_worker_killed"]
    pids = [e["pid"] for e in lines if e["event"] == "data_worker_starting"]
    assert len(pids) == 2 and wait_until(lambda: all(_gone(pid) for pid in pids), 5)


def test_a_front_that_cannot_bind_stops_its_workers(mock: str, tmp_path: Path) -> None:
    """The workers start first (so the front's first Stream goes to one): a front whose own
    port is taken stops them again and exits 1 with the reason."""
    busy = flight.FlightServerBase("grpc://127.0.0.1:0")
    try:
        argv = _front(_map(tmp_path / "map.yaml", mock)).argv
        argv[argv.index("grpc://127.0.0.1:0")] = f"grpc://127.0.0.1:{busy.port}"
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    finally:
        busy.shutdown()
    assert done.returncode == 1 and "serving" not in done.stdout
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (failed,) = [e for e in lines if e["event"] == "startup_failed"]
    assert failed["error"].startswith(f"cannot bind grpc://127.0.0.1:{busy.port}")
    pids = [e["pid"] for e in lines if e["event"] == "data_worker_serving"]
    assert len(pids) == 2 and wait_until(lambda: all(_gone(pid) for pid in pids), 5)
    assert not [e for e in lines if e["event"] == "data_worker_killed"]  # they drained


def test_tls_front_hands_out_tls_worker_locations(
    mock: str, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    map_path = _map(tmp_path / "map.yaml", mock)
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(map_path)]
    argv += ["--url", "grpc+tls://127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)]
    argv += ["--log-format", "json", "--data-workers", "1", "--advertise-host", "localhost"]
    with ServerProcess(argv, name="router-front-tls", start_timeout=90) as front:
        roots = cert.read_bytes()
        url = front.url.replace("127.0.0.1", "localhost")
        client = flight.connect(url, tls_root_certs=roots)
        start, end = _historical(4)
        request = {"request": "Stream", "args": {"channels": [STRAIN], "start": start, "end": end}}
        info = client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(request)))
        client.close()
        location = _location(info)
        assert location.startswith("grpc+tls://localhost:"), location
        worker = flight.connect(location, tls_root_certs=roots)
        table = worker.do_get(info.endpoints[0].ticket).read_all()
        worker.close()
        assert table.num_rows == 4 * 16
        with pytest.raises(flight.FlightUnavailableError):  # no plain-text way in
            plain = flight.connect(location.replace("grpc+tls", "grpc"))
            plain.do_get(info.endpoints[0].ticket).read_all()
