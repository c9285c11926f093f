"""Planner scenarios as tables: stream, describe, find/count, publish, replays, exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scopemap import (
    DescribeRequest,
    FindRequest,
    PublishRequest,
    Reason,
    ReplayError,
    RetentionTree,
    RoutingIndex,
    StreamRequest,
    load_path,
    load_text,
    plan,
    plan_describe,
    plan_find,
    plan_publish,
    plan_stream,
    replays_json,
    to_upstream_json,
)

S = 1_000_000_000
NOW = 1_400_000_000 * S + 250_000_000  # a quarter second past a whole second
N = 1_400_000_000 * S  # NOW truncated: where retention bounds sit
EXAMPLES = Path(__file__).parents[2] / "examples" / "scope-maps"


def index_of(text: str) -> RoutingIndex:
    result = load_text(text)
    assert result.scope_map is not None, result.diagnostics
    return RoutingIndex(result.scope_map)


def example(name: str) -> RoutingIndex:
    result = load_path(EXAMPLES / name)
    assert result.scope_map is not None
    return RoutingIndex(result.scope_map)


LIVE, ARCH = "grpc://127.0.0.1:31207", "grpc://127.0.0.1:31208"


@pytest.mark.parametrize(
    ("start_age", "end_age", "expected"),
    [
        # inside the overlap: one slice, live preferred only if it covers everything
        (500, 400, [(-500, -400, (LIVE, ARCH))]),
        # reaching back past live's 600 s: one cut, at a whole second; slices are cut
        # greedily from the start, so the archive keeps the overlap (up to N - 300 s)
        (700, 100, [(-700, -300, (ARCH,)), (-300, -100, (LIVE,))]),
        # the defect of §8.9 (live 600 / archive 600) is not reproduced: no hole
        (700, 500, [(-700, -500, (ARCH,))]),
        # archive-only history
        (5000, 1000, [(-5000, -1000, (ARCH,))]),
        # open end: up to now and beyond on the live server
        (700, None, [(-700, -300, (ARCH,)), (-300, None, (LIVE,))]),
    ],
)
def test_demo_map_stream_slices(
    start_age: int, end_age: int | None, expected: list[tuple[int, int | None, tuple[str, ...]]]
) -> None:
    idx = example("demo.yaml")
    start = NOW - start_age * S
    end = None if end_age is None else NOW - end_age * S
    p = plan_stream(
        idx, StreamRequest(("H1:GDS-CALIB_STRAIN", "L1:GDS-CALIB_STRAIN"), start, end), NOW
    )
    got = []
    for s in p.slices:
        assert len(s.groups) == 1
        assert s.groups[0].channels == ("H1:GDS-CALIB_STRAIN", "L1:GDS-CALIB_STRAIN")
        got.append((s.start, s.end, s.groups[0].endpoints))
    want = []
    for i, (a, b, eps) in enumerate(expected):
        sa = start if i == 0 else N + a * S
        sb = end if i == len(expected) - 1 else (N + b * S if b is not None else None)
        want.append((sa, sb, eps))
    assert got == want
    assert p.complete


def test_live_stream_goes_to_live_endpoints_and_reports_the_rest() -> None:
    idx = index_of(
        "grpc://live.x:1:\n  scopes: {H1: [{subsystem: GDS}]}\n  retention: {oldest: 600}\n"
        "grpc://arch.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 60}\n"
    )
    p = plan_stream(idx, StreamRequest(("H1:GDS-A", "H1:PEM-B", "X1:Y"), None, None), NOW)
    assert [(s.start, s.end) for s in p.slices] == [(None, None)]
    assert [(g.channels, g.endpoints) for g in p.slices[0].groups] == [
        (("H1:GDS-A",), ("grpc://live.x:1",))
    ]
    assert {(u.channels, u.reason) for u in p.uncovered} == {
        (("H1:PEM-B",), Reason.NO_LIVE),
        (("X1:Y",), Reason.NO_SCOPE),
    }


def test_carve_out_wins_where_it_has_data_and_falls_back_elsewhere() -> None:
    idx = example("carve-out.yaml")
    strain, other = "H1:GDS-CALIB_STRAIN", "H1:GDS-OTHER"
    start = NOW - 2 * 86400 * S
    p = plan_stream(idx, StreamRequest((strain, other), start, NOW - 10 * S), NOW)
    assert len(p.slices) == 2
    old, recent = p.slices
    assert old.end == N - 86400 * S
    assert [(g.channels, g.endpoints) for g in old.groups] == [
        ((strain, other), ("grpc://h1-general.example.org:31206",))
    ]
    assert {(g.channels, g.endpoints) for g in recent.groups} == {
        ((strain,), ("grpc://h1-calibration.example.org:31206",)),
        ((other,), ("grpc://h1-general.example.org:31206",)),
    }


def test_retention_gap_is_reported_not_dropped() -> None:
    idx = index_of(
        "grpc://live.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {oldest: 600}\n"
        "grpc://arch.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 900}\n"
    )
    p = plan_stream(idx, StreamRequest(("H1:A",), NOW - 1000 * S, NOW - 100 * S), NOW)
    assert [(s.start, s.end, len(s.groups)) for s in p.slices] == [
        (NOW - 1000 * S, N - 900 * S, 1),
        (N - 900 * S, N - 600 * S, 0),
        (N - 600 * S, NOW - 100 * S, 1),
    ]
    assert [(u.channels, u.start, u.end, u.reason) for u in p.uncovered] == [
        (("H1:A",), N - 900 * S, N - 600 * S, Reason.NO_RETENTION)
    ]


def test_open_ended_gap_reports_past_and_future_reasons_separately() -> None:
    """An empty window (newest == oldest) leaves an open-ended request uncovered: the past part
    lacks retention, the part from now on lacks a live endpoint (found by hypothesis)."""
    idx = index_of(
        "grpc://ep0.x:1:\n  scopes: {L1: [{all: true}]}\n  retention: {newest: 100, oldest: 100}\n"
    )
    p = plan_stream(idx, StreamRequest(("L1:A",), N - 100 * S, None), NOW)
    assert [(s.start, s.end, s.groups) for s in p.slices] == [(N - 100 * S, N, ()), (N, None, ())]
    assert [(u.start, u.end, u.reason) for u in p.uncovered] == [
        (N - 100 * S, N, Reason.NO_RETENTION),
        (N, None, Reason.NO_LIVE),
    ]


def test_replicas_are_listed_in_yaml_order_and_grouped() -> None:
    idx = example("replicated-archives.yaml")
    p = plan_stream(idx, StreamRequest(("L1:A", "H1:B"), NOW - 9000 * S, NOW - 8000 * S), NOW)
    [s] = p.slices
    assert [(g.channels, g.endpoints) for g in s.groups] == [
        (
            ("H1:B", "L1:A"),
            ("grpc://archive-a.example.org:31206", "grpc://archive-b.example.org:31206"),
        )
    ]


def test_direct_read_groups_carry_kafka_locations() -> None:
    idx = example("replays-publishers.yaml")
    p = plan_stream(idx, StreamRequest(("H1:GDS-X", "H1:LSC-Y"), None, None), NOW)
    groups = {g.channels: g for g in p.slices[0].groups}
    assert groups[("H1:LSC-Y",)].direct_read == ()
    assert groups[("H1:GDS-X",)].direct_read == (
        "kafka://k1.example.org:9092",
        "kafka://k2.example.org:9092",
    )
    d = plan_describe(idx, DescribeRequest(("H1:GDS-X", "H1:LSC-Y"), None), NOW)
    assert [g.channels for g in d.groups] == [("H1:GDS-X", "H1:LSC-Y")]


def test_empty_range_has_no_slices() -> None:
    idx = example("demo.yaml")
    assert plan_stream(idx, StreamRequest(("H1:A",), NOW, NOW), NOW).slices == ()


# --------------------------------------------------------------------------- describe


def test_describe_prefers_live_and_falls_back_per_channel() -> None:
    idx = index_of(
        "grpc://live.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {oldest: 600}\n"
        "grpc://arch.x:1:\n  scopes: {H1: [{all: true}], L1: [{all: true}]}\n"
        "  retention: {newest: 600}\n"
    )
    d = plan_describe(idx, DescribeRequest(("H1:A", "L1:B", "V1:C"), None), NOW)
    assert [(g.channels, g.endpoints) for g in d.groups] == [
        (("H1:A",), ("grpc://live.x:1",)),
        (("L1:B",), ("grpc://arch.x:1",)),
    ]
    assert [(u.channels, u.reason) for u in d.uncovered] == [(("V1:C",), Reason.NO_SCOPE)]
    old = plan_describe(idx, DescribeRequest(("H1:A",), NOW - 1000 * S), NOW)
    assert [g.endpoints for g in old.groups] == [("grpc://arch.x:1",)]


# --------------------------------------------------------------------------- find / publish


def test_find_counts_replicas_once() -> None:
    idx = example("replicated-archives.yaml")
    f = plan_find(idx, FindRequest(NOW - 9000 * S), NOW)
    assert [t.endpoints for t in f.targets] == [
        ("grpc://archive-a.example.org:31206", "grpc://archive-b.example.org:31206")
    ]
    live = plan_find(idx, FindRequest(None), NOW)
    assert [t.endpoints for t in live.targets] == [("grpc://live.example.org:31206",)]


def test_find_overlap_of_demo_is_counted_once() -> None:
    idx = example("demo.yaml")
    f = plan_find(idx, FindRequest(NOW - 400 * S), NOW)
    assert [t.endpoints for t in f.targets] == [(LIVE, ARCH)]


def test_find_drops_nested_regions() -> None:
    idx = index_of(
        "grpc://a.x:1:\n  scopes: {H1: [{subsystem: GDS}]}\n  retention: {}\n"
        "grpc://b.x:1:\n  scopes: {H1: [{all: true}], L1: [{channel: 'L1:X'}]}\n"
        "  retention: {}\n"
        "grpc://c.x:1:\n  scopes: {L1: [{subsystem: PEM}]}\n  retention: {}\n"
    )
    f = plan_find(idx, FindRequest(None), NOW)
    assert [t.endpoints for t in f.targets] == [("grpc://b.x:1",), ("grpc://c.x:1",)]


def test_publish_routes_to_first_authoritative_endpoint() -> None:
    idx = example("replays-publishers.yaml")
    assert plan_publish(idx, PublishRequest("H1-lldd"), NOW).endpoint == (
        "grpc://h1-live.example.org:31206"
    )
    assert plan_publish(idx, PublishRequest("nobody"), NOW).endpoint is None


# --------------------------------------------------------------------------- replays

REPLAY_ERRORS = [
    (
        StreamRequest((), 1, 2, "ER15", 1, 2),
        "replay_id and replay_start/replay_end are mutually exclusive",
    ),
    (
        StreamRequest((), 1, 2, "NOPE"),
        "unknown replay_id 'NOPE'; available replays: ['ER15', 'ER16']",
    ),
    (
        StreamRequest((), 1, 2, None, 1, None),
        "both replay_start and replay_end must be provided together",
    ),
    (StreamRequest((), 1, 2, None, 5, 5), "replay_start must be less than replay_end"),
    (DescribeRequest((), None, "NOPE"), "unknown replay_id 'NOPE'"),
    (FindRequest(None, "NOPE"), "unknown replay_id 'NOPE'"),
]


@pytest.mark.parametrize(("request_", "message"), REPLAY_ERRORS)
def test_replay_errors_use_upstream_texts(request_: object, message: str) -> None:
    with pytest.raises(ReplayError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan(example("replays-publishers.yaml"), request_, NOW)  # type: ignore[arg-type]


def test_replay_without_registry() -> None:
    with pytest.raises(ReplayError, match="no replay registry is configured"):
        plan_stream(example("demo.yaml"), StreamRequest((), None, None, "X"), NOW)


def test_named_replay_dual_pass() -> None:
    idx = index_of(
        "grpc://live.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {oldest: 600}\n"
        "  replay_ids: [{id: R, scopes: {H1: [{subsystem: GDS}]}}]\n"
        "grpc://arch.x:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 600}\n"
        "replays:\n  R: {start: 1300000000, end: 1300000100}\n"
    )
    p = plan_stream(idx, StreamRequest(("H1:GDS-A", "H1:PEM-B"), NOW - 10 * S, NOW, "R"), NOW)
    [s] = p.slices
    # GDS is derived (the replay's own scope on the live server, at the client's times);
    # PEM is raw archival data, found on the archive at the folded (replay) times.
    assert {(g.channels, g.endpoints) for g in s.groups} == {
        (("H1:GDS-A",), ("grpc://live.x:1",)),
        (("H1:PEM-B",), ("grpc://arch.x:1",)),
    }
    f = plan_find(idx, FindRequest(None, "R"), NOW)
    assert [(t.endpoints, t.replay_id) for t in f.targets] == [
        (("grpc://arch.x:1",), None),
        (("grpc://live.x:1",), "R"),
    ]
    assert f.targets[0].time is not None
    assert 1300000000 * S <= f.targets[0].time < 1300000100 * S
    d = plan_describe(idx, DescribeRequest(("H1:GDS-A", "H1:PEM-B"), None, "R"), NOW)
    assert [g.endpoints for g in d.groups] == [("grpc://live.x:1",), ("grpc://arch.x:1",)]
    assert d.group_times[0] is None and d.group_times[1] is not None


def test_anonymous_replay_routes_at_folded_times() -> None:
    idx = example("demo.yaml")
    window = (NOW - 3600 * S, NOW - 3500 * S)  # 100 s an hour ago: archive only
    req = StreamRequest(("H1:A",), NOW - 50 * S, NOW + 50 * S, None, *window)
    p = plan_stream(idx, req, NOW)
    assert [(s.start, s.end) for s in p.slices] == [(req.start, req.end)]
    assert p.slices[0].groups[0].endpoints == (ARCH,)


def test_replay_for_a_map_without_that_replay_is_uncovered() -> None:
    idx = example("replays-publishers.yaml")
    p = plan_stream(idx, StreamRequest(("L1:X",), NOW - 10 * S, NOW, "ER15"), NOW)
    assert [u.reason for u in p.uncovered] == [Reason.NO_REPLAY]


# --------------------------------------------------------------------------- exports


def test_upstream_json_matches_protocol_shape() -> None:
    result = load_path(EXAMPLES / "replays-publishers.yaml")
    assert result.scope_map is not None
    doc = to_upstream_json(result.scope_map)
    live = doc["endpoints"]["grpc://h1-live.example.org:31206"]
    assert live["scopes"]["H1"][0] == {
        "subsystem": "GDS",
        "publisher": "H1-lldd",
        "direct_read": True,
    }
    assert live["retention"] == {"newest": 0, "oldest": 600}
    assert live["replay_ids"] == ["ER15", "ER16"]
    assert live["replay_scopes"] == {"ER16": {"H1": [{"subsystem": "GDS"}]}}
    assert live["allowed_publishers"] == ["H1-lldd"]
    arch = doc["endpoints"]["grpc://h1-archive.example.org:31206"]
    assert arch["retention"] == {"newest": 600, "oldest": "inf"}
    assert arch["scopes"]["H1"] == [{"all": True}, {"subsystem": "PEM", "replay": "ER16"}]
    assert arch["replay_ids"] == ["ER16"]
    assert doc["local_endpoint"] is None
    assert replays_json(result.scope_map) == {
        "ER15": {"start": 1400000000.0, "end": 1400000100.0},
        "ER16": {"start": 1400001000.0, "end": 1400001100.0},
    }


# --------------------------------------------------------------------------- RetentionTree

windows = st.lists(
    st.tuples(st.integers(-5, 40), st.integers(0, 40)).map(
        lambda w: (float("-inf") if w[0] < 0 else w[0], w[0] + w[1] if w[0] >= 0 else w[1])
    ),
    max_size=60,
)


@given(windows, st.integers(-10, 60), st.integers(1, 30))
def test_retention_tree_matches_a_scan(ws: list[tuple[float, float]], a0: int, width: int) -> None:
    tree = RetentionTree((i, lo, hi) for i, (lo, hi) in enumerate(ws))
    a1 = a0 + width
    got = sorted(i for i, _, _ in tree.overlapping(a0, a1))
    assert got == [i for i, (lo, hi) in enumerate(ws) if lo < a1 and a0 < hi]
    assert sorted(i for i, _, _ in tree.covering(a0)) == [
        i for i, (lo, hi) in enumerate(ws) if lo < a0 <= hi
    ]
    assert sorted(i for i, _, _ in tree.covering(float("-inf"))) == [
        i for i, (lo, _) in enumerate(ws) if lo == float("-inf")
    ]
    for p in tree.split_points(a0, a1):
        assert a0 < p < a1
