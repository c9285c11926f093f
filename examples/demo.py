"""`make demo`: two mock downstreams and the router, then the real `arrakis` CLI through it.

Starts (all on loopback, ports fixed by examples/scope-maps/demo.yaml):

* a *live* mock on :31207 keeping the last 10 minutes   (retention newest 0,   oldest 600)
* an *archive* mock on :31208 from 5 minutes back        (retention newest 300, oldest inf)
* the router on :31206 in front of both

then runs `arrakis count`, `arrakis describe` and a fetch that straddles the retention
boundary (ages 610 s .. 290 s, so neither downstream alone can serve it), prints the results
and keeps serving until Ctrl-C. Every process it started is stopped on exit.

`--no-wait` skips the final wait (used by the test suite).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from router.protocol.gps import gps_now_ns
from router_backends.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SCOPE_MAP = ROOT / "examples" / "scope-maps" / "demo.yaml"
BIN = Path(sys.executable).parent
ROUTER_URL = "grpc://127.0.0.1:31206"
LIVE_URL = "grpc://127.0.0.1:31207"
ARCHIVE_URL = "grpc://127.0.0.1:31208"
CHANNELS = ["H1:GDS-CALIB_STRAIN", "L1:GDS-CALIB_STRAIN"]


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def port_is_free(url: str) -> bool:
    host, port = url.removeprefix("grpc://").rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def started(name: str, argv: list[str], log_dir: Path) -> Iterator[str]:
    """Start a server, print where it serves and where it logs; always stop it."""
    log = log_dir / f"{name}.log"
    with ServerProcess(argv, name=name, log_path=log, start_timeout=60, cwd=ROOT) as proc:
        print(f"    {name:8s} {proc.url}   {Path(argv[0]).name} {' '.join(argv[1:])}", flush=True)
        print(f"    {'':8s} logs: {log}", flush=True)
        yield proc.url


def arrakis(*args: str) -> None:
    cmd = [str(BIN / "arrakis"), "-u", ROUTER_URL, *args]
    print(f"\n$ arrakis -u {ROUTER_URL} {' '.join(args)}", flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True, timeout=300, check=False)
    out = result.stdout.strip().splitlines()
    for line in out[:25]:
        print(f"  {line}")
    if len(out) > 25:
        print(f"  ... ({len(out) - 25} more lines)")
    if result.returncode != 0:
        print(result.stderr.strip(), file=sys.stderr)
        raise SystemExit(f"demo: `arrakis {args[0]}` failed with status {result.returncode}")


def quiet_import_arrakis() -> Any:
    """Import the real client without gpstime's leap-second download chatter (no network)."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arrakis
    return arrakis


def fetch_across_boundary() -> None:
    """Fetch ages 610 s .. 290 s through the router with the Python client, and check it."""
    import numpy as np

    arrakis = quiet_import_arrakis()
    now = gps_now_ns() // 1_000_000_000
    start, end = now - 610, now - 290
    print(
        f"\n$ python -c 'arrakis.Client(\"{ROUTER_URL}\").fetch({CHANNELS}, {start}, {end})'"
        "\n  (ages 610 s .. 290 s: older than the live mock keeps, newer than the archive "
        "starts, so the router must stitch both)",
        flush=True,
    )
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = arrakis.Client(ROUTER_URL).fetch(CHANNELS, start, end)
    took = time.monotonic() - t0
    for name in CHANNELS:
        series = block[name]
        data = series.data
        masked = int(np.ma.count_masked(data)) if np.ma.isMaskedArray(data) else 0
        expected = int((end - start) * series.sample_rate)
        print(
            f"  {name}: {len(data)} samples at {series.sample_rate} Hz "
            f"(expected {expected}), {masked} missing"
        )
        if len(data) != expected or masked:
            raise SystemExit("demo: the stitched fetch is incomplete")
    print(f"  one continuous span [{start}, {end}) in {took:.2f} s: no gap, no duplicate")

    print("\n  the same fetch straight from either downstream alone is refused:")
    for url in (LIVE_URL, ARCHIVE_URL):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arrakis.Client(url).fetch(CHANNELS[:1], start, end)
        except Exception as exc:  # the point is to show the message, whatever its class
            print(f"  {url}: {type(exc).__name__}: {str(exc).split(' Detail:')[0]}")
        else:
            raise SystemExit(f"demo: {url} unexpectedly served the whole range alone")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="exit after the queries")
    args = parser.parse_args()

    busy = [u for u in (ROUTER_URL, LIVE_URL, ARCHIVE_URL) if not port_is_free(u)]
    if busy:
        print(
            f"demo: port(s) already in use: {', '.join(busy)} (another demo running?)",
            file=sys.stderr,
        )
        return 1
    if shutil.which("arrakis", path=str(BIN)) is None:
        print(
            "demo: the arrakis client is not installed in this venv (run `make venv`)",
            file=sys.stderr,
        )
        return 1

    backend = str(BIN / "router-backend")
    say("starting two mock downstreams and the router")
    with contextlib.ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="arrakis-demo-")))
        live = [backend, "mock", "--url", LIVE_URL, "--retention", "0,600"]
        archive = [backend, "mock", "--url", ARCHIVE_URL, "--retention", "300,inf"]
        router = [
            str(BIN / "router"),
            "serve",
            "--scope-map",
            str(SCOPE_MAP.relative_to(ROOT)),
            "--url",
            ROUTER_URL,
            "--log-format",
            "console",
        ]
        stack.enter_context(started("live", live, log_dir))
        stack.enter_context(started("archive", archive, log_dir))
        stack.enter_context(started("router", router, log_dir))
        say("querying through the router with the real arrakis client")
        arrakis("server-info")
        arrakis("count", "H1:.*")
        arrakis("count", ".*")
        arrakis("describe", *CHANNELS)
        fetch_across_boundary()
        if args.no_wait:
            return 0
        say(
            f"the router keeps serving on {ROUTER_URL}; try `.venv/bin/arrakis -u "
            f"{ROUTER_URL} find 'L1:GDS.*'`. Ctrl-C stops everything."
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        print()
        say("stopping")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
