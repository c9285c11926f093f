"""The active checker over scripted downstreams: every endpoint of the active map is checked,
a reload is followed, a failed check marks the endpoint down, and stop() leaves no thread."""

from __future__ import annotations

import threading
import time

from router.downstream import Call, StaticPool
from router.errors import TimedOutError, UnauthenticatedError
from router.healthcheck import HealthChecker
from router.healthpolicy import State
from router.healthregistry import HealthRegistry
from tests.router.scripted import ScriptedDownstream
from tests.router.test_healthregistry import A, B, C, V, endpoint, load


class Checked(ScriptedDownstream):
    """Answers server-info, or raises ``error``; counts the checks and their deadlines."""

    def __init__(self, url: str, error: BaseException | None = None) -> None:
        super().__init__(url)
        self.error = error
        self.checks: list[Call] = []

    def action(self, kind: str, call: Call) -> list[bytes]:
        assert kind == "server-info"
        self.checks.append(call)
        if self.error is not None:
            raise self.error
        return [b"{}"]


def test_a_round_checks_every_endpoint_and_follows_reloads() -> None:
    members = {
        A: Checked(A),
        B: Checked(B, TimedOutError("deadline")),
        C: Checked(C, UnauthenticatedError("token needed")),  # answered: alive
        V: Checked(V),
    }
    registry = HealthRegistry()
    registry.track(load(endpoint(A, "H1") + endpoint(B, "H1") + endpoint(C, "H1")))
    checker = HealthChecker(registry, StaticPool(dict(members)), interval=5.0, timeout=0.7)
    try:
        checker.check_all()
        assert [registry.state_of(u) for u in (A, B, C)] == [
            State.HEALTHY,
            State.DOWN,
            State.HEALTHY,
        ]
        assert members[A].checks[0].timeout == 0.7
        registry.track(load(endpoint(A, "H1") + endpoint(V, "V1")))  # a reload
        checker.check_all()
        assert len(members[V].checks) == 1 and len(members[B].checks) == 1
    finally:
        checker.stop()


def test_the_check_deadline_is_at_most_half_the_interval() -> None:
    checker = HealthChecker(HealthRegistry(), StaticPool({}), interval=1.0, timeout=5.0)
    assert checker.timeout == 0.5
    checker.stop()


def test_the_thread_checks_periodically_and_stops_cleanly() -> None:
    a = Checked(A)
    registry = HealthRegistry()
    registry.track(load(endpoint(A, "H1")))
    checker = HealthChecker(registry, StaticPool({A: a}), interval=0.05, timeout=0.02)
    checker.start()
    deadline = time.monotonic() + 10
    while len(a.checks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    checker.stop()
    checker.stop()  # idempotent
    assert time.monotonic() - started < 1.0
    assert len(a.checks) >= 3
    names = [t.name for t in threading.enumerate()]
    assert "health-checks" not in names and not any(n.startswith("health-check_") for n in names)
