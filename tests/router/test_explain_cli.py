"""``router explain``: the command line over the planner — exit codes, text, JSON, times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from router.cli import main
from router.timefmt import parse_time, utc_text
from scopemap import RoutingIndex, StreamRequest, load_path, plan_stream

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples" / "scope-maps").glob("*.yaml"))
DEMO = ROOT / "examples" / "scope-maps" / "demo.yaml"
CARVE = ROOT / "examples" / "scope-maps" / "carve-out.yaml"
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "explain.schema.json").read_text())
)
NOW = 1_400_000_000
S = 1_000_000_000


def explain(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    got = capsys.readouterr()
    return code, got.out, got.err


def explain_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code, out, _ = explain([*argv, "--format", "json"], capsys)
    doc = json.loads(out)
    VALIDATOR.validate(doc)
    return code, doc


def test_demo_split_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scope-map", str(DEMO), "--now", str(NOW), "H1:GDS-CALIB_STRAIN"]
    code, out, _ = explain([*args, "--start", str(NOW - 900), "--end", str(NOW - 100)], capsys)
    assert code == 0
    assert "slice 1/2 [1399999100" in out and "slice 2/2 [1399999700" in out
    # the archive serves the old slice (its "all: true" is line 21 of demo.yaml); the live
    # server, which keeps only the last 600 s, loses it on retention
    assert "1. grpc://127.0.0.1:31208  (preferred)" in out
    assert "claim all H1 (" + str(DEMO) + ":21)" in out
    assert "retention holds only part of this slice" in out
    assert out.rstrip().endswith("result: fully served")


def test_uncovered_exits_1_and_names_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scope-map", str(CARVE), "--now", str(NOW), "V1:X-Y", "H1:CAL-A"]
    code, doc = explain_json([*args, "--start", str(NOW - 10), "--end", str(NOW)], capsys)
    assert code == 1 and doc["exit_code"] == 1 and doc["complete"] is False
    (unc,) = doc["uncovered"]
    assert unc["channels"] == ["V1:X-Y"]
    assert unc["reason"] == "no endpoint claims this channel"


def test_no_retention_and_no_live_list_the_claimers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(
        "grpc://recent:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 0, oldest: 600}\n"
        "grpc://old:1:\n  scopes: {H1: [{subsystem: A}]}\n  retention: {newest: 3600}\n"
    )
    args = ["--scope-map", str(m), "--now", str(NOW), "H1:B-X"]
    code, doc = explain_json([*args, "--start", str(NOW - 3600), "--end", str(NOW - 1000)], capsys)
    assert code == 1
    (unc,) = doc["uncovered"]
    assert unc["reason"] == "no endpoint claiming this channel retains this time range"
    assert [c["endpoint"] for c in unc["claimers"]] == ["grpc://recent:1"]
    assert unc["claimers"][0]["claim"]["line"] == 2
    assert unc["claimers"][0]["retention"]["start"]["gps"] == str(NOW - 600)
    code, out, _ = explain(["--scope-map", str(m), "--now", str(NOW), "H1:A-X"], capsys)
    assert code == 0 and "1. grpc://recent:1" in out  # live: only the live server
    code, out, _ = explain([*args[:4], "H1:A-X", "--start", str(NOW - 7200)], capsys)
    # open-ended from 2 h ago: old server until 1 h ago, gap, then the live server
    assert code == 1
    assert "no endpoint claiming this channel retains this time range" in out
    assert "grpc://old:1  (preferred)" in out and "grpc://recent:1  (preferred)" in out


def test_iso_and_gps_times_are_the_same_request(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--scope-map", str(DEMO), "H1:A-B"]
    _, gps = explain_json([*base, "--now", str(NOW), "--start", str(NOW - 700)], capsys)
    iso = [
        *base,
        "--now",
        utc_text(NOW * S),
        "--start",
        utc_text((NOW - 700) * S),
    ]
    _, doc = explain_json(iso, capsys)
    assert doc == gps
    assert doc["now"]["utc"] == "2024-05-17T16:53:02Z"
    assert parse_time("2024-05-17T16:53:02Z") == NOW * S


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "exactly one request"),
        (["H1:A-B", "--describe", "H1:C-D"], "exactly one request"),
        (["H1:A-B", "--start", "yesterday"], "neither GPS seconds nor ISO-8601"),
        (["H1:A-B", "--start", "2024-05-17T16:53:02"], "UTC explicitly"),
        (["H1:A-B", "--start", "100", "--end", "50"], "must be after --start"),
        (["H1:A-B", "--end", "50"], "live stream"),
        (["--describe", "H1:A-B", "--start", "5"], "--start/--end are for streams"),
        (["H1:A-B", "--time", "5"], "--time is for"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = explain(["--scope-map", str(DEMO), *argv], capsys)
    assert code == 2
    assert needle in err and out == ""


def test_invalid_map_exits_2_with_diagnostics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "grpc://a:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 9, oldest: 1}\n"
    )
    code, _, err = explain(["--scope-map", str(bad), "H1:A-B", "--start", "5"], capsys)
    assert code == 2
    assert "SM101" in err and "not a valid scope map" in err
    code, _, err = explain(["--scope-map", str(tmp_path / "nope.yaml"), "H1:A-B"], capsys)
    assert code == 2 and "cannot read" in err


def _claimed_channels(path: Path) -> list[str]:
    """A channel per claim of the map (exact names, a member of each subsystem, one per
    wildcard domain) plus one nobody claims."""
    sm = load_path(path).scope_map
    assert sm is not None
    out = {"Z9:NOBODY-HERE"}
    for ep in sm.endpoints:
        for e in ep.scopes:
            if e.kind == "channel" and e.value:
                out.add(e.value)
            elif e.kind == "subsystem":
                out.add(f"{e.domain}:{e.value}-EXPLAIN_PROBE")
            else:
                out.add(f"{e.domain}:ZZZ-EXPLAIN_PROBE")
    return sorted(out)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
@pytest.mark.parametrize(
    "window", [(None, None), (-60, None), (-900, -100), (-90000, -10), (-(10**8), -500)]
)
def test_every_example_map_prints_the_plan(
    path: Path, window: tuple[int | None, int | None], capsys: pytest.CaptureFixture[str]
) -> None:
    channels = _claimed_channels(path)
    start = None if window[0] is None else NOW + window[0]
    end = None if window[1] is None else NOW + window[1]
    argv = ["--scope-map", str(path), "--now", str(NOW), *channels]
    argv += [] if start is None else ["--start", str(start)]
    argv += [] if end is None else ["--end", str(end)]
    code, doc = explain_json(argv, capsys)
    sm = load_path(path).scope_map
    assert sm is not None
    req = StreamRequest(
        tuple(channels), None if start is None else start * S, None if end is None else end * S
    )
    plan = plan_stream(RoutingIndex(sm), req, NOW * S)
    got = [[(g["channels"], g["endpoints"]) for g in s["groups"]] for s in doc["slices"]]
    want = [[(list(g.channels), list(g.endpoints)) for g in s.groups] for s in plan.slices]
    assert got == want
    assert len(doc["uncovered"]) == len(plan.uncovered) >= 1  # Z9 is never claimed
    assert code == 1
    code, out, _ = explain(argv, capsys)  # and the text form runs on every map too
    assert code == 1 and out.count("\nslice ") == len(plan.slices)


def test_runs_as_a_command_without_pyarrow() -> None:
    """Like ``router check``: explain never pays for (or needs) pyarrow."""
    argv = ["explain", "--scope-map", str(DEMO), "--describe", "H1:A-B", "--format", "json"]
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['router', *{argv!r}]\n"
        "try:\n    runpy.run_module('router.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported'\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["groups"][0]["endpoints"] == ["grpc://127.0.0.1:31207"]  # live: newest data


def test_find_and_describe_requests(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--scope-map", str(DEMO), "--now", str(NOW)]
    code, out, _ = explain([*base, "--find", "H1:GDS-.*", "--time", str(NOW - 3600)], capsys)
    assert code == 0
    assert "find 'H1:GDS-.*' at 1399996400" in out
    assert "target 1: grpc://127.0.0.1:31208" in out
    assert "not asked: grpc://127.0.0.1:31207: retention does not hold the requested time" in out
    iso = "2024-05-17T15:53:02Z"  # NOW - 3600
    code, doc = explain_json([*base, "--describe", "H1:A-B", "--time", iso], capsys)
    assert code == 0 and doc["request"]["time"]["gps"] == str(NOW - 3600)
    (group,) = doc["groups"]
    assert group["endpoints"] == ["grpc://127.0.0.1:31208"]
    assert [c["lost"] for c in group["lost"]] == ["retention"]
    nobody = ["--scope-map", str(CARVE), "--now", str(NOW), "--find", "V1:.*", "--time", "5"]
    code, doc = explain_json(nobody, capsys)  # at GPS 5 only the forever-archive is active
    assert code == 0 and [t["endpoints"] for t in doc["targets"]] == [
        ["grpc://h1-general.example.org:31206"]
    ]
