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
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from scopemap.index import Coverage, Tier, best_claims, top_endpoints
from scopemap.plan import ChannelGroup, Reason, Uncovered

Cands = tuple[int, ...]
State = Cands | Reason
INF = float("inf")


class Piece(NamedTuple):
    """``[start, end)`` of one timeline and who can serve it (a tuple: made per request)."""

    start: int | None
    end: int | None
    state: State


# --------------------------------------------------------------------------- timelines


def range_timeline(cov: Coverage, n: int, r0: int, r1: int | None, missing: Reason) -> list[Piece]:
    """Coverage of ``[r0, r1)`` (``r1`` None: open-ended) at truncated now ``n``.

    The range is the age span ``(n - r1, n - r0]``; its pieces are the elementary intervals
    of ``cov`` it touches, oldest first (latest ages first), clipped to the range, with
    neighbours of equal state merged.
    """
    if not cov.tiers:
        return [Piece(r0, r1, missing)]
    bounds, states = cov.bounds, cov.states
    first = 0 if r1 is None else bisect_right(bounds, n - r1)  # youngest interval touched
    last = bisect_left(bounds, n - r0)  # oldest interval touched
    pieces: list[Piece] = []
    for i in range(last, first - 1, -1):
        a = r0 if i == last else n - bounds[i]
        b = r1 if i == first else n - bounds[i - 1]
        state: State | None = states[i] or None
        if state is None and b is None and a < n:
            # Uncovered and open-ended: the past part is missing retention, the part from
            # now on is missing a live endpoint. Two reasons, two pieces.
            _append(pieces, Piece(a, n, Reason.NO_RETENTION))
            _append(pieces, Piece(n, None, Reason.NO_LIVE))
            continue
        if state is None:
            state = Reason.NO_LIVE if b is None else Reason.NO_RETENTION
        _append(pieces, Piece(a, b, state))
    return pieces


def _append(pieces: list[Piece], piece: Piece) -> None:
    """Append ``piece``, merging it into its predecessor when their states are equal."""
    if pieces and pieces[-1].state == piece.state:
        pieces[-1] = Piece(pieces[-1].start, piece.end, piece.state)
    else:
        pieces.append(piece)


def live_state(tiers: Sequence[Tier], missing: Reason) -> State:
    if not tiers:
        return missing
    found = [item for tier in tiers for item in tier.tree.covering(-INF)]
    return top_endpoints([c for c, _, _ in best_claims(found).values()]) or Reason.NO_LIVE


def instant_state(tiers: Sequence[Tier], n: int, t: int, missing: Reason) -> State:
    if not tiers:
        return missing
    found = [item for tier in tiers for item in tier.tree.covering(n - t)]
    return top_endpoints([c for c, _, _ in best_claims(found).values()]) or Reason.NO_RETENTION


def preferred_state(
    tiers: Sequence[Tier], ages: Sequence[tuple[float, float]], missing: Reason
) -> State:
    """``time: null`` metadata: the claimers reaching nearest to now, then most specific."""
    claims = list(best_claims([(c, 0.0, 0.0) for tier in tiers for c in tier.claims]).values())
    if not claims:
        return missing
    nearest = min(ages[c.endpoint][0] for c, _, _ in claims)
    return top_endpoints([c for c, _, _ in claims if ages[c.endpoint][0] == nearest])


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


def cut_slices(
    timelines: Mapping[str, list[Piece]], start: int, end: int | None
) -> list[tuple[int, int | None, dict[str, State]]]:
    """Greedy fewest slices over timelines that each tile ``[start, end)`` (see module doc)."""
    keys = list(timelines)
    # A one-piece timeline keeps its state all along: it never forces a cut and merging it
    # with itself changes nothing, so only the others are looked at, point by point.
    varying = [k for k in keys if len(timelines[k]) > 1]
    cursor = dict.fromkeys(varying, 0)
    points = sorted({p.start for k in varying for p in timelines[k][1:] if p.start is not None})
    running: dict[str, State] = {k: timelines[k][0].state for k in keys}
    slices: list[tuple[int, int | None, dict[str, State]]] = []
    slice_start = start
    for x in points:
        fresh: dict[str, State] = {}
        for k in varying:
            pieces = timelines[k]
            i = cursor[k]
            while (e := pieces[i].end) is not None and e <= x:  # pieces ending by x
                i += 1
            cursor[k] = i
            fresh[k] = pieces[i].state
        merged = _merge_all(running, fresh)
        if merged is None:
            slices.append((slice_start, x, running))
            slice_start, running = x, {**running, **fresh}
        else:
            running = {**running, **merged}
    slices.append((slice_start, end, running))
    return slices


def _merge_all(running: dict[str, State], fresh: dict[str, State]) -> dict[str, State] | None:
    """``fresh`` narrowed by ``running`` (same keys as ``fresh``), or None if some channel
    would have no common candidate (or changes reason)."""
    out: dict[str, State] = {}
    for k, new in fresh.items():
        old = running[k]
        if old == new:
            out[k] = old
            continue
        if isinstance(old, Reason) or isinstance(new, Reason):
            return None
        both = tuple(sorted(set(old) & set(new)))
        if not both:
            return None
        out[k] = both
    return out


# --------------------------------------------------------------------------- grouping


class Unit(NamedTuple):
    """Channels routed identically within one slice (a tuple: made per slice and request)."""

    channels: tuple[str, ...]
    candidates: Cands
    direct_read: Mapping[int, str | None]


def kafka_locations(url: str) -> tuple[str, ...]:
    brokers = url.removeprefix("kafka://").split(",")
    return tuple(f"kafka://{b.strip()}" for b in brokers if b.strip())


def group_units(units: Sequence[Unit], urls: Sequence[str], *, direct: bool) -> list[ChannelGroup]:
    """Greedy set cover (see module doc), with a lazy max-heap of endpoint weights.

    Units with the same candidates are always chosen together (an endpoint serves all of
    them or none), so the cover runs over *classes* of units, one per candidate tuple. An
    endpoint's weight (channels it can still serve) only ever decreases, so a popped entry
    whose weight is stale is pushed back with its current weight; the first fresh entry is
    the true maximum (ties: lowest YAML index, by heap order on ``(-weight, endpoint)``).
    This runs per slice of every plan: plain dicts, sets, tuples and ints only.
    """
    cands, members, sizes = _classes(units)
    serves, weight = _serving(cands, sizes)
    # Heap entries encode (-weight, endpoint) as one int, -weight * span + endpoint: same
    # order, but int comparisons are several times cheaper than tuple ones.
    span = len(urls)
    heap = [ep - w * span for ep, w in weight.items()]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    groups: list[ChannelGroup] = []
    unplaced = len(cands)  # once every class is placed, all weights are 0: stop popping
    while heap and unplaced:
        entry = pop(heap)
        best = entry % span
        w = weight[best]
        if not w:
            continue
        if entry != best - w * span:  # stale: the weight dropped since it was pushed
            push(heap, best - w * span)
            continue
        mine = serves[best]
        chosen = sorted(mine)
        first = cands[chosen[0]]
        if len(first) == 1:  # a sole candidate has no replica (the common case)
            replicas: Sequence[int] = first
            locations: tuple[str, ...] = (urls[best],)
        else:
            replicas = sorted(ep for ep in first if serves[ep] == mine)
            locations = tuple([urls[ep] for ep in replicas])
        placed = [u for k in chosen for u in members[k]]
        if direct and any(u.direct_read for u in placed):
            groups.extend(_split_direct(placed, replicas[0], locations))
        else:  # the usual case: one group (direct_read maps hold tagged endpoints only)
            chans = [c for u in placed for c in u.channels]
            groups.append(ChannelGroup(tuple(sorted(chans)), locations))
        unplaced -= len(chosen)
        for k in chosen:  # these channels are placed: nobody serves them any more
            size = sizes[k]
            for ep in cands[k]:
                if ep != best:
                    serves[ep].discard(k)
                    weight[ep] -= size
        weight[best] = 0
        for ep in replicas:
            weight[ep] = 0
    return groups


def _classes(units: Sequence[Unit]) -> tuple[list[Cands], list[list[Unit]], list[int]]:
    """Units grouped by candidates: class k has candidates ``cands[k]``, units
    ``members[k]`` (in unit order) and ``sizes[k]`` channels; classes in order of first unit."""
    by_cands: dict[Cands, list[Unit]] = {}
    for u in units:
        if u.channels:
            by_cands.setdefault(u.candidates, []).append(u)
    members = list(by_cands.values())
    sizes = [
        len(ms[0].channels) if len(ms) == 1 else sum(len(u.channels) for u in ms) for ms in members
    ]
    return list(by_cands), members, sizes


def _serving(cands: list[Cands], sizes: list[int]) -> tuple[dict[int, set[int]], dict[int, int]]:
    """Endpoint -> the classes it can serve, and -> how many channels that is (its weight)."""
    serves: dict[int, set[int]] = {}
    weight: dict[int, int] = {}
    for k, cs in enumerate(cands):
        for ep in cs:
            if ep in serves:
                serves[ep].add(k)
                weight[ep] += sizes[k]
            else:
                serves[ep] = {k}
                weight[ep] = sizes[k]
    return serves, weight


def _split_direct(units: list[Unit], lead: int, locations: tuple[str, ...]) -> list[ChannelGroup]:
    """One group per direct_read tag of the preferred replica ``lead`` (untagged first)."""
    by_dr: dict[str | None, list[str]] = {}
    for u in units:
        by_dr.setdefault(u.direct_read.get(lead), []).extend(u.channels)
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
