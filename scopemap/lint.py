"""Warnings about a valid scope map: things that load fine but probably are not what was meant.

- SM202 retention gap: for each domain and each scope unit (the domain wildcard, a subsystem,
  a channel), the union of the age windows of every endpoint able to serve that unit leaves a
  hole between its newest and oldest ends.
- SM203 a domain that no live endpoint claims: live requests for it cannot be served.
- SM204 an entry that can never win: beside ``all: true`` of the same endpoint, domain and
  replay context (and without its own ``direct_read``), or a plain repeat.
- SM205 a replay that no endpoint references.
Only untagged entries count for gaps and live coverage: they serve non-replay requests.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from scopemap.model import ScopeEntry, ScopeMap, SourcePos, parse_channel_name

# (code, message, position)
Warning_ = tuple[str, str, SourcePos]
Age = tuple[float, float]  # (newest, oldest]


def lint(
    scope_map: ScopeMap,
    retention_pos: Callable[[str], SourcePos],
    domain_pos: Callable[[str, str], SourcePos],
) -> list[Warning_]:
    """``retention_pos(url)`` / ``domain_pos(url, domain)`` locate the YAML keys."""
    out: list[Warning_] = []
    out.extend(_gaps(scope_map, retention_pos))
    out.extend(_no_live(scope_map, domain_pos))
    out.extend(_inert(scope_map))
    out.extend(_unused_replays(scope_map))
    return out


def _union_gaps(windows: Iterable[Age]) -> list[tuple[float, float, Age]]:
    """Holes inside the union of distinct ``(newest, oldest]`` windows, as
    ``(from, to, window_before)`` (the window whose end the hole starts at)."""
    ordered = sorted(windows)
    if not ordered:
        return []
    out = []
    before = ordered[0]
    reach = before[1]
    for window in ordered[1:]:
        newest, oldest = window
        if newest > reach:
            out.append((reach, newest, before))
        if oldest > reach:
            reach, before = oldest, window
    return out


def _gaps(sm: ScopeMap, retention_pos: Callable[[str], SourcePos]) -> Iterator[Warning_]:
    # Per domain: who claims everything, who claims each subsystem, each channel; each
    # claimant as its (window, url), read once per endpoint.
    wild: dict[str, list[tuple[Age, str]]] = defaultdict(list)
    subs: dict[tuple[str, str], list[tuple[Age, str]]] = defaultdict(list)
    chans: dict[tuple[str, str], list[tuple[Age, str]]] = defaultdict(list)
    for ep in sm.endpoints:
        claimant = ((ep.retention.newest_s, ep.retention.oldest_s), ep.url)
        for e in ep.scopes:
            if e.replay is not None:
                continue
            if e.kind == "all":
                wild[e.domain].append(claimant)
            elif e.kind == "subsystem" and e.value is not None:
                subs[(e.domain, e.value)].append(claimant)
            elif e.value is not None:
                chans[(e.domain, e.value)].append(claimant)
    # (domain, label kind, name, claimants); labels are only written for a reported gap
    units: list[tuple[str, str, str, list[tuple[Age, str]]]] = []
    for domain, eps in wild.items():
        units.append((domain, "all", domain, eps))
    for (domain, sub), eps in subs.items():
        units.append((domain, "subsystem", sub, eps + wild.get(domain, [])))
    for (domain, name), eps in chans.items():
        sub = parse_channel_name(name).subsystem
        more = subs.get((domain, sub), []) + wild.get(domain, [])
        units.append((domain, "channel", name, eps + more))
    reported: set[tuple[str, float, float]] = set()
    # many units share the same few retention windows (tiers): holes computed once per set
    holes: dict[frozenset[Age], list[tuple[float, float, Age]]] = {}
    for domain, kind, name, eps in units:
        windows = dict(eps)  # the last url of each window, as before
        key = frozenset(windows)
        found = holes.get(key)
        if found is None:
            found = holes[key] = _union_gaps(key)
        for lo, hi, before in found:
            if (domain, lo, hi) in reported:
                continue
            reported.add((domain, lo, hi))
            url = windows[before]
            upper = "inf" if math.isinf(hi) else f"{hi:g} s"
            label = {
                "all": f"{domain} (all)",
                "subsystem": f"{domain} subsystem {name}",
                "channel": f"channel {name}",
            }[kind]
            msg = (
                f"{label}: no endpoint serves data aged {lo:g} s to {upper} "
                f"(retention gap after {url})"
            )
            yield "SM202", msg, retention_pos(url)


def _no_live(sm: ScopeMap, domain_pos: Callable[[str, str], SourcePos]) -> Iterator[Warning_]:
    first: dict[str, SourcePos] = {}
    live: set[str] = set()
    for ep in sm.endpoints:
        is_live = ep.retention.is_live
        for e in ep.scopes:
            if e.replay is not None:
                continue
            if e.domain not in first:
                first[e.domain] = domain_pos(ep.url, e.domain)
            if is_live:
                live.add(e.domain)
    for domain, pos in first.items():
        if domain not in live:
            msg = f"domain {domain!r} has no live endpoint (newest: 0): live requests fail"
            yield "SM203", msg, pos


def _inert_in(entries: tuple[ScopeEntry, ...]) -> Iterator[Warning_]:
    if len(entries) < 2:
        return  # one entry can neither repeat nor stand beside a wildcard
    by_ctx: dict[tuple[str, str | None], list[ScopeEntry]] = defaultdict(list)
    for e in entries:
        by_ctx[(e.domain, e.replay)].append(e)
    for (domain, _), group in by_ctx.items():
        wildcard = next((e for e in group if e.kind == "all"), None)
        seen: dict[tuple[str, str | None], ScopeEntry] = {}
        flagged: set[SourcePos | None] = set()
        for e in group:
            where = e.source or SourcePos(1, 1)
            if e.source in flagged:
                continue
            if wildcard is not None and e is not wildcard and e.direct_read is None:
                wline = wildcard.source.line if wildcard.source else 0
                msg = (
                    f"{domain} entry {e.value!r} has no routing effect beside "
                    f"'all: true' (line {wline})"
                )
                flagged.add(e.source)
                yield "SM204", msg, where
                continue
            key = (e.kind, e.value)
            prev = seen.get(key)
            if prev is not None and prev.source != e.source and e.direct_read is None:
                pline = prev.source.line if prev.source else 0
                flagged.add(e.source)
                yield "SM204", f"{domain} entry {e.value!r} repeats line {pline}", where
                continue
            seen.setdefault(key, e)


def _inert(sm: ScopeMap) -> Iterator[Warning_]:
    for ep in sm.endpoints:
        if len(ep.scopes) > 1:  # one entry can neither repeat nor stand beside a wildcard
            yield from _inert_in(ep.scopes)
        for entries in ep.replay_scopes.values():
            yield from _inert_in(entries)


def _unused_replays(sm: ScopeMap) -> Iterator[Warning_]:
    used = {rid for ep in sm.endpoints for rid in ep.replay_ids}
    for name, replay in sm.replays.items():
        if name not in used:
            msg = f"replay {name!r} is not referenced by any endpoint (replay_ids or replay tag)"
            yield "SM205", msg, replay.source or SourcePos(1, 1)
