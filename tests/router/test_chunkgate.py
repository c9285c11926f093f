"""Turns for historical chunks (router.chunkgate): at most ``slots`` counted at once; a turn
held past ``stale`` (a slow client) stops counting, so the next stream goes ahead; a
cancelled wait ends; a turn ends on every path out of its body."""

from __future__ import annotations

import threading
import time

import pytest

from router.chunkgate import ChunkGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _waiting_turn(
    gate: ChunkGate, cancelled: threading.Event | None = None
) -> tuple[threading.Thread, threading.Event]:
    """A thread that takes a turn (setting ``got``) and leaves it at once."""
    got = threading.Event()

    def take() -> None:
        with gate.turn(lambda: cancelled is not None and cancelled.is_set()):
            got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread, got


def test_at_most_slots_turns_at_once_and_every_one_is_served() -> None:
    gate = ChunkGate(2, stale=60.0)
    lock, inside, most, done = threading.Lock(), [0], [0], []

    def chunk(i: int) -> None:
        with gate.turn():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1
        done.append(i)

    threads = [threading.Thread(target=chunk, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == list(range(8))
    assert most[0] == 2 and gate.waits >= 1
    assert "held=0" in repr(gate)


def test_a_turn_held_past_stale_stops_counting() -> None:
    """A stream whose client reads slowly keeps its turn; the next one goes ahead once that
    turn is older than ``stale``, without waiting for it to end."""
    clock = Clock()
    gate = ChunkGate(1, stale=5.0, clock=clock)
    release = threading.Event()

    def slow() -> None:
        with gate.turn():
            release.wait(10)

    holder = threading.Thread(target=slow, daemon=True)
    holder.start()
    while "held=1" not in repr(gate):
        time.sleep(0.005)
    waiter, got = _waiting_turn(gate)
    assert not got.wait(0.3)  # the slow turn still counts
    clock.now = 5.0  # ... until it is `stale` old
    assert got.wait(5)
    waiter.join(5)
    assert holder.is_alive()  # it got its turn while the slow one still held its own
    release.set()
    holder.join(5)
    assert gate.waits == 1


def test_a_cancelled_wait_ends() -> None:
    gate = ChunkGate(1, stale=60.0)
    cancelled = threading.Event()
    with gate.turn():
        waiter, got = _waiting_turn(gate, cancelled)
        assert not got.wait(0.3)
        cancelled.set()  # the request was cancelled: the wait ends (its caller then raises)
        assert got.wait(5)
        waiter.join(5)
    assert "held=0" in repr(gate)


def test_a_turn_ends_when_its_body_raises_or_its_generator_is_closed() -> None:
    gate = ChunkGate(1, stale=60.0)
    with pytest.raises(RuntimeError), gate.turn():
        raise RuntimeError("the downstream failed")
    assert "held=0" in repr(gate)

    def chunks() -> object:
        while True:
            with gate.turn():
                yield b"chunk"

    stream = chunks()
    next(stream)
    assert "held=1" in repr(gate)
    stream.close()  # the client went away mid-stream
    assert "held=0" in repr(gate)


def test_slots_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="chunk slots must be at least 1, got 0"):
        ChunkGate(0)
