"""``router serve`` and ``router health`` as subprocesses; reload keeps the last valid map."""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import arrakis
import numpy as np
import pytest
from structlog.testing import capture_logs

from router.reload import Reloader
from router.service import RouterService
from router_backends.testing import ServerProcess, serve_mock
from scopemap import load_text
from tests.integration.behaviours import CHANNEL, ScriptedArrakis, one_endpoint_map
from tests.integration.servers import running_router, serving

pytestmark = pytest.mark.integration
ROUTER = [sys.executable, "-m", "router.cli"]


def _events(log: list[str]) -> list[dict[str, Any]]:
    """A router's JSON log lines as events."""
    return [json.loads(line) for line in log if line.startswith("{")]


def _started(log: list[str]) -> dict[str, Any]:
    """The router_started event of a router's log."""
    return next(e for e in _events(log) if e.get("event") == "router_started")


def _serve_argv_for_mock(tmp_path: Path, mock: str, *options: str) -> list[str]:
    """`router serve` (JSON logs) on a map sending all of H1 to the mock at ``mock``."""
    path = tmp_path / "map.yaml"
    path.write_text(f"{mock}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n")
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
    return [*argv, "--log-format", "json", *options]


TCMALLOC = "libtcmalloc_minimal.so.4"  # what the container image preloads
GOOD = "grpc://127.0.0.1:1:\n  scopes: {H1: [{all: true}]}\n  retention: {}\n"
BAD = "grpc://127.0.0.1:1:\n  scopes: {H1: [{all: maybe}]}\n  retention: {newest: 9, oldest: 1}\n"


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[ServerProcess]:
    path = tmp_path / "map.yaml"
    path.write_text(GOOD)
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
    with ServerProcess([*argv, "--log-format", "json"], name="router") as proc:
        assert proc.url.startswith("grpc://127.0.0.1:"), proc.url
        yield proc


def test_serve_health_and_graceful_sigterm(
    router_process: ServerProcess,
) -> None:
    url = router_process.url
    ok = subprocess.run([*ROUTER, "health", url], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "ok:" in ok.stdout
    assert router_process.process is not None
    router_process.process.send_signal(signal.SIGTERM)
    assert router_process.process.wait(timeout=20) == 0


def test_health_fails_clearly_when_nothing_answers() -> None:
    res = subprocess.run(
        [*ROUTER, "health", "grpc://127.0.0.1:9", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "did not answer server-info" in res.stderr


def test_serve_refuses_an_invalid_map(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    res = subprocess.run(
        [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "refusing to start" in res.stderr and "bad.yaml" in res.stderr


@pytest.mark.parametrize(
    "option",
    [
        ["--idle-timeout", "0"],
        ["--downstream-timeout", "-1"],
        ["--describe-ttl", "-5"],
        ["--request-timeout", "0"],
    ],
)
def test_serve_refuses_a_bad_timeout(tmp_path: Path, option: list[str]) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(GOOD)
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0", *option]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert option[0] in res.stderr


@pytest.mark.parametrize("window", ["1000", "-1", str(64 * 1024 * 1024 + 1)])
def test_serve_refuses_a_window_out_of_bounds(tmp_path: Path, window: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(GOOD)
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
    res = subprocess.run([*argv, "--downstream-window", window], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"--downstream-window must be 0 or 65536 to 67108864 bytes, got {window}" in res.stderr


@pytest.mark.parametrize("window", [65536, 0])
def test_serve_downstream_window_streams_equal_a_direct_read(tmp_path: Path, window: int) -> None:
    """The smallest fixed window (a 2 MB stream passes through it 32 times over) and gRPC's
    own (0): the operator sees the setting in router_started; the data is the downstream's."""
    strain = "H1:GDS-CALIB_STRAIN"  # 16384 Hz float64 in the mock's default channel set
    with serve_mock() as mock:
        serve_argv = _serve_argv_for_mock(tmp_path, mock, "--downstream-window", str(window))
        with ServerProcess(serve_argv, name="router") as proc:
            got = arrakis.Client(proc.url).fetch([strain], 1400000000, 1400000016)
            want = arrakis.Client(mock).fetch([strain], 1400000000, 1400000016)
            log = proc.log_text().splitlines()
    assert _started(log)["downstream_window"] == window
    assert got.time_ns == want.time_ns and len(got.data[strain]) == 16 * 16384
    np.testing.assert_array_equal(got.data[strain], want.data[strain])


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
@pytest.mark.parametrize(
    ("option", "policy"), [([], "batch"), (["--scheduling", "normal"], "normal")]
)
def test_serve_runs_its_threads_under_the_scheduling_policy(
    tmp_path: Path, option: list[str], policy: str
) -> None:
    """Every thread of a serving router (gRPC's included, after a stream has been served)
    runs under the policy; the operator reads it in router_started."""
    want = {"batch": os.SCHED_BATCH, "normal": os.SCHED_OTHER}[policy]
    with (
        serve_mock() as mock,
        ServerProcess(_serve_argv_for_mock(tmp_path, mock, *option), name="router") as proc,
    ):
        arrakis.Client(proc.url).fetch(["H1:GDS-CALIB_STRAIN"], 1400000000, 1400000002)
        assert proc.process is not None
        tids = os.listdir(f"/proc/{proc.process.pid}/task")
        policies = set()
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread ending meanwhile
                policies.add(os.sched_getscheduler(int(tid)))
        log = proc.log_text().splitlines()
    assert len(tids) > 4 and policies == {want}
    assert _started(log)["scheduling"] == policy


@pytest.mark.parametrize(("preload", "name"), [(None, "glibc"), (TCMALLOC, "tcmalloc")])
def test_serve_on_a_preloaded_allocator_streams_equal_a_direct_read(
    tmp_path: Path, preload: str | None, name: str
) -> None:
    """The container image runs the router on tcmalloc (LD_PRELOAD): four concurrent fetches
    through it equal the downstream's data, and the operator reads the allocator in
    router_started (every log line stays JSON: no loader complaint)."""
    if preload is not None and ctypes.util.find_library("tcmalloc_minimal") is None:
        pytest.fail(
            "libtcmalloc-minimal4 is not installed: run .ci/install-allocators.sh (as root)"
        )
    strain = "H1:GDS-CALIB_STRAIN"
    env = ["env", "-u", "LD_PRELOAD"] + ([f"LD_PRELOAD={preload}"] if preload else [])
    with serve_mock() as mock:
        want = arrakis.Client(mock).fetch([strain], 1400000000, 1400000016)
        argv = [*env, *_serve_argv_for_mock(tmp_path, mock)]
        with ServerProcess(argv, name="router") as proc, ThreadPoolExecutor(4) as pool:
            fetch = arrakis.Client(proc.url).fetch
            got = list(pool.map(lambda _: fetch([strain], 1400000000, 1400000016), range(4)))
            lines = [line for line in proc.log_text().splitlines() if line.strip()]
    for one in got:
        assert one.time_ns == want.time_ns
        np.testing.assert_array_equal(one.data[strain], want.data[strain])
    assert _started(lines)["allocator"] == name
    assert all(line.startswith("{") for line in lines), [line[:120] for line in lines][:3]


def test_serve_refuses_an_unknown_scheduling_policy(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(GOOD)
    argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
    res = subprocess.run([*argv, "--scheduling", "fifo"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "--scheduling: invalid choice: 'fifo' (choose from 'batch', 'normal')" in res.stderr
    assert "Traceback" not in res.stderr


def test_reload_keeps_last_valid_map(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(GOOD)
    result = load_text(GOOD, str(path))
    assert result.scope_map is not None
    service = RouterService(result.scope_map)
    try:
        reloader = Reloader(service, path)
        before = service.routing
        path.write_text(BAD)
        assert reloader.check() is False and service.routing is before
        path.write_text(GOOD.replace("127.0.0.1:1", "127.0.0.1:2"))
        assert reloader.check() is True
        assert [ep.url for ep in service.routing.scope_map.endpoints] == ["grpc://127.0.0.1:2"]
        assert reloader.check() is False  # unchanged content: no reload
    finally:
        service.close()


def test_describe_then_stream_costs_one_downstream_describe() -> None:
    arrakis = pytest.importorskip("arrakis")
    down = ScriptedArrakis()
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, _):
        arrakis.Client(url).fetch([CHANNEL.name], 1_400_000_000, 1_400_000_001)
    assert down.describes == 1
    assert down.streams == 1


def test_serve_output_python_serves_through_generator_stream(tmp_path: Path) -> None:
    """--output python: the operator sees it in router_started; streams are the same."""
    down = ScriptedArrakis()
    with serving(down) as durl:
        path = tmp_path / "map.yaml"
        path.write_text(one_endpoint_map(durl))
        argv = [*ROUTER, "serve", "--scope-map", str(path), "--url", "grpc://127.0.0.1:0"]
        serve_argv = [*argv, "--log-format", "json", "--output", "python"]
        with ServerProcess(serve_argv, name="router") as proc:
            got = arrakis.Client(proc.url).fetch([CHANNEL.name], 1400000000, 1400000002)
            want = arrakis.Client(durl).fetch([CHANNEL.name], 1400000000, 1400000002)
            log = proc.log_text().splitlines()
    lines = _events(log)
    assert _started(log)["output"] == "python"
    assert not [e for e in lines if e.get("event") == "native_output_unavailable"]
    assert got.time_ns == want.time_ns and len(got.data[CHANNEL.name]) == 2 * 256
    np.testing.assert_array_equal(got.data[CHANNEL.name], want.data[CHANNEL.name])


def test_a_native_stage_that_is_not_there_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    from router import outstream, serve

    monkeypatch.setattr(outstream, "NATIVE", False)
    monkeypatch.setattr(outstream, "WHY_NOT_NATIVE", "not built (test)")
    with capture_logs() as logs:
        assert serve.warn_if_not_native("native") is True
        assert serve.warn_if_not_native("python") is False
    (event,) = logs
    assert event["event"] == "native_output_unavailable" and event["log_level"] == "warning"
    assert event["reason"] == "not built (test)"
