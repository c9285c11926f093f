"""The request context, its token and the service timer, driven on an injected clock."""

from __future__ import annotations

import threading

import pytest

from router.context import (
    CLIENT_LEFT,
    DEADLINE,
    LiveContexts,
    RequestContext,
)
from router.errors import CancelledError, TimedOutError, UnavailableError
from router.timers import Timer


class Monotonic:
    """A fake monotonic clock (seconds)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_timer_runs_callbacks_in_time_order_when_due() -> None:
    clock = Monotonic()
    timer = Timer(clock, thread=False)
    ran: list[str] = []
    timer.call_later(2.0, lambda: ran.append("b"))
    timer.call_later(1.0, lambda: ran.append("a"))
    cancelled = timer.call_later(1.5, lambda: ran.append("never"))
    cancelled.cancel()
    assert timer.run_due() == 0 and timer.pending == 2
    clock.t += 1.0
    assert timer.run_due() == 1 and ran == ["a"]
    clock.t += 5.0
    timer.run_due()
    assert ran == ["a", "b"] and timer.pending == 0


def test_every_repeats_until_false_or_cancelled() -> None:
    clock = Monotonic()
    timer = Timer(clock, thread=False)
    ticks: list[float] = []
    handle = timer.every(0.1, lambda: ticks.append(clock.t) is None)
    for _ in range(3):
        clock.t += 0.1
        timer.run_due()
    assert len(ticks) == 3
    handle.cancel()
    clock.t += 1
    timer.run_due()
    assert len(ticks) == 3 and timer.pending == 0


def test_timer_thread_fires_and_closes() -> None:
    timer = Timer()
    fired = threading.Event()
    timer.call_later(0.01, fired.set)
    assert fired.wait(5)
    timer.close()
    assert timer._thread is not None and not timer._thread.is_alive()


def test_context_remaining_and_call_limits_on_the_injected_clock() -> None:
    clock = Monotonic()
    ctx = RequestContext.with_timeout("r", 5.0, monotonic=clock)
    assert ctx.remaining() == 5.0
    assert ctx.limit(10.0) == 5.0 and ctx.limit(2.0) == 2.0
    clock.t += 4.5
    assert ctx.limit(10.0) == pytest.approx(0.5)
    clock.t += 10
    assert ctx.remaining() == 0.0
    free = RequestContext("r")
    assert free.remaining() is None and free.limit(3.0) == 3.0 and free.limit(None) is None


def test_the_deadline_cancels_the_token_through_the_timer() -> None:
    clock = Monotonic()
    timer = Timer(clock, thread=False)
    ctx = RequestContext.with_timeout("r", 3.0, monotonic=clock)
    assert ctx.deadline is not None
    timer.call_at(ctx.deadline, ctx.deadline_passed)
    clock.t += 2.9
    timer.run_due()
    ctx.check()
    clock.t += 0.1
    timer.run_due()
    assert ctx.cancelled and ctx.token.reason == DEADLINE
    with pytest.raises(TimedOutError, match="deadline"):
        ctx.check("Stream")


def test_token_runs_callbacks_once_and_unregisters() -> None:
    ctx = RequestContext("r")
    calls: list[str] = []
    unregister = ctx.token.on_cancel(lambda: calls.append("a"))
    ctx.token.on_cancel(lambda: calls.append("b"))
    unregister()
    assert ctx.token.callbacks == 1
    assert ctx.cancel(CLIENT_LEFT) and not ctx.cancel("again")
    assert calls == ["b"] and ctx.token.reason == CLIENT_LEFT
    ctx.token.on_cancel(lambda: calls.append("late"))  # already set: runs at once
    assert calls == ["b", "late"] and ctx.token.callbacks == 0
    with pytest.raises(CancelledError, match="client cancelled"):
        ctx.check()


def test_live_contexts_sweep_and_cancel_all() -> None:
    live = LiveContexts()
    gone = {"x": False}
    a, b = RequestContext("a"), RequestContext("b")
    live.add(a, lambda: gone["x"])
    live.add(b)
    live.sweep()
    assert not a.cancelled
    gone["x"] = True
    live.sweep()
    assert a.cancelled and a.token.reason == CLIENT_LEFT and not b.cancelled
    live.discard(a)
    assert live.cancel_all("draining") == 1 and b.token.reason == "draining"
    with pytest.raises(UnavailableError, match="draining"):  # not the client's doing
        b.check()
    c = RequestContext("c")
    live.add(c)  # added while draining: cancelled at once
    assert c.cancelled and len(live) == 1
