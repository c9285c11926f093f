"""SVG timelines of a scope map: per domain, which endpoint covers which data age.

The x axis is data age on a log scale, "now" (age 0) at the left; an endpoint's retention
window ``newest..oldest`` is a bar, an infinite one runs into the "∞" band at the right.
Below the endpoints a coverage row shows the ages *nobody* claiming in the domain retains,
in red: gaps are visible at a glance. Pure: a function of the map, returns SVG text with
every name escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from scopemap import Endpoint, ScopeMap

LABEL_W = 380  # endpoint labels, left
PLOT_W = 560  # finite ages
INF_W = 50  # the "∞" band
ROW_H = 22
TOP = 26
TICKS = (
    (0, "now"),
    (60, "1 min"),
    (600, "10 min"),
    (3600, "1 h"),
    (86400, "1 d"),
    (7 * 86400, "1 w"),
    (30 * 86400, "30 d"),
    (365 * 86400, "1 y"),
)
COLOURS = ("#3b73b9", "#5a9e4b", "#b9783b", "#8a5ab9", "#3ba7a1", "#b93b6e")


@dataclass(frozen=True)
class Bar:
    url: str
    what: str  # claim summary, e.g. "all", "GDS, LSC"
    newest_s: float
    oldest_s: float


def _claims(ep: Endpoint, domain: str) -> str:
    mine = [e for e in ep.scopes if e.domain == domain and e.replay is None]
    if any(e.kind == "all" for e in mine):
        return "all"
    subs = sorted({e.value for e in mine if e.kind == "subsystem" and e.value})
    chans = [e for e in mine if e.kind == "channel"]
    parts = [", ".join(subs[:3]) + (f" +{len(subs) - 3}" if len(subs) > 3 else "")] if subs else []
    if chans:
        parts.append(f"{len(chans)} channel{'s' * (len(chans) != 1)}")
    return "; ".join(parts)


def bars(scope_map: ScopeMap, domain: str) -> list[Bar]:
    out = []
    for ep in scope_map.endpoints:
        what = _claims(ep, domain)
        if what:
            out.append(Bar(ep.url, what, ep.retention.newest_s, ep.retention.oldest_s))
    return out


def gaps(rows: Sequence[Bar]) -> list[tuple[float, float]]:
    """Ages ``[a, b)`` that no bar covers, from 0 to infinity (``b`` may be ``inf``)."""
    spans = sorted((b.newest_s, b.oldest_s) for b in rows)
    out: list[tuple[float, float]] = []
    reach = 0.0
    for lo, hi in spans:
        if lo > reach:
            out.append((reach, lo))
        reach = max(reach, hi)
    if reach < math.inf:
        out.append((reach, math.inf))
    return out


class Axis:
    """Age → x: log10(1 + age) scaled so that ``span`` ages fill the finite plot."""

    def __init__(self, scope_map: ScopeMap) -> None:
        finite = [
            a
            for ep in scope_map.endpoints
            for a in (ep.retention.newest_s, ep.retention.oldest_s)
            if math.isfinite(a)
        ]
        self.span = max(3600.0, max(finite, default=0.0) * 3)
        self._scale = PLOT_W / math.log10(1 + self.span)

    def x(self, age: float) -> float:
        if math.isinf(age):
            return LABEL_W + PLOT_W + INF_W
        return LABEL_W + min(PLOT_W, math.log10(1 + max(0.0, age)) * self._scale)


def _label(text: str, limit: int = 58) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_domain(scope_map: ScopeMap, domain: str, axis: Axis) -> str:
    rows = bars(scope_map, domain)
    holes = gaps(rows)
    height = TOP + ROW_H * (len(rows) + 1) + 24
    width = LABEL_W + PLOT_W + INF_W + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" data-domain="{escape(domain)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="coverage of {escape(domain)} by data age">',
        f'<rect x="{LABEL_W + PLOT_W}" y="{TOP - 6}" width="{INF_W}" '
        f'height="{ROW_H * (len(rows) + 1) + 6}" fill="#f4f4f4"/>',
    ]
    for age, text in TICKS:
        if age > axis.span:
            break
        x = axis.x(age)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height - 20}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{text}</text>')
    parts.append(
        f'<text x="{LABEL_W + PLOT_W + INF_W / 2}" y="{height - 6}" text-anchor="middle">∞</text>'
    )
    for i, bar in enumerate(rows):
        y = TOP + i * ROW_H
        x0, x1 = axis.x(bar.newest_s), axis.x(bar.oldest_s)
        colour = COLOURS[i % len(COLOURS)]
        label = escape(_label(f"{bar.url} ({bar.what})"))
        parts.append(f'<text x="4" y="{y + 14}">{label}</text>')
        parts.append(
            f'<rect class="bar" data-url="{escape(bar.url)}" x="{x0:.1f}" y="{y + 3}" '
            f'width="{max(2.0, x1 - x0):.1f}" height="{ROW_H - 6}" fill="{colour}">'
            f"<title>{label}: ages {bar.newest_s:g} s to {bar.oldest_s:g} s</title></rect>"
        )
    y = TOP + len(rows) * ROW_H
    parts.append(f'<text x="4" y="{y + 14}" font-weight="bold">coverage</text>')
    parts.append(
        f'<rect x="{LABEL_W}" y="{y + 3}" width="{PLOT_W + INF_W}" height="{ROW_H - 6}" '
        'fill="#cfe8cf"/>'
    )
    for a, b in holes:
        x0, x1 = axis.x(a), axis.x(b)
        parts.append(
            f'<rect class="gap" x="{x0:.1f}" y="{y + 3}" width="{max(2.0, x1 - x0):.1f}" '
            f'height="{ROW_H - 6}" fill="#d93025"><title>gap: ages {a:g} s to {b:g} s '
            "retained by nobody</title></rect>"
        )
    now_x = axis.x(0)
    parts.append(
        f'<line class="now" x1="{now_x}" y1="{TOP - 14}" x2="{now_x}" y2="{height - 20}" '
        'stroke="#d93025" stroke-width="2"/>'
    )
    parts.append(f'<text x="{now_x + 4}" y="{TOP - 10}" fill="#d93025">now</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_timelines(scope_map: ScopeMap) -> str:
    axis = Axis(scope_map)
    return "".join(
        f"<figure><figcaption>{escape(domain)}</figcaption>"
        f"{render_domain(scope_map, domain, axis)}</figure>"
        for domain in scope_map.domains
    )
