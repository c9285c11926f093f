"""Interleaved A/B of serving variants under concurrent readers: routers at git revisions and
bare-relay shapes, side by side in one run.

One `router-backend mock`; every variant serves in front of it as its own process; the
readers of bench/concurrency.py (spawned once) do N simultaneous raw DoGets of the same
historical range per round, rounds interleaved over the variants so machine noise hits them
alike. Per variant and N, medians over the repetitions of: aggregate MB/s of samples, the
serving process's CPU seconds per GB (/proc), its context switches per GB (voluntary and
involuntary, of the threads alive at the end: see switches()) and its peak RSS.

Variants (comma-separated, or one per argument: a variant whose environment value holds a
comma is given as an argument of its own):

* ``router``: this checkout; ``router@REV``: the router at git revision REV (``git archive``
  into a temporary directory, its native output stage compiled there when it has one, run
  with that directory first on ``sys.path``); either with ``+OPTION:VALUE`` (or
  ``+OPTION``) for each ``router serve --OPTION VALUE`` to add
  (``router+downstream-window:1048576``);
* ``relay``: bench/relay.py; ``relay+window``, ``relay+table:K``, ``relay+list:K`` and
  combinations (``relay+window+table:128``): its router-shaped modes (see bench/relay.py);
* any of them with ``+env:NAME=VALUE``: served with that environment variable set
  (``router+env:LD_PRELOAD=libtcmalloc_minimal.so.4``,
  ``"router+env:GRPC_EXPERIMENTS=tcp_rcv_lowat,tcp_frame_size_tuning"``).

    python bench/ab.py router@HEAD~1,router [--readers 1,8,32] [--reps 5]
                       [--channels 1] [--seconds 256] [--span 2]

Each measurement repeats its round (N readers at once) until the rounds span ``--span``
seconds: /proc counts CPU in 10 ms ticks, too coarse for one short round.

This machine's noise (2 cores shared by the readers, the mock and the servers) moves a
variant's CPU per GB by about +-10 % between runs: compare variants within one run, with
5 or more repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _harness import (
    BIN,
    FAST,
    ROOT,
    median,
    one_endpoint_map,
    stream_cmd,
    table,
    write_inputs,
)
from concurrency import PeakRss, Readers, check_alive, cpu_of, family, pid_of

from router_backends.testing import ServerProcess


def switches(pid: int) -> int:
    """Context switches so far of every thread of ``pid`` alive now. A thread that ended
    takes its count with it (Linux keeps no process-wide total), so a measurement misses
    gRPC's handler threads that start and end within it: compare variants, not absolutes."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def repeated(readers: Readers, n: int, url: str, command: bytes, span: float) -> tuple[int, float]:
    """Rounds of ``n`` readers until they have lasted ``span`` s in all: (bytes, seconds).
    CPU time in /proc counts 10 ms ticks, so a round of 0.1 s alone (one reader of one
    channel) would measure CPU per GB in steps of ~10 %."""
    nbytes, secs = 0, 0.0
    while secs < span:
        more, took = readers.round(n, url, command)
        nbytes, secs = nbytes + more, secs + took
    return nbytes, secs


def checkout(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (this repository) extracted under ``into``."""
    where = into / rev.replace("/", "_").replace("~", "-").replace("^", "-")
    where.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    if (where / "hatch_build.py").exists():  # the native output stage, as make venv builds it
        subprocess.run([str(BIN / "python"), "hatch_build.py"], cwd=where, check=True)
    return where


def argv_for(variant: str, downstream: str, scope_map: Path, tmp: Path) -> list[str]:
    """The command serving ``variant``; its ``+env:NAME=VALUE`` modes go to its environment."""
    modes = variant.split("+")
    env = [m.removeprefix("env:") for m in modes if m.startswith("env:")]
    variant = "+".join(m for m in modes if not m.startswith("env:"))
    argv = _argv_for(variant, downstream, scope_map, tmp)
    return ["env", *env, *argv] if env else argv


def _argv_for(variant: str, downstream: str, scope_map: Path, tmp: Path) -> list[str]:
    if variant == "relay" or variant.startswith("relay+"):
        argv = [str(BIN / "python"), str(ROOT / "bench" / "relay.py"), "--downstream", downstream]
        for mode in variant.split("+")[1:]:
            argv += ["--window"] if mode == "window" else ["--shape", mode]
        return argv
    if variant.split("+")[0] == "router" or variant.startswith("router@"):
        serve = ["serve", "--scope-map", str(scope_map), "--url", "grpc://127.0.0.1:0"]
        serve += ["--log-format", "json"]
        variant, *modes = variant.split("+")
        for mode in modes:
            flag, _, value = mode.partition(":")
            serve += [f"--{flag}", value] if value else [f"--{flag}"]
        if variant == "router":
            return [str(BIN / "router"), *serve]
        tree = checkout(variant.removeprefix("router@"), tmp)
        boot = f"import sys; sys.path.insert(0, {str(tree)!r}); from router.cli import main; main()"
        return [str(BIN / "python"), "-c", boot, *serve]
    raise SystemExit(
        f"unknown variant {variant!r} (router[@REV][+OPTION:VALUE...], relay[+MODE...])"
    )


@contextlib.contextmanager
def serving(variants: list[str], tmp: Path) -> Iterator[dict[str, ServerProcess]]:
    toml = write_inputs(tmp)
    mock_argv = [str(BIN / "router-backend"), "mock", "--url", "grpc://127.0.0.1:0", str(toml)]
    with ServerProcess(mock_argv, name="mock") as mock, contextlib.ExitStack() as stack:
        smap = one_endpoint_map(tmp / "ab-scope-map.yaml", mock.url)
        yield {
            v: stack.enter_context(
                ServerProcess(argv_for(v, mock.url, smap, tmp), name=f"variant{i}")
            )
            for i, v in enumerate(variants)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants", nargs="+", help="comma-separated or one per argument (see the module text)"
    )
    parser.add_argument("--readers", default="1,8,32", help="comma-separated N")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--channels", type=int, default=1, choices=range(1, len(FAST) + 1))
    parser.add_argument("--seconds", type=int, default=256, help="of data per reader")
    parser.add_argument(
        "--span", type=float, default=2.0, help="s of rounds per measurement (repeated)"
    )
    args = parser.parse_args()
    variants = [v for arg in args.variants for v in ([arg] if "+env:" in arg else arg.split(","))]
    counts = [int(n) for n in args.readers.split(",")]
    command = stream_cmd(FAST[: args.channels], args.seconds)
    readers = Readers(max(counts))
    rows: list[list[str]] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="arrakis-ab-") as tmpdir,
            serving(variants, Path(tmpdir)) as procs,
        ):
            pids = {v: family(pid_of(p)) for v, p in procs.items()}
            for proc in procs.values():  # warm-up: connections, imports, caches
                readers.round(min(2, max(counts)), proc.url, stream_cmd(FAST[:1], 1))
            for n in counts:
                seen: dict[str, dict[str, list[float]]] = {
                    v: {"rate": [], "cpu": [], "cs": [], "rss": []} for v in variants
                }
                for _ in range(args.reps):
                    for v, proc in procs.items():
                        cpu0, cs0 = cpu_of(pids[v]), switches(pids[v][0])
                        with PeakRss(pids[v][0]) as peak:
                            nbytes, secs = repeated(readers, n, proc.url, command, args.span)
                        gb = nbytes / 1e9
                        seen[v]["rate"].append(nbytes / secs / 1e6)
                        seen[v]["cpu"].append((cpu_of(pids[v]) - cpu0) / gb)
                        seen[v]["cs"].append((switches(pids[v][0]) - cs0) / gb)
                        seen[v]["rss"].append(peak.peak)
                for v in variants:
                    m = {key: median(values) for key, values in seen[v].items()}
                    row = [str(n), v, f"{m['rate']:.0f}", f"{m['cpu']:.2f}"]
                    row += [f"{m['cs'] / 1e3:.0f}k", f"{max(seen[v]['rss']):.0f}"]
                    rows.append(row)
                    print(" | ".join(row), flush=True)
            check_alive(procs)
    finally:
        readers.close()
    print()
    print(
        f"{args.channels} x 16384 Hz, {args.seconds} s per reader; each measurement rounds"
        f" of N readers repeated over >= {args.span:g} s; medians of {args.reps}"
    )
    headers = ["N", "variant", "MB/s", "CPU s per GB", "context switches per GB"]
    print(table([*headers, "peak RSS MB"], rows))


if __name__ == "__main__":
    sys.exit(main())
