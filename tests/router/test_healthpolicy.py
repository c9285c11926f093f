"""The endpoint health state machine: scenario tables on a virtual clock, and properties."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.healthpolicy import (
    FAILURE_KINDS,
    Health,
    Policy,
    State,
    checked,
    ejection_period,
    failed,
    rank,
    state,
    succeeded,
)

CHECKS = Policy(eject_after=3, base_ejection=10.0, max_ejection=300.0, active_checks=True)
NO_CHECKS = Policy(eject_after=3, base_ejection=10.0, max_ejection=300.0, active_checks=False)


def run(policy: Policy, events: list[tuple[float, str]]) -> list[tuple[State, float | None]]:
    """Apply ``(time, event)`` steps; event is ``ok``, ``fail``, ``pass`` (check), ``nocheck``
    (failed check) or ``look`` (no event). Returns the state and ejected_until after each."""
    h = Health()
    out = []
    for now, event in events:
        if event == "ok":
            h = succeeded(h, now, policy)
        elif event == "fail":
            h = failed(h, now, policy, "timed_out")
        elif event == "pass":
            h = checked(h, now, policy, True)
        elif event == "nocheck":
            h = checked(h, now, policy, False)
        out.append((state(h, now, policy), h.ejected_until))
    return out


S = State


@pytest.mark.parametrize(
    ("name", "policy", "events", "expected"),
    [
        (
            "one failure demotes, one answer restores",
            CHECKS,
            [(0, "fail"), (1, "ok")],
            [(S.SUSPECT, None), (S.HEALTHY, None)],
        ),
        (
            "three consecutive failures eject for the base period",
            CHECKS,
            [(0, "fail"), (1, "fail"), (2, "fail")],
            [(S.SUSPECT, None), (S.SUSPECT, None), (S.EJECTED, 12.0)],
        ),
        (
            "an answer in between resets the count",
            CHECKS,
            [(0, "fail"), (1, "fail"), (2, "ok"), (3, "fail"), (4, "fail")],
            [
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.HEALTHY, None),
                (S.SUSPECT, None),
                (S.SUSPECT, None),
            ],
        ),
        (
            "a passing check during the period does not end it; after it, it does",
            CHECKS,
            [(0, "fail"), (0, "fail"), (0, "fail"), (5, "pass"), (9.9, "pass"), (10, "pass")],
            [
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 10.0),
                (S.EJECTED, 10.0),
                (S.EJECTED, 10.0),
                (S.HEALTHY, None),
            ],
        ),
        (
            "with checks on, an ejection lasts past its period until a check passes",
            CHECKS,
            [(0, "fail"), (0, "fail"), (0, "fail"), (50, "look")],
            [(S.SUSPECT, None), (S.SUSPECT, None), (S.EJECTED, 10.0), (S.EJECTED, 10.0)],
        ),
        (
            "one real success brings an ejected endpoint back at once",
            CHECKS,
            [(0, "fail"), (0, "fail"), (0, "fail"), (1, "ok")],
            [(S.SUSPECT, None), (S.SUSPECT, None), (S.EJECTED, 10.0), (S.HEALTHY, None)],
        ),
        (
            "failures while ejected neither extend nor restart the period",
            CHECKS,
            [(0, "fail"), (0, "fail"), (0, "fail"), (5, "fail"), (9, "fail")],
            [(S.SUSPECT, None), (S.SUSPECT, None)] + [(S.EJECTED, 10.0)] * 3,
        ),
        (
            "without checks it returns on probation; its next failure ejects it, longer",
            NO_CHECKS,
            [(0, "fail"), (0, "fail"), (0, "fail"), (10, "look"), (11, "fail")],
            [
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 10.0),
                (S.SUSPECT, 10.0),
                (S.EJECTED, 11.0 + 20.0),
            ],
        ),
        (
            "a repeat ejection right after returning lasts twice as long",
            CHECKS,
            [
                (0, "fail"),
                (0, "fail"),
                (0, "fail"),
                (10, "pass"),
                (11, "fail"),
                (11, "fail"),
                (11, "fail"),
            ],
            [
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 10.0),
                (S.HEALTHY, None),
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 31.0),
            ],
        ),
        (
            "a long healthy spell decays the backoff back to the base period",
            CHECKS,
            [
                (0, "fail"),
                (0, "fail"),
                (0, "fail"),
                (10, "pass"),
                (100, "fail"),
                (100, "fail"),
                (100, "fail"),
            ],
            [
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 10.0),
                (S.HEALTHY, None),
                (S.SUSPECT, None),
                (S.SUSPECT, None),
                (S.EJECTED, 110.0),
            ],
        ),
        (
            "a failed check marks it down at once; a passing check brings it up",
            CHECKS,
            [(0, "nocheck"), (5, "nocheck"), (10, "pass")],
            [(S.DOWN, None), (S.DOWN, None), (S.HEALTHY, None)],
        ),
        (
            "a failed check does not count towards ejection",
            CHECKS,
            [(0, "nocheck")] * 5 + [(1, "fail")],
            [(S.DOWN, None)] * 6,
        ),
        (
            "a real answer clears a failed check",
            CHECKS,
            [(0, "nocheck"), (1, "ok")],
            [(S.DOWN, None), (S.HEALTHY, None)],
        ),
    ],
)
def test_scenarios(
    name: str,
    policy: Policy,
    events: list[tuple[float, str]],
    expected: list[tuple[State, float | None]],
) -> None:
    assert run(policy, events) == expected, name


def test_backoff_grows_and_is_capped() -> None:
    policy = Policy(eject_after=1, base_ejection=10.0, max_ejection=35.0)
    assert [ejection_period(k, policy) for k in (1, 2, 3, 4, 9)] == [10, 20, 30, 35, 35]
    h, now, periods = Health(), 0.0, []
    for _ in range(5):  # eject, wait out the period, return by a check, fail at once again
        h = failed(h, now, policy, "unavailable")
        assert h.ejected_until is not None
        periods.append(h.ejected_until - now)
        now = h.ejected_until
        h = checked(h, now, policy, True)
    assert periods == [10, 20, 30, 35, 35]
    assert h.ejections == 5


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="eject_after"):
        Policy(eject_after=0)
    with pytest.raises(ValueError, match="base_ejection"):
        Policy(base_ejection=10, max_ejection=5)


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class Step:
    dt: float
    event: str  # ok | fail | pass | nocheck


steps = st.lists(
    st.builds(
        Step,
        st.floats(0, 50, allow_nan=False),
        st.sampled_from(["ok", "fail", "fail", "fail", "pass", "nocheck"]),
    ),
    max_size=40,
)
policies = st.builds(
    Policy,
    eject_after=st.integers(1, 5),
    base_ejection=st.floats(0.5, 30),
    max_ejection=st.just(300.0),
    active_checks=st.booleans(),
)


def apply(h: Health, now: float, policy: Policy, event: str) -> Health:
    if event == "ok":
        return succeeded(h, now, policy)
    if event == "fail":
        return failed(h, now, policy, FAILURE_KINDS[1])
    return checked(h, now, policy, event == "pass")


@given(policies, steps)
def test_invariants(policy: Policy, script: list[Step]) -> None:
    h, now = Health(), 0.0
    run_of_failures = 0  # real-call failures since the last answer (the model's own count)
    ejections = 0
    last_period = 0.0
    for step in script:
        now += step.dt
        before = h
        h = apply(h, now, policy, step.event)
        s = state(h, now, policy)
        if step.event == "ok":
            run_of_failures = 0
            # one success: healthy at once, whatever came before
            assert s is State.HEALTHY and h.failures == 0 and h.ejected_until is None
        elif step.event == "fail":
            run_of_failures += 1
        elif step.event == "pass" and (before.ejected_until is None or now >= before.ejected_until):
            run_of_failures = 0
            assert s is State.HEALTHY
        if step.event == "pass" and before.ejected_until is not None and now < before.ejected_until:
            # a passing check never ends an ejection early
            assert s is State.EJECTED and h.ejected_until == before.ejected_until
        if h.ejections > before.ejections:
            ejections += 1
            assert step.event == "fail"
            period = (h.ejected_until or 0) - now
            assert policy.base_ejection - 1e-9 <= period <= policy.max_ejection + 1e-9
            # never ejected on fewer consecutive failures than the threshold (except probation)
            on_probation = before.ejected_until is not None
            assert on_probation or run_of_failures >= policy.eject_after
            last_period = period
        assert h.ejections == ejections
        assert h.failures == run_of_failures or step.event in ("pass", "nocheck")
        assert 0 <= rank(h, now, policy) <= 2
        assert (s is State.EJECTED) == (
            h.ejected_until is not None and (policy.active_checks or now < h.ejected_until)
        )
        assert state(h, now, policy) is s  # a pure function: same answer twice
    assert last_period >= 0


@given(policies, st.integers(1, 12))
def test_repeat_ejections_never_shrink_without_a_healthy_spell(policy: Policy, n: int) -> None:
    """Fail right after every return: each ejection lasts at least as long as the last."""
    h, now, periods = Health(), 0.0, []
    while len(periods) < n:
        h = failed(h, now, policy, "timed_out")
        if h.ejected_until is not None and h.ejected_until > now:
            periods.append(h.ejected_until - now)
            now = h.ejected_until
            h = checked(h, now, policy, True) if policy.active_checks else h
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(periods))
    assert periods[-1] == pytest.approx(ejection_period(n, policy))
