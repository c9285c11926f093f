"""The supervision of data workers (router.workers.DataWorkers) with stand-in worker
processes: a few lines of Python that announce themselves like ``router serve`` and then do
what the test needs (serve on, exit, never announce). The real workers are run in
tests/integration/test_data_workers.py."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from router.workers import (
    RELOADED,
    DataWorkers,
    WorkersCollector,
    WorkerStartError,
    advertised_host,
)


def stand_in(body: str) -> list[str]:
    """A worker command: reads its start-up line, announces the port it was given (or
    40000 + index when given 0), then runs ``body``."""
    script = (
        "import json, os, signal, sys, time\n"
        "spec = json.loads(sys.stdin.readline())\n"
        "port = int(spec['settings']['url'].rsplit(':', 1)[1]) or 40000 + spec['index']\n"
        "print(f'serving grpc://127.0.0.1:{port}', flush=True)\n" + body
    )
    return [sys.executable, "-c", script]


SERVE_ON = "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nwhile True: time.sleep(0.05)\n"


@pytest.fixture
def stopped() -> Iterator[list[DataWorkers]]:
    made: list[DataWorkers] = []
    yield made
    for workers in made:
        workers.stop(5.0)


def make(stopped: list[DataWorkers], count: int, body: str, **kw: object) -> DataWorkers:
    workers = DataWorkers(
        count,
        {"scope_map": "map.yaml"},
        scheme="grpc",
        bind_host="0.0.0.0",
        advertise_host="router.example.org",
        command=stand_in(body),
        probe_interval=0,  # the stand-ins answer no server-info (probes: the integration tests)
        **kw,  # type: ignore[arg-type]
    )
    stopped.append(workers)
    return workers


def test_locations_in_turn_at_the_advertised_host(stopped: list[DataWorkers]) -> None:
    workers = make(stopped, 3, SERVE_ON)
    workers.start()
    handed = [workers.location() for _ in range(6)]
    first = [f"grpc://router.example.org:{40000 + i}" for i in range(3)]
    assert handed == first + first
    assert workers.up == 3


def test_first_port_gives_fixed_ports(stopped: list[DataWorkers]) -> None:
    workers = make(stopped, 2, SERVE_ON, first_port=41000)
    workers.start()
    assert workers.locations() == [
        "grpc://router.example.org:41000",
        "grpc://router.example.org:41001",
    ]


def test_an_exited_worker_is_skipped_then_restarted_with_growing_delays(
    stopped: list[DataWorkers],
) -> None:
    """Worker 0 exits at once every time; worker 1 serves on. Hand-outs skip worker 0 while
    it is down; its restarts come after 0.5 s, then 1 s, ...; each exit is logged."""
    body = "if spec['index'] == 0: time.sleep(0.2); sys.exit(3)\n" + SERVE_ON
    exits: list[int] = []
    workers = make(stopped, 2, body, on_exit=exits.append)
    with capture_logs() as logs:
        workers.start()
        deadline = time.monotonic() + 20
        while workers.workers[0].restarts < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            if workers.workers[0].location is None:
                assert workers.location() == "grpc://router.example.org:40001"
    assert workers.workers[0].restarts >= 3
    assert workers.workers[1].restarts == 0
    exited = [e for e in logs if e["event"] == "data_worker_exited"]
    assert len(exited) >= 3 and all(e["exit"] == "status 3" for e in exited)
    assert [e["restart_in_s"] for e in exited[:3]] == [0.5, 1.0, 2.0]
    assert all(e["log_level"] == "error" and e["worker"] == 0 for e in exited)
    assert len(exits) >= 3  # the metrics forget each dead process
    families = {f.name: f for f in WorkersCollector(workers).collect()}
    restarts = {
        s.labels["worker"]: s.value
        for s in families["arrakis_router_data_worker_restarts"].samples
        if s.name.endswith("_total")
    }
    assert restarts["0"] >= 3 and restarts["1"] == 0


def test_a_worker_that_never_announces_fails_the_start_in_time(
    stopped: list[DataWorkers],
) -> None:
    silent = [sys.executable, "-c", "import time\ntime.sleep(60)"]
    workers = DataWorkers(
        1,
        {},
        scheme="grpc",
        bind_host="127.0.0.1",
        advertise_host="127.0.0.1",
        command=silent,
        start_timeout=1.0,
        probe_interval=0,
    )
    stopped.append(workers)
    started = time.monotonic()
    with pytest.raises(
        WorkerStartError, match="data worker 0 did not start: no 'serving' line within 1 s"
    ):
        workers.start()
    assert time.monotonic() - started < 10
    assert workers.workers[0].process is None  # stopped (killed after its grace)


def test_reload_waits_for_every_worker_to_report_the_digest(stopped: list[DataWorkers]) -> None:
    """SIGHUP reaches each worker; the front waits for ``reloaded DIGEST`` from all (one
    answers late: the wait lasts until then), and names a worker that never answers."""
    body = (
        "def hup(*a):\n"
        "    time.sleep(0.3 * spec['index'])\n"
        "    if spec['index'] < 2: print('" + RELOADED + "abc', flush=True)\n"
        "signal.signal(signal.SIGHUP, hup)\n" + SERVE_ON
    )
    workers = make(stopped, 3, body)
    workers.start()
    started = time.monotonic()
    with capture_logs() as logs:
        late = workers.reload("abc", timeout=2.0)
    took = time.monotonic() - started
    assert late == [2]
    assert 1.5 < took < 5
    assert workers.workers[0].digest == workers.workers[1].digest == "abc"
    (warning,) = [e for e in logs if e["event"] == "data_workers_reload_late"]
    assert warning["workers"] == [2]


def test_advertised_host() -> None:
    assert advertised_host("10.0.0.5", None) == "10.0.0.5"
    assert advertised_host("0.0.0.0", "router-1.example.org") == "router-1.example.org"
    assert advertised_host("0.0.0.0", None) not in ("0.0.0.0", "")


def test_the_worker_gets_the_front_settings_but_no_port_watch_or_workers() -> None:
    import argparse

    from router.serve import worker_settings

    args = argparse.Namespace(
        scope_map="m.yaml",
        metrics_port=9100,
        watch_interval=5.0,
        data_workers=4,
        url="grpc://0.0.0.0:31206",
        tls_cert=None,
        _parser=object(),
        config="c.toml",
    )
    got = worker_settings(args)
    assert got == {
        "scope_map": "m.yaml",
        "metrics_port": 0,
        "watch_interval": 0.0,
        "data_workers": 0,
        "url": "grpc://0.0.0.0:31206",
        "tls_cert": None,
    }
    json.dumps(got)  # it travels as one JSON line
