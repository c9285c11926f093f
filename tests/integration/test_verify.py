"""``router verify`` against real servers: our mock backends (with retention windows) and a
real upstream ``arrakis-server`` mock process, with faithful and deliberately drifted maps."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.flight as flight
import pytest

from router.cli import main
from router_backends.testing import serve_mock
from tests.integration.behaviours import ScriptedArrakis
from tests.integration.servers import serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "verify.schema.json").read_text())
)


def verify(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    code = main(["verify", "--scope-map", str(path), "--format", "json", *extra])
    out = capsys.readouterr().out
    # in-process mock servers log to stdout too: the report is the block from a lone "{"
    lines = out.splitlines()
    doc = json.loads("\n".join(lines[lines.index("{") :]))
    VALIDATOR.validate(doc)
    return code, doc


def drifts(doc: dict[str, Any]) -> set[tuple[int, str, str]]:
    """``(line, check, claim)`` of every drifted check."""
    return {
        (c["line"], c["check"], c["claim"])
        for ep in doc["endpoints"]
        for c in ep["checks"]
        if c["status"] == "drift"
    }


@contextmanager
def demo_layout() -> Iterator[tuple[str, str]]:
    """The demo's two downstreams: live (0..600 s) and archive (300 s..inf)."""
    with serve_mock(retention="0,600") as live, serve_mock(retention="300,inf") as archive:
        yield live, archive


def demo_map(live: str, archive: str) -> str:
    text = (ROOT / "examples" / "scope-maps" / "demo.yaml").read_text()
    return text.replace("grpc://127.0.0.1:31207", live).replace("grpc://127.0.0.1:31208", archive)


def test_passes_on_the_demo_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with demo_layout() as (live, archive):
        code, doc = verify(tmp_path, demo_map(live, archive), capsys)
    assert code == 0, drifts(doc)
    assert doc["drift"] == 0 and doc["exit_code"] == 0
    live_checks = doc["endpoints"][0]["checks"]
    # server-info, two domain claims, live: now + oldest inside + oldest outside, scope-map
    assert [(c["check"], c["status"]) for c in live_checks] == [
        ("server-info", "ok"),
        ("scope", "ok"),
        ("scope", "ok"),
        ("retention", "ok"),
        ("retention", "ok"),
        ("retention", "ok"),
        ("scope-map", "ok"),
    ]
    refused = [c for c in live_checks if "refused, as the map says" in c["detail"]]
    assert len(refused) == 1
    archive_checks = doc["endpoints"][1]["checks"]
    assert sum(c["check"] == "retention" for c in archive_checks) == 3  # newest in/out, a year
    assert {c["line"] for c in archive_checks if c["check"] == "retention"} == {24}


def test_finds_every_planted_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], upstream_mocks: tuple[str, str]
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"grpc://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there any more
    upstream = upstream_mocks[0]
    with serve_mock(retention="0,600") as live:
        text = (
            f"{live}:\n"  # 1
            "  scopes:\n"
            "    H1:\n"
            "      - all: true\n"  # 4
            "    L1:\n"
            "      - subsystem: NOPE\n"  # 6: a subsystem the endpoint lacks
            "  retention: {newest: 0, oldest: 3600}\n"  # 7: it keeps only 600 s
            f"{upstream}:\n"  # 8: real arrakis-server
            "  scopes:\n"
            "    H1: [{subsystem: GDS}, {subsystem: LSC}]\n"  # 10
            "    L1:\n"
            "      - channel: L1:GDS-SLOW\n"  # 12
            "      - subsystem: PEM\n"  # 13: not in its channels
            "  retention: {}\n"
            f"{dead_url}:\n"  # 15
            "  scopes: {H1: [{all: true}]}\n"
            "  retention: {}\n"
        )
        started = time.monotonic()
        code, doc = verify(tmp_path, text, capsys, "--timeout", "20")
        elapsed = time.monotonic() - started
    assert code == 1 and doc["exit_code"] == 1
    assert drifts(doc) == {
        (6, "scope", "subsystem NOPE"),
        (6, "scope-map", "subsystem NOPE"),
        (7, "retention", "newest 0 s, oldest 3600 s"),
        (7, "scope-map", "newest 0 s, oldest 3600 s"),
        (13, "scope", "subsystem PEM"),
        (13, "scope-map", "subsystem PEM"),
        (15, "server-info", "endpoint"),
    }
    by_url = {ep["endpoint"]: ep for ep in doc["endpoints"]}
    retention = [c for c in by_url[live]["checks"] if c["status"] == "drift" and c["line"] == 7]
    assert "oldest edge" in retention[0]["detail"] and "refused" in retention[0]["detail"]
    assert by_url[dead_url]["checks"][0]["detail"].startswith("unreachable")
    # the real arrakis-server: what it has holds, and it answers its own scope-map
    ok_upstream = {
        (c["line"], c["check"]) for c in by_url[upstream]["checks"] if c["status"] == "ok"
    }
    assert {(10, "scope"), (12, "scope"), (8, "server-info")} <= ok_upstream
    assert elapsed < 20


def test_text_report_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_mock(retention="300,inf") as archive:
        path = tmp_path / "m.yaml"
        path.write_text(
            f"{archive}:\n  scopes:\n    H1: [{{subsystem: GDS}}, {{subsystem: XYZ}}]\n"
            "  retention: {newest: 0}\n"
        )
        code = main(["verify", "--scope-map", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    # claims live data, but the archive refuses 'now'; claims XYZ, which it lacks
    assert f"DRIFT {path}:4 retention [newest 0 s, oldest inf s]" in out
    assert f"DRIFT {path}:3 scope [subsystem XYZ]: find 'H1:XYZ([-_]|$)' returned no" in out
    assert f"ok    {path}:3 scope [subsystem GDS]" in out
    assert out.rstrip().splitlines()[-1].startswith("result: DRIFT")


def test_ten_hanging_endpoints_are_bounded_by_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten endpoints that accept TCP connections and never speak: the whole run ends within
    --timeout (plus start-up), every endpoint reported as not answering in time."""
    with ExitStack() as stack:
        urls = []
        for _ in range(10):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            urls.append(f"grpc://127.0.0.1:{s.getsockname()[1]}")
        text = "".join(
            f"{u}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n" for u in urls
        )
        started = time.monotonic()
        code, doc = verify(tmp_path, text, capsys, "--timeout", "2")
        elapsed = time.monotonic() - started
    assert code == 1
    assert len(doc["endpoints"]) == 10
    for ep in doc["endpoints"]:
        assert ep["drift"] is True
        assert (
            "in time" in ep["checks"][0]["detail"]
            or "within --timeout" in ep["checks"][0]["detail"]
        )
    assert elapsed < 2 + 5, elapsed  # bounded, not a hang


class InfoOnly(ScriptedArrakis):
    """Answers server-info only (no scope-map action); records authorization headers."""

    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        if action.type == "server-info":
            return iter([flight.Result(json.dumps({"server_version": "x"}).encode())])
        raise flight.FlightServerError("action not valid")


def test_token_is_sent_and_missing_scope_map_action_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = InfoOnly()
    with serving(server) as url:
        code, doc = verify(
            tmp_path,
            f"{url}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n",
            capsys,
            "--token-file",
            str(token),
        )
    calls = server.recorder.calls
    assert {name for name, _ in calls} >= {"DO_ACTION", "GET_FLIGHT_INFO"}
    assert all(headers == ["Bearer s3cret"] for _, headers in calls)
    checks = doc["endpoints"][0]["checks"]
    (own,) = [c for c in checks if c["check"] == "scope-map"]
    assert own["status"] == "skipped" and "action not valid" in own["detail"]
    assert code == 1  # its Find does not answer: the H1 claim is reported


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--timeout", "0"], "must be > 0"),
        (["--tls-ca", "/nonexistent/ca.pem"], "cannot read --tls-ca"),
        (["--token-file", "/nonexistent/token"], "No such file"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("grpc://127.0.0.1:1:\n  scopes: {H1: [{all: true}]}\n  retention: {}\n")
    assert main(["verify", "--scope-map", str(path), *extra]) == 2
    assert needle in capsys.readouterr().err


def test_invalid_map_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "grpc://127.0.0.1:1:\n  scopes: {H1: [{all: true}]}\n  retention: {newest: 5, oldest: 1}\n"
    )
    assert main(["verify", "--scope-map", str(path)]) == 2
    assert "SM101" in capsys.readouterr().err


def test_tls_endpoint_is_verified_with_the_given_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router_backends.mock import MockBackend
    from router_backends.testing import serve_backend

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            *[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ],
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pair = flight.CertKeyPair(cert.read_bytes(), key.read_bytes())
    with serve_backend(MockBackend(), "grpc+tls://localhost:0", tls_certificates=[pair]) as srv:
        url = f"grpc+tls://localhost:{srv.port}"
        text = (
            f"{url}:\n  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}\n  retention: {{}}\n"
        )
        code, doc = verify(tmp_path, text, capsys, "--tls-ca", str(cert))
        assert code == 0, drifts(doc)
        code, doc = verify(tmp_path, text, capsys, "--timeout", "5")  # system roots: refused
    assert code == 1
    assert drifts(doc) == {(1, "server-info", "endpoint")}
