"""HTTP next to ``/metrics``: ``/healthz`` and ``/readyz`` (and a registration point for
other pages on the same port).

* ``/healthz``: 200 ``ok`` while the process serves HTTP (liveness: restart me if not).
* ``/readyz``: 200 when a scope map is loaded and every domain in it has at least one
  endpoint that is up (healthy or suspect, see :mod:`router.healthpolicy`); else 503. The
  body is JSON either way: which domains have no endpoint up and which endpoints are not up,
  with their state, failures and how long an ejection still lasts.

Each is a :data:`router.metrics.Page` registered by path next to the status page.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from router.healthregistry import HealthRegistry
from router.metrics import Page

__all__ = ["health_pages"]

JSON = "application/json"
_NO_STORE = ("Cache-Control", "no-store")


def health_pages(
    registry: HealthRegistry, draining: Callable[[], bool] = lambda: False
) -> dict[str, Page]:
    """``/healthz`` and ``/readyz`` over ``registry``; a draining router is not ready."""

    def healthz() -> tuple[str, list[tuple[str, str]], bytes]:
        return "200 OK", [("Content-Type", "text/plain; charset=utf-8"), _NO_STORE], b"ok\n"

    def readyz() -> tuple[str, list[tuple[str, str]], bytes]:
        snap = registry.snapshot()
        document = snap.readiness_json()
        ready = snap.ready and not draining()
        if draining():
            document = {**document, "ready": False, "draining": True}
        body = json.dumps(document, indent=1).encode() + b"\n"
        status = "200 OK" if ready else "503 Service Unavailable"
        return status, [("Content-Type", JSON), _NO_STORE], body

    return {"/healthz": healthz, "/readyz": readyz}
