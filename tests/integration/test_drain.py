"""Graceful drain of a real ``router serve`` subprocess on SIGTERM/SIGINT, seen through the
real ``arrakis`` client: a live stream ends with "server shutting down, reconnect" (not a
hang, not a silent end), a bounded stream finishes (or, past ``--drain-timeout``, ends with
the same error), new calls are refused, and the process exits 0 within drain-timeout + 2 s
whatever is open. The operator sees the drain in the JSON log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.flight as flight
import pytest

from router.protocol.gps import gps_now_ns
from router_backends.testing import ServerProcess, serve_mock
from tests.integration.servers import wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

NS = 1_000_000_000
CHANNEL = "H1:GDS-CALIB_STRAIN"
# exit bound the issue sets (drain timeout + 2 s), plus 1 s for a loaded CI machine to
# schedule the processes; the measured times are logged by the router (drain_done)
SLACK = 2.0 + 1.0


def _router(map_path: Path, *extra: str) -> ServerProcess:
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(map_path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--log-format", "json", "--watch-interval", "0"]
    return ServerProcess([*argv, *extra], name="router")


def _map(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(f"{url}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n")
    return path


def _events(proc: ServerProcess) -> list[dict[str, Any]]:
    """Every line the router wrote, each of which must be a JSON object."""
    out = []
    for line in proc.log_text().splitlines():
        if line.strip():
            out.append(json.loads(line))  # raises on any non-JSON line
    return out


def _stop(proc: ServerProcess, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
    """Send ``sig``; the exit code and the seconds it took."""
    assert proc.process is not None
    sent = time.monotonic()
    proc.process.send_signal(sig)
    rc = proc.process.wait(timeout=60)
    return rc, time.monotonic() - sent


class Reader(threading.Thread):
    """Reads a client stream in the background: blocks received, how it ended."""

    def __init__(self, stream: Iterator[Any]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.blocks: list[Any] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            for block in self.stream:
                self.blocks.append(block)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    with serve_mock() as url:
        yield url


@pytest.fixture(scope="module")
def slow_mock_url() -> Iterator[str]:
    """Every block held 0.1 s: a bounded stream of N blocks takes N/10 s."""
    with serve_mock(faults="delay=0.1") as url:
        yield url


def test_idle_router_exits_zero_at_once_on_sigterm_and_sigint(
    tmp_path: Path, mock_url: str
) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with _router(_map(tmp_path, mock_url), "--drain-timeout", "20") as proc:
            rc, took = _stop(proc, sig)
            assert rc == 0, proc.log_text()
            assert took < SLACK, f"an idle router took {took:.1f} s to stop"
            events = _events(proc)
        names = [e["event"] for e in events]
        assert {"serving", "drain_started", "drain_done", "router_stopped"} <= set(names)
        stopping = next(e for e in events if e["event"] == "router_stopping")
        assert stopping["signal"] == sig.name


def test_sigterm_ends_a_live_stream_with_the_shutdown_error(tmp_path: Path, mock_url: str) -> None:
    drain_timeout = 5.0
    with _router(_map(tmp_path, mock_url), "--drain-timeout", str(drain_timeout)) as proc:
        reader = Reader(arrakis.Client(proc.url).stream([CHANNEL]))
        reader.start()
        assert wait_until(lambda: len(reader.blocks) >= 4, 30), proc.log_text()
        rc, took = _stop(proc)
        reader.join(10)
        assert not reader.is_alive(), "the client hangs after the router stopped"
        events = _events(proc)
    assert rc == 0
    # a live stream does not hold the drain: it ends at once, not at the deadline
    assert took < SLACK, f"took {took:.1f} s"
    assert isinstance(reader.error, flight.FlightUnavailableError), reader.error
    assert "server shutting down, reconnect" in str(reader.error)
    done = next(e for e in events if e["event"] == "drain_done")
    assert done["cut_short"] == 0
    # the operator sees the stream's end as a warning with the same text
    failed = [e for e in events if e["event"] == "request_failed"]
    assert any("shutting down" in e["error"] for e in failed), failed


def test_sigterm_lets_a_bounded_stream_finish_and_refuses_new_calls(
    tmp_path: Path, slow_mock_url: str
) -> None:
    start = (gps_now_ns() // NS - 3600) * NS
    blocks = 80  # 5 s of data at 1/16 s blocks, 8 s at 0.1 s per block
    end = start + blocks * NS // 16
    with _router(_map(tmp_path, slow_mock_url), "--drain-timeout", "20") as proc:
        client = arrakis.Client(proc.url)
        reader = Reader(client.stream([CHANNEL], start / NS, end / NS))
        reader.start()
        assert wait_until(lambda: len(reader.blocks) >= 2, 30), proc.log_text()
        assert proc.process is not None
        proc.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: any(e["event"] == "drain_started" for e in _events(proc)), 10)
        # draining: a new call is refused with a retryable status naming the reason
        with pytest.raises(flight.FlightUnavailableError, match="server shutting down"):
            client.count("H1:*")
        # and the health probe fails: load balancers and readiness take the router out
        health = subprocess.run(
            [sys.executable, "-m", "router.cli", "health", proc.url, "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert health.returncode == 1 and "server shutting down" in health.stderr
        assert reader.is_alive()  # all this while the stream was still being served
        rc = proc.process.wait(timeout=30)
        reader.join(10)
        events = _events(proc)
    assert rc == 0
    assert reader.error is None, reader.error
    assert len(reader.blocks) == blocks  # the whole stream, nothing cut
    names = [e["event"] for e in events]
    assert "drain_progress" in names  # logged while the stream was still running
    done = next(e for e in events if e["event"] == "drain_done")
    assert done["cut_short"] == 0


def test_a_bounded_stream_past_the_drain_timeout_ends_with_the_shutdown_error(
    tmp_path: Path, slow_mock_url: str
) -> None:
    drain_timeout = 1.0
    start = (gps_now_ns() // NS - 3600) * NS
    end = start + 600 * NS // 16  # 60 s at 0.1 s per block: far past the drain timeout
    with _router(_map(tmp_path, slow_mock_url), "--drain-timeout", str(drain_timeout)) as proc:
        reader = Reader(arrakis.Client(proc.url).stream([CHANNEL], start / NS, end / NS))
        reader.start()
        assert wait_until(lambda: len(reader.blocks) >= 2, 30), proc.log_text()
        rc, took = _stop(proc)
        reader.join(10)
        events = _events(proc)
    assert rc == 0
    assert took < drain_timeout + SLACK, f"took {took:.1f} s"
    assert isinstance(reader.error, flight.FlightUnavailableError), reader.error
    assert "server shutting down" in str(reader.error)
    assert 2 <= len(reader.blocks) < 600
    deadline = next(e for e in events if e["event"] == "drain_deadline")
    assert deadline["open_calls"] >= 1
