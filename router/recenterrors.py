"""The last few downstream errors per endpoint, for the status page (bounded, thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_PER_ENDPOINT = 5
MAX_TEXT = 300


@dataclass(frozen=True)
class ErrorView:
    call: str
    text: str
    age_s: float


class RecentErrors:
    """``record(endpoint, call, exc)`` keeps the newest ``per_endpoint`` errors of each
    endpoint; ``snapshot()`` returns them newest first with their ages."""

    def __init__(
        self,
        per_endpoint: int = MAX_PER_ENDPOINT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_endpoint = per_endpoint
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._errors: dict[str, deque[tuple[float, str, str]]] = {}

    def __repr__(self) -> str:
        return f"<RecentErrors endpoints={len(self._errors)}>"

    def record(self, endpoint: str, call: str, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        with self._lock:
            ring = self._errors.setdefault(endpoint, deque(maxlen=self._per_endpoint))
            ring.append((self._monotonic(), call, text))

    def snapshot(self) -> dict[str, list[ErrorView]]:
        now = self._monotonic()
        with self._lock:
            copy = {url: list(ring) for url, ring in self._errors.items()}
        return {
            url: [ErrorView(call, text, now - at) for at, call, text in reversed(items)]
            for url, items in copy.items()
        }
