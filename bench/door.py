"""The door: what refusing hostile requests costs, and whether memory comes back.

1. A real ``router serve`` process (proxy mode) in front of an in-process mock. Its RSS is
   read after start and one valid fetch (the post-start value), then after bursts of
   100,000-channel and 10 MB requests over GetFlightInfo and DoGet, and again after idling.
2. Round-trip time of each refusal seen by a client on loopback (includes sending 10 MB),
   and the router's own cost of the refusal (``router.limits.accept`` in this process).
3. ``router check`` time of a ~10 MB scope map, valid and with one schema error, and of an
   alias bomb.

Run: ``python bench/door.py [ROUNDS]``; prints Markdown.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.flight as flight

from bench.plan import synthetic_map
from router.errors import InvalidRequestError
from router.limits import Limits, accept
from router.protocol.gps import gps_now_ns
from router_backends.testing import serve_mock
from scopemap import load_text

NS = 1_000_000_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def payloads(now_s: int) -> dict[str, bytes]:
    start = (now_s - 100) * NS
    many = {"channels": [f"H1:C{i}" for i in range(100_000)], "start": start, "end": start + NS}
    short = {"channels": [f"H:{i:x}" for i in range(100_000)], "start": start, "end": start + NS}
    huge = {"channels": "x" * (10 * 1024 * 1024), "start": start, "end": start + NS}
    return {
        "100,000 channels": json.dumps({"request": "Stream", "args": many}).encode(),
        "100,000 short channel names (< 1 MiB)": json.dumps(
            {"request": "Stream", "args": short}, separators=(",", ":")
        ).encode(),
        "10 MB string": json.dumps({"request": "Stream", "args": huge}).encode(),
    }


def refuse(client: flight.FlightClient, rpc: str, data: bytes) -> float:
    started = time.perf_counter()
    try:
        if rpc == "GetFlightInfo":
            client.get_flight_info(flight.FlightDescriptor.for_command(data))
        else:
            client.do_get(flight.Ticket(data)).read_all()
    except flight.FlightServerError as exc:
        assert "limit" in str(exc), str(exc)[:200]
    else:
        raise AssertionError("not refused")
    return (time.perf_counter() - started) * 1000


def handler_sums(metrics_url: str) -> tuple[float, int]:
    """(sum s, count) of the router's GetFlightInfo histogram for refused requests: from
    the handler's start to its error, after gRPC received the bytes."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f'arrakis_router_get_flight_info_seconds_{name}{{kind="invalid"}}'):
                values[name] = float(line.split()[-1])
    return values.get("sum", 0.0), int(values.get("count", 0))


def handler_ms(metrics_url: str) -> tuple[float, int]:
    total, count = handler_sums(metrics_url)
    return total / max(count, 1) * 1000, count


def router_process(map_path: Path, metrics_port: int) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(map_path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--watch-interval", "0", "--log-level", "warning"]
    argv += ["--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"router did not start: {line!r}")
    return proc, line.split()[1]


def bench_requests(rounds: int) -> None:
    import arrakis

    now_s = gps_now_ns() // NS
    bodies = payloads(now_s)
    print("## Refusing extreme requests\n")
    print("| request | bytes | router's cost: accept() median / max (ms) |")
    print("| --- | ---: | ---: |")
    for name, data in bodies.items():
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with contextlib.suppress(InvalidRequestError):
                accept(data, "ticket", Limits(), now_s * NS)
            times.append((time.perf_counter() - started) * 1000)
        print(f"| {name} | {len(data):,} | {statistics.median(times):.3f} / {max(times):.3f} |")

    with serve_mock() as mock, tempfile.TemporaryDirectory() as tmp:
        map_path = Path(tmp) / "map.yaml"
        map_path.write_text(f"{mock}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc, url = router_process(map_path, port)
        try:
            client = flight.connect(url)
            names = ["H1:GDS-CALIB_STATE_VECTOR"]
            arrakis.Client(url).fetch(names, now_s - 100, now_s - 99)
            time.sleep(1)
            base = rss_mb(proc.pid)
            metrics = f"http://127.0.0.1:{port}/metrics"
            print("\n| request | RPC | client round trip median / max (ms) | router-side (ms) |")
            print("| --- | --- | ---: | ---: |")
            tiny = json.dumps({"request": "Stream", "args": {"channels": ["H1:A"] * 2}}).encode()
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                try:
                    client.get_flight_info(flight.FlightDescriptor.for_command(tiny))
                except flight.FlightServerError:
                    times.append((time.perf_counter() - started) * 1000)
            med, top = statistics.median(times), max(times)
            mean, _ = handler_ms(metrics)
            row = f"{med:.1f} / {top:.1f} | {mean:.2f}"
            print(f"| (a 60-byte invalid request, for scale) | GetFlightInfo | {row} |")
            for name, data in bodies.items():
                for rpc in ("GetFlightInfo", "DoGet"):
                    before = handler_sums(metrics)
                    times = [refuse(client, rpc, data) for _ in range(rounds)]
                    med, top = statistics.median(times), max(times)
                    after_sums = handler_sums(metrics)
                    side = "-"
                    if rpc == "GetFlightInfo":
                        spent = after_sums[0] - before[0]
                        side = f"{spent / (after_sums[1] - before[1]) * 1000:.2f}"
                    print(f"| {name} | {rpc} | {med:.1f} / {top:.1f} | {side} |")
            print(
                "\nrouter-side: mean of the router's GetFlightInfo histogram over those calls "
                "(handler start to error; gRPC has received the bytes by then)."
            )
            after = rss_mb(proc.pid)
            time.sleep(5)
            idle = rss_mb(proc.pid)
            block = arrakis.Client(url).fetch(names, now_s - 100, now_s - 99)
            assert len(block.data[names[0]]) > 0  # still serving
            sent = rounds * 2 * sum(len(d) for d in bodies.values()) / 1e6
            print(
                f"\nRouter RSS: {base:.0f} MB after start and one fetch; {after:.0f} MB after "
                f"{rounds * 4} refused requests ({sent:.0f} MB received); {idle:.0f} MB after "
                f"5 s idle ({(idle / base - 1) * 100:+.1f} %)."
            )
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def bench_maps() -> None:
    print("\n## Checking large scope maps\n")
    print("| map | bytes | load + validate (s) | diagnostics |")
    print("| --- | ---: | ---: | --- |")
    text = synthetic_map(67_000)  # about 10 MB
    # one schema error in the middle: a negative age
    good = "retention: {newest: 0, oldest: 600}"
    mid = text.index(good, len(text) // 2)
    broken = text[:mid] + good.replace("0,", "-1,") + text[mid + len(good) :]
    bomb = "".join(
        f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10 if i else ['x'] * 10)}]\n" for i in range(9)
    )
    for name, source in (("valid", text), ("one schema error", broken), ("alias bomb", bomb)):
        started = time.perf_counter()
        result = load_text(source)
        elapsed = time.perf_counter() - started
        codes = sorted({d.code for d in result.errors}) or ["ok"]
        print(f"| {name} | {len(source.encode()):,} | {elapsed:.2f} | {', '.join(codes)} |")


if __name__ == "__main__":
    bench_requests(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
    bench_maps()
