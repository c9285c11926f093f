"""Why a plan is what it is: the planner's answer annotated with the claims behind it.

``explain_stream`` / ``explain_describe`` / ``explain_find`` run the one planner
(``plan_stream`` / ``plan_describe`` / ``plan_find``) and never re-decide anything: slices,
groups, replicas and uncovered ranges are the plan's. What they add is the evidence, read
from the map: for every endpoint of a group, the scope entry that made it claim the group's
channels (kind and file position) and its retention window at ``now``; for every other
endpoint claiming those channels, why it lost:

- ``retention``: its window does not hold the whole slice (or the instant);
- ``less-specific``: a more specific claim covers the slice (channel > subsystem > all);
- ``not-nearest``: (``time: null`` metadata) another claimer reaches nearer to now;
- ``grouped``: it could serve them, but the planner's set cover asked another endpoint,
  one that serves more of the request's channels in one call (ties: map order).

These reasons are exhaustive for a correct plan (the property tests check every one holds),
so an operator reads *why* without reading YAML. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from scopemap.index import RoutingIndex
from scopemap.model import Endpoint, Retention, ScopeEntry, parse_channel_name
from scopemap.plan import (
    ChannelGroup,
    DescribePlan,
    DescribeRequest,
    FindPlan,
    FindRequest,
    Reason,
    StreamPlan,
    StreamRequest,
    Uncovered,
)
from scopemap.planner import plan_describe, plan_find, plan_stream, truncate_now

__all__ = [
    "ClaimRef",
    "Contender",
    "DescribeExplanation",
    "FindExplanation",
    "GroupWhy",
    "Lost",
    "SliceWhy",
    "StreamExplanation",
    "TargetWhy",
    "UncoveredWhy",
    "Window",
    "claim_of",
    "explain_describe",
    "explain_find",
    "explain_stream",
    "window_of",
]


class Lost(StrEnum):
    RETENTION = "retention"
    LESS_SPECIFIC = "less-specific"
    NOT_NEAREST = "not-nearest"
    GROUPED = "grouped"
    INACTIVE = "inactive"  # find: not active at the request's time
    CONTAINED = "contained"  # find: its scope is answered by a larger target


@dataclass(frozen=True)
class ClaimRef:
    """One scope entry of one endpoint, with where it is written."""

    endpoint: str
    domain: str
    kind: str  # "channel" | "subsystem" | "all"
    value: str | None
    line: int
    column: int

    @property
    def label(self) -> str:
        if self.kind == "all":
            return f"all {self.domain}"
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Window:
    """An endpoint's retention: ages as written and the absolute ``[lo, hi)`` at ``now``
    (``None``: unbounded; ``hi`` None means the endpoint serves live data)."""

    newest_s: float
    oldest_s: float
    lo: int | None
    hi: int | None
    line: int

    def covers(self, start: int | None, end: int | None) -> bool:
        """Holds all of ``[start, end)`` (``start`` None: a live stream, needs a live window)."""
        if start is None:
            return self.hi is None
        lo_ok = self.lo is None or self.lo <= start
        hi_ok = self.hi is None or (end is not None and end <= self.hi)
        return lo_ok and hi_ok

    def overlaps(self, start: int | None, end: int | None) -> bool:
        if start is None:
            return self.hi is None
        lo_ok = self.lo is None or end is None or self.lo < end
        return lo_ok and (self.hi is None or start < self.hi)

    def holds(self, t: int) -> bool:
        return (self.lo is None or self.lo <= t) and (self.hi is None or t < self.hi)


@dataclass(frozen=True)
class Contender:
    """An endpoint claiming some channels: its best claim on them and its window; ``why``
    and ``detail`` are set when it lost."""

    endpoint: str
    channels: tuple[str, ...]
    claim: ClaimRef
    window: Window
    why: Lost | None = None
    detail: str = ""


@dataclass(frozen=True)
class GroupWhy:
    group: ChannelGroup
    chosen: tuple[Contender, ...]  # one per (endpoint, claim), endpoints in preference order
    lost: tuple[Contender, ...]


@dataclass(frozen=True)
class SliceWhy:
    start: int | None
    end: int | None
    groups: tuple[GroupWhy, ...]


@dataclass(frozen=True)
class UncoveredWhy:
    uncovered: Uncovered
    claimers: tuple[Contender, ...]  # who claims these channels, each with why it cannot


@dataclass(frozen=True)
class StreamExplanation:
    plan: StreamPlan
    now_ns: int
    slices: tuple[SliceWhy, ...]
    uncovered: tuple[UncoveredWhy, ...]


@dataclass(frozen=True)
class DescribeExplanation:
    plan: DescribePlan
    now_ns: int
    groups: tuple[GroupWhy, ...]
    uncovered: tuple[UncoveredWhy, ...]


@dataclass(frozen=True)
class TargetWhy:
    endpoints: tuple[str, ...]
    claims: tuple[ClaimRef, ...]  # the scope the target answers for (preferred endpoint's)


@dataclass(frozen=True)
class FindExplanation:
    plan: FindPlan
    now_ns: int
    targets: tuple[TargetWhy, ...]
    not_asked: tuple[Contender, ...]


# --------------------------------------------------------------------------- evidence


def claim_of(ep: Endpoint, entry: ScopeEntry) -> ClaimRef:
    pos = entry.source
    return ClaimRef(
        ep.url,
        entry.domain,
        entry.kind,
        entry.value,
        pos.line if pos else 0,
        pos.column if pos else 0,
    )


def window_of(retention: Retention, now_ns: int) -> Window:
    lo, hi = retention.window_ns(now_ns)
    line = retention.source.line if retention.source else 0
    return Window(retention.newest_s, retention.oldest_s, lo, hi, line)


def _best_entry(entries: Iterable[ScopeEntry], channel: str) -> ScopeEntry | None:
    """The endpoint's most specific entry matching ``channel`` (first in YAML order)."""
    try:
        name = parse_channel_name(channel)
    except ValueError:
        return None
    best: ScopeEntry | None = None
    for e in entries:
        if e.matches(name, channel) and (best is None or e.specificity > best.specificity):
            best = e
    return best


class _Claims:
    """Per channel, every endpoint's best claim in the non-replay view (YAML order)."""

    def __init__(self, index: RoutingIndex, now_ns: int) -> None:
        self.index = index
        self.now_ns = now_ns
        self.windows = [window_of(ep.retention, now_ns) for ep in index.scope_map.endpoints]
        self._cache: dict[str, list[tuple[int, ScopeEntry]]] = {}

    def of(self, channel: str) -> list[tuple[int, ScopeEntry]]:
        found = self._cache.get(channel)
        if found is None:
            found = []
            for idx, entries in sorted(self.index.base.entries.items()):
                best = _best_entry(entries, channel)
                if best is not None:
                    found.append((idx, best))
            self._cache[channel] = found
        return found

    def contender(self, idx: int, entry: ScopeEntry, channels: Sequence[str]) -> Contender:
        ep = self.index.scope_map.endpoints[idx]
        return Contender(ep.url, tuple(channels), claim_of(ep, entry), self.windows[idx])


def _gather(
    items: Iterable[tuple[int, ScopeEntry, str, Lost | None, str]], claims: _Claims
) -> tuple[Contender, ...]:
    """Contenders from per-channel findings, channels merged per (endpoint, claim, verdict)."""
    merged: dict[tuple[int, int, Lost | None, str], tuple[ScopeEntry, list[str]]] = {}
    for idx, entry, channel, why, detail in items:
        key = (idx, id(entry), why, detail)
        merged.setdefault(key, (entry, []))[1].append(channel)
    out = []
    for (idx, _, why, detail), (entry, chans) in sorted(
        merged.items(), key=lambda kv: (kv[0][0], kv[1][1][0])
    ):
        c = claims.contender(idx, entry, sorted(chans))
        out.append(Contender(c.endpoint, c.channels, c.claim, c.window, why, detail))
    return tuple(out)


def _explain_group(group: ChannelGroup, claims: _Claims, verdict: _Verdict) -> GroupWhy:
    urls = claims.index.urls
    chosen_idx = [urls.index(u) for u in group.endpoints]
    chosen: list[tuple[int, ScopeEntry, str, Lost | None, str]] = []
    lost: list[tuple[int, ScopeEntry, str, Lost | None, str]] = []
    for channel in group.channels:
        mine = claims.of(channel)
        by_ep = dict(mine)
        top = max(by_ep[i].specificity for i in chosen_idx)
        winner = by_ep[chosen_idx[0]]
        for idx, entry in mine:
            if idx in chosen_idx:
                chosen.append((idx, entry, channel, None, ""))
                continue
            why, detail = verdict(idx, entry, top, winner, group)
            lost.append((idx, entry, channel, why, detail))
    order = {i: k for k, i in enumerate(chosen_idx)}
    picked = sorted(_gather(chosen, claims), key=lambda c: order[urls.index(c.endpoint)])
    return GroupWhy(group, tuple(picked), _gather(lost, claims))


class _Verdict:
    """Why endpoint ``idx`` is not in a group of a slice / an instant (see module doc)."""

    def __init__(self, claims: _Claims, start: int | None, end: int | None, *, instant: bool):
        self.claims = claims
        self.start = start
        self.end = end
        self.instant = instant

    def holds(self, idx: int) -> bool:
        w = self.claims.windows[idx]
        if self.instant:
            return w.holds(self.start) if self.start is not None else True
        return w.covers(self.start, self.end)

    def __call__(
        self, idx: int, entry: ScopeEntry, top: int, winner: ScopeEntry, group: ChannelGroup
    ) -> tuple[Lost, str]:
        w = self.claims.windows[idx]
        if not self.holds(idx):
            if self.instant:
                return Lost.RETENTION, "retention does not hold this instant"
            part = "only part of" if w.overlaps(self.start, self.end) else "none of"
            return Lost.RETENTION, f"retention holds {part} this slice"
        if entry.specificity < top:
            return (
                Lost.LESS_SPECIFIC,
                f"its {entry.kind} claim is less specific than the {winner.kind} claim "
                f"of {group.endpoints[0]}",
            )
        return (
            Lost.GROUPED,
            f"could serve it, but {group.endpoints[0]} serves more of the request's channels "
            "in one call (ties: map order)",
        )


class _NearestVerdict(_Verdict):
    """``time: null`` metadata: the claimers reaching nearest to now win, then specificity."""

    def __init__(self, claims: _Claims) -> None:
        super().__init__(claims, None, None, instant=True)

    def __call__(
        self, idx: int, entry: ScopeEntry, top: int, winner: ScopeEntry, group: ChannelGroup
    ) -> tuple[Lost, str]:
        ages = self.claims.index.ages
        best = ages[self.claims.index.urls.index(group.endpoints[0])][0]
        if ages[idx][0] > best:
            return (
                Lost.NOT_NEAREST,
                f"its newest data is {self.claims.windows[idx].newest_s:g} s old; "
                f"{group.endpoints[0]} reaches nearer to now",
            )
        return super().__call__(idx, entry, top, winner, group)


_UNCOVERED = {
    Reason.NO_LIVE: "it does not serve live data",
    Reason.NO_RETENTION: "its retention does not hold this range",
    Reason.NO_SCOPE: "",
    Reason.NO_REPLAY: "it does not serve this replay",
}


def _uncovered(items: Sequence[Uncovered], claims: _Claims) -> tuple[UncoveredWhy, ...]:
    out = []
    for u in items:
        found = []
        for channel in u.channels:
            for idx, entry in claims.of(channel):
                found.append((idx, entry, channel, Lost.RETENTION, _UNCOVERED[u.reason]))
        out.append(UncoveredWhy(u, _gather(found, claims)))
    return tuple(out)


# --------------------------------------------------------------------------- requests


def explain_stream(index: RoutingIndex, request: StreamRequest, now_ns: int) -> StreamExplanation:
    if request.replay_id is not None:
        raise ValueError("explain covers non-replay requests")
    plan = plan_stream(index, request, now_ns)
    claims = _Claims(index, now_ns)
    slices = []
    for s in plan.slices:
        verdict = _Verdict(claims, s.start, s.end, instant=False)
        groups = tuple(_explain_group(g, claims, verdict) for g in s.groups)
        slices.append(SliceWhy(s.start, s.end, groups))
    return StreamExplanation(plan, now_ns, tuple(slices), _uncovered(plan.uncovered, claims))


def explain_describe(
    index: RoutingIndex, request: DescribeRequest, now_ns: int
) -> DescribeExplanation:
    if request.replay_id is not None:
        raise ValueError("explain covers non-replay requests")
    plan = plan_describe(index, request, now_ns)
    claims = _Claims(index, now_ns)
    verdict: _Verdict
    if request.time is None:
        verdict = _NearestVerdict(claims)
    else:
        verdict = _Verdict(claims, request.time, request.time, instant=True)
    groups = tuple(_explain_group(g, claims, verdict) for g in plan.groups)
    return DescribeExplanation(plan, now_ns, groups, _uncovered(plan.uncovered, claims))


def explain_find(index: RoutingIndex, request: FindRequest, now_ns: int) -> FindExplanation:
    if request.replay_id is not None:
        raise ValueError("explain covers non-replay requests")
    plan = plan_find(index, request, now_ns)
    eps = index.scope_map.endpoints
    windows = [window_of(ep.retention, now_ns) for ep in eps]
    targets = []
    asked: set[int] = set()
    for t in plan.targets:
        first = index.urls.index(t.endpoints[0])
        asked.update(index.urls.index(u) for u in t.endpoints)
        entries = index.base.entries.get(first, ())
        targets.append(TargetWhy(t.endpoints, tuple(claim_of(eps[first], e) for e in entries)))
    n = truncate_now(now_ns)
    members = sorted(index.base.entries)
    nearest = min((index.ages[i][0] for i in members), default=0.0)
    not_asked = []
    for idx in members:
        if idx in asked:
            continue
        entries = index.base.entries[idx]
        w = windows[idx]
        if request.time is None and index.ages[idx][0] > nearest:
            why, detail = Lost.INACTIVE, "another endpoint reaches nearer to now"
        elif (
            request.time is not None
            and not index.ages[idx][0] < n - request.time <= (index.ages[idx][1])
        ):
            why, detail = Lost.INACTIVE, "retention does not hold the requested time"
        else:
            why, detail = Lost.CONTAINED, "its scope is inside a target already asked"
        ep = eps[idx]
        not_asked.append(
            Contender(ep.url, (), claim_of(ep, entries[0]), w, why, detail)
            if entries
            else Contender(ep.url, (), ClaimRef(ep.url, "", "all", None, 0, 0), w, why, detail)
        )
    return FindExplanation(plan, now_ns, tuple(targets), tuple(not_asked))
