"""The planner's core: per-channel coverage timelines, time slicing and channel grouping.

1. *Timeline.* For one channel (all channels claimed by the same tiers share it), the valid
   endpoints at an instant are those whose retention covers the instant and whose claim on
   the channel is the most specific among those covering endpoints (so a carve-out wins where
   it has data and the wildcard serves the rest). The set only changes at window bounds, so a
   timeline is a short list of pieces ``[a, b)`` with either the candidate endpoints (sorted
   by YAML order) or the ``Reason`` nobody can serve it.
2. *Slicing.* Slices are cut greedily left to right: a slice extends while, for every channel,
   the intersection of its candidate sets stays non-empty (or it stays uncovered for the same
   reason). Feasibility of a slice is closed under taking sub-intervals, so this greedy choice
   gives the fewest slices, and a range some endpoint covers whole is never split.
3. *Grouping.* Within a slice, channels are grouped by greedy set cover (upstream §8.5, made
   deterministic): take the endpoint able to serve the most remaining channels (ties: first in
   YAML order); its group is those channels and its replicas every endpoint able to serve
   exactly the same remaining channels.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from scopemap.index import Claim, Tier
from scopemap.plan import ChannelGroup, Reason, Uncovered

Cands = tuple[int, ...]
State = Cands | Reason
INF = float("inf")


@dataclass(frozen=True)
class Piece:
    start: int | None
    end: int | None
    state: State


# --------------------------------------------------------------------------- claims


def _best(claims: Sequence[tuple[Claim, float, float]]) -> dict[int, tuple[Claim, float, float]]:
    """One claim per endpoint: its most specific (tiers are queried most specific first)."""
    out: dict[int, tuple[Claim, float, float]] = {}
    for item in claims:
        prev = out.get(item[0].endpoint)
        if prev is None or item[0].specificity > prev[0].specificity:
            out[item[0].endpoint] = item
    return out


def _top(claims: Sequence[Claim]) -> Cands:
    if not claims:
        return ()
    top = max(c.specificity for c in claims)
    return tuple(sorted(c.endpoint for c in claims if c.specificity == top))


def direct_reads(tiers: Sequence[Tier]) -> dict[int, str | None]:
    """Endpoint -> direct_read of its most specific claim among ``tiers``."""
    out: dict[int, str | None] = {}
    best: dict[int, int] = {}
    for tier in tiers:
        for c in tier.claims:
            if c.specificity > best.get(c.endpoint, 0):
                best[c.endpoint] = c.specificity
                out[c.endpoint] = c.direct_read
    return out


# --------------------------------------------------------------------------- timelines


def _abs(n: int, lo_age: float, hi_age: float) -> tuple[int | None, int | None]:
    """Age window ``(lo, hi]`` to absolute ``[start, end)`` at truncated now ``n``."""
    start = None if hi_age == INF else n - int(hi_age)
    end = None if lo_age == -INF else n - int(lo_age)
    return start, end


def range_timeline(
    tiers: Sequence[Tier], n: int, r0: int, r1: int | None, missing: Reason
) -> list[Piece]:
    """Coverage of ``[r0, r1)`` (``r1`` None: open-ended) at truncated now ``n``."""
    if not tiers:
        return [Piece(r0, r1, missing)]
    a0 = -INF if r1 is None else n - r1
    a1 = n - r0
    found: list[tuple[Claim, float, float]] = []
    for tier in tiers:
        found.extend(tier.tree.overlapping(a0, a1))
    claims = [(c, *_abs(n, lo, hi)) for c, lo, hi in _best(found).values()]
    points = set()
    for _, s, e in claims:
        for p in (s, e):
            if p is not None and p > r0 and (r1 is None or p < r1):
                points.add(p)
    bounds: list[int | None] = [r0, *sorted(points), r1]
    pieces: list[Piece] = []
    for a, b in pairwise(bounds):
        assert a is not None
        covering = [
            c
            for c, s, e in claims
            if (s is None or s <= a) and (e is None or (b is not None and e >= b))
        ]
        state: State = _top(covering) or (Reason.NO_LIVE if b is None else Reason.NO_RETENTION)
        if pieces and pieces[-1].state == state:
            pieces[-1] = Piece(pieces[-1].start, b, state)
        else:
            pieces.append(Piece(a, b, state))
    return pieces


def live_state(tiers: Sequence[Tier], missing: Reason) -> State:
    if not tiers:
        return missing
    found = [item for tier in tiers for item in tier.tree.covering(-INF)]
    return _top([c for c, _, _ in _best(found).values()]) or Reason.NO_LIVE


def instant_state(tiers: Sequence[Tier], n: int, t: int, missing: Reason) -> State:
    if not tiers:
        return missing
    found = [item for tier in tiers for item in tier.tree.covering(n - t)]
    return _top([c for c, _, _ in _best(found).values()]) or Reason.NO_RETENTION


def preferred_state(
    tiers: Sequence[Tier], ages: Sequence[tuple[float, float]], missing: Reason
) -> State:
    """``time: null`` metadata: the claimers reaching nearest to now, then most specific."""
    claims = list(_best([(c, 0.0, 0.0) for tier in tiers for c in tier.claims]).values())
    if not claims:
        return missing
    nearest = min(ages[c.endpoint][0] for c, _, _ in claims)
    return _top([c for c, _, _ in claims if ages[c.endpoint][0] == nearest])


def shift(pieces: list[Piece], offset: int) -> list[Piece]:
    if not offset:
        return pieces
    return [
        Piece(
            None if p.start is None else p.start + offset,
            None if p.end is None else p.end + offset,
            p.state,
        )
        for p in pieces
    ]


# --------------------------------------------------------------------------- slicing


def _before(end: int | None, x: int) -> bool:
    return end is not None and end <= x


def cut_slices(
    timelines: Mapping[str, list[Piece]], start: int, end: int | None
) -> list[tuple[int, int | None, dict[str, State]]]:
    """Greedy fewest slices over timelines that each tile ``[start, end)`` (see module doc)."""
    keys = list(timelines)
    cursor = dict.fromkeys(keys, 0)
    points = sorted(
        {p.start for pieces in timelines.values() for p in pieces[1:] if p.start is not None}
    )
    running: dict[str, State] = {k: timelines[k][0].state for k in keys}
    slices: list[tuple[int, int | None, dict[str, State]]] = []
    slice_start = start
    for x in points:
        fresh: dict[str, State] = {}
        for k in keys:
            pieces = timelines[k]
            while _before(pieces[cursor[k]].end, x):
                cursor[k] += 1
            fresh[k] = pieces[cursor[k]].state
        merged = _merge_all(running, fresh)
        if merged is None:
            slices.append((slice_start, x, running))
            slice_start, running = x, fresh
        else:
            running = merged
    slices.append((slice_start, end, running))
    return slices


def _merge_all(running: dict[str, State], fresh: dict[str, State]) -> dict[str, State] | None:
    out: dict[str, State] = {}
    for k, old in running.items():
        new = fresh[k]
        if isinstance(old, Reason) or isinstance(new, Reason):
            if old != new:
                return None
            out[k] = old
            continue
        both = tuple(sorted(set(old) & set(new)))
        if not both:
            return None
        out[k] = both
    return out


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Unit:
    """Channels routed identically within one slice."""

    channels: tuple[str, ...]
    candidates: Cands
    direct_read: Mapping[int, str | None]


def kafka_locations(url: str) -> tuple[str, ...]:
    brokers = url.removeprefix("kafka://").split(",")
    return tuple(f"kafka://{b.strip()}" for b in brokers if b.strip())


def group_units(units: Sequence[Unit], urls: Sequence[str], *, direct: bool) -> list[ChannelGroup]:
    """Greedy set cover (see module doc), with a lazy max-heap of endpoint weights.

    An endpoint's weight (channels it can still serve) only ever decreases, so a popped entry
    whose weight is stale is pushed back with its current weight; the first fresh entry is the
    true maximum (ties: lowest YAML index, by heap order on ``(-weight, endpoint)``).
    """
    serves: dict[int, set[int]] = {}
    for i, u in enumerate(units):
        if u.channels:
            for ep in u.candidates:
                serves.setdefault(ep, set()).add(i)
    weight = {ep: sum(len(units[i].channels) for i in idx) for ep, idx in serves.items()}
    heap = [(-w, ep) for ep, w in weight.items()]
    heapq.heapify(heap)
    groups: list[ChannelGroup] = []
    while heap:
        neg, best = heapq.heappop(heap)
        if -neg != weight[best]:
            if weight[best] > 0:
                heapq.heappush(heap, (-weight[best], best))
            continue
        if weight[best] == 0:
            continue
        chosen = sorted(serves[best])
        first = set(units[chosen[0]].candidates)
        replicas = sorted(ep for ep in first if serves[ep] == serves[best])
        groups.extend(_split_direct([units[i] for i in chosen], replicas, urls, direct))
        for i in chosen:  # these channels are placed: nobody serves them any more
            size = len(units[i].channels)
            for ep in units[i].candidates:
                if ep != best and ep in serves:
                    serves[ep].discard(i)
                    weight[ep] -= size
        weight[best] = 0
        for ep in replicas:
            weight[ep] = 0
    return groups


def _split_direct(
    units: list[Unit], replicas: list[int], urls: Sequence[str], direct: bool
) -> list[ChannelGroup]:
    locations = tuple(urls[i] for i in replicas)
    if not direct:
        return [ChannelGroup(tuple(sorted(c for u in units for c in u.channels)), locations)]
    by_dr: dict[str | None, list[str]] = {}
    for u in units:
        by_dr.setdefault(u.direct_read.get(replicas[0]), []).extend(u.channels)
    out = []
    for dr in sorted(by_dr, key=lambda d: (d is not None, d or "")):
        kafka = kafka_locations(dr) if dr else ()
        out.append(ChannelGroup(tuple(sorted(by_dr[dr])), locations, kafka))
    return out


# --------------------------------------------------------------------------- uncovered


def collect_uncovered(runs: list[tuple[str, int | None, int | None, Reason]]) -> list[Uncovered]:
    """Merge per-channel runs (in time order) and then channels sharing a run."""
    merged: dict[str, list[tuple[int | None, int | None, Reason]]] = {}
    for ch, s, e, why in runs:
        seq = merged.setdefault(ch, [])
        if seq and s is not None and seq[-1][1] == s and seq[-1][2] == why:
            seq[-1] = (seq[-1][0], e, why)
        else:
            seq.append((s, e, why))
    by_run: dict[tuple[int | None, int | None, Reason], list[str]] = {}
    for ch, seq in merged.items():
        for run in seq:
            by_run.setdefault(run, []).append(ch)
    return [Uncovered(tuple(sorted(chans)), s, e, why) for (s, e, why), chans in by_run.items()]
