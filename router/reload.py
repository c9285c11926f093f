"""Scope-map reload: on SIGHUP and when the file's content changes (polled). A new map must
load without errors before it replaces the running one; otherwise the old map stays."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from router.service import RouterService
from scopemap import load_path

log = structlog.get_logger("router.reload")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Reloader:
    """Reloads ``path`` into ``service``; :meth:`reload` is safe from any thread."""

    def __init__(
        self,
        service: RouterService,
        path: str | Path,
        *,
        before_swap: Callable[[str], object] | None = None,
        on_reloaded: Callable[[str], object] | None = None,
        report: bool = True,
    ) -> None:
        """``before_swap(digest)``: called with a new valid map's sha256 before it replaces
        the running one (the front of data workers has its workers reload first, see
        router.workers); ``on_reloaded(digest)``: after it did (a worker tells its front);
        ``report``: count reloads in the metrics (not in a data worker: the front does)."""
        self.service = service
        self.path = Path(path)
        self.before_swap = before_swap
        self.on_reloaded = on_reloaded
        self.report = report
        self._digest = _digest(self.path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reloads = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return f"<Reloader {self.path} reloads={self.reloads} rejected={self.rejected}>"

    @property
    def fingerprint(self) -> str:
        """sha256 of the file content last loaded (or tried), "" when unreadable."""
        return self._digest or ""

    def reload(self, reason: str = "signal") -> bool:
        """Load and validate the file; swap it in when valid. Returns True when swapped."""
        with self._lock:
            # the digest of what is about to be loaded (taken first: a change written while
            # loading is seen by the next check, not recorded as already loaded)
            digest = _digest(self.path)
            result = load_path(self.path)
            errors = [d for d in result.diagnostics if d.severity.value == "error"]
            if not result.ok or result.scope_map is None:
                self.rejected += 1
                if self.report:
                    self.service.metrics.reloaded(False)
                log.error(
                    "scope_map_rejected",
                    file=str(self.path),
                    reason=reason,
                    diagnostics=[d.format() for d in errors]
                    or [str(d) for d in result.diagnostics],
                )
                return False
            if self.before_swap is not None:
                self.before_swap(digest or "")
            self.service.replace_map(result.scope_map)
            self._digest = digest
            self.reloads += 1
            if self.report:
                self.service.metrics.reloaded(True, digest or "", len(result.scope_map.endpoints))
            log.info(
                "scope_map_reloaded",
                file=str(self.path),
                reason=reason,
                endpoints=len(result.scope_map.endpoints),
            )
            if self.on_reloaded is not None:
                self.on_reloaded(digest or "")
        return True

    def check(self) -> bool:
        """Reload when the file content changed since the last load attempt."""
        digest = _digest(self.path)
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return self.reload("file changed")

    def watch(self, interval: float) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception as exc:  # never let the watcher die
                    log.error("scope_map_watch_failed", error=str(exc))

        thread = threading.Thread(target=loop, name="scope-map-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
