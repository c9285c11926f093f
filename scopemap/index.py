"""``ScopeIndex`` and ``RoutingIndex``: who claims a channel, at which specificity, built once.

A ``ScopeIndex`` is built over one *view* of the map (the entries that serve non-replay
requests, or those serving one replay id, PROTOCOL §8.8). It answers "which endpoints claim
this channel" with three dictionary lookups — exact channel, (domain, subsystem), domain
wildcard — each leading to a ``Tier``: the claiming endpoints with their ``RetentionTree``.
An endpoint's claim on a channel is its most specific matching entry (channel 3 > subsystem 2
> all 1); all its claims share its one retention window.

``RoutingIndex`` holds the views of one ``ScopeMap``: the non-replay view and one per replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from types import MappingProxyType

from scopemap.gcpause import paused_gc
from scopemap.model import Endpoint, ScopeEntry, ScopeMap, parse_channel_name
from scopemap.retention import RetentionTree

INF = math.inf


@dataclass(frozen=True)
class Claim:
    """Endpoint ``endpoint`` (index in YAML order) claims a key at ``specificity``."""

    endpoint: int
    specificity: int
    direct_read: str | None = None


class Tier:
    """The claims on one key (a channel, a subsystem or a whole domain)."""

    __slots__ = ("_tree", "claims", "windows")

    def __init__(self, claims: list[Claim], ages: list[tuple[float, float]]) -> None:
        self.claims = claims
        #: ``(claim, lower_age, upper_age)``: each claim with its endpoint's window
        self.windows = [(c, ages[c.endpoint][0], ages[c.endpoint][1]) for c in claims]
        self._tree: RetentionTree[Claim] | None = None

    @property
    def tree(self) -> RetentionTree[Claim]:
        """Built on first use: a big map has thousands of tiers, most never queried by
        instant (streams use :class:`Coverage`), and building them all would dominate the
        index time. Two threads racing here build equal trees; either one is kept."""
        tree = self._tree
        if tree is None:
            tree = self._tree = RetentionTree(self.windows)
        return tree

    def __repr__(self) -> str:
        return f"Tier({[c.endpoint for c in self.claims]})"


class Coverage:
    """Who may serve a channel claimed by ``tiers``, for every age, computed once.

    Each endpoint keeps its most specific claim (tiers come most specific first). The
    finite bounds of their windows cut the age axis into elementary intervals
    ``(-inf, b0], (b0, b1], ..., (b_last, inf)``; inside one of them the set of covering
    windows cannot change, so ``states[i]`` holds, for interval i, the most specific
    covering endpoints (sorted) or ``()`` when nobody covers it. A stream's timeline is then
    a bisection and a walk over the intervals its range touches (``slicing.range_timeline``)
    instead of a tree query and a covering test per piece and per request.
    """

    __slots__ = ("bounds", "direct_read", "states", "tiers")

    def __init__(self, tiers: tuple[Tier, ...]) -> None:
        self.tiers = tiers
        best = best_claims([item for tier in tiers for item in tier.windows])
        #: endpoint -> direct_read of its most specific claim, for tagged claims only (so an
        #: empty map says "no direct reads" at a glance)
        self.direct_read: dict[int, str | None] = {
            ep: c.direct_read for ep, (c, _, _) in best.items() if c.direct_read is not None
        }
        finite = {b for _, lo, hi in best.values() for b in (lo, hi) if -INF < b < INF}
        self.bounds: list[int] = sorted(int(b) for b in finite)
        edges = [-INF, *self.bounds, INF]
        self.states: list[tuple[int, ...]] = []
        for left, right in pairwise(edges):
            covering = [c for c, lo, hi in best.values() if lo <= left and hi >= right]
            self.states.append(top_endpoints(covering))

    def __repr__(self) -> str:
        return f"Coverage({self.tiers!r}, bounds={len(self.bounds)})"


def best_claims(
    claims: Sequence[tuple[Claim, float, float]],
) -> dict[int, tuple[Claim, float, float]]:
    """One ``(claim, lower, upper)`` per endpoint: its most specific claim (the first one
    met among equals, so pass tiers most specific first)."""
    out: dict[int, tuple[Claim, float, float]] = {}
    for item in claims:
        prev = out.get(item[0].endpoint)
        if prev is None or item[0].specificity > prev[0].specificity:
            out[item[0].endpoint] = item
    return out


def top_endpoints(claims: Sequence[Claim]) -> tuple[int, ...]:
    """The endpoints of the most specific claims, sorted; () for none."""
    if not claims:
        return ()
    top = max(c.specificity for c in claims)
    return tuple(sorted(c.endpoint for c in claims if c.specificity == top))


def age_window(ep: Endpoint) -> tuple[float, float]:
    """``(lower, upper]`` in age ns: live endpoints reach ``-inf`` (the present and future)."""
    r = ep.retention
    lo = -math.inf if r.is_live else float(r.newest_ns)
    oldest = r.oldest_ns
    return lo, (math.inf if oldest is None else float(oldest))


_TierKey = tuple[Tier | None, Tier | None, Tier | None]
_NO_TIERS: _TierKey = (None, None, None)


class ScopeIndex:
    """Exact / subsystem / wildcard dictionaries over one view of the map.

    A ``RoutingIndex`` holds one for the map (``base``) and one per replay (``view(id)``):

    >>> from scopemap import RoutingIndex, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://archive.example.org:31206:
    ...   scopes: {H1: [{subsystem: GDS}, {subsystem: PEM}], L1: [{all: true}]}
    ...   retention: {}
    ... ''').scope_map)
    >>> sorted(index.base.subsystem), sorted(index.base.wildcard)
    ([('H1', 'GDS'), ('H1', 'PEM')], ['L1'])
    """

    def __init__(
        self, entries: Mapping[int, tuple[ScopeEntry, ...]], ages: list[tuple[float, float]]
    ) -> None:
        self.entries = entries  # endpoint index -> its effective entries in this view
        exact: dict[str, dict[int, Claim]] = {}
        subs: dict[tuple[str, str], dict[int, Claim]] = {}
        wild: dict[str, dict[int, Claim]] = {}
        for idx, scope in entries.items():
            for e in scope:
                if e.kind == "channel" and e.value is not None:
                    table: dict[int, Claim] = exact.setdefault(e.value, {})
                elif e.kind == "subsystem" and e.value is not None:
                    table = subs.setdefault((e.domain, e.value), {})
                else:
                    table = wild.setdefault(e.domain, {})
                prev = table.get(idx)
                if prev is None or (prev.direct_read is None and e.direct_read is not None):
                    table[idx] = Claim(idx, e.specificity, e.direct_read)
        self.exact = {k: Tier(list(v.values()), ages) for k, v in exact.items()}
        self.subsystem = {k: Tier(list(v.values()), ages) for k, v in subs.items()}
        self.wildcard = {k: Tier(list(v.values()), ages) for k, v in wild.items()}
        # (exact, subsystem, wildcard) tiers -> their Coverage, filled on first use: keys are
        # tiers of this index, so it stays bounded by the map whatever names requests carry.
        # Threads racing on a new key build equal values; either one is kept.
        self._coverage: dict[_TierKey, Coverage] = {_NO_TIERS: Coverage(())}

    def __repr__(self) -> str:
        return (
            f"ScopeIndex({len(self.entries)} endpoints, {len(self.exact)} channels, "
            f"{len(self.subsystem)} subsystems, {len(self.wildcard)} wildcard domains)"
        )

    def tiers(self, channel: str) -> tuple[Tier, ...]:
        """The tiers claiming ``channel``, most specific first; () for an invalid name."""
        return self.coverage(channel).tiers

    def coverage(self, channel: str) -> Coverage:
        """The :class:`Coverage` of ``channel``'s tiers; channels claimed by the same tiers
        share one object (the planner's "signature"). This runs per requested channel."""
        # parse_channel_name's split, without building a ChannelName: the domain ends at the
        # last colon, the subsystem at the first "-" or "_" after it.
        domain, colon, tail = channel.rpartition(":")
        if not colon:
            return self._coverage[_NO_TIERS]
        key = (
            self.exact.get(channel),
            self.subsystem.get((domain, tail.split("-", 1)[0].split("_", 1)[0])),
            self.wildcard.get(domain),
        )
        found = self._coverage.get(key)
        if found is None:
            found = Coverage(tuple(t for t in key if t is not None))
            self._coverage[key] = found
        return found


def _borrow_direct_read(ep: Endpoint, entry: ScopeEntry) -> ScopeEntry:
    """An explicit replay entry without direct_read borrows a general entry's (upstream §8.8)."""
    if entry.direct_read is not None:
        return entry
    for general in ep.scopes:
        if general.domain != entry.domain or general.direct_read is None:
            continue
        if entry.kind == "channel" and entry.value is not None:
            covers = general.matches(parse_channel_name(entry.value), entry.value)
        else:
            covers = entry.kind == general.kind == "subsystem" and general.value == entry.value
        if covers:
            return replace(entry, direct_read=general.direct_read)
    return entry


def view_entries(ep: Endpoint, replay_id: str | None) -> tuple[ScopeEntry, ...]:
    """The entries ``ep`` routes with for ``replay_id`` (None: non-replay); () = not in view."""
    untagged = tuple(e for e in ep.scopes if e.replay is None)
    if replay_id is None:
        return untagged
    if not ep.serves_replay(replay_id):
        return ()
    if ep.narrows(replay_id):
        tagged = tuple(e for e in ep.scopes if e.replay == replay_id)
        explicit = tuple(_borrow_direct_read(ep, e) for e in ep.replay_scopes.get(replay_id, ()))
        return tagged + explicit
    return untagged


class RoutingIndex:
    """Everything the planner needs about one ``ScopeMap``, built once, then read-only.

    >>> from scopemap import load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}, {channel: "H1:PEM-EY_MAG_X"}]}
    ...   retention: {newest: 0, oldest: 600}
    ... ''').scope_map)
    >>> index.base
    ScopeIndex(1 endpoints, 1 channels, 0 subsystems, 1 wildcard domains)
    >>> index.urls
    ('grpc://live.example.org:31206',)
    """

    def __init__(self, scope_map: ScopeMap) -> None:
        # Like loading, indexing allocates many small acyclic objects (claims, tiers, dicts)
        with paused_gc():
            self._build(scope_map)

    def _build(self, scope_map: ScopeMap) -> None:
        self.scope_map = scope_map
        self.urls: tuple[str, ...] = tuple(ep.url for ep in scope_map.endpoints)
        self.ages = [age_window(ep) for ep in scope_map.endpoints]
        self.base = self._view(None)
        replay_ids = dict.fromkeys(
            rid for ep in scope_map.endpoints for rid in ep.replay_ids if rid in scope_map.replays
        )
        self.replay_views: Mapping[str, ScopeIndex] = MappingProxyType(
            {rid: self._view(rid) for rid in replay_ids}
        )
        self.narrowing: frozenset[str] = frozenset(
            rid for rid in replay_ids if any(ep.narrows(rid) for ep in scope_map.endpoints)
        )

    def _view(self, replay_id: str | None) -> ScopeIndex:
        entries: dict[int, tuple[ScopeEntry, ...]] = {}
        for idx, ep in enumerate(self.scope_map.endpoints):
            got = view_entries(ep, replay_id)
            if got:
                entries[idx] = got
        return ScopeIndex(entries, self.ages)

    def view(self, replay_id: str | None) -> ScopeIndex:
        """The view for ``replay_id``; an empty view when no endpoint serves it."""
        if replay_id is None:
            return self.base
        found = self.replay_views.get(replay_id)
        return found if found is not None else ScopeIndex({}, self.ages)

    def __repr__(self) -> str:
        return (
            f"RoutingIndex({len(self.urls)} endpoints, base={self.base!r}, "
            f"replays={sorted(self.replay_views)})"
        )
