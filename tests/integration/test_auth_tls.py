"""Bearer-token passthrough and TLS: the client's ``authorization`` header reaches every
downstream call of its request (and only its request); the router serves ``grpc+tls://``."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.flight as flight
import pytest
from structlog.testing import capture_logs

from router.cli import main as router_main
from router.downstream import DownstreamPool
from router.server import RouterFlightServer
from router.service import RouterService
from router.tls import TlsError, read_pem, tls_certificates
from scopemap import load_text
from tests.integration.behaviours import CHANNEL, STRIDE, ScriptedArrakis, one_endpoint_map
from tests.integration.servers import running_router, serving

pytestmark = pytest.mark.integration

START = 1_400_000_000 * 10**9
BEARER = "Bearer abc"
WITH_TOKEN = flight.FlightCallOptions(headers=[(b"authorization", BEARER.encode())])


def _describe_cmd() -> bytes:
    args = {"channels": [CHANNEL.name], "time": None}
    return json.dumps({"request": "Describe", "args": args}).encode()


def _stream_cmd(n_blocks: int) -> bytes:
    args = {"channels": [CHANNEL.name], "start": START, "end": START + n_blocks * STRIDE}
    return json.dumps({"request": "Stream", "args": args}).encode()


def _query(url: str, command: bytes, options: flight.FlightCallOptions) -> int:
    """GetFlightInfo then DoGet of each endpoint, as the arrakis client does; rows read."""
    client = flight.connect(url)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        return sum(client.do_get(ep.ticket, options).read_all().num_rows for ep in info.endpoints)
    finally:
        client.close()


def test_authorization_is_forwarded_on_every_downstream_call_and_never_logged() -> None:
    down = ScriptedArrakis()
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl)) as (url, _, _),
        capture_logs() as logs,
    ):
        assert _query(url, _describe_cmd(), WITH_TOKEN) == 1
        assert _query(url, _stream_cmd(4), WITH_TOKEN) == 4
        authorized = list(down.recorder.calls)
        # the same Describe without a token is not answered from the token's cache entry
        assert _query(url, _describe_cmd(), flight.FlightCallOptions()) == 1
        anonymous = down.recorder.calls[len(authorized) :]
    methods = [method for method, _ in authorized]
    assert methods.count("GET_FLIGHT_INFO") == 3 and methods.count("DO_GET") == 3
    assert all(values == [BEARER] for _, values in authorized), authorized
    assert [m for m, _ in anonymous] == ["GET_FLIGHT_INFO", "DO_GET"]
    assert all(values == [] for _, values in anonymous), anonymous
    assert "abc" not in repr(logs)
    auth_flags = {e["auth"] for e in logs if e["event"] in ("get_flight_info", "do_get")}
    assert auth_flags == {True, False}


def test_authorization_survives_failover_to_a_replica() -> None:
    bad, good = ScriptedArrakis(fail_after=2), ScriptedArrakis()
    with (
        serving(bad) as burl,
        serving(good) as gurl,
        running_router(one_endpoint_map(burl, gurl)) as (url, _, _),
    ):
        assert _query(url, _stream_cmd(8), WITH_TOKEN) == 8
    assert any(method == "DO_GET" for method, _ in good.recorder.calls)
    for server in (bad, good):
        assert server.recorder.calls
        assert all(values == [BEARER] for _, values in server.recorder.calls)


# ---------------------------------------------------------------------------------- TLS


@contextmanager
def tls_router(yaml_text: str, cert: Path, key: str | Path, **pool: bytes) -> Iterator[str]:
    """A router serving ``grpc+tls://localhost:PORT`` in this process."""
    result = load_text(yaml_text, "tls-map.yaml")
    assert result.ok and result.scope_map is not None
    tls = tls_certificates(str(cert), str(key), "grpc+tls://localhost:0")
    assert tls is not None
    service = RouterService(result.scope_map, pool=DownstreamPool(**pool))
    server = RouterFlightServer(
        service, "grpc+tls://localhost:0", tls_certificates=[flight.CertKeyPair(*tls)]
    )
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"grpc+tls://localhost:{server.port}"
    finally:
        server.shutdown()
        service.close()
        thread.join(10)


def test_tls_router_answers_tls_clients_and_refuses_plaintext(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    with tls_router(one_endpoint_map("grpc://127.0.0.1:1"), cert, key) as url:
        client = flight.connect(url, tls_root_certs=cert.read_bytes())
        try:
            body = next(iter(client.do_action(flight.Action("server-info", b"")))).body
            assert "server_version" in json.loads(body.to_pybytes())
        finally:
            client.close()
        plain = flight.connect(url.replace("grpc+tls", "grpc"))
        with pytest.raises(flight.FlightUnavailableError):
            list(
                plain.do_action(
                    flight.Action("server-info", b""), flight.FlightCallOptions(timeout=3)
                )
            )
        plain.close()
        assert router_main(["health", url, "--tls-ca", str(cert), "--timeout", "5"]) == 0
        assert router_main(["health", url, "--timeout", "5"]) == 1  # not in the system roots


def test_tls_downstream_is_reached_with_the_given_roots(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    down = ScriptedArrakis()
    with serving(down) as durl, tls_router(one_endpoint_map(durl), cert, key) as tls_url:
        roots = cert.read_bytes()
        with running_router(
            one_endpoint_map(tls_url), pool=DownstreamPool(tls_root_certs=roots)
        ) as (url, _, _):
            assert _query(url, _describe_cmd(), WITH_TOKEN) == 1
    assert down.recorder.calls and all(v == [BEARER] for _, v in down.recorder.calls)


def test_tls_options_are_checked_with_clear_errors(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    assert tls_certificates(None, None, "grpc://0.0.0.0:1") is None
    assert tls_certificates(str(cert), str(key), "localhost:1") is not None
    cases = [
        ((str(cert), None, "grpc+tls://h:1"), "go together"),
        ((str(cert), str(key), "grpc://h:1"), "must be grpc+tls"),
        ((None, None, "grpc+tls://h:1"), "needs --tls-cert"),
        ((str(tmp_path / "missing.pem"), str(key), "grpc+tls://h:1"), "cannot read --tls-cert"),
    ]
    for arguments, text in cases:
        with pytest.raises(TlsError, match=re.escape(text)):
            tls_certificates(*arguments)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="not a PEM file"):
        read_pem("--tls-ca", str(tmp_path / "junk.pem"))
