"""Shared pieces of the benchmarks: start servers as subprocesses, time things, report."""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from router_backends.testing import ServerProcess

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def process(name: str, argv: list[str], **options: Any) -> Iterator[str]:
    """Start a server that announces its URL; yield the URL; always stop it.

    ``options`` go to :class:`router_backends.testing.ServerProcess` (e.g. ``announce`` and
    ``stream`` for upstream ``arrakis-server``).
    """
    with ServerProcess(argv, name=name, **options) as proc:
        yield proc.url


def one_endpoint_map(path: Path, url: str) -> Path:
    """Write a scope map at ``path``: the endpoint ``url`` serves X1, everything retained."""
    path.write_text(f"{url}:\n  scopes:\n    X1:\n      - all: true\n  retention: {{}}\n")
    return path


@contextlib.contextmanager
def mock_behind_router(tmp: Path, toml: Path, *router_args: str) -> Iterator[tuple[str, str]]:
    """`router-backend mock TOML` and `router serve` (proxy mode) on a one-endpoint map in
    front of it (X1, everything retained); yields ``(mock_url, router_url)``."""
    mock_argv = [str(BIN / "router-backend"), "mock", "--url", "grpc://127.0.0.1:0", str(toml)]
    with process("mock", mock_argv) as mock:
        smap = one_endpoint_map(tmp / "bench-scope-map.yaml", mock)
        router_argv = [str(BIN / "router"), "serve", "--scope-map", str(smap)]
        router_argv += ["--url", "grpc://127.0.0.1:0", "--log-format", "json", *router_args]
        with process("router", router_argv) as router:
            yield mock, router


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


# --------------------------------------------------------------------------- shared inputs
# The throughput cases of issues 3 and 4, on synthetic X1 channels both mocks (ours and
# upstream's) load from one TOML file in upstream's format.

STRIDE = 62_500_000
START_S = 1_400_000_000
FAST = [f"X1:BENCH-FAST_{i:02d}" for i in range(20)]
SLOW = [f"X1:BENCH-SLOW_{i:03d}" for i in range(500)]
CASES = [  # (label, channels, seconds)
    ("1 x 16384 Hz, 256 s", FAST[:1], 256),
    ("20 x 16384 Hz, 64 s", FAST, 64),
    ("500 x 256 Hz, 64 s", SLOW, 64),
]


def channels_toml(path: Path, rates: dict[str, int]) -> Path:
    """Write a channel TOML (float32, 1/16 s stride, 1 s max latency) of ``{name: rate}``."""
    lines = [
        "[common]",
        'data_type = "float32"',
        f"stride = {STRIDE}",
        "max_latency = 1000000000",
        'publisher = "BENCH"',
        "",
    ]
    for name, rate in rates.items():
        lines += [f'["{name}"]', f"sample_rate = {rate}", ""]
    path.write_text("\n".join(lines))
    return path


def write_inputs(tmp: Path) -> Path:
    """The channel TOML of the throughput cases."""
    rates = {name: 16384 for name in FAST} | {name: 256 for name in SLOW}
    return channels_toml(tmp / "bench-channels.toml", rates)


def envelope(request: str, **args: object) -> bytes:
    return json.dumps({"request": request, "args": args, "version": "0.5.0"}).encode()


def stream_cmd(channels: list[str], seconds: int | None, start_s: int | None = START_S) -> bytes:
    """A Stream envelope (``start_s`` None: live; ``seconds`` None: open-ended)."""
    start = None if start_s is None else start_s * 10**9
    end = None if start is None or seconds is None else start + seconds * 10**9
    return envelope(
        "Stream",
        channels=channels,
        start=start,
        end=end,
        replay_start=None,
        replay_end=None,
        replay_id=None,
    )
