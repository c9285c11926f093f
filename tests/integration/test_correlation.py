"""One request id for one client operation: GetFlightInfo puts its id into the ticket it
issues (top-level ``request_id``), the DoGet of that ticket answers (and logs) under it,
unless the client sent its own ``x-request-id``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow.flight as flight
import pytest

from router import logging as router_logging
from router.protocol.envelope import DescribeArgs, Envelope, FindArgs, parse_envelope
from router_backends.testing import serve_mock
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration


class Headers(flight.ClientMiddlewareFactory):  # type: ignore[misc]
    """Records the ``x-request-id`` the server answers on each call."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def start_call(self, info: Any) -> flight.ClientMiddleware:
        factory = self

        class Middleware(flight.ClientMiddleware):  # type: ignore[misc]
            def received_headers(self, headers: dict[str, list[str]]) -> None:
                for value in headers.get("x-request-id", []):
                    factory.seen.append(value)

        return Middleware()


@pytest.fixture(scope="module")
def router_url() -> Iterator[str]:
    with serve_mock() as down:
        yaml_text = f"{down}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n"
        with running_router(yaml_text) as (url, _, _):
            yield url


def _count_command() -> bytes:
    return Envelope("Count", FindArgs(pattern="H1:GDS.*")).encode()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The router's log lines (JSON) while the test runs."""
    buffer = io.StringIO()
    router_logging.configure("json", "info", stream=buffer)
    try:
        yield buffer
    finally:
        router_logging.configure("console", "info")


def _ids(buffer: io.StringIO, event: str) -> list[str]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line["request_id"] for line in lines if line["event"] == event]


def test_the_ticket_carries_the_request_id_of_its_get_flight_info(
    router_url: str, json_log: io.StringIO
) -> None:
    headers = Headers()
    client = flight.connect(router_url, middleware=[headers])
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(_count_command()))
        (endpoint,) = info.endpoints
        ticket = json.loads(endpoint.ticket.ticket)
        operation = headers.seen[-1]
        assert ticket["request_id"] == operation
        # the ticket is still a valid request for any Arrakis server (extra key tolerated)
        assert parse_envelope(endpoint.ticket.ticket).request_id == operation
        client.do_get(endpoint.ticket).read_all()
        # the DoGet logs under the operation's id (its response header was sent before the
        # ticket was read, with an id of its own)
        # (the in-process mock downstream logs too, under the id the router forwards)
        for event in ("get_flight_info", "do_get", "stream_done"):
            ids = _ids(json_log, event)
            assert ids and set(ids) == {operation}, (event, ids)
        # a client that names its own id keeps it
        own = flight.FlightCallOptions(headers=[(b"x-request-id", b"client-op-7")])
        client.do_get(endpoint.ticket, own).read_all()
        assert headers.seen[-1] == "client-op-7"
        assert _ids(json_log, "do_get")[-1] == "client-op-7"
    finally:
        client.close()


def test_a_failing_do_get_names_the_operation_id(router_url: str) -> None:
    headers = Headers()
    client = flight.connect(router_url, middleware=[headers])
    try:
        # in the map's scope, unknown downstream: GetFlightInfo plans, the DoGet fails
        command = Envelope("Describe", DescribeArgs(channels=("H1:NOPE-X",))).encode()
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        operation = headers.seen[-1]
        with pytest.raises(flight.FlightUnavailableError) as err:
            client.do_get(info.endpoints[0].ticket).read_all()
        assert f"[request: {operation}]" in str(err.value)
    finally:
        client.close()


def test_a_ticket_request_id_is_sanitised() -> None:
    doc = json.loads(_count_command())
    doc["request_id"] = "a b/../c;" + "x" * 100
    envelope = parse_envelope(json.dumps(doc).encode())
    assert envelope.request_id is not None
    assert envelope.request_id == ("ab..c" + "x" * 100)[:32]  # only A-Za-z0-9._- kept
    doc["request_id"] = 42  # not a string: ignored, not an error
    assert parse_envelope(json.dumps(doc).encode()).request_id is None
    # the request id never changes what is requested
    assert parse_envelope(json.dumps(doc).encode()) == parse_envelope(_count_command())
