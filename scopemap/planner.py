"""Request planners: pure functions of (index, request, now) returning frozen plan values.

``now_ns`` is the request's GPS time in integer ns, read once by the caller. Retention bounds
are placed at whole seconds: ``N = now_ns`` truncated to a second, an endpoint with window
``newest..oldest`` retains ``[N - oldest, N - newest)`` (unbounded above when live). Replay
arguments follow PROTOCOL §8.8; the only exception raised is ``ReplayError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scopemap.find import find_targets
from scopemap.index import Coverage, RoutingIndex, ScopeIndex, Tier
from scopemap.model import NS_PER_S
from scopemap.plan import (
    ChannelGroup,
    DescribePlan,
    DescribeRequest,
    FindPlan,
    FindRequest,
    Plan,
    PublishPlan,
    PublishRequest,
    Reason,
    StreamPlan,
    StreamRequest,
    StreamSlice,
    Uncovered,
)
from scopemap.replay import ReplayWindow, resolve
from scopemap.slicing import (
    Piece,
    State,
    Unit,
    collect_uncovered,
    cut_slices,
    group_units,
    instant_state,
    live_state,
    preferred_state,
    range_timeline,
    shift,
)


def truncate_now(now_ns: int) -> int:
    return now_ns - now_ns % NS_PER_S


@dataclass(frozen=True)
class _Route:
    """How one pass routes: over which view, reporting what when unclaimed, and whether the
    routing happens at replay-folded times (``fold``) or at the client's times."""

    view: ScopeIndex
    missing: Reason
    fold: ReplayWindow | None = None


def _routes(index: RoutingIndex, window: ReplayWindow | None) -> tuple[_Route, _Route | None]:
    """(primary, fallback): the fallback routes what the primary could not (dual pass)."""
    if window is None:
        return _Route(index.base, Reason.NO_SCOPE), None
    if window.name is None:  # anonymous replay: the full map at folded times
        return _Route(index.base, Reason.NO_SCOPE, window), None
    primary = _Route(index.view(window.name), Reason.NO_REPLAY)
    if window.name in index.narrowing:
        return primary, _Route(index.base, Reason.NO_REPLAY, window)
    return primary, None


# --------------------------------------------------------------------------- stream


def _stream_timeline(route: _Route, cov: Coverage, req: StreamRequest, n: int) -> list[Piece]:
    if req.start is None:
        if route.fold is None:
            state = live_state(cov.tiers, route.missing)
        else:
            state = instant_state(cov.tiers, n, route.fold.translate(n), route.missing)
        return [Piece(None, req.end, state)]
    if route.fold is None:
        return range_timeline(cov, n, req.start, req.end, route.missing)
    off = route.fold.offset(req.start)
    end = None if req.end is None else req.end - off
    return shift(range_timeline(cov, n, req.start - off, end, route.missing), off)


def _complete(pieces: list[Piece]) -> bool:
    return all(not isinstance(p.state, Reason) for p in pieces)


def plan_stream(index: RoutingIndex, request: StreamRequest, now_ns: int) -> StreamPlan:
    """Plan a stream at GPS time ``now_ns``: slices tiling ``[start, end)``, channel groups
    with their replicas, and what cannot be served (``uncovered``) with the reason.

    >>> from scopemap import RoutingIndex, StreamRequest, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 0, oldest: 600}
    ... ''').scope_map)
    >>> S, now = 1_000_000_000, 1_400_000_000_000_000_000
    >>> p = plan_stream(index, StreamRequest(("H1:A-B", "L1:C-D"), now - 60 * S, now), now)
    >>> for s in p.slices:
    ...     print(s.groups[0].channels, s.groups[0].endpoints)
    ('H1:A-B',) ('grpc://live.example.org:31206',)
    >>> for u in p.uncovered:
    ...     print(u.channels, u.reason.value)
    ('L1:C-D',) no endpoint claims this channel
    """
    window = resolve(index.scope_map, request.replay_id, request.replay_start, request.replay_end)
    if request.start is not None and request.end is not None and request.start >= request.end:
        return StreamPlan(request, ())
    n = truncate_now(now_ns)
    primary, fallback = _routes(index, window)
    # Channels claimed by the same tiers share one timeline ("signature"): one Coverage.
    sig_ids: tuple[dict[Coverage, int], dict[Coverage, int]] = ({}, {})  # one per pass
    timelines: dict[int, list[Piece]] = {}
    members: dict[int, list[str]] = {}
    drs: dict[int, Mapping[int, str | None]] = {}

    def signature(pass_no: int, route: _Route, channel: str) -> int:
        cov = route.view.coverage(channel)
        sig = sig_ids[pass_no].get(cov)
        if sig is None:
            sig = sig_ids[pass_no][cov] = len(timelines)
            timelines[sig] = _stream_timeline(route, cov, request, n)
            drs[sig] = cov.direct_read
        return sig

    for channel in sorted(set(request.channels)):
        sig = signature(0, primary, channel)
        if fallback is not None and not _complete(timelines[sig]):
            sig = signature(1, fallback, channel)
        members.setdefault(sig, []).append(channel)
    used = {sig: timelines[sig] for sig in members}
    member_tuples = {sig: tuple(chans) for sig, chans in members.items()}
    if request.start is None:
        cut = [(None, request.end, {sig: pieces[0].state for sig, pieces in used.items()})]
    else:
        cut = list(cut_slices(used, request.start, request.end))  # type: ignore[arg-type]
    slices: list[StreamSlice] = []
    runs: list[tuple[str, int | None, int | None, Reason]] = []
    for start, end, states in cut:
        units = []
        for sig, state in states.items():
            chans = member_tuples[sig]
            if isinstance(state, Reason):
                runs.extend((c, start, end, state) for c in chans)
            else:
                units.append(Unit(chans, state, drs[sig]))
        groups = group_units(units, index.urls, direct=True)
        slices.append(StreamSlice(start, end, tuple(groups)))
    return StreamPlan(request, tuple(slices), tuple(collect_uncovered(runs)))


# --------------------------------------------------------------------------- describe


def _describe_state(
    route: _Route, tiers: Sequence[Tier], index: RoutingIndex, time: int | None, n: int
) -> State:
    if route.fold is not None:
        return instant_state(
            tiers, n, route.fold.translate(n if time is None else time), route.missing
        )
    if time is None:
        return preferred_state(tiers, index.ages, route.missing)
    return instant_state(tiers, n, time, route.missing)


def plan_describe(index: RoutingIndex, request: DescribeRequest, now_ns: int) -> DescribePlan:
    """Plan a Describe at GPS time ``now_ns``: channel groups at ``request.time`` and what
    cannot be served (see ``DescribePlan`` for an example).

    >>> from scopemap import RoutingIndex, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206: {scopes: {H1: [{all: true}]}, retention: {}}
    ... ''').scope_map)
    >>> p = plan_describe(index, DescribeRequest(("H1:A-B", "V1:C-D"), None), 0)
    >>> [g.channels for g in p.groups], [u.channels for u in p.uncovered]
    ([('H1:A-B',)], [('V1:C-D',)])
    """
    window = resolve(index.scope_map, request.replay_id)
    n = truncate_now(now_ns)
    primary, fallback = _routes(index, window)
    passes: list[dict[tuple[int, ...], tuple[State, list[str]]]] = [{}, {}]
    for channel in sorted(set(request.channels)):
        for pass_no, route in enumerate((primary, fallback)):
            if route is None:
                continue
            tiers = route.view.tiers(channel)
            key = tuple(id(t) for t in tiers)
            entry = passes[pass_no].get(key)
            if entry is None:
                state = _describe_state(route, tiers, index, request.time, n)
                entry = passes[pass_no][key] = (state, [])
            if fallback is None or pass_no == 1 or not isinstance(entry[0], Reason):
                entry[1].append(channel)
                break
    groups: list[ChannelGroup] = []
    times: list[int | None] = []
    uncovered: list[Uncovered] = []
    for pass_no, table in enumerate(passes):
        units: list[Unit] = []
        by_reason: dict[Reason, list[str]] = {}
        for state, chans in table.values():
            if not chans:
                continue
            if isinstance(state, Reason):
                by_reason.setdefault(state, []).extend(chans)
            else:
                units.append(Unit(tuple(chans), state, {}))
        got = group_units(units, index.urls, direct=False)
        groups.extend(got)
        if pass_no == 1 and window is not None:
            folded = window.translate(n if request.time is None else request.time)
            times.extend([folded] * len(got))
        else:
            times.extend([request.time] * len(got))
        for why, chans in by_reason.items():
            uncovered.append(Uncovered(tuple(sorted(chans)), request.time, request.time, why))
    group_times = tuple(times) if any(t != request.time for t in times) else ()
    return DescribePlan(request, tuple(groups), tuple(uncovered), group_times)


# --------------------------------------------------------------------------- find, publish


def plan_find(index: RoutingIndex, request: FindRequest, now_ns: int) -> FindPlan:
    """Plan a Find or Count: one target per disjoint scope set among the endpoints retaining
    ``request.time`` (see ``FindPlan`` for an example).

    >>> from scopemap import RoutingIndex, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 0, oldest: 600}
    ... ''').scope_map)
    >>> now = 1_400_000_000_000_000_000
    >>> len(plan_find(index, FindRequest(now - 60 * 10**9), now).targets)
    1
    >>> len(plan_find(index, FindRequest(now - 3600 * 10**9), now).targets)  # nobody keeps it
    0
    """
    window = resolve(index.scope_map, request.replay_id)
    n = truncate_now(now_ns)
    if window is None or window.name is None:
        return FindPlan(request, find_targets(index, index.base, request.time, n, None))
    # Two passes (§8.8): raw archival channels at the folded time, then the replay's own.
    folded = window.translate(n if request.time is None else request.time)
    raw = find_targets(index, index.base, folded, n, None)
    derived = find_targets(index, index.view(window.name), request.time, n, window.name)
    return FindPlan(request, raw + derived)


def plan_publish(index: RoutingIndex, request: PublishRequest, now_ns: int) -> PublishPlan:
    """Route a Publish or Partition to the first endpoint (file order) listing the publisher
    in ``allowed_publishers`` (see ``PublishPlan`` for an example).

    >>> from scopemap import RoutingIndex, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://a.example.org:31206: {scopes: {H1: [{all: true}]}, retention: {}}
    ... ''').scope_map)
    >>> print(plan_publish(index, PublishRequest("H1-lldd"), 0).endpoint)
    None
    """
    resolve(index.scope_map, request.replay_id)
    for ep in index.scope_map.endpoints:
        if request.publisher_id in ep.allowed_publishers:
            return PublishPlan(request, ep.url)
    return PublishPlan(request, None)


def plan(
    index: RoutingIndex,
    request: StreamRequest | DescribeRequest | FindRequest | PublishRequest,
    now_ns: int,
) -> Plan:
    """Plan any request: dispatches to ``plan_stream``, ``plan_describe``, ``plan_find`` or
    ``plan_publish`` by the request's type.

    >>> from scopemap import DescribeRequest, FindRequest, RoutingIndex, load_text
    >>> index = RoutingIndex(load_text('''
    ... grpc://a.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {}
    ... grpc://b.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {}
    ... ''').scope_map)
    >>> now = 1_400_000_000_000_000_000
    >>> plan(index, DescribeRequest(("H1:A-B",), None), now).groups[0].endpoints
    ('grpc://a.example.org:31206', 'grpc://b.example.org:31206')
    >>> len(plan(index, FindRequest(None), now).targets)  # replicas are asked once
    1
    """
    if isinstance(request, StreamRequest):
        return plan_stream(index, request, now_ns)
    if isinstance(request, DescribeRequest):
        return plan_describe(index, request, now_ns)
    if isinstance(request, FindRequest):
        return plan_find(index, request, now_ns)
    if isinstance(request, PublishRequest):
        return plan_publish(index, request, now_ns)
    raise TypeError(f"not a request: {request!r}")
