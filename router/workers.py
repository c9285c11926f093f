"""Data workers: ``router serve --data-workers N`` serves one front-door address with N + 1
processes.

Rationale: one Python process moves stream data with one core (the GIL), and pyarrow's
Flight server disables ``SO_REUSEPORT``, so several processes cannot share the front port.
Flight has its own answer: a ``FlightInfo`` names the location(s) of each endpoint, and
clients (the ``arrakis`` client included) open the DoGet there. The front process answers
every GetFlightInfo, Describe, Find, Count and Publish itself and gives each Stream the
location of one of its data workers, in turn; each worker is a whole ``router serve`` of its
own (same scope map, settings and TLS) on a port of its own, and serves the ticket exactly
as the front would. With no worker running the front hands out its own address
(reuse-connection) and serves the stream itself: nothing is refused for want of a worker.

The front supervises its workers (:class:`DataWorkers`): started before the front announces
itself, restarted with a growing back-off when one exits, probed for liveness (a worker that
stops answering gets no new streams, then is killed and restarted), sent SIGHUP when the front's own
scope map reload succeeds (workers do not watch the file themselves, so all processes follow
one decision), SIGTERM when the front drains. A worker exits when the front's pipe to it
closes (the front died, even by SIGKILL). Metrics of all processes are aggregated by
prometheus_client's multiprocess mode (:func:`enable_multiprocess`): the front's
``/metrics`` shows the sum.

A worker is started as ``python -m router.workers`` and reads its settings, one JSON
line, on standard input; it writes its ``serving URL`` line on standard output and logs to
the standard error it shares with the front, every line tagged ``worker=K``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.protocol.announce import serving_line
from router.statuspage import WorkerView

log = structlog.get_logger("router.workers")

START_TIMEOUT = 60.0  # a worker loads the scope map before it announces itself
RESTART_BACKOFF = 0.5  # first restart delay (s), doubled per quick exit ...
RESTART_BACKOFF_CAP = 30.0  # ... up to this
STABLE_AFTER = 60.0  # a worker up this long has its back-off reset
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
RELOADED = "reloaded "  # a worker's line on its standard output: "reloaded SHA256"
RELOAD_TIMEOUT = 60.0  # a front waits this long for its workers to load a new map
# liveness: every PROBE_INTERVAL s the front asks each worker for server-info (deadline
# PROBE_TIMEOUT s); one failure takes it out of the hand-out, PROBE_STRIKES in a row kill it
# (it is then restarted like a worker that exited)
PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 2.0
PROBE_STRIKES = 3


def advertised_host(bind_host: str, configured: str | None) -> str:
    """The host clients reach the data workers at: ``configured`` (``--advertise-host``)
    when given, else the bind host, else (a wildcard bind) this machine's host name."""
    if configured:
        return configured
    if bind_host not in WILDCARD_HOSTS:
        return bind_host
    return socket.gethostname()


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


@dataclass
class Worker:
    """One data worker slot: the process running it now (if any) and its history."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    location: str | None = None  # advertised; None while not serving
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF
    serving: threading.Event = field(default_factory=threading.Event)
    digest: str = ""  # of the scope map the worker last reported loaded
    advertised: str | None = None  # the location while this process serves
    port: int = 0  # of this process
    strikes: int = 0  # failed liveness probes in a row

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class WorkerStartError(RuntimeError):
    """A data worker did not start (its reason is in the log / its standard error)."""


class DataWorkers:
    """Starts, hands out, reloads, restarts and stops ``count`` data workers.

    ``settings``: the front's resolved ``router serve`` options (JSON-able); each worker gets
    them with its own bind URL. ``command``: how a worker is started (``python -m
    router.workers`` by default). ``on_exit(pid)``: called when a worker process is gone
    (the metrics forget its live gauges)."""

    def __init__(
        self,
        count: int,
        settings: Mapping[str, Any],
        *,
        scheme: str,
        bind_host: str,
        advertise_host: str,
        first_port: int = 0,
        metrics_dir: str | None = None,
        command: Sequence[str] | None = None,
        on_exit: Callable[[int], None] | None = None,
        start_timeout: float = START_TIMEOUT,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        probe_strikes: int = PROBE_STRIKES,
    ) -> None:
        if count < 1:
            raise ValueError(f"data workers must be >= 1, got {count}")
        self.workers = [Worker(i) for i in range(count)]
        self.settings = dict(settings)
        self.scheme = scheme
        self.bind_host = bind_host
        self.advertise_host = advertise_host
        self.first_port = first_port
        self.metrics_dir = metrics_dir
        self.command = list(command or [sys.executable, "-m", "router.workers"])
        self.on_exit = on_exit
        self.start_timeout = start_timeout
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.probe_strikes = probe_strikes
        self._lock = threading.Lock()
        self._reloaded = threading.Condition()
        self._next = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<DataWorkers {self.up}/{len(self.workers)} up>"

    # ------------------------------------------------------------------ hand-out
    @property
    def up(self) -> int:
        return sum(1 for w in self.workers if w.location is not None)

    def location(self) -> str | None:
        """The next serving worker's location, in turn; None when none serves."""
        with self._lock:
            n = len(self.workers)
            for step in range(n):
                worker = self.workers[(self._next + step) % n]
                if worker.location is not None:
                    self._next = (worker.index + 1) % n
                    return worker.location
        return None

    def views(self) -> list[WorkerView]:
        """The slots for the status page."""
        return [WorkerView(w.index, w.location, w.pid, w.restarts) for w in self.workers]

    def locations(self) -> list[str]:
        return [w.location for w in self.workers if w.location is not None]

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start every worker and wait until each serves (in parallel); raise
        :class:`WorkerStartError` naming the first that did not (all are stopped then)."""
        for worker in self.workers:
            self._spawn(worker)
        deadline = time.monotonic() + self.start_timeout
        for worker in self.workers:
            if not self._await(worker, deadline):
                reason = self._why_not(worker)
                self.stop(5.0)
                raise WorkerStartError(f"data worker {worker.index} did not start: {reason}")
        self._supervisor = threading.Thread(
            target=self._supervise, name="data-workers", daemon=True
        )
        self._supervisor.start()
        if self.probe_interval > 0:
            threading.Thread(target=self._probe_loop, name="data-worker-probe", daemon=True).start()

    def _why_not(self, worker: Worker) -> str:
        proc = worker.process
        if proc is not None and proc.poll() is not None:
            return f"it exited with status {proc.returncode} (its error is logged above)"
        return f"no 'serving' line within {self.start_timeout:g} s"

    def _await(self, worker: Worker, deadline: float) -> bool:
        proc = worker.process
        while proc is not None and proc.poll() is None:
            if worker.serving.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False
        return worker.serving.is_set()

    def _spawn(self, worker: Worker) -> None:
        port = self.first_port + worker.index if self.first_port else 0
        spec = {
            "index": worker.index,
            "metrics_dir": self.metrics_dir,
            "settings": {
                **self.settings,
                "url": f"{self.scheme}://{_host_in_url(self.bind_host)}:{port}",
            },
        }
        worker.serving.clear()
        worker.location = worker.advertised = None
        worker.strikes = 0
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec).encode() + b"\n")
        proc.stdin.flush()  # the pipe stays open: its end tells the worker the front is gone
        worker.process = proc
        worker.started_at = time.monotonic()
        threading.Thread(
            target=self._read_stdout,
            args=(worker, proc, proc.stdout),
            name=f"data-worker-{worker.index}-out",
            daemon=True,
        ).start()
        log.info("data_worker_starting", worker=worker.index, pid=proc.pid)

    def _read_stdout(self, worker: Worker, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        """The worker's ``serving`` line sets its location; anything else is passed on."""
        for raw in out:
            line = raw.decode(errors="replace")
            if line.startswith(RELOADED):
                worker.digest = line.removeprefix(RELOADED).strip()
                with self._reloaded:
                    self._reloaded.notify_all()
                continue
            url = serving_line(line) if not worker.serving.is_set() else None
            if url is not None and worker.process is proc:
                worker.port = port_of(url)
                location = f"{self.scheme}://{_host_in_url(self.advertise_host)}:{worker.port}"
                worker.location = worker.advertised = location
                worker.serving.set()
                log.info(
                    "data_worker_serving", worker=worker.index, pid=proc.pid, location=location
                )
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    def _supervise(self) -> None:
        """Notices exits; restarts each exited worker after its back-off."""
        pending: dict[int, float] = {}  # worker index -> restart time
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            for worker in self.workers:
                proc = worker.process
                if proc is not None and proc.poll() is not None:
                    self._exited(worker, proc, now)
                    pending[worker.index] = now + worker.backoff
                    worker.backoff = min(worker.backoff * 2, RESTART_BACKOFF_CAP)
                elif proc is not None and now - worker.started_at > STABLE_AFTER:
                    worker.backoff = RESTART_BACKOFF
                if worker.process is None and now >= pending.get(worker.index, now):
                    pending.pop(worker.index, None)
                    worker.restarts += 1
                    try:
                        self._spawn(worker)
                    except OSError as exc:
                        log.error("data_worker_restart_failed", worker=worker.index, error=str(exc))
                        pending[worker.index] = now + worker.backoff

    def _probe_loop(self) -> None:
        """Asks every serving worker for server-info, one after the other, each interval."""
        while not self._stopping.wait(self.probe_interval):
            for worker in self.workers:
                proc = worker.process
                if proc is None or not worker.serving.is_set() or self._stopping.is_set():
                    continue
                error = self._probe(worker)
                if error is None:
                    if worker.strikes:
                        log.info("data_worker_answering", worker=worker.index, pid=proc.pid)
                    worker.strikes = 0
                    if worker.process is proc:
                        worker.location = worker.advertised
                    continue
                worker.strikes += 1
                worker.location = None  # no new streams while it does not answer
                fields = {"worker": worker.index, "pid": proc.pid, "error": error[:300]}
                if worker.strikes < self.probe_strikes:
                    log.warning("data_worker_not_answering", strikes=worker.strikes, **fields)
                    continue
                log.error(
                    "data_worker_unresponsive",
                    strikes=worker.strikes,
                    detail="killed: it will be restarted",
                    **fields,
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _probe(self, worker: Worker) -> str | None:
        """None when the worker answers server-info in time, else why not."""
        import pyarrow.flight as flight

        host = self.bind_host if self.bind_host not in WILDCARD_HOSTS else "127.0.0.1"
        url = f"{self.scheme}://{_host_in_url(host)}:{worker.port}"
        options = flight.FlightCallOptions(timeout=self.probe_timeout)
        try:
            # our own child: its certificate names the advertised host, not loopback
            tls = {"disable_server_verification": True} if self.scheme == "grpc+tls" else {}
            with flight.connect(url, **tls) as client:
                for _ in client.do_action(flight.Action("server-info", b""), options):
                    pass
        except Exception as exc:  # any failure to answer counts, whatever its kind
            return f"{type(exc).__name__}: {exc}"
        return None

    def _exited(self, worker: Worker, proc: subprocess.Popen[bytes], now: float) -> None:
        worker.location = worker.advertised = None
        worker.serving.clear()
        worker.process = None
        code = proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        log.error(
            "data_worker_exited",
            worker=worker.index,
            pid=proc.pid,
            exit=how,
            uptime_s=round(now - worker.started_at, 1),
            restart_in_s=worker.backoff,
        )
        self._close_pipes(proc)
        if self.on_exit is not None:
            self.on_exit(proc.pid)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def reload(self, digest: str, timeout: float) -> list[int]:
        """Have every running worker load the scope map whose sha256 is ``digest`` (SIGHUP)
        and wait up to ``timeout`` s until each reports it loaded (the front swaps its own
        map after: a Stream it plans on the new map then finds the map at its worker).
        Returns the workers that did not report in time (logged)."""
        asked = []
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.poll() is None and worker.serving.is_set():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)
                    asked.append(worker)
        deadline = time.monotonic() + timeout

        def late() -> list[Worker]:
            return [w for w in asked if w.digest != digest and w.process is not None]

        with self._reloaded:
            while late() and (left := deadline - time.monotonic()) > 0:
                self._reloaded.wait(min(left, 0.5))
        missing = [w.index for w in late()]
        if missing:
            log.warning(
                "data_workers_reload_late",
                workers=missing,
                timeout_s=timeout,
                detail="they keep serving their previous scope map until they reload",
            )
        else:
            log.info("data_workers_reloaded", workers=len(asked))
        return missing

    def drain(self) -> None:
        """Hand out no more workers and ask each to drain (SIGTERM): it finishes its bounded
        streams within its own ``--drain-timeout`` and exits."""
        self._stopping.set()
        for worker in self.workers:
            worker.location = worker.advertised = None
            proc = worker.process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> list[int]:
        """Drain (if not yet), wait up to ``timeout`` s for every worker, then kill what is
        left. Returns the pids killed."""
        self.drain()
        deadline = time.monotonic() + timeout
        killed = []
        for worker in self.workers:
            proc = worker.process
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(proc.pid)
                log.warning("data_worker_killed", worker=worker.index, pid=proc.pid)
            self._close_pipes(proc)
            if self.on_exit is not None:
                self.on_exit(proc.pid)
            worker.process = None
        if self._supervisor is not None:
            self._supervisor.join(2)
        return killed


class WorkersCollector(Collector):
    """The data workers on the front's ``/metrics``:

    | metric | type | labels |
    | --- | --- | --- |
    | ``arrakis_router_data_workers`` | gauge | (configured) |
    | ``arrakis_router_data_workers_up`` | gauge | (serving now) |
    | ``arrakis_router_data_worker_restarts_total`` | counter | ``worker`` |
    | ``arrakis_router_data_worker_cpu_seconds_total`` | counter | ``worker`` (the process now) |
    | ``arrakis_router_data_worker_resident_memory_bytes`` | gauge | ``worker`` |

    The last two complete the front's own ``process_*`` series (read from ``/proc``; absent
    where there is none)."""

    def __init__(self, workers: DataWorkers) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "arrakis_router_data_workers",
            "Data worker processes configured (--data-workers)",
            value=len(self.workers.workers),
        )
        yield GaugeMetricFamily(
            "arrakis_router_data_workers_up",
            "Data worker processes serving now (handed out to clients)",
            value=self.workers.up,
        )
        restarts = CounterMetricFamily(
            "arrakis_router_data_worker_restarts",
            "Data worker restarts after the worker exited, by worker slot",
            labels=["worker"],
        )
        cpu = CounterMetricFamily(
            "arrakis_router_data_worker_cpu_seconds",
            "User and system CPU seconds of the data worker's current process",
            labels=["worker"],
        )
        rss = GaugeMetricFamily(
            "arrakis_router_data_worker_resident_memory_bytes",
            "Resident memory of the data worker's current process, bytes",
            labels=["worker"],
        )
        for worker in self.workers.workers:
            restarts.add_metric([str(worker.index)], worker.restarts)
            usage = process_usage(worker.pid) if worker.pid is not None else None
            if usage is not None:
                cpu.add_metric([str(worker.index)], usage[0])
                rss.add_metric([str(worker.index)], usage[1])
        yield restarts
        yield cpu
        yield rss


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of ``pid`` from ``/proc``; None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS, resident * _PAGE


# ---------------------------------------------------------------------- metrics, shared
def enable_multiprocess(directory: str) -> None:
    """From now on, every metric value created in this process is kept in ``directory``
    (prometheus_client's multiprocess mode), where the front's ``/metrics`` sums them."""
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def forget_process(directory: str, pid: int) -> None:
    """A process of ``directory`` is gone: its live gauges no longer count."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def metrics_directory() -> str:
    """A fresh directory for the metric files of one front and its workers (the caller
    removes it when they have stopped)."""
    try:
        return tempfile.mkdtemp(prefix="arrakis-router-metrics-")
    except OSError as exc:
        raise WorkerStartError(
            "--data-workers needs a writable temporary directory for the metrics of its "
            f"processes (set TMPDIR, or mount a tmpfs on /tmp): {exc}"
        ) from None


# ---------------------------------------------------------------------- the worker side
def _watch_front(fd: int) -> None:
    """The front closed our pipe (it exited, even by SIGKILL): drain and exit as on SIGTERM.
    Reads the raw descriptor: a daemon thread blocked in ``sys.stdin`` would hold its lock
    at interpreter shutdown."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    log.warning("front_gone", detail="the front process closed its pipe: draining and exiting")
    os.kill(os.getpid(), signal.SIGTERM)


def _read_line(fd: int) -> bytes:
    """One line from ``fd``, read a byte at a time (nothing after it is consumed)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def report_reloaded(digest: str) -> None:
    """A worker tells its front it loaded the map ``digest`` (see :meth:`DataWorkers.reload`)."""
    sys.stdout.write(f"{RELOADED}{digest}\n")
    sys.stdout.flush()


def main() -> int:
    """``python -m router.workers``: one data worker (started by the front, see above)."""
    from router import serve

    line = _read_line(0)
    try:
        spec = json.loads(line)
        index = int(spec["index"])
        settings = dict(spec["settings"])
    except (ValueError, KeyError, TypeError) as exc:
        print(f"router data worker: bad start-up line from the front: {exc}", file=sys.stderr)
        return 2
    threading.Thread(target=_watch_front, args=(0,), name="front-watch", daemon=True).start()
    args = argparse.Namespace(**settings)
    return serve.run_worker(args, index, spec.get("metrics_dir"))


if __name__ == "__main__":
    sys.exit(main())
