"""The status page without a browser: HTML structure, escaping, timelines and gaps, the
providers (health unknown until there is one), streams in flight, recent errors, and the
page served next to ``/metrics``."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from router.inflight import InFlight, StreamView
from router.metrics import RouterMetrics
from router.protocol.gps import FakeClock
from router.recenterrors import ErrorView, RecentErrors
from router.statuspage import CONTENT_SECURITY_POLICY, MapInfo, StatusPage, fingerprint
from router.timeline import bars, gaps
from scopemap import ScopeMap, load_path, load_text

ROOT = Path(__file__).parents[2]
S = 1_000_000_000
NOW = 1_400_000_000 * S
EVIL = "grpc://<script>alert(1)<:1"  # a URL the loader accepts (no "/" allowed)


class Tree(HTMLParser):
    """Elements as (tag, attrs, text-inside) plus all visible text; fails on bad nesting."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()
        assert not self.stack, f"unclosed: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def _map(text: str) -> ScopeMap:
    result = load_text(text, "m.yaml")
    assert result.scope_map is not None, result.diagnostics
    return result.scope_map


GAPPY = (
    "grpc://live:1:\n  scopes: {H1: [{all: true}], L1: [{all: true}]}\n"
    "  retention: {newest: 0, oldest: 600}\n"
    "grpc://archive:1:\n  scopes: {H1: [{subsystem: GDS}]}\n"
    "  retention: {newest: 3600, oldest: .inf}\n"
    f"{EVIL}:\n  scopes: {{L1: [{{all: true}}]}}\n  retention: {{newest: 300}}\n"
)


def page_for(sm: ScopeMap, **providers: object) -> StatusPage:
    return StatusPage(lambda: MapInfo(sm, NOW - 90 * S), FakeClock(NOW), **providers)  # type: ignore[arg-type]


def test_structure_and_every_endpoint() -> None:
    sm = _map(GAPPY)
    _, headers, body = page_for(sm)()
    html = body.decode()
    tree = Tree(html)  # well nested
    assert dict(headers)["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert html.startswith("<!DOCTYPE html>")
    rows = tree.find("tr", **{"class": "endpoint"})
    assert [r["data-url"] for r in rows] == [ep.url for ep in sm.endpoints]
    assert {a["data-domain"] for a in tree.find("svg")} == {"H1", "L1"}
    assert len(tree.find("line", **{"class": "now"})) == 2
    assert tree.find("code", id="fingerprint")
    assert fingerprint(sm) in html
    assert "1.5 min ago" in tree.all_text  # loaded 90 s before now
    # no provider for health: every endpoint unknown; no errors, no streams
    unknown = tree.find("td", **{"class": "health-unknown"})
    assert len(unknown) == 3
    assert "Streams in flight" in tree.all_text and "none" in tree.all_text


def test_outside_text_is_escaped_never_markup() -> None:
    sm = _map(GAPPY)
    page = page_for(
        sm,
        errors=lambda: {EVIL: [ErrorView("Stream", "<b>bad</b> & <script>x()</script>", 2.0)]},
        streams=lambda: [StreamView("<i>r</i>", ("H1:<script>A</script>",), None, None, 1.0, 3)],
        health=lambda: {EVIL: "<script>healthy</script>"},
    )
    html = page()[2].decode()
    tree = Tree(html)
    assert not tree.find("script") and not tree.find("b") and not tree.find("i")
    text = tree.all_text
    assert EVIL in text  # shown as text: in the table and the timeline label
    assert "<script>x()</script>" in text and "H1:<script>A</script>" in text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_gaps_are_drawn_where_nobody_retains() -> None:
    sm = _map(GAPPY)
    h1 = bars(sm, "H1")
    assert [(b.url, b.what) for b in h1] == [("grpc://live:1", "all"), ("grpc://archive:1", "GDS")]
    assert gaps(h1) == [(600, 3600)]
    assert gaps(bars(sm, "L1")) == []  # live 0..600 then the evil archive 300..inf
    tree = Tree(page_for(sm)()[2].decode())
    gap_rects = tree.find("rect", **{"class": "gap"})
    assert len(gap_rects) == 1
    demo = load_path(ROOT / "examples" / "scope-maps" / "demo.yaml").scope_map
    assert demo is not None
    assert not Tree(page_for(demo)()[2].decode()).find("rect", **{"class": "gap"})
    live_only = _map("grpc://a:1:\n  scopes: {H1: [{all: true}]}\n  retention: {oldest: 60}\n")
    assert gaps(bars(live_only, "H1")) == [(60, float("inf"))]


def test_health_and_streams_from_providers() -> None:
    sm = _map(GAPPY)
    page = page_for(
        sm,
        health=lambda: {"grpc://live:1": "healthy", "grpc://archive:1": "ejected"},
        streams=lambda: [
            StreamView("req-1", ("H1:A-B", "H1:C-D"), NOW - 100 * S, NOW, 4.2, 17),
            StreamView("req-2", tuple(f"L1:X-{i}" for i in range(9)), None, None, 60.0, 240),
        ],
    )
    tree = Tree(page()[2].decode())
    assert tree.find("td", **{"class": "health-healthy"})
    assert tree.find("td", **{"class": "health-bad"})
    assert len(tree.find("td", **{"class": "health-unknown"})) == 1
    assert len(tree.find("tr", **{"class": "stream"})) == 2
    text = tree.all_text
    assert "[1399999900, 1400000000)" in text and "now (live), open end" in text
    assert "… (9 channels)" in text and "1 min" in text and "240" in text


def test_fingerprint_changes_with_the_map() -> None:
    a = _map(GAPPY)
    b = _map(GAPPY.replace("oldest: 600", "oldest: 700"))
    assert fingerprint(a) == fingerprint(_map(GAPPY)) != fingerprint(b)


def test_inflight_lists_a_stream_while_it_is_read() -> None:
    clock = [0.0]
    inflight = InFlight(monotonic=lambda: clock[0])
    it = inflight.track("r", ["H1:A"], 5, None, iter(range(3)))
    assert [v.blocks for v in inflight.snapshot()] == [0]  # listed once handed out
    assert next(it) == 0
    clock[0] = 2.5
    (view,) = inflight.snapshot()
    assert (view.request_id, view.blocks, view.age_s, view.start_ns) == ("r", 1, 2.5, 5)
    assert list(it) == [1, 2]
    assert inflight.snapshot() == []
    closed = inflight.track("q", ["H1:A"], None, None, iter(range(10)))
    next(closed)
    closed.close()  # a client leaving
    assert len(inflight) == 0
    dropped = inflight.track("d", ["H1:A"], None, None, iter(range(10)))
    assert len(inflight) == 1
    del dropped  # never read, then collected (a client gone before the first read)
    assert len(inflight) == 0

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("downstream died")

    broken = inflight.track("f", ["H1:A"], None, None, failing())
    assert next(broken) == 1
    with pytest.raises(RuntimeError):
        next(broken)
    assert len(inflight) == 0


def test_recent_errors_are_bounded_newest_first() -> None:
    clock = [0.0]
    errors = RecentErrors(per_endpoint=2, monotonic=lambda: clock[0])
    for i in range(4):
        clock[0] = float(i)
        errors.record("grpc://a:1", "Stream", RuntimeError(f"e{i}\nsecond line"))
    errors.record("grpc://b:1", "Describe", RuntimeError("x" * 1000))
    got = errors.snapshot()
    assert [(e.text, e.age_s) for e in got["grpc://a:1"]] == [("e3", 0.0), ("e2", 1.0)]
    assert len(got["grpc://b:1"][0].text) == 300


def test_metrics_records_downstream_errors_but_not_cancellations() -> None:
    from router.errors import CancelledError, UnavailableError

    metrics = RouterMetrics()
    metrics.downstream_call("grpc://a:1", "Stream")(UnavailableError("gone"))
    metrics.downstream_call("grpc://a:1", "Stream")(CancelledError("client left"))
    metrics.downstream_call("grpc://a:1", "Stream")(None)
    (only,) = metrics.recent_errors.snapshot()["grpc://a:1"]
    assert only.text == "gone" and only.call == "Stream"


@pytest.mark.parametrize("path", ["/", "/metrics"])
def test_served_next_to_metrics(path: str) -> None:
    sm = _map(GAPPY)
    metrics = RouterMetrics()
    server = metrics.serve(0, "127.0.0.1", {"/": page_for(sm)})
    try:
        url = f"http://127.0.0.1:{server.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
            ctype = response.headers["Content-Type"]
        if path == "/":
            assert ctype == "text/html; charset=utf-8"
            assert "grpc://archive:1" in body
        else:
            assert "arrakis_router_open_streams" in body
    finally:
        server.close()


def test_a_failing_provider_is_named_not_fatal() -> None:
    from structlog.testing import capture_logs

    def broken() -> dict[str, object]:
        raise RuntimeError("registry <down>")

    sm = _map(GAPPY)
    with capture_logs() as logs:
        status, _, body = page_for(sm, health=broken)()
    assert status == "200 OK"
    tree = Tree(body.decode())
    assert "health: RuntimeError: registry <down>" in tree.all_text
    assert len(tree.find("td", **{"class": "health-unknown"})) == 3
    assert [e["event"] for e in logs] == ["status_provider_failed"]
    assert logs[0]["provider"] == "health"


def test_data_workers_are_listed_only_when_there_are_some() -> None:
    from router.statuspage import WorkerView

    sm = _map(GAPPY)
    assert "Data workers" not in page_for(sm)()[2].decode()
    views = [
        WorkerView(0, "grpc://10.0.0.5:31210", 4242, 0),
        WorkerView(1, None, None, 3),  # exited, waiting for its restart
    ]
    tree = Tree(page_for(sm, workers=lambda: views)()[2].decode())
    rows = tree.find("tr", **{"class": "worker"})
    assert len(rows) == 2
    assert "Data workers (2)" in tree.all_text
    assert "grpc://10.0.0.5:31210" in tree.all_text and "4242" in tree.all_text
    assert len(tree.find("td", **{"class": "health-up"})) == 1
    assert len(tree.find("td", **{"class": "health-bad"})) == 1
    assert "not serving" in tree.all_text
