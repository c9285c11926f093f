"""``router check`` on a ~10 MB scope map of 100,000 endpoints, valid and with one schema error.

The map is written to a temporary directory. Each case is timed end to end through the
command's own code path (``router.check.run`` in this process, output discarded), median of
``ROUNDS`` runs, then once more as a ``router check`` subprocess (interpreter start and
imports included). The target (issue 9) is under 5 s for both cases. Wall and CPU time are
both printed: on a shared machine the CPU time is the steadier figure.

Endpoints cycle through the shapes real maps use: a subsystem claim (half of them), a
publisher with a channel list, two subsystems, on three retention tiers; one wildcard
archive per domain.

Run: ``python bench/mapload.py [ROUNDS]`` (``make bench``); prints Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import check

ENDPOINTS = 100_000
PER_DOMAIN = 250
#: live 0..600 s, buffer 300 s..1 day, archive 1 h..inf (omitted bounds take their defaults)
TIERS = ("{oldest: 600}", "{newest: 300, oldest: 86400}", "{newest: 3600}")
#: the one schema error: a negative age, in the middle of the map
GOOD, BAD = "{newest: 300, oldest: 86400}", "{newest: -1, oldest: 86400}"


def large_map(n: int = ENDPOINTS) -> str:
    domains = [f"D{k}" for k in range(max(1, n // PER_DOMAIN))]
    lines = []
    for d, domain in enumerate(domains):
        lines += [f"grpc://wild-{d}.ligo.org:31206:", f"  scopes: {{{domain}: [{{all: true}}]}}"]
        lines.append(f"  retention: {TIERS[2]}")
    for i in range(n - len(domains)):
        domain = domains[i % len(domains)]
        s = i % 97
        entry = (
            f"{{subsystem: S{s}}}",
            f"{{subsystem: S{s}}}",
            f"{{publisher: P{s}, channels: [{domain}:S{s}-A]}}",
            f"{{subsystem: S{s}}}, {{subsystem: T{s}}}",
        )[i % 4]
        lines.append(f"grpc://n{i}.ligo.org:{30000 + i % 30000}:")
        lines.append(f"  scopes: {{{domain}: [{entry}]}}")
        lines.append(f"  retention: {TIERS[i % 3]}")
    return "\n".join(lines) + "\n"


def with_one_error(text: str) -> str:
    mid = text.index(GOOD, len(text) // 2)
    return text[:mid] + BAD + text[mid + len(GOOD) :]


def check_in_process(path: Path) -> tuple[float, float, int]:
    """``(wall s, CPU s, exit code)`` of one ``router check`` in this process."""
    parser = argparse.ArgumentParser()
    check.configure(parser)
    args = parser.parse_args([str(path)])
    out = io.StringIO()
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out):
        code = check.run(args)
    return time.perf_counter() - started, time.process_time() - cpu, code


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_subprocess(path: Path) -> tuple[float, float, int]:
    """``(wall s, CPU s, exit code)`` of one ``router check`` subprocess."""
    started, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", "check", str(path)],
        capture_output=True,
        check=False,
    )
    return time.perf_counter() - started, _children_cpu() - cpu, proc.returncode


def main(rounds: int) -> None:
    print(
        f"| map ({ENDPOINTS:,} endpoints) | bytes | exit | in process, median of {rounds}: "
        "wall / CPU (s) |"
    )
    print("| --- | ---: | ---: | ---: |")
    subprocess_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        text = large_map()
        for name, source in (("valid", text), ("one schema error", with_one_error(text))):
            path = Path(tmp) / f"{name.replace(' ', '-')}.yaml"
            path.write_text(source)
            runs = [check_in_process(path) for _ in range(rounds)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            size = path.stat().st_size
            print(f"| {name} | {size:,} | {runs[0][2]} | {wall:.2f} / {cpu:.2f} |", flush=True)
            subprocess_rows.append((name, *check_subprocess(path)))
    print()
    for name, wall, cpu, code in subprocess_rows:
        print(
            f"- `router check` subprocess, {name}: {wall:.2f} s wall, {cpu:.2f} s CPU (exit {code})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=3, help="in-process runs (median)")
    main(parser.parse_args().rounds)
