"""Find/Count targets: one per disjoint scope group, so replicas never double-count.

Endpoints active at the request time are grouped by their *region* (what their entries can
match, normalised: a domain wildcard absorbs that domain's subsystem and channel entries, a
subsystem absorbs its channels). Equal regions are replicas: one target, endpoints in YAML
order. A region contained in another active region is dropped too (the larger one already
answers for it), so nested claims are not counted twice either. Partially overlapping
regions still both answer: the pattern is never narrowed (upstream §8.7).
"""

from __future__ import annotations

from collections.abc import Iterable

from scopemap.index import RoutingIndex, ScopeIndex
from scopemap.model import ScopeEntry, parse_channel_name
from scopemap.plan import FindTarget

Item = tuple[str, str, str | None]  # (domain, kind, value)
Region = frozenset[Item]


def region_of(entries: Iterable[ScopeEntry]) -> Region:
    items = {(e.domain, e.kind, e.value) for e in entries}
    wild = {d for d, k, _ in items if k == "all"}
    subs = {(d, v) for d, k, v in items if k == "subsystem"}
    keep = set()
    for d, k, v in items:
        if k != "all" and d in wild:
            continue
        if k == "channel" and v is not None and (d, parse_channel_name(v).subsystem) in subs:
            continue
        keep.add((d, k, v))
    return frozenset(keep)


def _active(index: RoutingIndex, view: ScopeIndex, time: int | None, n: int) -> list[int]:
    members = sorted(view.entries)
    if not members:
        return []
    if time is None:  # prefer the endpoints reaching nearest to now (upstream filter_by_time)
        nearest = min(index.ages[i][0] for i in members)
        return [i for i in members if index.ages[i][0] == nearest]
    age = n - time
    return [i for i in members if index.ages[i][0] < age <= index.ages[i][1]]


def _dominated(regions: list[Region]) -> set[int]:
    """Indices of regions strictly contained in another one."""
    wild: dict[str, set[int]] = {}
    subs: dict[tuple[str, str], set[int]] = {}
    chans: dict[str, set[int]] = {}
    for i, region in enumerate(regions):
        for d, k, v in region:
            if k == "all":
                wild.setdefault(d, set()).add(i)
            elif k == "subsystem" and v is not None:
                subs.setdefault((d, v), set()).add(i)
            elif v is not None:
                chans.setdefault(v, set()).add(i)
    out = set()
    for i, region in enumerate(regions):
        covering: set[int] | None = None
        for d, k, v in region:
            here = set(wild.get(d, ()))
            if k == "subsystem" and v is not None:
                here |= subs.get((d, v), set())
            elif k == "channel" and v is not None:
                here |= subs.get((d, parse_channel_name(v).subsystem), set())
                here |= chans.get(v, set())
            covering = here if covering is None else covering & here
            if covering <= {i}:
                break
        if covering and covering - {i}:
            out.add(i)
    return out


def find_targets(
    index: RoutingIndex, view: ScopeIndex, time: int | None, n: int, replay_id: str | None
) -> tuple[FindTarget, ...]:
    by_region: dict[Region, list[int]] = {}
    for i in _active(index, view, time, n):
        by_region.setdefault(region_of(view.entries[i]), []).append(i)
    regions = list(by_region)
    drop = _dominated(regions)
    return tuple(
        FindTarget(tuple(index.urls[i] for i in by_region[r]), replay_id, time)
        for j, r in enumerate(regions)
        if j not in drop
    )
