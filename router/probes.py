"""HTTP next to ``/metrics``: ``/healthz`` and ``/readyz`` (and a registration point for
other pages on the same port).

* ``/healthz``: 200 ``ok`` while the process serves HTTP (liveness: restart me if not).
* ``/readyz``: 200 when a scope map is loaded and every domain in it has at least one
  endpoint that is up (healthy or suspect, see :mod:`router.healthpolicy`); else 503. The
  body is JSON either way: which domains have no endpoint up and which endpoints are not up,
  with their state, failures and how long an ejection still lasts.

A page is a :data:`Route`: a function of nothing returning ``(status, content type, body)``,
registered by path in the mapping given to :func:`routed`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

from router.healthregistry import HealthRegistry

__all__ = ["Route", "health_routes", "routed", "serve_wsgi"]

log = structlog.get_logger("router.probes")

Route = Callable[[], tuple[int, str, bytes]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
JSON = "application/json"


def health_routes(registry: HealthRegistry) -> dict[str, Route]:
    def healthz() -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def readyz() -> tuple[int, str, bytes]:
        snap = registry.snapshot()
        body = json.dumps(snap.readiness_json(), indent=1).encode() + b"\n"
        return (200 if snap.ready else 503), JSON, body

    return {"/healthz": healthz, "/readyz": readyz}


def routed(fallback: WsgiApp, routes: Mapping[str, Route]) -> WsgiApp:
    """A WSGI app answering ``routes`` by exact path (GET/HEAD), everything else with
    ``fallback`` (the Prometheus exposition app)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return fallback(environ, start_response)
        try:
            status, content_type, body = route()
        except Exception as exc:  # a broken page must not take the port down
            log.error("http_route_failed", path=environ.get("PATH_INFO"), error=str(exc)[:300])
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        headers.append(("Cache-Control", "no-store"))
        start_response(f"{status} {_REASONS.get(status, '')}", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def serve_wsgi(app: WsgiApp, port: int, addr: str) -> tuple[WSGIServer, threading.Thread]:
    """``app`` on ``addr:port`` (0: a free port) in a daemon thread; stop it with
    ``shutdown()`` and ``server_close()``."""
    httpd = make_server(addr, port, app, _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
