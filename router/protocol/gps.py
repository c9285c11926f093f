"""GPS time from the system clock with a configured leap offset (no gpstime, no network)."""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = [
    "DEFAULT_LEAP_SECONDS",
    "GPS_EPOCH_UNIX",
    "Clock",
    "FakeClock",
    "SystemClock",
    "gps_now_ns",
    "unix_to_gps_ns",
]

GPS_EPOCH_UNIX = 315964800
DEFAULT_LEAP_SECONDS = 18
NS = 1_000_000_000


def unix_to_gps_ns(unix_s: float, leap: int = DEFAULT_LEAP_SECONDS) -> int:
    """GPS ns of a Unix time in seconds."""
    return round((unix_s - GPS_EPOCH_UNIX + leap) * NS)


def _unix_ns_to_gps_ns(unix_ns: int, leap: int) -> int:
    return unix_ns - GPS_EPOCH_UNIX * NS + leap * NS


def gps_now_ns(leap: int = DEFAULT_LEAP_SECONDS) -> int:
    """GPS now in integer ns, computed exactly from ``time.time_ns()``."""
    return _unix_ns_to_gps_ns(time.time_ns(), leap)


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """GPS time from the system clock."""

    def __init__(self, leap_seconds: int = DEFAULT_LEAP_SECONDS) -> None:
        self.leap_seconds = leap_seconds

    def now_ns(self) -> int:
        return _unix_ns_to_gps_ns(time.time_ns(), self.leap_seconds)

    def __repr__(self) -> str:
        return f"SystemClock(leap_seconds={self.leap_seconds})"


class FakeClock:
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self, now_ns: int) -> None:
        self._now = now_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ns: int) -> None:
        with self._lock:
            self._now += ns

    def set(self, ns: int) -> None:
        with self._lock:
            self._now = ns

    def __repr__(self) -> str:
        return f"FakeClock(now_ns={self._now})"
