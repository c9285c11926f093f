"""Giving memory back: the idle trim runs once the router has been idle for its delay, once
per idle spell, and not while a stream is open again; trimming is safe at any time. Which
malloc serves the process is told right (glibc, tcmalloc preloaded as in the container image,
or jemalloc), and under a preloaded allocator the trim returns its free pages. Preloading
runs in fresh interpreters (Debian's ``libtcmalloc-minimal4`` and ``libjemalloc2``:
``.ci/install-allocators.sh`` installs them)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from router.memory import IdleTrim, trim

TCMALLOC = "libtcmalloc_minimal.so.4"
JEMALLOC = "libjemalloc.so.2"

# 200 MB in 4 KB blocks through the process's malloc, freed, then trimmed: RSS (MB) at each step
HOLD_FREE_TRIM = """
import ctypes, json
from router import memory
def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) // 1024 for l in status if l.startswith("VmRSS"))
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
start = rss()
blocks = [libc.malloc(4096) for _ in range(50_000)]
for b in blocks:
    ctypes.memset(b, 1, 4096)
held = rss()
for b in blocks:
    libc.free(b)
freed = rss()
trimmed = memory.trim()
print(json.dumps({"allocator": memory.allocator(), "start": start, "held": held,
                  "freed": freed, "trimmed": trimmed, "after": rss()}))
"""


def _fresh(code: str, preload: str | None) -> tuple[str, str]:
    """``code`` run by a fresh interpreter with ``preload`` as its LD_PRELOAD (or none):
    its last line of output, and its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload is not None:
        env["LD_PRELOAD"] = preload
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1], done.stderr


def _need(preload: str) -> None:
    if ctypes.util.find_library(preload.removeprefix("lib").split(".so")[0]) is None:
        pytest.fail(f"{preload} is not installed: run .ci/install-allocators.sh (as root)")


class Later:
    """A scripted ``call_later``: callbacks run when the test says so."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.due.append((delay, fn))

    def run(self) -> None:
        due, self.due = self.due, []
        for _, fn in due:
            fn()


def _trimmer(idle: list[bool]) -> tuple[IdleTrim, Later, list[int]]:
    later, trims = Later(), []
    trimmer = IdleTrim(later, lambda: idle[0], delay=2.0, trim=lambda: bool(trims.append(1)))
    return trimmer, later, trims


def test_trims_once_after_the_delay_when_still_idle() -> None:
    trimmer, later, trims = _trimmer([True])
    trimmer.idle()
    trimmer.idle()  # a second stream ending meanwhile: one trim is enough
    assert [d for d, _ in later.due] == [2.0] and trims == []
    later.run()
    assert trims == [1] and trimmer.trims == 1
    trimmer.idle()  # the next idle spell trims again
    later.run()
    assert trimmer.trims == 2


def test_no_trim_when_a_stream_opened_meanwhile() -> None:
    idle = [True]
    trimmer, later, trims = _trimmer(idle)
    trimmer.idle()
    idle[0] = False
    later.run()
    assert trims == [] and later.due == []


def test_trim_is_safe_to_call() -> None:
    assert trim() in (True, False)  # False: nothing to return, or no glibc


@pytest.mark.parametrize(
    ("preload", "name"), [(None, "glibc"), (TCMALLOC, "tcmalloc"), (JEMALLOC, "jemalloc")]
)
def test_allocator_names_the_malloc_serving_the_process(preload: str | None, name: str) -> None:
    if preload is not None:
        _need(preload)
    line, stderr = _fresh("from router import memory; print(memory.allocator())", preload)
    assert line == name
    assert "ld.so" not in stderr  # the bare file name was found by the loader


@pytest.mark.parametrize(("preload", "name"), [(TCMALLOC, "tcmalloc"), (JEMALLOC, "jemalloc")])
def test_trim_returns_a_preloaded_allocators_free_pages(preload: str, name: str) -> None:
    """tcmalloc and jemalloc keep freed pages for reuse (so RSS stays up after a burst) until
    asked, or, jemalloc, for its decay time (10 s): the idle trim asks at once."""
    _need(preload)
    line, _ = _fresh(HOLD_FREE_TRIM, preload)
    got = json.loads(line)
    assert got["allocator"] == name and got["trimmed"] is True
    assert got["held"] - got["start"] >= 150  # the blocks were really allocated
    assert got["freed"] - got["start"] >= 100  # ... and kept once freed
    assert got["freed"] - got["after"] >= 100  # ... and returned by the trim
