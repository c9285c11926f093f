"""Properties of stream plans over random scope maps, requests and now (house-plan invariant 1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scopemap import Reason, RoutingIndex, ScopeMap, StreamPlan, StreamRequest, plan_stream
from tests.scopemap import reference as ref
from tests.strategies import now_ns, scope_maps, stream_requests


@st.composite
def cases(draw: st.DrawFn) -> tuple[ScopeMap, StreamRequest, int]:
    sm = draw(scope_maps())
    now = draw(now_ns())
    return sm, draw(stream_requests(now)), now


def _instants(p: StreamPlan, req: StreamRequest) -> list[int]:
    """Probe instants: every slice bound, its neighbours and the request's ends."""
    assert req.start is not None
    probes = {req.start}
    for s in p.slices:
        for t in (s.start, s.end):
            if t is not None:
                probes.update({t - 1, t, t + 1})
    last = req.end if req.end is not None else req.start + 10_000 * ref.S
    probes.add(last - 1)
    return sorted(t for t in probes if req.start <= t < last)


def _in(t: int, start: int | None, end: int | None) -> bool:
    return (start is None or start <= t) and (end is None or t < end)


@given(cases())
def test_slices_tile_the_request(case: tuple[ScopeMap, StreamRequest, int]) -> None:
    sm, req, now = case
    p = plan_stream(RoutingIndex(sm), req, now)
    if req.start is None:
        assert [(s.start, s.end) for s in p.slices] == [(None, req.end)]
        return
    assert p.slices, "a non-empty range has slices"
    assert p.slices[0].start == req.start
    assert p.slices[-1].end == req.end
    for a, b in zip(p.slices, p.slices[1:], strict=False):
        assert a.end == b.start
    for s in p.slices:
        assert s.start is not None
        assert s.end is None or s.start < s.end


@given(cases())
def test_every_channel_instant_exactly_once_at_highest_specificity(
    case: tuple[ScopeMap, StreamRequest, int],
) -> None:
    sm, req, now = case
    idx = RoutingIndex(sm)
    p = plan_stream(idx, req, now)
    pos = {u: i for i, u in enumerate(idx.urls)}
    if req.start is None:
        for c in set(req.channels):
            hits = [g for g in p.slices[0].groups if c in g.channels]
            unc = [u for u in p.uncovered if c in u.channels]
            assert len(hits) + len(unc) == 1
            expected = ref.live_valid(sm, c)
            if hits:
                assert set(pos[e] for e in hits[0].endpoints) <= set(expected)
                assert all(sm.endpoints[pos[e]].retention.is_live for e in hits[0].endpoints)
            else:
                assert not expected
        return
    for t in _instants(p, req):
        for c in set(req.channels):
            where = [
                (s, g)
                for s in p.slices
                if _in(t, s.start, s.end)
                for g in s.groups
                if c in g.channels
            ]
            unc = [u for u in p.uncovered if c in u.channels and _in(t, u.start, u.end)]
            assert len(where) + len(unc) == 1, (c, t, where, unc)
            expected = ref.valid(sm, now, c, t, t + 1)
            if where:
                slice_, group = where[0]
                assert group.endpoints, "a group always has endpoints"
                for e in group.endpoints:
                    i = pos[e]
                    assert i in expected, (c, t, e, expected)
                    assert ref.covers(sm, i, now, slice_.start, slice_.end)
                # replicas in YAML order
                assert [pos[e] for e in group.endpoints] == sorted(pos[e] for e in group.endpoints)
            else:
                assert not expected, (c, t, unc, expected)
                if unc[0].reason is Reason.NO_SCOPE:
                    assert not any(ref.specificity(sm, i, c) for i in range(len(sm.endpoints)))


@given(cases())
def test_agrees_with_brute_force_reference(case: tuple[ScopeMap, StreamRequest, int]) -> None:
    sm, req, now = case
    if req.start is None:
        return
    p = plan_stream(RoutingIndex(sm), req, now)
    idx_pos = {ep.url: i for i, ep in enumerate(sm.endpoints)}
    channels = sorted(set(req.channels))
    expected = ref.reference_slices(sm, now, channels, req.start, req.end)
    assert [(s.start, s.end) for s in p.slices] == [(a, b) for a, b, _ in expected]
    for s, (_, _, states) in zip(p.slices, expected, strict=True):
        cands = {c: tuple(sorted(v)) for c, v in states.items() if not isinstance(v, str)}
        got = {(g.channels, tuple(idx_pos[e] for e in g.endpoints)) for g in s.groups}
        assert got == ref.greedy_groups(cands)


@given(cases())
def test_a_range_one_endpoint_covers_is_never_split(
    case: tuple[ScopeMap, StreamRequest, int],
) -> None:
    sm, req, now = case
    if req.start is None or not req.channels:
        return
    for i in range(len(sm.endpoints)):
        if all(
            i in ref.valid(sm, now, c, a, b)
            for a, b in ref.pieces(sm, now, req.start, req.end)
            for c in req.channels
        ):
            p = plan_stream(RoutingIndex(sm), req, now)
            assert len(p.slices) == 1
            assert not p.uncovered
            return


@given(cases())
def test_plans_are_deterministic(case: tuple[ScopeMap, StreamRequest, int]) -> None:
    sm, req, now = case
    shuffled = StreamRequest(tuple(reversed(req.channels)), req.start, req.end)
    a = plan_stream(RoutingIndex(sm), req, now)
    b = plan_stream(RoutingIndex(sm), shuffled, now)
    assert a.slices == b.slices
    assert a.uncovered == b.uncovered
