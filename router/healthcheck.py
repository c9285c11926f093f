"""Active health checks: every endpoint of the active map gets a ``server-info`` DoAction
every ``interval`` seconds, each with its own short deadline; results go to the registry.

One scheduler thread runs the rounds; the checks of a round run side by side on a small
pool of worker threads, so a few blackholed endpoints cost one deadline per round, not one
each, and a round ends within ``timeout`` (plus scheduling) of its start. The endpoints are
read from the registry at every round, so a scope-map reload is followed at the next one.
Checks use the unguarded pool members: they neither take in-flight slots nor count as real
calls. ``stop()`` ends the thread within a round's deadline (idempotent).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import structlog

from router.downstream import Call, DownstreamPool
from router.healthpool import failure_kind
from router.healthregistry import HealthRegistry

__all__ = ["HealthChecker"]

log = structlog.get_logger("router.healthcheck")

CHECK_ACTION = "server-info"
CHECK_REQUEST_ID = "health-check"


class HealthChecker:
    """Checks every endpoint of ``registry`` through ``pool`` (see the module docstring).
    Nothing runs until :meth:`start`."""

    def __init__(
        self,
        registry: HealthRegistry,
        pool: DownstreamPool,
        interval: float,
        timeout: float = 1.0,
        *,
        workers: int = 8,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"interval and timeout must be > 0, got {interval} and {timeout}")
        self.registry = registry
        self.pool = pool
        self.interval = interval
        # a round must end before the next one starts
        self.timeout = min(timeout, interval / 2)
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="health-check")
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def __repr__(self) -> str:
        return (
            f"<HealthChecker interval={self.interval} timeout={self.timeout} "
            f"rounds={self.rounds} running={self._thread is not None and not self._stop.is_set()}>"
        )

    def start(self) -> HealthChecker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="health-checks", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 5)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HealthChecker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_all()
            except Exception as exc:  # never let the checker die
                log.error("health_check_round_failed", error=str(exc)[:300])
            self._stop.wait(self.interval)

    def check_all(self) -> None:
        """One round: check every endpoint, record every result (blocks until done)."""
        urls = self.registry.endpoints()
        futures = [self._executor.submit(self.check, url) for url in urls]
        wait(futures, timeout=self.timeout + 5)
        self.rounds += 1

    def check(self, url: str) -> bool:
        """Check ``url`` once and record the result; True when it answered."""
        if self._stop.is_set():
            return False
        call = Call(CHECK_REQUEST_ID, self.timeout, "health check")
        try:
            self.pool.get(url).action(CHECK_ACTION, call)
        except Exception as exc:
            if failure_kind(exc) is not None:
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.registry.record_check(url, False, text[:300])
                return False
        self.registry.record_check(url, True)
        return True
