"""Retention windows in seconds of age (``--retention NEWEST,OLDEST``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.protocol.errors import UnavailableError

__all__ = ["Retention", "parse_retention"]

NS = 1_000_000_000


@dataclass(frozen=True)
class Retention:
    """Data aged between ``newest_s`` and ``oldest_s`` seconds is served (inclusive)."""

    newest_s: float = 0.0
    oldest_s: float = math.inf

    def __post_init__(self) -> None:
        if self.newest_s < 0 or self.oldest_s < self.newest_s:
            raise ValueError(
                f"retention needs 0 <= newest <= oldest, got {self.newest_s}, {self.oldest_s}"
            )

    @property
    def is_live(self) -> bool:
        return self.newest_s == 0

    def to_json(self) -> dict[str, float | int | str]:
        def num(v: float) -> float | int | str:
            return "inf" if math.isinf(v) else (int(v) if v == int(v) else v)

        return {"newest": num(self.newest_s), "oldest": num(self.oldest_s)}

    def window_ns(self, now_ns: int) -> tuple[float, int]:
        """``(oldest instant, newest instant)`` served at ``now_ns`` (oldest may be -inf)."""
        lo = -math.inf if math.isinf(self.oldest_s) else now_ns - round(self.oldest_s * NS)
        return lo, now_ns - round(self.newest_s * NS)

    def describe(self, now_ns: int) -> str:
        lo, hi = self.window_ns(now_ns)
        oldest = "inf" if math.isinf(self.oldest_s) else f"{self.oldest_s:g}"
        span = f"[{'-inf' if math.isinf(lo) else int(lo)}, {hi}]"
        return (
            f"newest {self.newest_s:g} s, oldest {oldest} s of age: GPS ns {span} at now {now_ns}"
        )

    def check_time(self, t_ns: int | None, now_ns: int, what: str) -> None:
        """UnavailableError unless the instant (None = now/live) is retained."""
        if self.newest_s == 0 and math.isinf(self.oldest_s):
            return
        lo, hi = self.window_ns(now_ns)
        if t_ns is None:
            if not self.is_live:
                raise UnavailableError(
                    f"{what} at now (live) is outside this server's retention "
                    f"({self.describe(now_ns)})"
                )
            return
        if t_ns < lo or (t_ns > hi and not self.is_live):
            raise UnavailableError(
                f"{what} at GPS ns {t_ns} is outside this server's retention "
                f"({self.describe(now_ns)})"
            )

    def check_span(self, start: int | None, end: int | None, now_ns: int, what: str) -> None:
        """UnavailableError unless ``[start, end)`` is retained (None start = live, None end =
        open-ended, both need a live server)."""
        if self.newest_s == 0 and math.isinf(self.oldest_s):
            return
        lo, hi = self.window_ns(now_ns)
        bad = (
            (start is None and not self.is_live)
            or (end is None and not self.is_live)
            or (start is not None and start < lo)
            or (end is not None and not self.is_live and end > hi)
        )
        if bad:
            s = "now" if start is None else str(start)
            e = "open end" if end is None else str(end)
            raise UnavailableError(
                f"{what} [{s}, {e}) is outside this server's retention ({self.describe(now_ns)})"
            )


def parse_retention(text: str) -> Retention:
    """``NEWEST,OLDEST`` in seconds of age; ``inf`` allowed for OLDEST."""
    newest, comma, oldest = text.partition(",")
    if not comma:
        raise ValueError(f"retention {text!r}: expected NEWEST,OLDEST (seconds of age)")
    try:
        return Retention(float(newest), float(oldest))
    except ValueError as exc:
        raise ValueError(f"retention {text!r}: {exc}") from None
