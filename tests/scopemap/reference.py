"""A plain brute-force planner: scans every endpoint for every channel and piece.

It restates the planner's documented rules without any index, so property tests can check
that the indexed planner agrees with it.
"""

from __future__ import annotations

from itertools import pairwise

from scopemap import ScopeMap, parse_channel_name

S = 1_000_000_000


def window(sm: ScopeMap, i: int, now: int) -> tuple[int | None, int | None]:
    return sm.endpoints[i].retention.window_ns(now)


def covers(sm: ScopeMap, i: int, now: int, a: int, b: int | None) -> bool:
    """Endpoint ``i`` retains all of ``[a, b)`` (b None: open-ended)."""
    lo, hi = window(sm, i, now)
    return (lo is None or lo <= a) and (hi is None or (b is not None and hi >= b))


def specificity(sm: ScopeMap, i: int, channel: str) -> int:
    try:
        parsed = parse_channel_name(channel)
    except ValueError:
        return 0
    best = 0
    for e in sm.endpoints[i].scopes:
        if e.replay is None and e.matches(parsed, channel):
            best = max(best, e.specificity)
    return best


def valid(sm: ScopeMap, now: int, channel: str, a: int, b: int | None) -> tuple[int, ...]:
    """E(c, [a,b)): most specific claimers among those retaining the whole piece."""
    scored = [
        (specificity(sm, i, channel), i)
        for i in range(len(sm.endpoints))
        if covers(sm, i, now, a, b)
    ]
    top = max((s for s, _ in scored), default=0)
    return tuple(i for s, i in scored if s == top and s > 0)


def live_valid(sm: ScopeMap, channel: str) -> tuple[int, ...]:
    scored = [
        (specificity(sm, i, channel), i)
        for i, ep in enumerate(sm.endpoints)
        if ep.retention.is_live
    ]
    top = max((s for s, _ in scored), default=0)
    return tuple(i for s, i in scored if s == top and s > 0)


def pieces(sm: ScopeMap, now: int, start: int, end: int | None) -> list[tuple[int, int | None]]:
    points = set()
    if end is None and now - now % 10**9 > start:
        # an open-ended request: what is missing before now lacks retention, after it a
        # live endpoint; the two are reported separately
        points.add(now - now % 10**9)
    for i in range(len(sm.endpoints)):
        for p in window(sm, i, now):
            if p is not None and p > start and (end is None or p < end):
                points.add(p)
    bounds: list[int | None] = [start, *sorted(points), end]
    return [(a, b) for a, b in pairwise(bounds)]  # type: ignore[misc]


Group = tuple[tuple[str, ...], tuple[int, ...]]


def greedy_groups(cands: dict[str, tuple[int, ...]]) -> set[Group]:
    """Upstream's greedy set cover, restated naively (ties: lowest endpoint index)."""
    remaining = {c: set(e) for c, e in cands.items() if e}
    out = set()
    while remaining:
        eps = sorted({e for s in remaining.values() for e in s})
        sets = {e: frozenset(c for c, s in remaining.items() if e in s) for e in eps}
        best = min(eps, key=lambda e: (-len(sets[e]), e))
        group = sets[best]
        replicas = tuple(e for e in eps if sets[e] == group)
        out.add((tuple(sorted(group)), replicas))
        for c in group:
            del remaining[c]
    return out


def reference_slices(sm: ScopeMap, now: int, channels: list[str], start: int, end: int | None):
    """Greedy fewest slices: [(a, b, {channel: candidates or None})]."""
    result = []
    cur_a = None
    running: dict[str, frozenset[int] | str] = {}
    for a, b in pieces(sm, now, start, end):
        fresh: dict[str, frozenset[int] | str] = {}
        for c in channels:
            got = valid(sm, now, c, a, b)
            if got:
                fresh[c] = frozenset(got)
            elif not any(specificity(sm, i, c) for i in range(len(sm.endpoints))):
                fresh[c] = "scope"
            else:
                fresh[c] = "live" if b is None else "retention"
        if cur_a is None:
            cur_a, running = a, fresh
            continue
        merged: dict[str, frozenset[int] | str] = {}
        ok = True
        for c in channels:
            old, new = running[c], fresh[c]
            if isinstance(old, str) or isinstance(new, str):
                ok = ok and old == new
                merged[c] = old
            else:
                merged[c] = old & new
                ok = ok and bool(merged[c])
        if ok:
            running = merged
        else:
            result.append((cur_a, a, running))
            cur_a, running = a, fresh
    result.append((cur_a, end, running))
    return result
