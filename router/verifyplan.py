"""What ``router verify`` asks each endpoint and how it judges the answers. Pure: no I/O.

For one endpoint of a scope map (its claims, its retention) and GPS ``now``:

- ``scope_probe(entry)``: a Find whose pattern selects exactly the claim (a channel, a
  subsystem, a whole domain; upstream matches patterns at the start of a name) at a time
  inside the claimed window; the claim holds when channels come back.
- ``retention_probes(retention)``: Describe times at the window's newest and oldest edges,
  ``margin`` inside (must be answered) and ``margin`` outside (must be refused); a live
  window has no newer outside, an infinite one is probed a year back.
- ``compare_scope_map(...)``: the endpoint's own ``scope-map`` entry against the claim.

The runner (``router.verify``) performs the calls and hands the answers back here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scopemap.model import Endpoint, Retention, ScopeEntry, parse_channel_name

NS = 1_000_000_000
YEAR_S = 365 * 86400
REUSE_MARKER = "arrow-flight-reuse-connection://?"


class Status(StrEnum):
    OK = "ok"
    DRIFT = "drift"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    """One verdict on one claim, with the map line it is about."""

    check: str  # "server-info" | "scope" | "retention" | "scope-map"
    status: Status
    line: int
    claim: str
    detail: str


def claim_label(entry: ScopeEntry) -> str:
    return f"all {entry.domain}" if entry.kind == "all" else f"{entry.kind} {entry.value}"


_SPECIAL = re.compile(r"([.^$*+?{}\[\]\\|()])")


def _escape(text: str) -> str:
    """``re.escape`` for names, leaving '-', '_' and ':' readable (not special here)."""
    return _SPECIAL.sub(r"\\\1", text)


def scope_pattern(entry: ScopeEntry) -> str:
    """A Find pattern matching exactly the channels ``entry`` claims (prefix-anchored)."""
    if entry.kind == "channel":
        return _escape(entry.value or "") + "$"
    if entry.kind == "subsystem":
        return _escape(f"{entry.domain}:{entry.value}") + "([-_]|$)"
    return _escape(f"{entry.domain}:")


def retention_label(retention: Retention) -> str:
    return f"newest {retention.newest_s:g} s, oldest {retention.oldest_s:g} s"


def inside_time(retention: Retention, now_ns: int, margin_s: float) -> int | None:
    """A time the claimed window holds: ``None`` (now) for a live endpoint, else just inside
    its newest edge."""
    if retention.is_live:
        return None
    return now_ns - round((retention.newest_s + _margin(retention, margin_s)) * NS)


def _margin(retention: Retention, margin_s: float) -> float:
    """``margin_s``, shrunk to a quarter of a narrow window so probes stay inside it."""
    if math.isinf(retention.oldest_s):
        return margin_s
    return min(margin_s, (retention.oldest_s - retention.newest_s) / 4)


@dataclass(frozen=True)
class TimeProbe:
    label: str
    time: int  # GPS ns
    answered: bool  # what the map says: answered (True) or refused (False)


def retention_probes(retention: Retention, now_ns: int, margin_s: float) -> list[TimeProbe]:
    m = _margin(retention, margin_s)

    def at(age_s: float) -> int:
        return now_ns - round(age_s * NS)

    newest, oldest = retention.newest_s, retention.oldest_s
    out: list[TimeProbe] = []
    if retention.is_live:
        out.append(TimeProbe("newest edge: now", now_ns, True))
    else:
        out.append(TimeProbe(f"newest edge: {m:g} s older than {newest:g} s", at(newest + m), True))
        out.append(
            TimeProbe(f"just newer than newest {newest:g} s (by {m:g} s)", at(newest - m), False)
        )
    if math.isinf(oldest):
        out.append(TimeProbe("a year back (oldest: inf)", at(YEAR_S), True))
    else:
        out.append(TimeProbe(f"oldest edge: {m:g} s newer than {oldest:g} s", at(oldest - m), True))
        out.append(
            TimeProbe(f"just older than oldest {oldest:g} s (by {m:g} s)", at(oldest + m), False)
        )
    return out


def judge_time(
    probe: TimeProbe, channel: str, error: str | None, line: int, label: str = "retention"
) -> Finding:
    """``error`` None: the Describe was answered; else the refusal's text."""
    head = f"describe {channel} at {probe.label}"
    answered = error is None
    if answered == probe.answered:
        got = "answered" if answered else "refused"
        return Finding("retention", Status.OK, line, label, f"{head}: {got}, as the map says")
    if answered:
        detail = f"{head}: answered, but the map says it is outside the window"
    else:
        detail = f"{head}: refused, but the map says it is retained: {shorten(error or '')}"
    return Finding("retention", Status.DRIFT, line, label, detail)


def judge_find(
    entry: ScopeEntry, pattern: str, names: Sequence[str] | None, error: str | None, line: int
) -> Finding:
    label = claim_label(entry)
    if error is not None:
        return Finding(
            "scope", Status.DRIFT, line, label, f"find {pattern!r} failed: {shorten(error)}"
        )
    assert names is not None
    if entry.kind == "channel" and entry.value not in names:
        return Finding(
            "scope", Status.DRIFT, line, label, f"find {pattern!r}: the channel is not there"
        )
    if not names:
        return Finding("scope", Status.DRIFT, line, label, f"find {pattern!r} returned no channels")
    sample = ", ".join(sorted(names)[:2])
    n = len(names)
    return Finding(
        "scope",
        Status.OK,
        line,
        label,
        f"find {pattern!r} returned {n} channel{'s' * (n != 1)} ({sample}{', …' if n > 2 else ''})",
    )


# --------------------------------------------------------------------------- scope-map action


def _age(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity", ".inf"):
        return math.inf
    return None


def own_entry(doc: Any, url: str) -> Mapping[str, Any] | None:
    """The endpoint's own entry in its ``scope-map`` answer: under its URL, else under its
    local endpoint, else the only one; None when it cannot be told apart."""
    if not isinstance(doc, dict) or not isinstance(doc.get("endpoints"), dict):
        return None
    endpoints: dict[str, Any] = doc["endpoints"]
    for key in (url, doc.get("local_endpoint"), REUSE_MARKER):
        if isinstance(key, str) and isinstance(endpoints.get(key), dict):
            return endpoints[key]  # type: ignore[no-any-return]
    if len(endpoints) == 1:
        only = next(iter(endpoints.values()))
        return only if isinstance(only, dict) else None
    return None


def own_retention(doc: Any, url: str) -> Retention | None:
    """The retention the endpoint reports for itself in its ``scope-map``, if readable."""
    own = own_entry(doc, url)
    ret = own.get("retention") if own is not None else None
    if not isinstance(ret, dict):
        return None
    newest, oldest = _age(ret.get("newest", 0)), _age(ret.get("oldest", "inf"))
    if newest is None or oldest is None or not 0 <= newest <= oldest:
        return None
    return Retention(newest, oldest)


def _covers(own_scopes: Mapping[str, Any], entry: ScopeEntry) -> bool:
    items = own_scopes.get(entry.domain)
    if not isinstance(items, list):
        return False
    subs = {i.get("subsystem") for i in items if isinstance(i, dict)}
    chans = {i.get("channel") for i in items if isinstance(i, dict)}
    if any(isinstance(i, dict) and i.get("all") is True for i in items):
        return True
    if entry.kind == "all":  # the domain is claimed: its scope-map lists parts of it
        return bool(items)
    if entry.kind == "subsystem":
        return entry.value in subs
    if entry.kind == "channel" and entry.value is not None:
        return entry.value in chans or parse_channel_name(entry.value).subsystem in subs
    return False


def compare_scope_map(ep: Endpoint, doc: Any, line: int) -> list[Finding]:
    own = own_entry(doc, ep.url)
    if own is None:
        return [
            Finding(
                "scope-map",
                Status.SKIPPED,
                line,
                "scope-map",
                "its scope-map answer has no entry for itself",
            )
        ]
    found: list[Finding] = []
    scopes = own.get("scopes") if isinstance(own.get("scopes"), dict) else {}
    assert isinstance(scopes, dict)
    for entry in ep.scopes:
        if entry.replay is not None:
            continue
        pos = entry.source.line if entry.source else line
        if not _covers(scopes, entry):
            found.append(
                Finding(
                    "scope-map",
                    Status.DRIFT,
                    pos,
                    claim_label(entry),
                    "its own scope-map does not list this claim",
                )
            )
    ret = own.get("retention") if isinstance(own.get("retention"), dict) else {}
    assert isinstance(ret, dict)
    newest, oldest = _age(ret.get("newest", 0)), _age(ret.get("oldest", "inf"))
    mine = ep.retention
    rline = mine.source.line if mine.source else line
    if newest is None or oldest is None:
        found.append(
            Finding(
                "scope-map",
                Status.SKIPPED,
                rline,
                retention_label(mine),
                f"its own retention is unreadable: {shorten(str(ret))}",
            )
        )
    elif (newest, oldest) != (float(mine.newest_s), float(mine.oldest_s)):
        found.append(
            Finding(
                "scope-map",
                Status.DRIFT,
                rline,
                retention_label(mine),
                f"its own scope-map says newest {newest:g} s, oldest {oldest:g} s",
            )
        )
    if not found:
        found.append(
            Finding(
                "scope-map",
                Status.OK,
                line,
                "scope-map",
                "its own scope-map agrees with every claim",
            )
        )
    return found


def shorten(text: str, limit: int = 300) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
