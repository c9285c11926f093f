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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from scopemap.model import Endpoint, ScopeEntry, ScopeMap, parse_channel_name
from scopemap.retention import RetentionTree


@dataclass(frozen=True)
class Claim:
    """Endpoint ``endpoint`` (index in YAML order) claims a key at ``specificity``."""

    endpoint: int
    specificity: int
    direct_read: str | None = None


class Tier:
    """The claims on one key (a channel, a subsystem or a whole domain)."""

    __slots__ = ("claims", "tree")

    def __init__(self, claims: list[Claim], ages: list[tuple[float, float]]) -> None:
        self.claims = claims
        self.tree: RetentionTree[Claim] = RetentionTree(
            (claim, ages[claim.endpoint][0], ages[claim.endpoint][1]) for claim in claims
        )

    def __repr__(self) -> str:
        return f"Tier({[c.endpoint for c in self.claims]})"


def age_window(ep: Endpoint) -> tuple[float, float]:
    """``(lower, upper]`` in age ns: live endpoints reach ``-inf`` (the present and future)."""
    r = ep.retention
    lo = -math.inf if r.is_live else float(r.newest_ns)
    oldest = r.oldest_ns
    return lo, (math.inf if oldest is None else float(oldest))


class ScopeIndex:
    """Exact / subsystem / wildcard dictionaries over one view of the map."""

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

    def __repr__(self) -> str:
        return (
            f"ScopeIndex({len(self.entries)} endpoints, {len(self.exact)} channels, "
            f"{len(self.subsystem)} subsystems, {len(self.wildcard)} wildcard domains)"
        )

    def tiers(self, channel: str) -> tuple[Tier, ...]:
        """The tiers claiming ``channel``, most specific first; () for an invalid name."""
        try:
            parsed = parse_channel_name(channel)
        except ValueError:
            return ()
        found = (
            self.exact.get(channel),
            self.subsystem.get((parsed.domain, parsed.subsystem)),
            self.wildcard.get(parsed.domain),
        )
        return tuple(t for t in found if t is not None)


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
    """Everything the planner needs about one ``ScopeMap``, built once, then read-only."""

    def __init__(self, scope_map: ScopeMap) -> None:
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

    def endpoint_indices(self, urls: Iterable[str]) -> list[int]:
        pos = {u: i for i, u in enumerate(self.urls)}
        return [pos[u] for u in urls]

    def __repr__(self) -> str:
        return (
            f"RoutingIndex({len(self.urls)} endpoints, base={self.base!r}, "
            f"replays={sorted(self.replay_views)})"
        )
