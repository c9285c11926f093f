"""Admission of streams: at most ``max_streams`` open at once, ``max_streams_per_client``
per client address. Over either, a request is refused with UNAVAILABLE "router busy" and
a retry hint before any work is done.

The counter is the only state; a slot is taken with :meth:`Admission.admit` and given back
exactly once with :meth:`Slot.release` (idempotent), whichever way the stream ends.
"""

from __future__ import annotations

import threading
from collections import Counter

from router.errors import BusyError

__all__ = ["Admission", "Slot", "client_address"]

RETRY_HINT_S = 5


def client_address(peer: str | bytes | None) -> str:
    """The client part of a gRPC peer string (``ipv4:10.0.0.1:5555`` -> ``ipv4:10.0.0.1``,
    ``ipv6:[::1]:5555`` -> ``ipv6:[::1]``): streams are counted per address, not per port."""
    if isinstance(peer, bytes):
        peer = peer.decode("utf-8", "replace")
    if not peer:
        return "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


class Slot:
    """One admitted stream; :meth:`release` gives its place back (once)."""

    def __init__(self, admission: Admission, client: str) -> None:
        self._admission = admission
        self.client = client
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._release(self.client)

    def __repr__(self) -> str:
        return f"<Slot client={self.client} released={self._released}>"


class Admission:
    """Counts open streams overall and per client address (thread-safe)."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._open: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<Admission open={self._total}/{self.max_streams} "
            f"clients={len(self._open)} per_client={self.max_per_client}>"
        )

    @property
    def open(self) -> int:
        return self._total

    def admit(self, client: str) -> Slot:
        """A slot for one stream of ``client``, or BusyError naming the limit reached."""
        with self._lock:
            if self._total >= self.max_streams:
                raise BusyError(
                    f"router busy: {self._total} streams open (limit {self.max_streams}, "
                    f"max_streams); retry in {RETRY_HINT_S} s"
                )
            if self._open[client] >= self.max_per_client:
                raise BusyError(
                    f"router busy: {self._open[client]} streams open from your address "
                    f"(limit {self.max_per_client}, max_streams_per_client); retry in "
                    f"{RETRY_HINT_S} s or close a stream"
                )
            self._open[client] += 1
            self._total += 1
        return Slot(self, client)

    def _release(self, client: str) -> None:
        with self._lock:
            self._total -= 1
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]
