"""The status page in a real headless Chromium, served by a real router in front of real mock
downstreams while a live stream is in flight and one endpoint is dead.

Chromium (Debian's ``chromium``) is required: ``.ci/install-chromium.sh`` installs it. These
tests fail, never skip, when it is missing. Console messages are read from Chromium's log
(``--enable-logging=stderr``: ``...:CONSOLE:...`` lines); a control page proves that the
check sees them. The screenshot is kept in pytest's tmp dir as the test artifact.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.flight as flight
import pytest

from router.metrics import MetricsServer
from router.service import RouterService
from router.statuspage import CONTENT_SECURITY_POLICY, status_page_for
from router_backends.testing import serve_mock
from tests.integration.servers import running_router, wait_until

pytestmark = pytest.mark.integration

DEAD = "grpc://127.0.0.1:1"
LIVE_CHANNEL = "H1:GDS-CALIB_STRAIN"
DEAD_CHANNEL = "L1:PEM-DEAD_CHANNEL"


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: run .ci/install-chromium.sh (as root)")
    return found


def run_chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def demo_map(live: str, archive: str) -> str:
    return (
        f"{live}:\n  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}\n"
        "  retention: {newest: 0, oldest: 600}\n"
        f"{archive}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{newest: 300}}\n"
        f"{DEAD}:\n  scopes: {{L1: [{{channel: {DEAD_CHANNEL}}}]}}\n  retention: {{}}\n"
    )


@contextmanager
def status_server(service: RouterService, live: str) -> Iterator[str]:
    page = status_page_for(service, health=lambda: {live: "healthy", DEAD: "ejected"})
    server: MetricsServer = service.metrics.serve(0, "127.0.0.1", {"/": page})
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        server.close()


def _stream_cmd(channels: list[str]) -> bytes:
    args = {"channels": channels, "start": None, "end": None}
    return json.dumps({"request": "Stream", "args": args}).encode()


def _describe_cmd(channels: list[str]) -> bytes:
    return json.dumps(
        {"request": "Describe", "args": {"channels": channels, "time": None}}
    ).encode()


def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    with (
        serve_mock(retention="0,600") as live,
        serve_mock(retention="300,inf") as archive,
        running_router(demo_map(live, archive), downstream_timeout=2.0) as (url, service, _),
        status_server(service, live) as page_url,
    ):
        client = flight.connect(url)
        try:
            # a Describe that needs the dead endpoint: an error the page lists
            with pytest.raises(flight.FlightError):
                descriptor = flight.FlightDescriptor.for_command(_describe_cmd([DEAD_CHANNEL]))
                info = client.get_flight_info(descriptor)
                client.do_get(info.endpoints[0].ticket).read_all()
            # a live stream in flight while the browser looks
            reader = client.do_get(flight.Ticket(_stream_cmd([LIVE_CHANNEL])))
            reader.read_chunk()
            assert wait_until(lambda: len(service.inflight) == 1)
            dom = run_chromium(tmp_path, page_url, "--dump-dom")
            shot = tmp_path / "status-page.png"
            pic = run_chromium(
                tmp_path, page_url, f"--screenshot={shot}", "--window-size=1280,1100"
            )
            reader.cancel()
        finally:
            client.close()
    html = dom.stdout
    for endpoint in (live, archive, DEAD):
        assert f'data-url="{endpoint}"' in html, endpoint
    assert ">healthy<" in html and ">ejected<" in html
    assert 'class="stream"' in html and LIVE_CHANNEL in html and "now (live)" in html
    assert DEAD in html and "Describe" in html  # the recent error of the dead endpoint
    assert html.count('class="timeline"') == 2  # H1 and L1
    assert 'class="now"' in html
    assert console_messages(dom.stderr) == [] and console_messages(pic.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


def test_console_check_sees_messages_and_the_policy_blocks_scripts(tmp_path: Path) -> None:
    """Control: a page that logs and one that smuggles an inline script past escaping. The
    first proves ``console_messages`` works; the second that our Content-Security-Policy
    refuses to run it (Chromium reports the refusal on the console)."""
    logged = tmp_path / "logged.html"
    logged.write_text('<!DOCTYPE html><p>x</p><script>console.error("marker-1")</script>')
    seen = console_messages(run_chromium(tmp_path, logged.as_uri(), "--dump-dom").stderr)
    assert any("marker-1" in line for line in seen)

    def smuggled() -> tuple[str, list[tuple[str, str]], bytes]:
        body = b'<!DOCTYPE html><p id="p">x</p><script>document.title="ran"</script>'
        return "200 OK", [("Content-Security-Policy", CONTENT_SECURITY_POLICY)], body

    from router.metrics import RouterMetrics

    server = RouterMetrics().serve(0, "127.0.0.1", {"/": smuggled})
    try:
        proc = run_chromium(tmp_path, f"http://127.0.0.1:{server.port}/", "--dump-dom")
    finally:
        server.close()
    assert "<title>ran</title>" not in proc.stdout
    assert any("Content Security Policy" in line for line in console_messages(proc.stderr))


def test_router_serve_answers_the_status_page(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(f"{DEAD}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--metrics-port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("serving grpc://"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            body = response.read().decode()
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert f'data-url="{DEAD}"' in body and str(path) in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b"arrakis_router_requests_total" in response.read()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
