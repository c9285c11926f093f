"""The CPU scheduling policy of the router's threads (``router serve --scheduling``).

Rationale: a router serving many historical streams is a throughput server whose threads
(gRPC's socket threads, one handler per stream) wake each other tens of thousands of times
per GB relayed. Under Linux's default policy a woken thread preempts the running one, so
most of those wake-ups become a context switch, often in the middle of a thread's work
(``bench/README.md``, "Ninth round": at 32 concurrent single-channel streams gRPC's
socket threads were preempted ~50-70 k times per GB). ``SCHED_BATCH`` is the same
fair-share scheduler without wake-up preemption: a woken thread runs when the running one
blocks or its slice ends. Measured on the benchmark machine, it cut the router's context
switches per GB by 3-4x and its CPU per GB by up to 18 %. A woken thread may wait up to
the running thread's slice; the live latency the router adds, measured with 16 historical
readers busy on the same router (``bench/live_latency.py --load 16``), was the same under
both policies.

``SCHED_BATCH`` needs no privilege and is inherited by threads and processes started
afterwards (the data workers). A policy the operator chose from outside (``chrt``, a
real-time or idle policy) is left alone.
"""

from __future__ import annotations

import os

import structlog

__all__ = ["POLICIES", "apply", "current"]

log = structlog.get_logger("router.scheduling")

POLICIES = ("batch", "normal")


def current() -> str:
    """This thread's policy by name: ``batch``, ``normal``, or the name of another policy
    (``fifo``, ``rr``, ``idle``); ``unknown`` where the platform cannot say."""
    if not hasattr(os, "sched_getscheduler"):
        return "unknown"
    names = {
        getattr(os, attr): name
        for attr, name in (
            ("SCHED_OTHER", "normal"),
            ("SCHED_BATCH", "batch"),
            ("SCHED_IDLE", "idle"),
            ("SCHED_FIFO", "fifo"),
            ("SCHED_RR", "rr"),
        )
        if hasattr(os, attr)
    }
    try:
        policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    except OSError:
        return "unknown"
    return names.get(policy, "unknown")


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # no /proc: this thread only


def apply(wanted: str) -> str:
    """Put every thread of this process under ``wanted`` (one of :data:`POLICIES`) when it
    runs under the default policy; returns the policy in effect afterwards.

    Called at start, before the server's threads exist; the threads that do exist already
    (pyarrow's, the logging's) are moved too, and every thread started later inherits the
    policy. A failure (no such policy on this platform, a sandbox that forbids the call) is
    logged as ``scheduling_unchanged`` and the router serves under the policy it has."""
    if wanted not in POLICIES:
        raise ValueError(f"scheduling policy must be one of {', '.join(POLICIES)}, got {wanted!r}")
    have = current()
    if wanted == "normal" or have != "normal":
        return have  # nothing asked, or the operator's own choice (chrt) is kept
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler"):
        log.warning("scheduling_unchanged", wanted=wanted, reason="not supported here")
        return have
    for tid in _threads():
        try:
            os.sched_setscheduler(tid, batch, os.sched_param(0))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            log.warning("scheduling_unchanged", wanted=wanted, reason=exc.strerror or str(exc))
            return current()
    return current()
