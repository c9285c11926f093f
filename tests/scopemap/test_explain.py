"""``scopemap.explain``: the plan is the planner's, and every "why" it gives is true.

Properties over random maps and requests: explain's JSON carries exactly ``plan_stream``'s
slices, groups, replicas and uncovered ranges (one source of truth), every chosen endpoint's
claim matches its channels at the top specificity with a window holding the slice, and every
losing endpoint's reason holds (retention really misses, a claim really is less specific, a
"grouped" one really was a valid candidate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given
from hypothesis import strategies as st

from router.explain import to_json
from scopemap import (
    DescribeRequest,
    FindRequest,
    RoutingIndex,
    ScopeMap,
    StreamRequest,
    load_text,
    parse_channel_name,
    plan_describe,
    plan_find,
    plan_stream,
)
from scopemap.explain import (
    Contender,
    Lost,
    explain_describe,
    explain_find,
    explain_stream,
)
from tests.strategies import CHANNELS, S, now_ns, scope_maps, stream_requests

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "explain.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@st.composite
def cases(draw: st.DrawFn) -> tuple[ScopeMap, StreamRequest, int]:
    sm = draw(scope_maps())
    now = draw(now_ns())
    return sm, draw(stream_requests(now)), now


def _ns(t: dict[str, Any] | None) -> int | None:
    return None if t is None else int(t["gps_ns"])


def _line_text(sm_text: str, line: int) -> str:
    return sm_text.splitlines()[line - 1]


def _entry_matches(c: Contender, channel: str) -> bool:
    name = parse_channel_name(channel)
    if name.domain != c.claim.domain:
        return False
    if c.claim.kind == "all":
        return True
    if c.claim.kind == "subsystem":
        return name.subsystem == c.claim.value
    return channel == c.claim.value


SPEC = {"channel": 3, "subsystem": 2, "all": 1}


@given(cases())
def test_explain_json_is_the_plan(case: tuple[ScopeMap, StreamRequest, int]) -> None:
    sm, req, now = case
    index = RoutingIndex(sm)
    plan = plan_stream(index, req, now)
    doc = to_json(explain_stream(index, req, now), sm.file)
    VALIDATOR.validate(doc)
    got = [
        (
            _ns(s["start"]),
            _ns(s["end"]),
            [(tuple(g["channels"]), tuple(g["endpoints"])) for g in s["groups"]],
        )
        for s in doc["slices"]
    ]
    want = [(s.start, s.end, [(g.channels, g.endpoints) for g in s.groups]) for s in plan.slices]
    assert got == want
    got_unc = [
        (tuple(u["channels"]), _ns(u["start"]), _ns(u["end"]), u["reason"])
        for u in doc["uncovered"]
    ]
    want_unc = [(u.channels, u.start, u.end, u.reason.value) for u in plan.uncovered]
    assert got_unc == want_unc
    assert doc["complete"] is plan.complete
    assert doc["exit_code"] == (0 if plan.complete else 1)


@given(cases())
def test_every_reason_holds(case: tuple[ScopeMap, StreamRequest, int]) -> None:
    sm, req, now = case
    index = RoutingIndex(sm)
    found = explain_stream(index, req, now)
    for s in found.slices:
        for g in s.groups:
            chosen_urls = {c.endpoint for c in g.chosen}
            assert chosen_urls == set(g.group.endpoints)
            top: dict[str, int] = {}
            for c in g.chosen:
                assert c.window.covers(s.start, s.end)
                for ch in c.channels:
                    assert _entry_matches(c, ch)
                    top.setdefault(ch, SPEC[c.claim.kind])
                    assert top[ch] == SPEC[c.claim.kind]  # replicas tie
            # every channel of the group is explained by each of its endpoints
            for url in g.group.endpoints:
                mine = {ch for c in g.chosen if c.endpoint == url for ch in c.channels}
                assert mine == set(g.group.channels)
            for c in g.lost:
                assert c.endpoint not in chosen_urls
                for ch in c.channels:
                    assert ch in g.group.channels
                    assert _entry_matches(c, ch)
                    if c.why is Lost.RETENTION:
                        assert not c.window.covers(s.start, s.end)
                    elif c.why is Lost.LESS_SPECIFIC:
                        assert c.window.covers(s.start, s.end)
                        assert SPEC[c.claim.kind] < top[ch]
                    else:
                        assert c.why is Lost.GROUPED
                        assert c.window.covers(s.start, s.end)
                        assert SPEC[c.claim.kind] == top[ch]
    for u in found.uncovered:
        for c in u.claimers:
            assert c.why is Lost.RETENTION
            assert any(_entry_matches(c, ch) for ch in u.uncovered.channels)


def test_claims_point_at_their_yaml_lines() -> None:
    text = (ROOT / "examples" / "scope-maps" / "carve-out.yaml").read_text()
    sm = load_text(text, "carve-out.yaml").scope_map
    assert sm is not None
    now = 1_400_000_000 * S
    req = StreamRequest(("H1:GDS-CALIB_STRAIN", "H1:CAL-X", "H1:LSC-Y"), now - 3600 * S, now)
    found = explain_stream(RoutingIndex(sm), req, now)
    (only,) = found.slices
    cal, general = only.groups
    assert cal.group.endpoints == ("grpc://h1-calibration.example.org:31206",)
    by_channel = {c.channels: c for c in cal.chosen}
    strain = by_channel[("H1:GDS-CALIB_STRAIN",)]
    assert "channel: H1:GDS-CALIB_STRAIN" in _line_text(text, strain.claim.line)
    assert "subsystem: CAL" in _line_text(text, by_channel[("H1:CAL-X",)].claim.line)
    assert "retention" in _line_text(text, strain.window.line)
    assert {c.why for c in cal.lost} == {Lost.LESS_SPECIFIC}
    assert general.group.channels == ("H1:LSC-Y",)
    assert "all: true" in _line_text(text, general.chosen[0].claim.line)


def test_grouped_loser_is_named() -> None:
    """Two channels, one endpoint serving both and one serving one: set cover asks the
    first for both; the second is a valid candidate that lost to grouping."""
    text = (
        "grpc://both:1:\n  scopes:\n    H1: [{all: true}]\n    L1: [{all: true}]\n"
        "  retention: {newest: 0}\n"
        "grpc://one:1:\n  scopes:\n    H1: [{all: true}]\n  retention: {newest: 0}\n"
    )
    sm = load_text(text, "m.yaml").scope_map
    assert sm is not None
    now = 1_400_000_000 * S
    req = StreamRequest(("H1:A-X", "L1:B-Y"), now - 10 * S, now)
    found = explain_stream(RoutingIndex(sm), req, now)
    (s,) = found.slices
    (g,) = s.groups
    assert g.group.endpoints == ("grpc://both:1",)
    assert [(c.endpoint, c.channels, c.why) for c in g.lost] == [
        ("grpc://one:1", ("H1:A-X",), Lost.GROUPED)
    ]


def test_describe_newest_prefers_nearest_and_says_so() -> None:
    text = (ROOT / "examples" / "scope-maps" / "demo.yaml").read_text()
    sm = load_text(text, "demo.yaml").scope_map
    assert sm is not None
    index = RoutingIndex(sm)
    now = 1_400_000_000 * S
    req = DescribeRequest(("H1:X-Y",), None)
    found = explain_describe(index, req, now)
    assert [g.group for g in found.groups] == list(plan_describe(index, req, now).groups)
    (g,) = found.groups
    assert g.group.endpoints == ("grpc://127.0.0.1:31207",)
    assert [c.why for c in g.lost] == [Lost.NOT_NEAREST]
    old = explain_describe(index, DescribeRequest(("H1:X-Y",), now - 3600 * S), now)
    assert old.groups[0].group.endpoints == ("grpc://127.0.0.1:31208",)
    assert [c.why for c in old.groups[0].lost] == [Lost.RETENTION]
    doc = to_json(old, "demo.yaml")
    VALIDATOR.validate(doc)


def test_find_targets_are_the_plans() -> None:
    text = (ROOT / "examples" / "scope-maps" / "demo.yaml").read_text()
    sm = load_text(text, "demo.yaml").scope_map
    assert sm is not None
    index = RoutingIndex(sm)
    now = 1_400_000_000 * S
    for t in (None, now - 10 * S, now - 400 * S, now - 3600 * S):
        found = explain_find(index, FindRequest(t), now)
        want = [tg.endpoints for tg in plan_find(index, FindRequest(t), now).targets]
        assert [tg.endpoints for tg in found.targets] == want
        asked = {u for tg in found.targets for u in tg.endpoints}
        assert asked | {c.endpoint for c in found.not_asked} == set(index.urls)
        VALIDATOR.validate(to_json(found, "demo.yaml", "H1:*"))
    at_400 = explain_find(index, FindRequest(now - 400 * S), now)
    assert [t.endpoints for t in at_400.targets] == [tuple(index.urls)]  # replicas
    at_3600 = explain_find(index, FindRequest(now - 3600 * S), now)
    assert [(c.endpoint, c.why) for c in at_3600.not_asked] == [
        ("grpc://127.0.0.1:31207", Lost.INACTIVE)
    ]


@given(st.data())
def test_describe_groups_are_the_plans(data: st.DataObject) -> None:
    sm = data.draw(scope_maps())
    now = data.draw(now_ns())
    chans = tuple(data.draw(st.lists(st.sampled_from(CHANNELS), max_size=5)))
    time = data.draw(st.one_of(st.none(), st.integers(now - 5000 * S, now + 100 * S)))
    index = RoutingIndex(sm)
    req = DescribeRequest(chans, time)
    found = explain_describe(index, req, now)
    plan = plan_describe(index, req, now)
    assert tuple(g.group for g in found.groups) == plan.groups
    assert tuple(u.uncovered for u in found.uncovered) == plan.uncovered
    VALIDATOR.validate(to_json(found, sm.file))
    for g in found.groups:
        for c in g.lost:
            if c.why is Lost.RETENTION:
                assert time is not None and not c.window.holds(time)
