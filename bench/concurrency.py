"""Many concurrent readers: direct, through the bare relay and through the router.

One `router-backend mock`, the bare relay (bench/relay.py) and `router serve` (proxy mode, a
one-endpoint map) in front of it, all subprocesses of this process tree. A pool of reader
processes (spawned once) is told to do one raw pyarrow DoGet each (GetFlightInfo, then
DoGet of every endpoint, reading with ``IpcReadOptions(use_threads=False)``) of the same
historical range at the same instant; a round is N readers on one target. Rounds are
interleaved (direct, relay, router, direct, ...) so machine noise hits every target alike.

Per round: aggregate MB/s of samples (all readers' sample bytes / the time from the common
start to the last reader's end) and the serving process's CPU seconds per GB of samples
(utime + stime from /proc/<pid>/stat, before and after the round: the mock for direct, the
relay or router process alone otherwise). Figures are medians over the repetitions. The
router's RSS (/proc/<pid>/status) is reported after start-up and warm-up, at its peak during
the rounds (sampled every 20 ms) and after the last round, once it has been idle for
``--settle`` seconds.

With ``--workers 1,2,4`` the router is also measured as ``router serve --data-workers K``
for each K (a front process handing each Stream to one of K worker processes; the readers
follow the endpoint's location like the ``arrakis`` client): aggregate MB/s, and CPU seconds
per GB of the front and all its workers together.

    python bench/concurrency.py [--reps 3] [--readers 1,8,32] [--workers 1,2,4] [--quick]
                                [--router-env NAME=VALUE ...] [-- ROUTER_ARGS...]

``--router-env LD_PRELOAD=libtcmalloc_minimal.so.4`` measures the router on the allocator
the container image preloads (docs/guide/deployment.md, "Memory allocator").
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from _harness import (
    BIN,
    FAST,
    ROOT,
    median,
    one_endpoint_map,
    stream_cmd,
    table,
    write_inputs,
)

from router_backends.testing import ServerProcess

CASES = [  # (label, channels, seconds, quick seconds)
    ("1 x 16384 Hz, 256 s", FAST[:1], 256, 32),
    ("20 x 16384 Hz, 32 s", FAST, 32, 4),
]
TARGETS = ("direct", "relay", "router")
REUSE = "arrow-flight-reuse-connection://?"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 1e6


class PeakRss:
    """Samples a process's RSS every ``every`` seconds in a thread while running."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- readers
def reader_main(conn: Connection) -> None:
    """A reader process: for each ``(url, command, at)`` received, wait until wall time
    ``at``, do one raw DoGet and answer ``(sample bytes, end wall time)``; None ends it."""
    import pyarrow as pa
    import pyarrow.flight as flight

    options = flight.FlightCallOptions(read_options=pa.ipc.IpcReadOptions(use_threads=False))
    clients: dict[str, flight.FlightClient] = {}

    def client_at(url: str) -> flight.FlightClient:
        return clients.get(url) or clients.setdefault(url, flight.connect(url))

    while True:
        job = conn.recv()
        if job is None:
            break
        url, command, at = job
        client = client_at(url)
        time.sleep(max(0.0, at - time.time()))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        total = 0
        for endpoint in info.endpoints:
            # the endpoint's location (a data worker), as the arrakis client does
            where = endpoint.locations[0].uri.decode() if endpoint.locations else REUSE
            source = client if where == REUSE else client_at(where)
            for chunk in source.do_get(endpoint.ticket, options):
                for column in chunk.data.columns[1:]:
                    total += column.values.nbytes
        conn.send((total, time.time()))
    for client in clients.values():
        client.close()


class Readers:
    """``size`` reader processes, spawned once (not forked from this threaded process)."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(size):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=reader_main, args=(theirs,), daemon=True)
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    def round(self, n: int, url: str, command: bytes, lead: float = 0.3) -> tuple[int, float]:
        """``n`` readers DoGet ``command`` from ``url`` at once: (sample bytes, seconds)."""
        at = time.time() + lead
        for conn in self.conns[:n]:
            conn.send((url, command, at))
        results = [conn.recv() for conn in self.conns[:n]]
        return sum(r[0] for r in results), max(r[1] for r in results) - at

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)


# --------------------------------------------------------------------------- servers
@contextlib.contextmanager
def servers(
    tmp: Path, router_args: list[str], workers: list[int], router_env: Sequence[str] = ()
) -> Iterator[dict[str, ServerProcess]]:
    toml = write_inputs(tmp)
    mock_argv = [str(BIN / "router-backend"), "mock", "--url", "grpc://127.0.0.1:0", str(toml)]
    with ServerProcess(mock_argv, name="mock") as mock:
        smap = one_endpoint_map(tmp / "bench-scope-map.yaml", mock.url)
        router_argv = ["env", *router_env] if router_env else []
        router_argv += [str(BIN / "router"), "serve", "--scope-map", str(smap)]
        router_argv += ["--url", "grpc://127.0.0.1:0", "--log-format", "json", *router_args]
        relay_argv = [str(BIN / "python"), str(ROOT / "bench" / "relay.py")]
        relay_argv += ["--downstream", mock.url]
        with contextlib.ExitStack() as stack:
            procs = {"direct": mock}
            procs["relay"] = stack.enter_context(ServerProcess(relay_argv, name="relay"))
            procs["router"] = stack.enter_context(ServerProcess(router_argv, name="router"))
            for k in workers:
                argv = [*router_argv, "--data-workers", str(k)]
                procs[f"router+{k}w"] = stack.enter_context(ServerProcess(argv, name=f"router{k}w"))
            yield procs


def check_alive(procs: dict[str, ServerProcess]) -> None:
    """Fail the bench, with the end of its log, if a server exited during the rounds."""
    for name, proc in procs.items():
        if proc.returncode is not None:
            raise SystemExit(f"{name} exited early:\n{proc.log_text()[-2000:]}")


def pid_of(proc: ServerProcess) -> int:
    assert proc.process is not None
    return proc.process.pid


def family(pid: int) -> list[int]:
    """``pid`` and its child processes (a front's data workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--readers", default="1,8,32", help="comma-separated N")
    parser.add_argument("--settle", type=float, default=5.0, help="idle s before RSS after")
    parser.add_argument("--quick", action="store_true", help="1 rep, short ranges")
    parser.add_argument(
        "--workers", default="", help="comma-separated K: also `router serve --data-workers K`"
    )
    parser.add_argument(
        "--router-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="serve the router with this in its environment (repeatable), e.g."
        " LD_PRELOAD=libtcmalloc_minimal.so.4 as the container image does",
    )
    parser.add_argument("router_args", nargs="*", help="extra `router serve` arguments")
    args = parser.parse_args()
    if any("=" not in e for e in args.router_env):
        parser.error(f"--router-env takes NAME=VALUE, got {args.router_env}")
    reps = 1 if args.quick else args.reps
    counts = [int(n) for n in args.readers.split(",")]
    workers = [int(k) for k in args.workers.split(",") if k.strip()]
    targets = [*TARGETS, *(f"router+{k}w" for k in workers)]
    readers = Readers(max(counts))
    rows, cpu_rows, worker_rows = [], [], []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="arrakis-bench-") as tmpdir,
            servers(Path(tmpdir), args.router_args, workers, args.router_env) as procs,
        ):
            urls = {k: p.url for k, p in procs.items()}
            pids = {k: family(pid_of(p)) for k, p in procs.items()}
            router_pid = pids["router"][0]
            for target in targets:  # warm-up: connections, imports, Describe cache
                readers.round(min(2, max(counts)), urls[target], stream_cmd(FAST[:1], 1))
            time.sleep(1.0)
            rss_before = rss_mb(router_pid)
            print(f"router RSS after start and warm-up: {rss_before:.0f} MB", flush=True)
            with PeakRss(router_pid) as peak:
                for label, channels, seconds, quick in CASES:
                    command = stream_cmd(channels, quick if args.quick else seconds)
                    for n in counts:
                        rate: dict[str, list[float]] = {t: [] for t in targets}
                        cost: dict[str, list[float]] = {t: [] for t in targets}
                        for _ in range(reps):
                            for target in targets:
                                cpu0 = cpu_of(pids[target])
                                nbytes, secs = readers.round(n, urls[target], command)
                                used = cpu_of(pids[target]) - cpu0
                                rate[target].append(nbytes / secs / 1e6)
                                cost[target].append(used / (nbytes / 1e9))
                        d, b, r = (median(rate[t]) for t in TARGETS)
                        cd, cb, cr = (median(cost[t]) for t in TARGETS)
                        row = [label, str(n), f"{d:.0f}", f"{b:.0f}", f"{r:.0f}"]
                        row += [f"{r / b:.2f}", f"{cb:.1f} / {cr:.1f}", f"{cd:.1f}"]
                        rows.append(row)
                        cpu_rows.append((label, n, cr, r))
                        if workers:
                            more = [
                                f"{median(rate[t]):.0f} / {median(cost[t]):.1f}"
                                for t in targets[3:]
                            ]
                            worker_rows.append([label, str(n), f"{r:.0f} / {cr:.1f}", *more])
                        print(" | ".join(row), f"(router peak {peak.peak:.0f} MB)", flush=True)
            time.sleep(args.settle)
            rss_after = rss_mb(router_pid)
            check_alive(procs)
    finally:
        readers.close()
    print()
    headers = ["case", "N", "direct MB/s", "relay MB/s", "router MB/s", "router/relay"]
    headers += ["server CPU s per GB: relay / router", "mock CPU s per GB (direct)"]
    print(table(headers, rows))
    print()
    if workers:
        headers = ["case", "N", "router MB/s / CPU s per GB"]
        headers += [f"{k} data worker{'s' if k > 1 else ''}" for k in workers]
        print(table(headers, worker_rows))
        print("(CPU s per GB: the front and all its workers together)")
        print()
    for label in dict.fromkeys(r[0] for r in cpu_rows):
        by_n = {n: (c, r) for lbl, n, c, r in cpu_rows if lbl == label}
        lo, hi = min(by_n), max(by_n)
        ratio = by_n[hi][0] / by_n[lo][0]
        per_core = 1e3 / by_n[hi][0]  # MB/s per core of router CPU at the highest N
        print(
            f"{label}: router CPU s/GB N={hi} / N={lo} = {ratio:.2f}; "
            f"{per_core:.0f} MB/s per router core at N={hi}"
        )
    print(
        f"router RSS: {rss_before:.0f} MB after start, peak {peak.peak:.0f} MB, "
        f"{rss_after:.0f} MB after {args.settle:g} s idle ({rss_after / rss_before - 1:+.0%})"
    )


if __name__ == "__main__":
    main()
