"""Shared pieces of the benchmarks: start servers as subprocesses, time things, report."""

from __future__ import annotations

import contextlib
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
