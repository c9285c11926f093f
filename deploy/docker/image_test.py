"""`make image-test`: run the router image as an operator would, and check it.

- host network, a mock downstream on the host, the scope map as a directory mount;
- a non-default Flight port (ARRAKIS_ROUTER_URL): the HEALTHCHECK must follow it;
- waits for the HEALTHCHECK to report healthy, runs real ``arrakis`` queries through it and
  compares the data with the downstream's own answer;
- numeric non-root uid, read-only root filesystem, no capabilities (effective set empty);
- an atomic rename of the map in the mounted directory is reloaded;
- ``docker stop`` with a live stream open: exit code 0, well before SIGKILL, the client
  told to reconnect; every log line JSON;
- the compose demo (deploy/compose): the router in front of two mock downstreams, a fetch
  stitched across their retention boundary, ``stop`` exit code 0.

Exits non-zero with the reason on the first failure; the container and the mock are always
removed. Needs docker (see .ci/ops.sh) and the image (`make image`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import arrakis
import numpy as np
import pyarrow.flight as flight

from router_backends.testing import ServerProcess

CHANNEL = "H1:GDS-CALIB_STRAIN"
UID = 10001


class Failed(Exception):
    pass


def step(text: str) -> None:
    print(f"image-test: {text}", flush=True)


def check(ok: object, what: str) -> None:
    if not ok:
        raise Failed(what)
    step(f"ok: {what}")


def docker(*args: str, timeout: float = 120, check_rc: bool = True) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and res.returncode != 0:
        raise Failed(f"docker {' '.join(args[:3])}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def inspect(name: str, fmt: str) -> Any:
    return json.loads(docker("inspect", "-f", "{{json " + fmt + "}}", name))


def container_logs(name: str) -> str:
    """What the container wrote, stdout and stderr (the router logs on stderr)."""
    res = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return res.stdout + res.stderr


def map_text(url: str) -> str:
    return f"{url}:\n  scopes:\n    H1: [{{all: true}}]\n  retention: {{}}\n"


def run(image: str) -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise Failed("docker does not answer (install docker.io and start dockerd: .ci/ops.sh)")
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    step(f"image {image}: {size / 1e6:.0f} MB")
    labels = docker("image", "inspect", "-f", "{{json .Config.Labels}}", image)
    for key in ("title", "version", "revision", "source", "licenses"):
        check(f"org.opencontainers.image.{key}" in labels, f"OCI label {key}")

    mock_argv = [sys.executable, "-m", "router_backends", "mock", "--url", "grpc://127.0.0.1:0"]
    with ServerProcess(mock_argv, name="mock") as mock, tempfile.TemporaryDirectory() as tmp:
        maps = Path(tmp) / "maps"
        maps.mkdir()
        (maps / "scope-map.yaml").write_text(map_text(mock.url))
        os.chmod(tmp, 0o755)
        os.chmod(maps, 0o755)
        os.chmod(maps / "scope-map.yaml", 0o644)
        port, metrics = free_port(), free_port()
        name = f"arrakis-router-image-test-{os.getpid()}"
        docker(
            "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--health-interval", "2s", "--health-start-period", "2s",
            "-v", f"{maps}:/etc/arrakis-router/maps:ro",
            "-e", f"ARRAKIS_ROUTER_URL=grpc://127.0.0.1:{port}",
            "-e", f"ARRAKIS_ROUTER_METRICS_PORT={metrics}",
            "-e", "ARRAKIS_ROUTER_WATCH_INTERVAL=1",
            image,
        )  # fmt: skip
        try:
            exercise(name, port, metrics, mock.url, maps)
        except BaseException:
            print(container_logs(name)[-4000:], file=sys.stderr)
            raise
        finally:
            docker("rm", "--force", name, check_rc=False)
        data_workers(image, mock.url, maps)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(50):
        first = free_port()
        socks = [socket.socket() for _ in range(count)]
        try:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", first + i))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise Failed(f"no {count} consecutive free ports")


def data_workers(image: str, mock_url: str, maps: Path) -> None:
    """The same image with two data workers: a read-only root needs a tmpfs for the workers'
    metrics (without one the router says so and exits 1); with one, streams are served by
    the workers at their fixed ports, the metrics are summed, ``docker stop`` drains all."""
    name = f"arrakis-router-image-workers-{os.getpid()}"
    port, metrics, first = free_port(), free_port(), free_ports(2)
    argv = [
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{maps}:/etc/arrakis-router/maps:ro",
        "-e", f"ARRAKIS_ROUTER_URL=grpc://127.0.0.1:{port}",
        "-e", f"ARRAKIS_ROUTER_METRICS_PORT={metrics}",
        "-e", "ARRAKIS_ROUTER_DATA_WORKERS=2",
        "-e", f"ARRAKIS_ROUTER_DATA_WORKER_PORT={first}",
        "-e", "ARRAKIS_ROUTER_ADVERTISE_HOST=127.0.0.1",
    ]  # fmt: skip
    try:
        docker(*argv, image)
        wait_for(lambda: not inspect(name, ".State.Running"), 60, "the router to refuse")
        logs = container_logs(name)
        code = inspect(name, ".State.ExitCode")
        check(
            code == 1 and "writable temporary directory" in logs,
            f"no writable /tmp: exit code {code} and the reason logged",
        )
    finally:
        docker("rm", "--force", name, check_rc=False)
    try:
        docker(*argv[:4], "--tmpfs", "/tmp", *argv[4:], image)
        url = f"grpc://127.0.0.1:{port}"
        client = arrakis.Client(url)

        def answers() -> bool:
            try:
                return bool(client.count("H1:*") > 0)
            except flight.FlightError:
                return False

        wait_for(answers, 90, "the router with data workers to answer")
        request = {
            "request": "Stream",
            "args": {
                "channels": [CHANNEL],
                "start": 1_400_000_000 * 10**9,
                "end": 1_400_000_002 * 10**9,
            },
        }
        raw = flight.connect(url)
        info = raw.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(request)))
        raw.close()
        location = info.endpoints[0].locations[0].uri.decode()
        workers = {f"grpc://127.0.0.1:{first}", f"grpc://127.0.0.1:{first + 1}"}
        check(location in workers, f"a Stream is handed to a data worker: {location}")
        t0 = 1_400_000_000
        got = client.fetch([CHANNEL], t0, t0 + 2).data[CHANNEL]
        want = arrakis.Client(mock_url).fetch([CHANNEL], t0, t0 + 2).data[CHANNEL]
        check(np.array_equal(got, want) and got.size > 0, "fetch through a data worker matches")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            page = r.read().decode()
        check("arrakis_router_data_workers_up 2.0" in page, "metrics: 2 data workers up")
        served = 'arrakis_router_requests_total{kind="Stream",outcome="OK",rpc="DoGet"} 1.0'
        check(served in page, "metrics: the workers' stream summed on the front's page")
        sent = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - sent
        code = inspect(name, ".State.ExitCode")
        check(code == 0 and took < 7 + 3, f"docker stop: exit code {code} after {took:.1f} s")
        lines = [line for line in container_logs(name).splitlines() if line.strip()]
        bad = [line for line in lines if not _is_json(line)]
        check(lines and not bad, f"all {len(lines)} log lines of 3 processes are JSON {bad[:2]}")
        stopped = [json.loads(line) for line in lines if '"router_stopped"' in line]
        check(sorted(e.get("worker", -1) for e in stopped) == [-1, 0, 1], "all 3 stopped")
    except BaseException:
        print(container_logs(name)[-4000:], file=sys.stderr)
        raise
    finally:
        docker("rm", "--force", name, check_rc=False)


def exercise(name: str, port: int, metrics: int, mock_url: str, maps: Path) -> None:
    def health() -> bool:
        status = inspect(name, ".State.Health.Status")
        if status == "unhealthy" or not inspect(name, ".State.Running"):
            raise Failed(f"container is {status}, running={inspect(name, '.State.Running')}")
        return bool(status == "healthy")

    started = time.monotonic()
    wait_for(health, 90, "HEALTHCHECK healthy")
    check(True, f"HEALTHCHECK healthy on port {port} after {time.monotonic() - started:.1f} s")

    url = f"grpc://127.0.0.1:{port}"
    via_router = arrakis.Client(url)
    direct = arrakis.Client(mock_url)
    check(via_router.count("H1:*") == direct.count("H1:*") > 0, "Count through the router")
    t0 = 1_400_000_000
    got = via_router.fetch([CHANNEL], t0, t0 + 2).data[CHANNEL]
    want = direct.fetch([CHANNEL], t0, t0 + 2).data[CHANNEL]
    check(np.array_equal(got, want) and got.size > 0, f"fetch of {got.size} samples matches")

    config = inspect(name, ".Config.User")
    check(config.split(":")[0].isdigit() and int(config.split(":")[0]) == UID, f"USER {config}")
    check(docker("exec", name, "id", "-u") == str(UID), f"runs as uid {UID}")
    check(inspect(name, ".HostConfig.ReadonlyRootfs") is True, "read-only root filesystem")
    write = subprocess.run(
        ["docker", "exec", name, "sh", "-c", "echo x > /opt/router/x"], capture_output=True
    )
    check(write.returncode != 0, "writing to the root filesystem fails")
    check(inspect(name, ".HostConfig.CapDrop") == ["ALL"], "all capabilities dropped")
    status = docker("exec", name, "cat", "/proc/1/status")
    caps = {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith("Cap")
    }
    check(caps["CapEff"] == 0 and caps["CapPrm"] == 0, "no effective capabilities")

    # an editor's atomic rename in the mounted directory reaches the router
    new = maps / ".scope-map.yaml.tmp"
    new.write_text(map_text(mock_url) + "# edited\n")
    os.chmod(new, 0o644)
    new.replace(maps / "scope-map.yaml")
    wait_for(lambda: "scope_map_reloaded" in container_logs(name), 30, "the map reload")
    check(True, "atomic rename of the map reloaded (directory mount)")

    # docker stop with a live stream open: drained, exit 0, the client told
    outcome: dict[str, Any] = {"blocks": 0}

    def read_live() -> None:
        try:
            for _ in via_router.stream([CHANNEL]):
                outcome["blocks"] += 1
        except BaseException as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=read_live, daemon=True)
    reader.start()
    wait_for(lambda: outcome["blocks"] >= 4, 30, "live blocks through the router")
    drain_timeout = 7  # the image's ARRAKIS_ROUTER_DRAIN_TIMEOUT
    sent = time.monotonic()
    docker("stop", "--time", "30", name, timeout=60)
    took = time.monotonic() - sent
    reader.join(10)
    code = inspect(name, ".State.ExitCode")
    check(code == 0, f"docker stop: exit code {code} after {took:.1f} s")
    check(took < drain_timeout + 2 + 1, "stopped within the drain timeout + 2 s (no SIGKILL)")
    error = outcome.get("error")
    check(
        isinstance(error, flight.FlightUnavailableError) and "shutting down" in str(error),
        f"the live client was told: {str(error)[:80]!r}",
    )
    lines = [line for line in container_logs(name).splitlines() if line.strip()]
    bad = [line for line in lines if not _is_json(line)]
    check(lines and not bad, f"all {len(lines)} log lines are JSON {bad[:2]}")
    events = {json.loads(line)["event"] for line in lines}
    check({"serving", "drain_started", "drain_done", "router_stopped"} <= events, "drain logged")
    started = [json.loads(line) for line in lines if '"router_started"' in line]
    policy = started[0].get("scheduling") if started else None
    # docker's default seccomp profile allows lowering a thread's policy: no warning
    check(
        policy == "batch" and "scheduling_unchanged" not in events,
        f"scheduling in the container: {policy}",
    )
    malloc = started[0].get("allocator") if started else None
    check(malloc == "tcmalloc", f"allocator in the container: {malloc}")


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if subprocess.run(["docker-compose", "version"], capture_output=True).returncode == 0:
        return ["docker-compose"]
    raise Failed("neither `docker compose` nor docker-compose is installed (.ci/ops.sh)")


def compose_demo(image: str) -> None:
    project = f"arrakis-image-test-{os.getpid()}"
    file = Path(__file__).resolve().parents[1] / "compose" / "compose.yaml"
    port, metrics = free_port(), free_port()
    env = dict(os.environ, ROUTER_IMAGE=image, ROUTER_PORT=str(port), METRICS_PORT=str(metrics))
    base = [*compose_command(), "-f", str(file), "-p", project]

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=300, env=env)

    try:
        up = compose("up", "--detach", "--build")
        if up.returncode != 0:
            raise Failed(f"compose up: {up.stderr.strip()[-2000:]}")
        client = arrakis.Client(f"grpc://127.0.0.1:{port}")

        def answers() -> bool:
            try:
                return bool(client.count("H1:*") == 2)
            except flight.FlightError:
                return False

        wait_for(answers, 60, "the compose router to answer")
        now = int(time.time()) - 315_964_782  # GPS seconds (leap seconds do not matter here)
        block = client.fetch([CHANNEL], now - 605, now - 595)  # across the 600 s boundary
        data = block.data[CHANNEL]
        check(data.size == 10 * 4096 and not block.has_gaps, "compose demo: stitched fetch")
        stop = compose("stop", "router")
        if stop.returncode != 0:
            raise Failed(f"compose stop: {stop.stderr.strip()[-2000:]}")
        ps = compose("ps", "-q", "router").stdout.strip()
        code = inspect(ps, ".State.ExitCode") if ps else None
        check(code == 0, f"compose demo: router stopped with exit code {code}")
    except BaseException:
        print(compose("logs", "--no-color").stdout[-4000:], file=sys.stderr)
        raise
    finally:
        compose("down", "--volumes")


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="arrakis-router:dev")
    args = parser.parse_args()
    try:
        run(args.image)
        compose_demo(args.image)
    except Failed as exc:
        print(f"image-test: FAILED: {exc}", file=sys.stderr)
        return 1
    step("passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
