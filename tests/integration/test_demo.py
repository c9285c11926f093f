"""`make demo` is the quickstart: run it end to end (without the final wait)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_and_stitches_across_the_retention_boundary() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--no-wait"],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        cwd=ROOT,
    )
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"
    assert "router_mode: proxy" in out
    assert "no gap, no duplicate" in out
    assert out.count(", 0 missing") == 2
    # each downstream alone refuses the range: only the stitched answer is complete
    assert out.count("FlightUnavailableError") == 2
