"""The status page at ``/`` of the metrics port: what the router is doing right now.

Server-rendered HTML, no script and no external asset (the response also carries a
Content-Security-Policy forbidding both): the loaded map's fingerprint and load time; every
endpoint with its health and recent errors; one SVG timeline per domain of which endpoint
covers which data age, "now" marked at the left and coverage gaps drawn in red; the streams
in flight. Every text from outside (URLs, channel names, error texts) is HTML-escaped.

The page reads *providers*, so each source can come and go independently:

- ``current_map()`` → :class:`MapInfo` (the active scope map and when it was loaded);
- ``health()`` → ``{url: state}`` (optional: without it every endpoint shows "unknown");
- ``errors()`` → ``{url: [ErrorView]}`` (optional; ``RecentErrors.snapshot``);
- ``streams()`` → ``[StreamView]`` (optional; ``InFlight.snapshot``).

``snapshot()`` gathers them into a frozen :class:`StatusSnapshot`; ``render_html`` is a pure
function of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog

from router.inflight import StreamView
from router.recenterrors import ErrorView
from router.timefmt import age_text, gps_text, utc_text
from scopemap import ScopeMap, replays_json, to_upstream_json

if TYPE_CHECKING:
    from router.service import RouterService

NS = 1_000_000_000
log = structlog.get_logger("router.statuspage")
UNKNOWN = "unknown"
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Clock(Protocol):
    def now_ns(self) -> int: ...


@dataclass(frozen=True)
class MapInfo:
    scope_map: ScopeMap
    loaded_at_ns: int  # GPS ns


@dataclass(frozen=True)
class EndpointView:
    url: str
    domains: tuple[str, ...]
    newest_s: float
    oldest_s: float
    health: str
    errors: tuple[ErrorView, ...]


@dataclass(frozen=True)
class WorkerView:
    """One data worker slot (router.workers), as the front sees it."""

    index: int
    location: str | None  # None: not serving now
    pid: int | None
    restarts: int


@dataclass(frozen=True)
class StatusSnapshot:
    map_file: str
    fingerprint: str
    loaded_at_ns: int
    now_ns: int
    scope_map: ScopeMap
    endpoints: tuple[EndpointView, ...]
    streams: tuple[StreamView, ...]
    problems: tuple[str, ...] = ()  # providers that failed: the page says so
    workers: tuple[WorkerView, ...] | None = None  # None: no data workers


T = TypeVar("T")


def _provided(what: str, provider: Callable[[], T] | None, default: T, problems: list[str]) -> T:
    """``provider()``, or ``default`` when there is none; a failing provider is logged and
    named on the page instead of failing the page."""
    if provider is None:
        return default
    try:
        return provider()
    except Exception as exc:
        log.warning("status_provider_failed", provider=what, error=str(exc)[:300])
        problems.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        return default


def fingerprint(scope_map: ScopeMap) -> str:
    """A short digest of what the map routes (its upstream JSON form, keys sorted)."""
    doc = {"map": to_upstream_json(scope_map), "replays": replays_json(scope_map)}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StatusPage:
    """The page's providers; ``__call__`` is the HTTP route ``(status, content type, body)``."""

    def __init__(
        self,
        current_map: Callable[[], MapInfo],
        clock: Clock,
        *,
        health: Callable[[], Mapping[str, object]] | None = None,
        errors: Callable[[], Mapping[str, Sequence[ErrorView]]] | None = None,
        streams: Callable[[], Sequence[StreamView]] | None = None,
        workers: Callable[[], Sequence[WorkerView]] | None = None,
    ) -> None:
        self.current_map = current_map
        self.workers = workers
        self.clock = clock
        self.health = health
        self.errors = errors
        self.streams = streams
        self._fingerprint: tuple[ScopeMap, str] | None = None  # of the map last shown

    def __repr__(self) -> str:
        return f"<StatusPage health={'yes' if self.health else 'unknown'}>"

    def _fingerprint_of(self, sm: ScopeMap) -> str:
        known = self._fingerprint
        if known is None or known[0] is not sm:  # computed again after a reload only
            known = self._fingerprint = (sm, fingerprint(sm))
        return known[1]

    def snapshot(self) -> StatusSnapshot:
        info = self.current_map()
        sm = info.scope_map
        problems: list[str] = []
        no_health: Mapping[str, object] = {}
        no_errors: Mapping[str, Sequence[ErrorView]] = {}
        health = _provided("health", self.health, no_health, problems)
        errors = _provided("recent errors", self.errors, no_errors, problems)
        endpoints = tuple(
            EndpointView(
                ep.url,
                ep.domains,
                ep.retention.newest_s,
                ep.retention.oldest_s,
                str(health.get(ep.url, UNKNOWN)),
                tuple(errors.get(ep.url, ())),
            )
            for ep in sm.endpoints
        )
        no_streams: Sequence[StreamView] = ()
        streams = tuple(_provided("streams in flight", self.streams, no_streams, problems))
        no_workers: Sequence[WorkerView] = ()
        workers = (
            tuple(_provided("data workers", self.workers, no_workers, problems))
            if self.workers is not None
            else None
        )
        return StatusSnapshot(
            sm.file,
            self._fingerprint_of(sm),
            info.loaded_at_ns,
            self.clock.now_ns(),
            sm,
            endpoints,
            streams,
            tuple(problems),
            workers,
        )

    def __call__(self) -> tuple[str, list[tuple[str, str]], bytes]:
        body = render_html(self.snapshot()).encode()
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ("Cache-Control", "no-store"),
        ]
        return "200 OK", headers, body


def status_page_for(
    service: RouterService,
    health: Callable[[], Mapping[str, object]] | None = None,
    workers: Callable[[], Sequence[WorkerView]] | None = None,
) -> StatusPage:
    """The page of a ``RouterService``: its routing, clock, endpoint health (its registry's
    states unless ``health`` is given), recent errors and streams; ``workers``: the data
    workers of a front (router.workers)."""
    if health is None:
        registry = service.health

        def health() -> Mapping[str, object]:
            return {e.url: e.state.value for e in registry.snapshot().endpoints}

    def current() -> MapInfo:
        routing = service.routing
        return MapInfo(routing.scope_map, routing.loaded_at_ns)

    return StatusPage(
        current,
        service.clock,
        health=health,
        errors=service.metrics.recent_errors.snapshot,
        streams=service.inflight.snapshot,
        workers=workers,
    )


# --------------------------------------------------------------------------- HTML

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .5em}h2{font-size:1.1em;margin:1.5em 0 .5em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:.95em}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dd{margin:0}
.health-healthy,.health-ok,.health-up{color:#176f2c;font-weight:600}
.health-unknown{color:#666}.health-bad{color:#b00020;font-weight:600}
ul.errors{margin:0;padding-left:1.2em}figure{margin:.5em 0 1em}
figcaption{font-weight:600}svg text{font:12px system-ui,sans-serif}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _health_class(state: str) -> str:
    s = state.lower()
    if s in ("healthy", "ok", "up"):
        return f"health-{s}"
    return "health-unknown" if s == UNKNOWN else "health-bad"


def _when(ns: int) -> str:
    return f"{gps_text(ns)} ({utc_text(ns)})"


def _map_section(s: StatusSnapshot) -> str:
    since = max(0, s.now_ns - s.loaded_at_ns) / NS
    rows = [
        ("file", f"<code>{_e(s.map_file)}</code>"),
        ("fingerprint", f'<code id="fingerprint">{_e(s.fingerprint)}</code>'),
        (
            "loaded",
            f'<span id="loaded">GPS {_e(_when(s.loaded_at_ns))}</span>, '
            f"{_e(age_text(round(since)))} ago",
        ),
        ("now", f"GPS {_e(_when(s.now_ns))}"),
        ("endpoints", str(len(s.endpoints))),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section id="map"><h2>Scope map</h2><dl>{items}</dl></section>'


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"


def _errors_cell(errors: Sequence[ErrorView]) -> str:
    if not errors:
        return "none"
    items = "".join(
        f"<li>{_e(age_text(round(e.age_s)))} ago, {_e(e.call)}: {_e(e.text)}</li>" for e in errors
    )
    return f'<ul class="errors">{items}</ul>'


def _endpoints_section(s: StatusSnapshot) -> str:
    head = _head("endpoint", "domains", "retention", "health", "recent errors")
    rows = []
    for ep in s.endpoints:
        retention = f"{age_text(ep.newest_s)} … {age_text(ep.oldest_s)}"
        rows.append(
            f'<tr class="endpoint" data-url="{_e(ep.url)}"><td><code>{_e(ep.url)}</code></td>'
            f"<td>{_e(', '.join(ep.domains))}</td><td>{_e(retention)}</td>"
            f'<td class="{_health_class(ep.health)}">{_e(ep.health)}</td>'
            f"<td>{_errors_cell(ep.errors)}</td></tr>"
        )
    return (
        f'<section id="endpoints"><h2>Endpoints</h2><table><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _span(v: StreamView) -> str:
    start = "now (live)" if v.start_ns is None else gps_text(v.start_ns)
    end = "open end" if v.end_ns is None else gps_text(v.end_ns)
    return f"[{start}, {end})"


def _channels(chans: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(chans[:limit])
    return shown + (f", … ({len(chans)} channels)" if len(chans) > limit else "")


def _workers_section(s: StatusSnapshot) -> str:
    if s.workers is None:
        return ""
    head = _head("worker", "location", "pid", "state", "restarts")
    rows = "".join(
        f'<tr class="worker"><td>{w.index}</td><td><code>{_e(w.location or "-")}</code></td>'
        f"<td>{w.pid if w.pid is not None else '-'}</td>"
        f'<td class="health-{"up" if w.location else "bad"}">'
        f"{'serving' if w.location else 'not serving'}</td><td>{w.restarts}</td></tr>"
        for w in s.workers
    )
    return (
        f'<section id="workers"><h2>Data workers ({len(s.workers)})</h2>'
        "<p>Streams are handed to these processes in turn; the streams they serve are not "
        "listed below (their figures are in the summed <code>/metrics</code>).</p>"
        f"<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>"
    )


def _streams_section(s: StatusSnapshot) -> str:
    if not s.streams:
        return '<section id="streams"><h2>Streams in flight</h2><p>none</p></section>'
    head = _head("request", "channels", "span (GPS s)", "age", "blocks sent")
    rows = "".join(
        f'<tr class="stream"><td><code>{_e(v.request_id)}</code></td>'
        f"<td>{_e(_channels(v.channels))}</td>"
        f"<td>{_e(_span(v))}</td><td>{_e(age_text(round(v.age_s)))}</td><td>{v.blocks}</td></tr>"
        for v in s.streams
    )
    return (
        f'<section id="streams"><h2>Streams in flight ({len(s.streams)})</h2>'
        f"<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>"
    )


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{_e(p)}</li>" for p in problems)
    return f'<section id="problems"><h2>Not available</h2><ul>{items}</ul></section>'


def render_html(s: StatusSnapshot) -> str:
    from router.timeline import render_timelines

    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="15">'
        f"<title>arrakis-router status</title><style>{_STYLE}</style></head><body>"
        "<h1>arrakis-router status</h1>"
        f"{_problems(s.problems)}"
        f"{_map_section(s)}{_endpoints_section(s)}"
        '<section id="coverage"><h2>Coverage by data age</h2>'
        f"{render_timelines(s.scope_map)}</section>"
        f"{_workers_section(s)}{_streams_section(s)}</body></html>\n"
    )
