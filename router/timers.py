"""One service-wide timer: request deadlines, stream open / idle deadlines, the client-gone
watch. One thread and one heap for the whole service, not a watchdog thread per stream.

Callbacks run on the timer's thread and must be short (set a token, cancel a call, re-arm).
Time is the injected ``monotonic``; tests drive a :class:`Timer` without its thread by
moving a fake clock and calling :meth:`Timer.run_due`.

Rationale for :meth:`Timer.every`: gRPC tells a server that a client left only when asked
(``ServerCallContext.is_cancelled``); that one unavoidable poll lives here, once, with one
period for the whole service.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("router.timers")

Monotonic = Callable[[], float]


class TimerHandle:
    """A scheduled callback; :meth:`cancel` is idempotent and thread-safe."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        return f"<TimerHandle when={self.when:.3f} cancelled={self.cancelled}>"


class _Periodic(TimerHandle):
    """The handle of :meth:`Timer.every`: cancelling it cancels the next tick too."""

    __slots__ = ("_next", "_period", "_timer")

    def __init__(self, timer: Timer, period: float, callback: Callable[[], bool]) -> None:
        super().__init__(0.0, lambda: None)
        self._timer = timer
        self._period = period
        self._next: TimerHandle | None = None
        self.callback = lambda: self._tick(callback)

    def schedule(self) -> None:
        self._next = self._timer.call_later(self._period, self.callback)
        self.when = self._next.when

    def _tick(self, callback: Callable[[], bool]) -> None:
        if not self.cancelled and callback():
            self.schedule()
        else:
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True
        if self._next is not None:
            self._next.cancel()


class Timer:
    """Run callbacks at ``monotonic()`` times, on one lazily started daemon thread."""

    def __init__(self, monotonic: Monotonic = time.monotonic, *, thread: bool = True) -> None:
        self.monotonic = monotonic
        self._use_thread = thread
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Timer pending={self.pending} closed={self._closed}>"

    @property
    def pending(self) -> int:
        """Scheduled callbacks not cancelled (tests: nothing left behind by a request)."""
        with self._cond:
            return sum(1 for _, _, h in self._heap if not h.cancelled)

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        with self._cond:
            if self._closed:
                handle.cancelled = True
                return handle
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
            if self._thread is None and self._use_thread:
                self._thread = threading.Thread(target=self._run, name="router-timer", daemon=True)
                self._thread.start()
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self.monotonic() + delay, callback)

    def every(self, period: float, callback: Callable[[], bool]) -> TimerHandle:
        """Call ``callback`` every ``period`` s until it returns False or the returned
        handle is cancelled."""
        periodic = _Periodic(self, period, callback)
        periodic.schedule()
        return periodic

    def run_due(self) -> int:
        """Run every callback due at ``monotonic()`` now; returns how many ran (tests)."""
        ran = 0
        while True:
            with self._cond:
                handle = self._pop_due(self.monotonic())
            if handle is None:
                return ran
            self._fire(handle)
            ran += 1

    def _pop_due(self, now: float) -> TimerHandle | None:
        while self._heap:
            when, _, handle = self._heap[0]
            if handle.cancelled:
                heapq.heappop(self._heap)
                continue
            if when > now:
                return None
            heapq.heappop(self._heap)
            return handle
        return None

    def _fire(self, handle: TimerHandle) -> None:
        if handle.cancelled:
            return
        handle.cancelled = True
        try:
            handle.callback()
        except Exception:  # a failing callback must not stop every other deadline
            log.exception("timer_callback_failed", callback=repr(handle.callback))

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    handle = self._pop_due(self.monotonic())
                    if handle is not None:
                        break
                    wait = self._heap[0][0] - self.monotonic() if self._heap else None
                    self._cond.wait(wait)
            self._fire(handle)

    def close(self) -> None:
        """Drop every pending callback and stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            for _, _, handle in self._heap:
                handle.cancelled = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
