"""Fault injection for streams (``--faults``), applied by the server base to any backend.

Spec: comma-separated items, the option may be repeated::

    drop=N        omit every N-th block (blocks N, 2N, ...; block 0 never)
    nulls=N       replace every N-th block by an all-null block (a gap the server admits)
    delay=S[/N]   hold every N-th block (default: every block) S seconds before sending it
    stall=S@N     after N blocks, send nothing for S seconds (once per stream)
    error=N       after N blocks, end the stream with FlightUnavailableError
    exit=N        after N blocks, terminate the whole server process (exit status 3)

Block counts are per stream (per DoGet), counted from 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = ["FaultPlan", "parse_faults"]


@dataclass(frozen=True)
class FaultPlan:
    drop_every: int | None = None
    nulls_every: int | None = None
    delay_s: float = 0.0
    delay_every: int = 1
    stall_s: float = 0.0
    stall_after: int | None = None
    error_after: int | None = None
    exit_after: int | None = None

    @property
    def active(self) -> bool:
        return self != FaultPlan()

    def drops(self, index: int) -> bool:
        return bool(self.drop_every) and index > 0 and index % self.drop_every == 0  # type: ignore[operator]

    def nulls(self, index: int) -> bool:
        return bool(self.nulls_every) and index > 0 and index % self.nulls_every == 0  # type: ignore[operator]

    def delay_for(self, index: int) -> float:
        if self.delay_s <= 0:
            return 0.0
        return self.delay_s if index % self.delay_every == 0 else 0.0

    def describe(self) -> str:
        parts = []
        if self.drop_every:
            parts.append(f"drop={self.drop_every}")
        if self.nulls_every:
            parts.append(f"nulls={self.nulls_every}")
        if self.delay_s:
            parts.append(f"delay={self.delay_s}/{self.delay_every}")
        if self.stall_after is not None:
            parts.append(f"stall={self.stall_s}@{self.stall_after}")
        if self.error_after is not None:
            parts.append(f"error={self.error_after}")
        if self.exit_after is not None:
            parts.append(f"exit={self.exit_after}")
        return ",".join(parts) or "none"


def _int(value: str, item: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not an integer") from None
    if n < minimum:
        raise ValueError(f"fault {item!r}: must be at least {minimum}")
    return n


def _seconds(value: str, item: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not a number of seconds") from None
    if not s >= 0:
        raise ValueError(f"fault {item!r}: seconds must be >= 0")
    return s


def parse_faults(specs: Iterable[str]) -> FaultPlan:
    """A plan from ``--faults`` values; ValueError naming the bad item."""
    plan = FaultPlan()
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"fault {item!r}: expected NAME=VALUE")
            if key == "drop":
                plan = replace(plan, drop_every=_int(value, item, 1))
            elif key == "nulls":
                plan = replace(plan, nulls_every=_int(value, item, 1))
            elif key == "delay":
                secs, _, every = value.partition("/")
                plan = replace(
                    plan,
                    delay_s=_seconds(secs, item),
                    delay_every=_int(every, item, 1) if every else 1,
                )
            elif key == "stall":
                secs, at, after = value.partition("@")
                if not at:
                    raise ValueError(f"fault {item!r}: expected stall=SECONDS@BLOCKS")
                plan = replace(plan, stall_s=_seconds(secs, item), stall_after=_int(after, item, 0))
            elif key == "error":
                plan = replace(plan, error_after=_int(value, item, 0))
            elif key == "exit":
                plan = replace(plan, exit_after=_int(value, item, 0))
            else:
                raise ValueError(
                    f"unknown fault {key!r} (known: drop, nulls, delay, stall, error, exit)"
                )
    return plan
