"""Streams in flight: what the status page lists (channels, span, age, blocks sent).

``InFlight.track`` wraps a stream's batch iterator: the stream is listed from the first
call until the iterator ends, fails or is closed, and its block count grows as batches pass.
Thread-safe; ages come from an injected monotonic clock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

from router.outstream import Run

T = TypeVar("T")


def blocks_in(item: object) -> int:
    """Blocks in one item a stream yields: a batch is one block, a Table or a Run
    (router.streaming's chunks) is several one-block batches."""
    kind = type(item)
    if kind is Run:
        return len(item)  # type: ignore[arg-type]
    return item.num_rows if kind is pa.Table else 1  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StreamView:
    """One stream in flight, as shown (``None`` start: live; ``None`` end: open-ended)."""

    request_id: str
    channels: tuple[str, ...]
    start_ns: int | None
    end_ns: int | None
    age_s: float
    blocks: int


class _Entry:
    __slots__ = ("blocks", "channels", "end", "opened", "request_id", "start")

    def __init__(
        self,
        request_id: str,
        channels: tuple[str, ...],
        start: int | None,
        end: int | None,
        opened: float,
    ) -> None:
        self.request_id = request_id
        self.channels = channels
        self.start = start
        self.end = end
        self.opened = opened
        self.blocks = 0


class _Tracked(Iterator[T]):
    """An iterator (not a generator: no extra frame to unwind when the stream is closed)
    counting the batches it passes and calling ``done`` once when the stream ends."""

    __slots__ = ("_done", "_entry", "_it")

    def __init__(self, it: Iterator[T], entry: _Entry, done: Callable[[], None]) -> None:
        self._it = it
        self._entry = entry
        self._done: Callable[[], None] | None = done

    def __next__(self) -> T:
        try:
            batch = next(self._it)
        except BaseException:
            self._finish()
            raise
        self._entry.blocks += blocks_in(batch)
        return batch

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def close(self) -> None:
        self._finish()
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __del__(self) -> None:
        self._finish()


class InFlight:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._open: dict[int, _Entry] = {}
        self._ids = itertools.count()

    def __repr__(self) -> str:
        return f"<InFlight streams={len(self._open)}>"

    def __len__(self) -> int:
        return len(self._open)

    def track(
        self,
        request_id: str,
        channels: Sequence[str],
        start: int | None,
        end: int | None,
        batches: Iterable[T],
    ) -> Iterator[T]:
        """``batches`` passed through; the stream is listed until they end, fail or are
        closed (``close()`` is passed on, so whoever closes the stream closes its source)."""
        entry = _Entry(request_id, tuple(channels), start, end, self._monotonic())
        key = next(self._ids)
        with self._lock:
            self._open[key] = entry
        return _Tracked(iter(batches), entry, lambda: self._forget(key))

    def _forget(self, key: int) -> None:
        with self._lock:
            self._open.pop(key, None)

    def snapshot(self) -> list[StreamView]:
        now = self._monotonic()
        with self._lock:
            entries = list(self._open.values())
        return [
            StreamView(e.request_id, e.channels, e.start, e.end, now - e.opened, e.blocks)
            for e in sorted(entries, key=lambda e: e.opened)
        ]
