"""Give memory back: after large requests, and after bursts of concurrent streams.

* **Large blocks.** A refused 10 MB request still passes through the allocator: gRPC
  receives it, pyarrow copies it into a Python ``bytes``. glibc's malloc raises its mmap
  threshold every time such a block is freed (up to 32 MB), after which large blocks come
  from the heap and stay with the process: measured, the router's RSS grew 78 % over a burst
  of 40 such requests and never came down. Fixing the threshold at 128 KiB (what glibc
  starts with) keeps large blocks mmap-backed, returned to the system on free (+13 % after
  the same burst; the rest is gRPC's and pyarrow's pools warming up).
* **Arenas.** glibc gives each thread that allocates concurrently an arena of its own, up to
  8 per core. Every gRPC thread serving a stream, and every reader thread, allocates (gRPC
  frames, Python objects), so 32 concurrent streams spread small blocks over a dozen arenas
  whose free space cannot be returned while one live block remains in each 64 MB heap: the
  router's RSS grew from ~120 MB to ~490 MB over 32 concurrent streams and stayed there
  (issue 11). :func:`cap_arenas` limits the arenas (``MALLOC_ARENA_MAX`` in the environment
  overrides it); at this router's allocation rate, contention on fewer arenas is not
  measurable.
* **Idle trim.** What the arenas still hold after a burst is returned by ``malloc_trim`` once
  the router has had no stream open for a moment (:class:`IdleTrim`).
* **Receive windows** (``router.downstream.window_options``; ``router serve
  --downstream-window``, default 1 MiB) bound what each downstream stream may have in
  flight (gRPC's own growing window, ``0``, let 32 streams reach ~900 MB), and each
  historical stream holds at most a few chunks (``router.streaming``): 32 concurrent
  streams stay under ~220 MB.

pyarrow's own pool (jemalloc or mimalloc) returns memory by itself as it decays; the idle
trim asks it to release what it keeps unused at once.

**Another malloc.** Run with gperftools' tcmalloc preloaded
(``LD_PRELOAD=libtcmalloc_minimal.so.4``, as the container image does:
docs/guide/deployment.md, "Memory allocator"), gRPC's many
small allocations across dozens of serving threads come from per-thread caches instead of
two locked arenas: measured, 8-21 % less CPU per GB and up to +15 % MB/s at 1 to 32
concurrent streams (bench/README.md, "Tenth round"), for ~15 MB more kept in its caches
after a burst. :func:`allocator` says which malloc serves the process (``router_started``
logs it); the glibc settings above then do nothing, and the idle trim asks tcmalloc (or a
preloaded jemalloc) to return its free pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import structlog

__all__ = [
    "ARENAS",
    "MMAP_THRESHOLD",
    "IdleTrim",
    "allocator",
    "cap_arenas",
    "release_large_blocks",
    "trim",
]

log = structlog.get_logger("router.memory")

MMAP_THRESHOLD = 128 * 1024
ARENAS = 2  # malloc arenas the router uses (MALLOC_ARENA_MAX overrides)
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
_M_ARENA_MAX = -8


def _libc() -> Any | None:
    """glibc, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _defining_library(process: ctypes.CDLL, symbol: str) -> str:
    """The file name of the object ``symbol`` resolves to in the global scope ("" if none).
    In an executable built without PIE that takes the symbol's address (Debian's python3),
    that is the executable's own stub, not the library that defines it."""
    try:
        address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p).value
        process.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        process.dladdr.restype = ctypes.c_int
        info = _DlInfo()
        if not address or not process.dladdr(address, ctypes.byref(info)):
            return ""
    except (OSError, AttributeError):
        return ""
    return os.path.basename((info.dli_fname or b"").decode(errors="replace"))


def _served_by(process: ctypes.CDLL) -> str:
    """Which of tcmalloc and jemalloc serves the process's ``malloc`` ("" for neither): a
    block from ``malloc`` is asked about (tcmalloc: does it own it; jemalloc: did this
    thread's allocated bytes grow by it)."""
    malloc, free = process.malloc, process.free
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    size = 1 << 20
    owned = getattr(process, "MallocExtension_GetOwnership", None)
    if owned is not None:
        owned.restype, owned.argtypes = ctypes.c_int, [ctypes.c_void_p]
        block = malloc(size)
        try:
            if block and owned(block) == 1:  # MallocExtension::kOwned
                return "tcmalloc"
        finally:
            free(block)
    mallctl = getattr(process, "mallctl", None)
    if mallctl is not None:
        mallctl.restype = ctypes.c_int
        allocated, length = ctypes.c_uint64(), ctypes.c_size_t(8)

        def thread_allocated() -> int:
            if mallctl(b"thread.allocated", ctypes.byref(allocated), ctypes.byref(length), None, 0):
                return -1
            return allocated.value

        before = thread_allocated()
        block = malloc(size)
        after = thread_allocated()
        free(block)
        if before >= 0 and after - before >= size:
            return "jemalloc"
    return ""


@functools.cache
def allocator() -> str:
    """Which malloc serves this process: "tcmalloc", "jemalloc", "glibc", the file name of
    another library that defines ``malloc`` first (a preloaded one), or "unknown"."""
    try:
        process = ctypes.CDLL(None)
        known = _served_by(process)
    except (OSError, AttributeError):
        return "unknown"
    if known:
        return known
    name = _defining_library(process, "malloc")
    if name.startswith("lib") and ".so" in name and not name.startswith("libc.so"):
        return name
    if hasattr(process, "gnu_get_libc_version"):
        return "glibc"
    return name or "unknown"


def _release_call() -> Callable[[], object] | None:
    """The preloaded allocator's "return every free page now": tcmalloc's
    ``MallocExtension_ReleaseFreeMemory``, jemalloc's purge of every arena
    (``arena.<MALLCTL_ARENAS_ALL>.purge``); None under glibc or another allocator."""
    name = allocator()
    if name not in ("tcmalloc", "jemalloc"):
        return None
    try:
        process = ctypes.CDLL(None)
        if name == "tcmalloc":
            release = process.MallocExtension_ReleaseFreeMemory
            release.argtypes, release.restype = [], None
            return release
        mallctl = process.mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    mallctl.argtypes += [ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return lambda: mallctl(b"arena.4096.purge", None, None, None, 0)


def release_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (see the module text); False where there is no glibc."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc arenas (before the server's threads start; see the module
    text). ``MALLOC_ARENA_MAX`` in the environment wins. False where there is no glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return free memory to the system: pyarrow's pool's unused pages (which it would
    otherwise return only as they decay) and malloc's: every arena's under glibc
    (``malloc_trim``; True when it returned some), every free page under a preloaded
    tcmalloc or jemalloc (True)."""
    gc.collect()  # cycles (frames of finished streams) may still hold batches
    pa.default_memory_pool().release_unused()
    release = _release_call()
    if release is not None:
        release()
        return True
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


class IdleTrim:
    """Calls ``trim`` once the process has been idle for ``delay`` s: :meth:`idle` (any
    thread) says that nothing is open now; ``call_later(delay, fn)`` is the service timer's;
    ``is_idle()`` is asked again when the delay has passed."""

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], object],
        is_idle: Callable[[], bool],
        delay: float = 2.0,
        trim: Callable[[], bool] = trim,
    ) -> None:
        self._call_later = call_later
        self._is_idle = is_idle
        self._delay = delay
        self._trim = trim
        self._lock = threading.Lock()
        self._pending = False
        self.trims = 0

    def __repr__(self) -> str:
        return f"<IdleTrim delay={self._delay} pending={self._pending} trims={self.trims}>"

    def idle(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._call_later(self._delay, self._run)

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        if self._is_idle():
            self.trims += 1
            self._trim()
