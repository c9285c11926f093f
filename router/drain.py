"""Graceful drain after SIGTERM/SIGINT, bounded in time whatever is open.

1. :meth:`RouterService.begin_drain`: new calls are refused (UNAVAILABLE "server shutting
   down"), live streams end at their next block boundary with that error (their clients
   reconnect, to another router);
2. bounded streams and unary calls in progress may finish until ``timeout`` seconds have
   passed; progress is logged every ``progress_every`` seconds;
3. at the deadline :meth:`RouterService.cancel_all` ends every stream still open (the same
   error), then the Flight server is shut down in a thread, waited for at most ``grace``
   seconds (gRPC's own shutdown waits for handlers without a deadline).

The caller exits 0 afterwards: a drain that had to cut streams short is still a clean stop
(the clients were told). Time comes from the injected ``monotonic``/``sleep``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from router.service import RouterService

log = structlog.get_logger("router.drain")

__all__ = ["DrainReport", "drain"]


@dataclass(frozen=True)
class DrainReport:
    """How a drain went: calls still open at the deadline (cut short), seconds it took, and
    whether the Flight server's own shutdown finished within its grace period."""

    cut_short: int
    seconds: float
    shutdown_complete: bool


def drain(
    service: RouterService,
    shutdown: Callable[[], None],
    timeout: float,
    *,
    grace: float = 1.5,
    progress_every: float = 1.0,
    poll: float = 0.05,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainReport:
    """Drain ``service`` (see the module text); ``shutdown`` stops the Flight server."""
    started = monotonic()
    deadline = started + timeout
    service.begin_drain()
    service.metrics.draining.set(1)
    open_calls = service.metrics.calls_in_flight
    log.info("drain_started", open_calls=open_calls(), timeout_s=timeout)
    next_report = started + progress_every
    while (remaining := open_calls()) > 0:
        now = monotonic()
        if now >= deadline:
            break
        if now >= next_report:
            log.info("drain_progress", open_calls=remaining, left_s=round(deadline - now, 1))
            next_report = now + progress_every
        sleep(min(poll, deadline - now))
    cut_short = open_calls()
    if cut_short:
        log.warning("drain_deadline", open_calls=cut_short, timeout_s=timeout)
    service.cancel_all()  # every request still open: its token wakes whatever it waits on
    done = threading.Event()

    def stop_server() -> None:
        try:
            shutdown()
        except Exception as exc:  # a failing shutdown must not keep the process alive
            log.error("server_shutdown_failed", error=str(exc))
        done.set()

    threading.Thread(target=stop_server, name="flight-shutdown", daemon=True).start()
    complete = done.wait(grace)
    seconds = monotonic() - started
    if not complete:
        log.warning("server_shutdown_incomplete", waited_s=grace)
    log.info("drain_done", cut_short=cut_short, seconds=round(seconds, 3))
    return DrainReport(cut_short, seconds, complete)
