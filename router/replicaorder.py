"""Replica order by health, applied to plans after planning (``scopemap`` never sees health).

A plan lists each group's replicas in the map's preference order; :func:`reorder` returns
the same plan with every group's replicas sorted by an ``order`` function (the health
registry's: healthy first, ejected last). Nothing is dropped: an ejected replica is still
tried when no other can serve the data. Groups, channels, slices and times are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from scopemap import ChannelGroup, DescribePlan, FindPlan, StreamPlan

__all__ = ["Order", "reorder"]

Order = Callable[[Sequence[str]], tuple[str, ...]]
P = TypeVar("P", StreamPlan, DescribePlan, FindPlan)


def _group(group: ChannelGroup, order: Order) -> ChannelGroup:
    if len(group.endpoints) < 2:
        return group
    ordered = order(group.endpoints)
    return group if ordered == group.endpoints else replace(group, endpoints=ordered)


def reorder(plan: P, order: Order) -> P:
    """``plan`` with every group's (or Find target's) replicas in ``order``."""
    if isinstance(plan, StreamPlan):
        slices = tuple(
            replace(s, groups=tuple(_group(g, order) for g in s.groups)) for s in plan.slices
        )
        return replace(plan, slices=slices)
    if isinstance(plan, DescribePlan):
        return replace(plan, groups=tuple(_group(g, order) for g in plan.groups))
    targets = tuple(
        t if len(t.endpoints) < 2 else replace(t, endpoints=order(t.endpoints))
        for t in plan.targets
    )
    return replace(plan, targets=targets)
