"""GPS time for operators: parse GPS seconds or ISO-8601 UTC, print both (leap seconds exact).

The leap-second table ends with the one of 2017-01-01 (GPS - UTC = 18 s), the offset
``router.protocol.gps`` uses for "now"; a new leap second is one line here.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

NS = 1_000_000_000
GPS_EPOCH_UNIX = 315964800

# UTC days (00:00:00) on which GPS - UTC grew by one second, since the GPS epoch.
_LEAP_DAYS = (
    "1981-07-01",
    "1982-07-01",
    "1983-07-01",
    "1985-07-01",
    "1988-01-01",
    "1990-01-01",
    "1991-01-01",
    "1992-07-01",
    "1993-07-01",
    "1994-07-01",
    "1996-01-01",
    "1997-07-01",
    "1999-01-01",
    "2006-01-01",
    "2009-01-01",
    "2012-07-01",
    "2015-07-01",
    "2017-01-01",
)
_LEAP_UNIX = [int(datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp()) for d in _LEAP_DAYS]
# GPS second at which each offset starts: unix - epoch + offset after it
_LEAP_GPS = [u - GPS_EPOCH_UNIX + k + 1 for k, u in enumerate(_LEAP_UNIX)]

_GPS_NUMBER = re.compile(r"^\d+(\.\d{1,9})?$")


class TimeFormatError(ValueError):
    """A time that is neither GPS seconds nor ISO-8601 UTC."""


def unix_ns_to_gps_ns(unix_ns: int) -> int:
    leaps = bisect_right(_LEAP_UNIX, unix_ns // NS)
    return unix_ns - GPS_EPOCH_UNIX * NS + leaps * NS


def gps_ns_to_unix_ns(gps_ns: int) -> int:
    leaps = bisect_right(_LEAP_GPS, gps_ns // NS)
    return gps_ns + GPS_EPOCH_UNIX * NS - leaps * NS


def parse_time(text: str) -> int:
    """GPS ns of ``text``: GPS seconds (``1400000000``, ``1400000000.25``) or ISO-8601 UTC
    (``2024-05-18T12:00:00Z``, ``2024-05-18T12:00:00.5+00:00``)."""
    value = text.strip()
    if _GPS_NUMBER.match(value):
        try:
            return int(Decimal(value) * NS)
        except InvalidOperation as exc:  # pragma: no cover (the pattern rules it out)
            raise TimeFormatError(f"{text!r} is not a GPS time") from exc
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise TimeFormatError(
            f"{text!r} is neither GPS seconds nor ISO-8601 UTC (e.g. 2024-05-18T12:00:00Z)"
        ) from exc
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise TimeFormatError(f"{text!r}: give UTC explicitly (a 'Z' or '+00:00' suffix)")
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    unix_ns = (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000
    return unix_ns_to_gps_ns(unix_ns)


def gps_text(gps_ns: int) -> str:
    """GPS seconds, exact: ``1400000000`` or ``1400000000.25``."""
    whole, frac = divmod(gps_ns, NS)
    return str(whole) if not frac else f"{whole}.{frac:09d}".rstrip("0")


def utc_text(gps_ns: int) -> str:
    """ISO-8601 UTC, to the second unless there is a fraction (``2024-05-18T12:00:00Z``)."""
    unix_ns = gps_ns_to_unix_ns(gps_ns)
    whole, frac = divmod(unix_ns, NS)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += f".{frac:09d}".rstrip("0")
    return stamp + "Z"


def age_text(seconds: float) -> str:
    """A duration for people: ``0 s``, ``90 s``, ``10 min``, ``2 h``, ``1.5 d``, ``inf``."""
    if seconds == float("inf"):
        return "inf"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % (size / 10) == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
