"""``router.verifyplan``: the probes ``router verify`` sends and how answers are judged."""

from __future__ import annotations

import math
import re

import pytest

from router.verifyplan import (
    Status,
    compare_scope_map,
    inside_time,
    judge_find,
    judge_time,
    own_retention,
    retention_probes,
    scope_pattern,
)
from scopemap import Retention, ScopeEntry, load_text

S = 1_000_000_000
NOW = 1_400_000_000 * S
NAMES = ["H1:GDS-CALIB_STRAIN", "H1:GDS_X", "H1:GDSX-Y", "H1:GDS", "L1:GDS-A", "H1:CAL-A.B"]


@pytest.mark.parametrize(
    "entry, matched",
    [
        (
            ScopeEntry("H1", "all"),
            ["H1:GDS-CALIB_STRAIN", "H1:GDS_X", "H1:GDSX-Y", "H1:GDS", "H1:CAL-A.B"],
        ),
        (ScopeEntry("H1", "subsystem", "GDS"), ["H1:GDS-CALIB_STRAIN", "H1:GDS_X", "H1:GDS"]),
        (ScopeEntry("H1", "channel", "H1:CAL-A.B"), ["H1:CAL-A.B"]),
        (ScopeEntry("H1", "channel", "H1:GDS"), ["H1:GDS"]),
    ],
)
def test_scope_patterns_select_exactly_the_claim(entry: ScopeEntry, matched: list[str]) -> None:
    pattern = re.compile(scope_pattern(entry))
    assert [n for n in NAMES if pattern.match(n)] == matched  # prefix-anchored like upstream


def test_retention_probes_table() -> None:
    live = retention_probes(Retention(0, 600), NOW, 5)
    assert [(p.time, p.answered) for p in live] == [
        (NOW, True),
        (NOW - 595 * S, True),
        (NOW - 605 * S, False),
    ]
    archive = retention_probes(Retention(300, math.inf), NOW, 5)
    assert [(p.time, p.answered) for p in archive] == [
        (NOW - 305 * S, True),
        (NOW - 295 * S, False),
        (NOW - 365 * 86400 * S, True),
    ]
    narrow = retention_probes(Retention(100, 108), NOW, 5)  # margin shrinks to 2 s
    assert [(p.time, p.answered) for p in narrow] == [
        (NOW - 102 * S, True),
        (NOW - 98 * S, False),
        (NOW - 106 * S, True),
        (NOW - 110 * S, False),
    ]
    assert inside_time(Retention(0, 600), NOW, 5) is None
    assert inside_time(Retention(300, 900), NOW, 5) == NOW - 305 * S


def test_judgements() -> None:
    probe = retention_probes(Retention(0, 600), NOW, 5)[2]  # outside: must be refused
    assert judge_time(probe, "H1:A", None, 7).status is Status.DRIFT
    assert judge_time(probe, "H1:A", "outside retention", 7).status is Status.OK
    entry = ScopeEntry("H1", "channel", "H1:A-B")
    assert judge_find(entry, "p", ["H1:A-C"], None, 3).status is Status.DRIFT
    assert judge_find(entry, "p", ["H1:A-B"], None, 3).status is Status.OK
    assert judge_find(ScopeEntry("H1", "all"), "p", [], None, 3).status is Status.DRIFT
    assert judge_find(ScopeEntry("H1", "all"), "p", None, "boom", 3).status is Status.DRIFT


def test_compare_scope_map() -> None:
    text = (
        "grpc://a:1:\n  scopes:\n    H1: [{subsystem: GDS}, {channel: H1:PEM-X}]\n"
        "    L1: [{all: true}]\n  retention: {newest: 0, oldest: 600}\n"
    )
    sm = load_text(text, "m.yaml").scope_map
    assert sm is not None
    (ep,) = sm.endpoints
    agrees = {
        "endpoints": {
            "arrow-flight-reuse-connection://?": {
                "scopes": {
                    "H1": [{"subsystem": "GDS"}, {"subsystem": "PEM"}],
                    "L1": [{"subsystem": "X"}],
                },
                "retention": {"newest": 0, "oldest": 600},
            }
        },
        "local_endpoint": "arrow-flight-reuse-connection://?",
    }
    assert [f.status for f in compare_scope_map(ep, agrees, 1)] == [Status.OK]
    assert own_retention(agrees, ep.url) == Retention(0, 600)
    drifted = {
        "endpoints": {
            "grpc://a:1": {
                "scopes": {"H1": [{"subsystem": "GDS"}]},
                "retention": {"newest": 0, "oldest": "inf"},
            },
            "grpc://other:1": {"scopes": {}, "retention": {}},
        }
    }
    found = {(f.line, f.claim, f.status) for f in compare_scope_map(ep, drifted, 1)}
    assert found == {
        (3, "channel H1:PEM-X", Status.DRIFT),
        (4, "all L1", Status.DRIFT),
        (5, "newest 0 s, oldest 600 s", Status.DRIFT),
    }
    assert [f.status for f in compare_scope_map(ep, {"endpoints": {"x": {}, "y": {}}}, 1)] == [
        Status.SKIPPED
    ]
