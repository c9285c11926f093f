"""``router check``: exit codes, text and JSON output, examples clean under --strict."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from router import check

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples" / "scope-maps").glob("*.yaml"))
BAD = ROOT / "tests" / "scopemap" / "bad-maps"


def run_check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    check.configure(parser)
    code = check.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_at_least_five_examples_plus_demo() -> None:
    names = {p.name for p in EXAMPLES}
    assert "demo.yaml" in names and len(names - {"demo.yaml"}) >= 5


def test_examples_are_clean_under_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check([*map(str, EXAMPLES), "--strict"], capsys)
    assert code == 0, out
    assert out.strip().endswith("0 errors, 0 warnings")


def test_errors_exit_1_with_file_line_col(capsys: pytest.CaptureFixture[str]) -> None:
    path = BAD / "SM101-newest-after-oldest.yaml"
    code, out = run_check([str(path)], capsys)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:6:")
    assert " error SM101: " in first
    assert out.splitlines()[-1] == "1 file checked: 1 error, 0 warnings"


def test_warnings_pass_unless_strict(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(BAD / "SM202-retention-gap.yaml")
    assert run_check([path], capsys)[0] == 0
    code, out = run_check([path, "--strict"], capsys)
    assert code == 1 and "warning SM202" in out


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_check([str(EXAMPLES[0]), str(tmp_path / "missing.yaml")], capsys)
    assert code == 2
    assert "SM003" in out


def test_unreadable_yaml_is_a_diagnostic_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run_check([str(BAD / "SM001-syntax.yaml")], capsys)
    assert code == 1 and "error SM001" in out and "Traceback" not in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(BAD / "SM204-inert-entry.yaml"), str(BAD / "SM110-same-endpoint.yaml")]
    code, out = run_check([*paths, "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 1 == doc["exit_code"]
    assert doc["errors"] == 1 and doc["warnings"] == 1 and doc["strict"] is False
    first, second = doc["files"]
    assert first["ok"] is True and second["ok"] is False
    assert first["diagnostics"] == [
        {
            "file": paths[0],
            "line": 6,
            "column": 9,
            "severity": "warning",
            "code": "SM204",
            "message": "H1 entry 'GDS' has no routing effect beside 'all: true' (line 5)",
        }
    ]
    assert second["diagnostics"][0]["code"] == "SM110"


def test_console_entry_point_runs_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", "check", "--strict", *map(str, EXAMPLES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_router_check_does_not_import_flight_or_the_service() -> None:
    """`router check` runs in CI jobs: it must not pay for pyarrow or the Flight service."""
    code = (
        "import sys\n"
        "from router.cli import build_parser\n"
        "build_parser(['check', 'x.yaml']).parse_args(['check', 'x.yaml'])\n"
        "bad = [m for m in ('pyarrow', 'pyarrow.flight', 'router.serve', 'router.service')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
