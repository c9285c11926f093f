"""Failure behaviour through the router: cancellation, silence, errors, failover, deadlines."""

from __future__ import annotations

import gc
import json
import socket
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.integration.behaviours import CHANNEL, STRIDE, ScriptedArrakis, one_endpoint_map
from tests.integration.servers import running_router, serving, wait_until
from tests.router.blockgen import values

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

START = 1_400_000_000 * 10**9


def _stream_cmd(n_blocks: int, start: int = START) -> bytes:
    args = {"channels": [CHANNEL.name], "start": start, "end": start + n_blocks * STRIDE}
    return json.dumps({"request": "Stream", "args": args}).encode()


def test_client_cancel_closes_every_downstream_call() -> None:
    down = ScriptedArrakis(delay=0.01)
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, router):
        reader = flight.FlightClient(url).do_get(flight.Ticket(_stream_cmd(100_000)))
        for _ in range(3):
            reader.read_chunk()
        assert down.open == 1
        reader.cancel()
        assert wait_until(lambda: down.open == 0 and router.open_streams == 0, timeout=5)


class _UnreadContext:
    """The part of a Flight ServerCallContext the router reads, for a call never read."""

    def get_middleware(self, key: str) -> None:
        return None

    def is_cancelled(self) -> bool:
        return False

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def test_a_stream_nobody_reads_is_not_left_counted_open() -> None:
    down = ScriptedArrakis()
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (_, service, router):
        stream = router.do_get(_UnreadContext(), flight.Ticket(_stream_cmd(10)))
        assert router.open_streams == 1 and service.admission.open == 1
        del stream
        gc.collect()
        assert router.open_streams == 0 and service.admission.open == 0
        assert down.open == 0  # nothing was opened downstream for a stream never read


def test_arrakis_client_abandoning_a_stream_leaves_nothing_open() -> None:
    down = ScriptedArrakis(delay=0.005)
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, router):
        client = arrakis.Client(url)
        start = START / 1e9
        for i, _block in enumerate(client.stream([CHANNEL.name], start, start + 3600)):
            if i == 5:
                break
        assert wait_until(lambda: down.open == 0 and router.open_streams == 0, timeout=5)


def test_request_id_is_forwarded_and_appended_to_errors() -> None:
    down = ScriptedArrakis(fail_after=2)
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, _):
        options = flight.FlightCallOptions(headers=[(b"x-request-id", b"abc-123")])
        reader = flight.FlightClient(url).do_get(flight.Ticket(_stream_cmd(10)), options)
        with pytest.raises(flight.FlightUnavailableError) as info:
            reader.read_all()
    text = str(info.value)
    assert "[request: abc-123]" in text
    assert durl in text and "backend went away" in text and "1400000000" in text
    assert "abc-123" in down.request_ids


def test_silent_downstream_gives_a_bounded_named_timeout() -> None:
    down = ScriptedArrakis(silent_after=2)
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl), idle_timeout=0.5) as (
            url,
            _,
            _,
        ),
    ):
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as info:
            flight.FlightClient(url).do_get(flight.Ticket(_stream_cmd(10))).read_all()
        assert time.monotonic() - started < 5
        assert durl in str(info.value)
        assert wait_until(lambda: down.open == 0)


def test_failover_to_replica_resumes_without_gap() -> None:
    bad, good = ScriptedArrakis(fail_after=3), ScriptedArrakis()
    with (
        serving(bad) as burl,
        serving(good) as gurl,
        running_router(one_endpoint_map(burl, gurl)) as (url, _, _),
    ):
        table = flight.FlightClient(url).do_get(flight.Ticket(_stream_cmd(10))).read_all()
    times = table.column("time").to_pylist()
    assert times == [START + k * STRIDE for k in range(10)]
    samples = np.concatenate([np.asarray(v) for v in table.column(CHANNEL.name).to_pylist()])
    np.testing.assert_array_equal(samples, values(256, START, 160))


def test_dead_downstream_fails_fast_with_its_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"grpc://127.0.0.1:{s.getsockname()[1]}"
    with running_router(one_endpoint_map(dead), downstream_timeout=1.0) as (url, _, _):
        started = time.monotonic()
        with pytest.raises(flight.FlightError) as info:
            arrakis.Client(url).describe([CHANNEL.name])
        assert time.monotonic() - started < 5
    assert dead in str(info.value)


def test_slow_downstream_call_hits_the_deadline() -> None:
    down = ScriptedArrakis(info_delay=3)
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl), downstream_timeout=0.3) as (url, _, _),
    ):
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as info:
            arrakis.Client(url).describe([CHANNEL.name])
        assert time.monotonic() - started < 2.5
    assert durl in str(info.value) and "Describe" in str(info.value)


class BadLocationArrakis(ScriptedArrakis):
    """Answers Stream GetFlightInfo with a location no Flight client can connect to."""

    def get_flight_info(
        self, context: object, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if json.loads(descriptor.command)["request"] != "Stream":
            return super().get_flight_info(context, descriptor)
        endpoint = flight.FlightEndpoint(descriptor.command, ["bogus://127.0.0.1:1"])
        return flight.FlightInfo(pa.schema([]), descriptor, [endpoint], -1, -1)


def test_unusable_stream_location_is_a_named_error() -> None:
    down = BadLocationArrakis()
    with serving(down) as durl, running_router(one_endpoint_map(durl)) as (url, _, router):
        reader = flight.FlightClient(url).do_get(flight.Ticket(_stream_cmd(3)))
        with pytest.raises(flight.FlightInternalError) as info:
            reader.read_all()
        assert wait_until(lambda: router.open_streams == 0, timeout=5)
    text = str(info.value)
    assert durl in text and "stream location" in text and "bogus" in text
    assert "Traceback" not in text
