"""Giving memory back: the idle trim runs once the router has been idle for its delay, once
per idle spell, and not while a stream is open again; trimming is safe at any time."""

from __future__ import annotations

from collections.abc import Callable

from router.memory import IdleTrim, trim


class Later:
    """A scripted ``call_later``: callbacks run when the test says so."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.due.append((delay, fn))

    def run(self) -> None:
        due, self.due = self.due, []
        for _, fn in due:
            fn()


def _trimmer(idle: list[bool]) -> tuple[IdleTrim, Later, list[int]]:
    later, trims = Later(), []
    trimmer = IdleTrim(later, lambda: idle[0], delay=2.0, trim=lambda: bool(trims.append(1)))
    return trimmer, later, trims


def test_trims_once_after_the_delay_when_still_idle() -> None:
    trimmer, later, trims = _trimmer([True])
    trimmer.idle()
    trimmer.idle()  # a second stream ending meanwhile: one trim is enough
    assert [d for d, _ in later.due] == [2.0] and trims == []
    later.run()
    assert trims == [1] and trimmer.trims == 1
    trimmer.idle()  # the next idle spell trims again
    later.run()
    assert trimmer.trims == 2


def test_no_trim_when_a_stream_opened_meanwhile() -> None:
    idle = [True]
    trimmer, later, trims = _trimmer(idle)
    trimmer.idle()
    idle[0] = False
    later.run()
    assert trims == [] and later.due == []


def test_trim_is_safe_to_call() -> None:
    assert trim() in (True, False)  # False: nothing to return, or no glibc
