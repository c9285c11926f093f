"""Turns for historical chunks: how many streams of one process read, check and write a chunk
at the same time.

Under many concurrent historical streams the router's cost per byte grew with the number of
streams (issue 11): profiled, not in the kernel or in Python but in code that touches the
data (Flight's copy of each received message into one buffer, the one-pass check, the IPC
writer), because with 32 streams interleaved a chunk has left the CPU's caches between being
received and being sent. A stream that takes a turn (:meth:`ChunkGate.turn`) for one chunk
reads, checks and writes it while few others do the same, so the chunk is still in cache
when it goes out. Measured with `bench/ab.py` (bench/README.md, "Tenth round").

A turn is held while the chunk is written, and a client that reads slowly keeps its writer
waiting: so a turn held longer than ``stale`` seconds stops counting, and the next stream
goes ahead. A slow client therefore delays other streams once, by at most ``stale``, and
never again while it stays slow. Waiting ends when the request is cancelled (within
``POLL_S``)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["POLL_S", "STALE_S", "ChunkGate"]

STALE_S = 0.1  # a turn held longer stops counting (s)
POLL_S = 0.1  # a waiting stream looks at its cancellation at least this often (s)


class ChunkGate:
    """At most ``slots`` turns counted at once (see the module text)."""

    def __init__(
        self,
        slots: int,
        *,
        stale: float = STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1:
            raise ValueError(f"chunk slots must be at least 1, got {slots}")
        self.slots = slots
        self.stale = stale
        self._clock = clock
        self._cond = threading.Condition()
        self._held: dict[int, float] = {}  # turn -> when it was taken
        self._ids = itertools.count()
        self.waits = 0  # turns that had to wait (tests, the status of a busy router)

    def __repr__(self) -> str:
        return f"<ChunkGate slots={self.slots} held={len(self._held)}>"

    def _counted(self, now: float) -> list[float]:
        return [t for t in self._held.values() if now - t < self.stale]

    @contextmanager
    def turn(self, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold a turn for the body (one chunk). Once ``cancelled()`` is true the wait ends
        at once (that turn may exceed ``slots``: the caller's next look at its token
        raises)."""
        key = next(self._ids)
        with self._cond:
            waited = False
            while True:
                now = self._clock()
                counted = self._counted(now)
                if len(counted) < self.slots or cancelled():
                    break
                waited = True
                # until a turn ends, the oldest counted turn turns stale, or the next look
                until_stale = min(counted) + self.stale - now
                self._cond.wait(timeout=max(0.0, min(until_stale, POLL_S)))
            self.waits += waited
            self._held[key] = self._clock()
        try:
            yield
        finally:
            with self._cond:
                del self._held[key]
                self._cond.notify()
