"""The replica policy as tables: which replica next, when to wait, when the data ends, when
to give up (pure functions, no threads, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.errors import (
    ArrakisError,
    ChannelsNotAvailableError,
    InternalError,
    TimedOutError,
    UnavailableError,
)
from router.replicas import (
    Attempt,
    DataEnds,
    EndedEarlyError,
    GiveUp,
    Outcome,
    backoff_s,
    is_connection_fault,
    next_step,
)

A, B, C = "grpc://a:1", "grpc://b:1", "grpc://c:1"


def early(at: int) -> EndedEarlyError:
    return EndedEarlyError(f"ended at {at}", at)


REFUSED = UnavailableError("GetFlightInfo on grpc://a:1: failed to connect: Connection refused")
STUCK = TimedOutError("the stream did not start within 3 s")


@pytest.mark.parametrize(
    ("endpoints", "outcomes", "want"),
    [
        # nothing tried yet: the first replica
        ((A, B), [], Attempt(A)),
        # an early end (graceful restart) fails over at once to the next replica
        ((A, B), [Outcome(A, 30, early(30))], Attempt(B)),
        # ... and without a replica: the same endpoint once more, after the backoff
        ((A,), [Outcome(A, 30, early(30))], Attempt(A, 0.5)),
        # that retry refused: give up (the error names A)
        ((A,), [Outcome(A, 30, early(30)), Outcome(A, 0, REFUSED)], GiveUp((early(30), REFUSED))),
        # both replicas failed in this round: the last one once more (it may be restarting)
        ((A, B), [Outcome(A, 0, REFUSED), Outcome(B, 0, REFUSED)], Attempt(B, 0.5)),
        # a stuck server is not retried on the same endpoint: a timeout is not a restart
        ((A,), [Outcome(A, 0, STUCK)], GiveUp((STUCK,))),
        ((A, B), [Outcome(A, 0, STUCK)], Attempt(B)),
        # the request itself is at fault: no replica will do better
        ((A, B), [Outcome(A, 0, ChannelsNotAvailableError(["X:Y"]))], "give up"),
        # the replica that delivered data starts a new round: A is tried again after B broke
        ((A, B), [Outcome(A, 0, REFUSED), Outcome(B, 40, early(70))], Attempt(A)),
        # two answers agree the data ends at 70 (a real gap at the end): finish there
        ((A, B), [Outcome(A, 40, early(70)), Outcome(B, 0, early(70))], DataEnds(70)),
        ((A,), [Outcome(A, 40, early(70)), Outcome(A, 0, early(70))], DataEnds(70)),
        # ... but not when they disagree
        ((A, B), [Outcome(A, 40, early(70)), Outcome(B, 0, early(60))], Attempt(B, 0.5)),
        # failover order continues after the endpoint that failed
        ((A, B, C), [Outcome(B, 5, InternalError("x"))], Attempt(C)),
    ],
)
def test_next_step(endpoints: tuple[str, ...], outcomes: list[Outcome], want: object) -> None:
    got = next_step(endpoints, outcomes)
    if want == "give up":
        assert isinstance(got, GiveUp)
    elif isinstance(want, GiveUp):
        assert isinstance(got, GiveUp)
        assert [str(e) for e in got.errors] == [str(e) for e in want.errors]
    else:
        assert got == want


def test_a_downstream_breaking_every_few_blocks_is_given_up() -> None:
    """Progress resets the round, but not forever: len(endpoints) + 2 faults in all."""
    outcomes: list[Outcome] = []
    steps = []
    while True:
        step = next_step((A,), outcomes)
        steps.append(step)
        if not isinstance(step, Attempt):
            break
        outcomes.append(Outcome(step.url, 2, UnavailableError("backend went away")))
    assert isinstance(steps[-1], GiveUp)
    assert len(outcomes) == 3


errors = st.sampled_from(
    [early(10), early(20), REFUSED, STUCK, InternalError("boom"), UnavailableError("gone")]
)


@given(
    st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=3, unique=True),
    st.lists(st.tuples(st.integers(0, 3), errors), max_size=12),
)
def test_policy_always_ends(endpoints: list[str], script: list[tuple[int, ArrakisError]]) -> None:
    """Whatever the downstreams do, the policy names an endpoint of the list and ends (gives
    up or accepts an end) after at most len(endpoints) + 2 faults."""
    outcomes: list[Outcome] = []
    for delivered, error in script:
        step = next_step(endpoints, outcomes)
        if not isinstance(step, Attempt):
            break
        assert step.url in endpoints and step.delay >= 0
        outcomes.append(Outcome(step.url, delivered, error))
    else:
        step = next_step(endpoints, outcomes)
    assert len(outcomes) <= len(endpoints) + 2


@pytest.mark.parametrize(
    ("attempt", "jitter", "want"),
    [(1, 0.0, 0.25), (1, 0.999, 0.49975), (2, 0.0, 0.5), (5, 0.0, 4.0), (20, 0.0, 15.0)],
)
def test_backoff_doubles_with_jitter_up_to_the_cap(
    attempt: int, jitter: float, want: float
) -> None:
    assert backoff_s(attempt, jitter, base=0.5, cap=30.0) == pytest.approx(want)


@given(st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
def test_backoff_is_never_zero_and_never_past_the_cap(attempt: int, jitter: float) -> None:
    """A refused reconnect can never spin (a wait > 0) nor wait unboundedly."""
    wait = backoff_s(attempt, jitter, base=0.5, cap=30.0)
    assert 0.25 <= wait <= 30.0


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (REFUSED, True),
        (UnavailableError("DoGet on x: Connection reset by peer"), True),
        (UnavailableError("channel(s) gone"), False),
        (TimedOutError("Deadline Exceeded: failed to connect"), False),
    ],
)
def test_connection_faults(error: ArrakisError, fault: bool) -> None:
    assert is_connection_fault(error) is fault
