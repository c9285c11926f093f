"""The door, through real Flight calls to a real router: client mistakes and requests over a
limit get a client-error status naming field, rule and value, cost no downstream call, and
carry no traceback; RPCs outside the protocol are refused in one line; busy is UNAVAILABLE;
duplicated channels are served once; the real ``arrakis`` CLI prints ``request error``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import structlog

from router import logging as router_logging
from router.limits import Limits
from router.protocol.errors import MAX_MESSAGE_BYTES
from tests.integration.behaviours import CHANNEL, STRIDE, ScriptedArrakis, one_endpoint_map
from tests.integration.servers import running_router, serving, wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

START = 1_400_000_000 * 10**9


def _stream(channels: object = (CHANNEL.name,), start: object = START, **more: object) -> bytes:
    chans = list(channels) if isinstance(channels, tuple | list) else channels
    args = {"channels": chans, "start": start, "end": START + 4 * STRIDE, **more}
    return json.dumps({"request": "Stream", "args": args}, separators=(",", ":")).encode()


def _count(pattern: str) -> bytes:
    args = {"pattern": pattern, "data_type": [], "min_rate": 0, "max_rate": 1, "publisher": []}
    return json.dumps({"request": "Count", "args": {**args, "time": None}}).encode()


@pytest.fixture(scope="module")
def door() -> Iterator[tuple[str, ScriptedArrakis]]:
    down = ScriptedArrakis()
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, _):
        yield url, down


def _info(client: flight.FlightClient, data: bytes) -> object:
    return client.get_flight_info(flight.FlightDescriptor.for_command(data))


def _get(client: flight.FlightClient, data: bytes) -> object:
    return client.do_get(flight.Ticket(data)).read_all()


RPCS: dict[str, Callable[[flight.FlightClient, bytes], object]] = {
    "GetFlightInfo": _info,
    "DoGet": _get,
}

MISTAKES = [
    (b"not json", "invalid request: not JSON"),
    (b"\xff\xfe", "invalid request: not UTF-8"),
    (b"[" * 1000 + b"]" * 1000, "nested deeper than 32 levels"),
    (_stream(start=True), "args.start: True is not of type"),
    (_stream(start=-1), "args.start: -1 is not a GPS time in ns"),
    (_stream(start=START + 4 * STRIDE), "is not after start"),
    (_stream(start=2**62, end=None), "s after GPS now"),
    (_stream(end=2**63 - 1), "(max_span_s); split it"),
    (_stream(replay_id="\ud800"), "replay"),
    (_stream(channels=[f"H:{i:x}" for i in range(100_000)]), "100000 entries, limit 10000"),
    (_stream(channels="x" * 10_000_000), "limit 1048576 (max_request_bytes)"),
    (_count("(.*.*)*Z"), "may take exponential time"),
    (_count("a{4294967296}"), "args.pattern"),
]


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize(("data", "text"), MISTAKES, ids=range(len(MISTAKES)))
def test_client_mistakes_get_a_client_error_and_no_downstream_call(
    door: tuple[str, ScriptedArrakis], rpc: str, data: bytes, text: str
) -> None:
    url, down = door
    before = len(down.recorder.calls)
    with flight.connect(url) as client, pytest.raises(flight.FlightError) as info:
        RPCS[rpc](client, data)
    message = str(info.value)
    assert type(info.value) is flight.FlightServerError, message[:300]
    assert text in message
    assert "[request: " in message and "Traceback" not in message and ".py" not in message
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert len(down.recorder.calls) == before  # refused before any downstream call


@pytest.mark.parametrize(
    ("call", "rpc"),
    [
        (lambda c: c.get_schema(flight.FlightDescriptor.for_command(_stream())), "GetSchema"),
        (lambda c: list(c.list_flights()), "ListFlights"),
        (lambda c: _info(c, b"") and c.get_flight_info(flight.FlightDescriptor.for_path("x")), ""),
        (lambda c: c.get_flight_info(flight.FlightDescriptor.for_path("a", "b")), "GetFlightInfo"),
        (lambda c: _put(c), "DoPut"),
    ],
    ids=["GetSchema", "ListFlights", "empty", "path", "DoPut"],
)
def test_rpcs_outside_the_protocol_are_refused_in_one_line(
    door: tuple[str, ScriptedArrakis], call: Callable[[flight.FlightClient], object], rpc: str
) -> None:
    url, _ = door
    with flight.connect(url) as client, pytest.raises(pa.ArrowException) as info:
        call(client)
    message = str(info.value)
    # GetSchema: pyarrow's callback turns any error into "Unknown error" (gRPC UNKNOWN
    # too, as FlightServerError is), see router.server.UntracedError
    assert type(info.value) is flight.FlightServerError or rpc == "GetSchema"
    assert rpc in message and "Traceback" not in message and "\n" not in message
    assert ".py" not in message
    if rpc:
        assert "UNIMPLEMENTED" in message


def _put(client: flight.FlightClient) -> None:
    schema = pa.schema([("x", pa.int64())])
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(b"{}"), schema)
    writer.write_table(pa.table({"x": [1]}))
    writer.close()


def test_partition_exchange_without_data_is_a_client_error(
    door: tuple[str, ScriptedArrakis],
) -> None:
    url, _ = door
    doc = {"request": "Partition", "args": {"publisher_id": "P"}}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(doc).encode())
    with flight.connect(url) as client, pytest.raises(flight.FlightError) as info:
        writer, reader = client.do_exchange(descriptor)
        writer.done_writing()
        reader.read_all()
    assert type(info.value) is flight.FlightServerError
    assert "Traceback" not in str(info.value)


def test_duplicated_channels_are_served_once(door: tuple[str, ScriptedArrakis]) -> None:
    url, _ = door
    start = START / 10**9
    block = arrakis.Client(url).fetch([CHANNEL.name, CHANNEL.name], start, start + 0.25)
    assert list(block.data) == [CHANNEL.name]
    assert len(block.data[CHANNEL.name]) == 64


def test_over_max_streams_is_unavailable_router_busy() -> None:
    down = ScriptedArrakis(delay=0.05)
    limits = Limits(max_streams=1)
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl), limits=limits) as (url, service, _),
        flight.connect(url) as client,
    ):
        long = client.do_get(flight.Ticket(_stream(end=START + 10_000 * STRIDE)))
        long.read_chunk()
        with pytest.raises(flight.FlightUnavailableError) as info:
            _get(client, _stream())
        assert "router busy: 1 streams open (limit 1, max_streams); retry in" in str(info.value)
        long.cancel()
        assert wait_until(lambda: service.admission.open == 0, timeout=5)
        assert _get(client, _stream()).num_rows == 4  # type: ignore[attr-defined]


def test_per_client_stream_limit() -> None:
    down = ScriptedArrakis(delay=0.05)
    limits = Limits(max_streams_per_client=1)
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl), limits=limits) as (url, service, _),
        flight.connect(url) as client,
    ):
        long = client.do_get(flight.Ticket(_stream(end=START + 10_000 * STRIDE)))
        long.read_chunk()
        with pytest.raises(flight.FlightUnavailableError, match="from your address"):
            _get(client, _stream())
        long.cancel()
        assert wait_until(lambda: service.admission.open == 0, timeout=5)


def test_arrakis_cli_prints_request_error_without_traceback(
    door: tuple[str, ScriptedArrakis],
) -> None:
    url, _ = door
    done = subprocess.run(
        [sys.executable, "-m", "arrakis", "-u", url, "count", "(a+)+$"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]  # (gpstime may complain about leap data first)
    assert last.startswith("request error: Flight error: invalid Count request: args.pattern")
    assert "Traceback" not in done.stderr


def test_malformed_input_logs_one_bounded_line_and_repeats_collapse(
    door: tuple[str, ScriptedArrakis],
) -> None:
    url, _ = door
    stream = io.StringIO()
    router_logging.configure("json", "info", stream)
    try:
        with flight.connect(url) as client:
            for _ in range(5):
                with pytest.raises(flight.FlightServerError):
                    _info(client, _stream(channels="x" * 1_000_000))
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if line["event"] == "request_failed"]
    assert len(failed) == 1  # the four identical ones after it were counted, not written
    assert all(len(line) <= router_logging.MAX_LINE_BYTES for line in stream.getvalue().split())
    assert "bytes, sha256" in failed[0]["command"]
    assert failed[0]["peer"].startswith("ipv")
