"""Endpoint health as a pure state machine on an injected clock (no threads, no I/O).

One :class:`Health` value per downstream endpoint; every transition is a function
``(health, now, policy, ...) -> health``. The registry (:mod:`router.healthregistry`) holds
the values and swaps them under a lock; tests drive these functions as tables.

The model is Envoy's outlier detection, narrowed to what a router in front of a few data
servers needs:

* **Passive**: a real call that fails the way a sick server fails (connect refused, reset,
  deadline, garbage on the wire, a stream ending early) adds one *consecutive failure*; any
  answer at all (even an application error: the server is alive) clears them. An endpoint
  with failures but not yet ejected is ``suspect``: still used, but ordered after healthy
  replicas, so one timeout is paid once, not on every request.
* **Ejection**: ``eject_after`` consecutive failures eject the endpoint for a period that
  grows with each repeat ejection, ``min(base_ejection * k, max_ejection)`` where ``k`` is
  the ejection multiplier; ``k`` decays by one for every ``base_ejection`` seconds spent
  not ejected (Envoy's multiplier), so a server that flaps is kept out longer and longer,
  and one that has been well for a while starts from the base period again.
* **Return**: one successful real call brings an ejected endpoint back at once (it was
  tried last because nothing else could serve, and it answered). A passing active check
  brings it back only *after* the period. Without active checks the endpoint returns on
  its own when the period ends, on probation: its next failure ejects it again.
* **Active checks** are Envoy's other half, kept apart from ejection: the latest check's
  result is a flag. A failed check marks the endpoint ``down`` (ordered last, not counted
  for readiness) until a check passes or a real call answers; it does not count towards
  ejection, so readiness follows the checks within one interval both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "FAILURE_KINDS",
    "Health",
    "Policy",
    "State",
    "checked",
    "ejection_period",
    "failed",
    "rank",
    "state",
    "succeeded",
]

# What a failed real call or check is recorded as (the ``kind`` of a failure).
FAILURE_KINDS = ("unavailable", "timed_out", "internal", "early_end")


class State(StrEnum):
    HEALTHY = "healthy"  # no failure since the last answer
    SUSPECT = "suspect"  # consecutive failures below the threshold (or on probation)
    DOWN = "down"  # the latest active check failed: ordered last
    EJECTED = "ejected"  # ordered last; tried only when nothing else can serve the data

    @property
    def is_up(self) -> bool:
        """Counted as serving (readiness): healthy or suspect."""
        return self in (State.HEALTHY, State.SUSPECT)


@dataclass(frozen=True)
class Policy:
    """Outlier-detection tuning (seconds)."""

    eject_after: int = 3
    base_ejection: float = 10.0
    max_ejection: float = 300.0
    active_checks: bool = True  # True: after the period, a passing check brings it back

    def __post_init__(self) -> None:
        if self.eject_after < 1:
            raise ValueError(f"eject_after must be >= 1, got {self.eject_after}")
        if not 0 < self.base_ejection <= self.max_ejection:
            raise ValueError(
                "need 0 < base_ejection <= max_ejection, got "
                f"{self.base_ejection} and {self.max_ejection}"
            )


@dataclass(frozen=True)
class Health:
    """One endpoint's health. ``ejected_until`` is None unless ejected; ``since`` is when the
    endpoint last left (or, before any ejection, first entered) the not-ejected side."""

    failures: int = 0  # consecutive failures since the last answer
    multiplier: int = 0  # the backoff level of the next ejection minus one (decays)
    ejections: int = 0  # ejections so far (a counter, for metrics)
    ejected_until: float | None = None
    since: float = 0.0
    last_failure: str | None = None  # kind of the latest failure, None after an answer
    check_failed: bool = False  # the latest active check failed


def ejection_period(multiplier: int, policy: Policy) -> float:
    """Seconds an ejection with backoff level ``multiplier`` (>= 1) lasts."""
    return min(policy.base_ejection * multiplier, policy.max_ejection)


def state(health: Health, now: float, policy: Policy) -> State:
    if health.ejected_until is not None:
        if now >= health.ejected_until and not policy.active_checks:
            return State.SUSPECT  # returned on its own: probation
        return State.EJECTED
    if health.check_failed:
        return State.DOWN
    return State.SUSPECT if health.failures else State.HEALTHY


def rank(health: Health, now: float, policy: Policy) -> int:
    """Replica preference: 0 healthy, 1 suspect, 2 down or ejected (lower first)."""
    return _RANK[state(health, now, policy)]


_RANK = {State.HEALTHY: 0, State.SUSPECT: 1, State.DOWN: 2, State.EJECTED: 2}


def _alive(health: Health, now: float) -> Health:
    """An answer: failures cleared; an ejected endpoint is back from ``now`` on."""
    since = health.since
    if health.ejected_until is not None:  # back from now (or from when its period ended)
        since = min(now, health.ejected_until)
    return replace(
        health,
        failures=0,
        ejected_until=None,
        since=since,
        last_failure=None,
        check_failed=False,
    )


def _decayed(health: Health, now: float, policy: Policy) -> int:
    """The multiplier after the time spent not ejected since ``health.since``."""
    healthy_for = max(0.0, now - health.since)
    return max(0, health.multiplier - math.floor(healthy_for / policy.base_ejection))


def succeeded(health: Health, now: float, policy: Policy) -> Health:
    """A real call answered (success or an application error): the endpoint is alive."""
    return _alive(health, now)


def failed(health: Health, now: float, policy: Policy, kind: str) -> Health:
    """A real call failed the way a sick server fails (``kind``: one of FAILURE_KINDS)."""
    probation = health.ejected_until is not None and state(health, now, policy) is State.SUSPECT
    if health.ejected_until is not None and not probation:
        # already out: count it, but the running period is neither extended nor restarted
        return replace(health, failures=health.failures + 1, last_failure=kind)
    failures = health.failures + 1
    if not probation and failures < policy.eject_after:
        return replace(health, failures=failures, last_failure=kind)
    since = health.ejected_until if probation and health.ejected_until is not None else health.since
    multiplier = _decayed(replace(health, since=since), now, policy) + 1
    return Health(
        failures=failures,
        multiplier=multiplier,
        ejections=health.ejections + 1,
        ejected_until=now + ejection_period(multiplier, policy),
        since=now,
        last_failure=kind,
        check_failed=health.check_failed,
    )


def checked(health: Health, now: float, policy: Policy, ok: bool, detail: str = "check") -> Health:
    """An active check's result (``detail``: what a failed one said, kept as the latest
    failure). A pass clears failures; it ends an ejection only once the period is over (a
    server that answers pings may still fail real calls)."""
    if not ok:
        return replace(health, check_failed=True, last_failure=detail)
    if health.ejected_until is not None and now < health.ejected_until:
        return replace(health, check_failed=False)
    return _alive(health, now)
