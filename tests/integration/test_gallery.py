"""The gallery of misbehaving downstreams, each read through the router by the real `arrakis`
client, with and without a healthy replica: what the client gets, how long it takes, what
the operator sees (log lines, metrics)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pyarrow.flight as flight
import pytest
from structlog.testing import capture_logs

from router.protocol.gps import gps_now_ns
from router.server import RouterFlightServer
from router.service import RouterService
from router_backends.testing import ServerProcess
from tests.integration.behaviours import (
    CHANNEL,
    STRIDE,
    DropsBlocks,
    EndsEarly,
    NeverStartsStream,
    RefusesThenRecovers,
    RepeatsBlocks,
    RestartsMidStream,
    ScriptedArrakis,
    StallsAfter,
    one_endpoint_map,
)
from tests.integration.servers import running_router, serving, wait_until
from tests.router.blockgen import values

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

START = 1_400_000_000 * 10**9
BLOCKS = 40  # 2.5 s of data
SAMPLES = 256 * STRIDE // 10**9  # per block


def _fetch(url: str, blocks: int = BLOCKS) -> np.ma.MaskedArray:
    start = START / 1e9
    got = arrakis.Client(url).fetch([CHANNEL.name], start, start + blocks * STRIDE / 1e9)
    data: np.ma.MaskedArray = np.ma.asarray(got.data[CHANNEL.name])
    return data


def _stream_ticket(blocks: int) -> flight.Ticket:
    args = {"channels": [CHANNEL.name], "start": START, "end": START + blocks * STRIDE}
    return flight.Ticket(json.dumps({"request": "Stream", "args": args}).encode())


def _want(blocks: int = BLOCKS) -> np.ndarray:
    return values(256, START, blocks * SAMPLES)


def _assert_whole(data: np.ma.MaskedArray, blocks: int = BLOCKS) -> None:
    assert not np.ma.is_masked(data), f"{np.ma.count_masked(data)} samples masked"
    np.testing.assert_array_equal(np.asarray(data), _want(blocks))


@contextmanager
def _router(
    *downstreams: ScriptedArrakis | str, **settings: object
) -> Iterator[tuple[str, RouterService, RouterFlightServer]]:
    """A router over ``downstreams`` (servers to serve, or URLs), replicas in that order."""
    with ExitStack() as stack:
        urls = [d if isinstance(d, str) else stack.enter_context(serving(d)) for d in downstreams]
        yield stack.enter_context(running_router(one_endpoint_map(*urls), **settings))


def _nothing_left(
    service: RouterService,
    router: RouterFlightServer,
    threads: int,
    downs: Sequence[ScriptedArrakis] = (),
) -> bool:
    return (
        all(d.open == 0 for d in downs)
        and service.pool.calls.count == 0
        and router.open_streams == 0
        and threading.active_count() <= threads
    )


# ---------------------------------------------------------------------- EndsEarly


def test_ends_early_with_a_replica_resumes_there_without_a_gap() -> None:
    early, replica = EndsEarly(after=10), ScriptedArrakis()
    with _router(early, replica) as (url, _, _), capture_logs() as logs:
        data = _fetch(url)
    _assert_whole(data)
    assert early.streams == 1 and replica.streams == 1
    failed = [e for e in logs if e["event"] == "downstream_failed"]
    assert failed and "before the slice's end" in failed[0]["error"]


def test_ends_early_without_a_replica_is_an_error_naming_it_not_masked_data() -> None:
    early = EndsEarly(after=10)
    with serving(early) as durl, running_router(one_endpoint_map(durl)) as (url, _, _):
        started = time.monotonic()
        with pytest.raises(flight.FlightError) as info:
            _fetch(url)
        assert time.monotonic() - started < 5
    text = str(info.value)
    assert durl in text and "before the slice's end" in text
    # each attempt resumes where the last ended, on the same endpoint after a short backoff,
    # until three faults in all: 30 blocks of 62.5 ms delivered, then the error
    assert "delivered up to 1400000001.875 GPS s" in text
    assert early.streams == 3


# ---------------------------------------------------------------------- NeverStartsStream


def test_never_starting_stream_fails_over_to_the_replica() -> None:
    with _router(NeverStartsStream(), ScriptedArrakis(), downstream_timeout=1.0) as (url, _, _):
        _assert_whole(_fetch(url))


def test_never_starting_stream_is_an_error_naming_it_within_the_downstream_timeout() -> None:
    """Done when: with --downstream-timeout 3, an error naming it within about 3 s."""
    down = NeverStartsStream()
    with (
        serving(down) as durl,
        running_router(one_endpoint_map(durl), downstream_timeout=3.0) as (url, _, _),
    ):
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as info:
            _fetch(url)
        took = time.monotonic() - started
        assert wait_until(lambda: down.open == 0)
    assert 2.5 < took < 3 + 5
    assert durl in str(info.value) and "did not start within 3 s" in str(info.value)


# ---------------------------------------------------------------------- StallsAfter


def test_stall_fails_over_to_the_replica() -> None:
    with _router(StallsAfter(5), ScriptedArrakis(), idle_timeout=0.5) as (url, _, _):
        _assert_whole(_fetch(url))


def test_stall_without_a_replica_is_a_named_timeout() -> None:
    down = StallsAfter(5)
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
            _fetch(url)
        assert time.monotonic() - started < 5
    assert durl in str(info.value) and "no data for 0.5 s" in str(info.value)


# ---------------------------------------------------------------------- RestartsMidStream


def test_restart_mid_stream_without_a_replica_is_resumed_on_the_same_endpoint() -> None:
    with RestartsMidStream(after=10, down_s=0.1) as down, _router(down.url) as (url, _, _):
        data = _fetch(url)
    _assert_whole(data)
    assert down.starts == 2


def test_restart_mid_stream_with_a_replica_resumes_on_the_replica() -> None:
    replica = ScriptedArrakis()
    with (
        RestartsMidStream(after=10, down_s=0.1) as down,
        _router(down.url, replica) as (
            url,
            _,
            _,
        ),
    ):
        data = _fetch(url)
    _assert_whole(data)
    assert replica.streams == 1


# ---------------------------------------------------------------------- DropsBlocks


@pytest.mark.parametrize("replica", [False, True], ids=["alone", "with-replica"])
def test_dropped_blocks_inside_a_finished_stream_are_counted_logged_gaps(replica: bool) -> None:
    """A block skipped inside a stream the downstream finished is a real gap: null-filled,
    counted in the metrics and logged at warning level with the endpoint."""
    down = DropsBlocks(every=4)
    others = [ScriptedArrakis()] if replica else []
    with _router(down, *others) as (url, service, _), capture_logs() as logs:
        data = _fetch(url)
        gaps = service.metrics.gap_blocks._value.get()
    mask = np.ma.getmaskarray(data).reshape(BLOCKS, SAMPLES)
    dropped = [k for k in range(BLOCKS) if k and k % 4 == 0]
    assert [k for k in range(BLOCKS) if mask[k].all()] == dropped
    assert not mask[[k for k in range(BLOCKS) if k not in dropped]].any()
    kept = ~np.ma.getmaskarray(data)
    np.testing.assert_array_equal(np.asarray(data)[kept], _want()[kept])
    assert gaps == len(dropped)
    warned = [e for e in logs if e["event"] == "stream_gaps_filled"]
    assert warned and warned[0]["log_level"] == "warning"
    assert warned[0]["gap_blocks"] == len(dropped) and warned[0]["endpoints"]


# ---------------------------------------------------------------------- RepeatsBlocks


@pytest.mark.parametrize("replica", [False, True], ids=["alone", "with-replica"])
def test_repeated_blocks_are_dropped_and_counted(replica: bool) -> None:
    others = [ScriptedArrakis()] if replica else []
    with _router(RepeatsBlocks(every=3), *others) as (url, service, _):
        data = _fetch(url)
        duplicates = service.metrics.duplicates_dropped._value.get()
    _assert_whole(data)
    # (the copy of the last block is never read: the stream is complete before it)
    assert duplicates == len([k for k in range(BLOCKS - 1) if k and k % 3 == 0])


# ---------------------------------------------------------------------- RefusesThenRecovers


def test_first_request_after_a_downstream_restart_succeeds() -> None:
    """Done when: after a downstream restart, the first request that follows succeeds (the
    stale pooled client is dropped and the call retried at once on a fresh one)."""
    with RefusesThenRecovers() as down, _router(down.url, describe_ttl=0) as (url, _, _):
        down.recover()
        _assert_whole(_fetch(url))
        down.restart()
        started = time.monotonic()
        _assert_whole(_fetch(url))
        assert arrakis.Client(url).describe([CHANNEL.name])
        assert time.monotonic() - started < 5


def test_refused_then_recovering_without_a_replica_is_retried_after_a_backoff() -> None:
    with RefusesThenRecovers() as down, _router(down.url) as (url, _, _):
        down.recover()
        _fetch(url, 2)  # the pooled client is connected, the metadata cached
        down.stop()
        down.recover(after=0.2)  # back before the router's once-more attempt (0.5 s)
        # (raw Flight: the arrakis client's own Describe would come first and fail)
        table = flight.FlightClient(url).do_get(_stream_ticket(BLOCKS)).read_all()
    assert table.num_rows == BLOCKS


@pytest.mark.parametrize("replica", [False, True], ids=["alone", "with-replica"])
def test_refusing_downstream_fails_fast_or_fails_over(replica: bool) -> None:
    others = [ScriptedArrakis()] if replica else []
    with RefusesThenRecovers() as down, _router(down.url, *others) as (url, _, _):
        started = time.monotonic()
        if replica:
            _assert_whole(_fetch(url))
        else:
            with pytest.raises(flight.FlightError) as info:
                _fetch(url)
            assert down.url in str(info.value)
        assert time.monotonic() - started < 5


# ---------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("groups", [1, 2], ids=["short-path", "read-ahead"])
def test_client_cancel_leaves_no_thread_and_no_downstream_call(groups: int) -> None:
    """After the client cancels, every downstream call is cancelled and every thread the
    request started has exited within a second (thread count, the pool's open calls)."""
    downs = [ScriptedArrakis(delay=0.01) for _ in range(groups)]
    with ExitStack() as stack:
        urls = [stack.enter_context(serving(d)) for d in downs]
        # two slices (one per downstream) take the general path, with read-ahead threads
        if groups == 1:
            smap = one_endpoint_map(*urls)
        else:
            age = (gps_now_ns() - START) // 10**9 - 1  # the boundary 1 s after START
            smap = (
                f"{urls[1]}:\n  scopes: {{H1: [{{all: true}}]}}\n"
                f"  retention: {{newest: 0, oldest: {age}}}\n"
                f"{urls[0]}:\n  scopes: {{H1: [{{all: true}}]}}\n"
                f"  retention: {{newest: {age}, oldest: .inf}}\n"
            )
        url, service, router = stack.enter_context(running_router(smap))
        _fetch(url, 2)  # warm up: pools, the service timer, the client sweep
        baseline = threading.active_count()
        reader = flight.FlightClient(url).do_get(_stream_ticket(10**6))
        for _ in range(3):
            reader.read_chunk()
        assert service.pool.calls.count >= 1
        reader.cancel()
        cancelled = time.monotonic()
        assert wait_until(lambda: _nothing_left(service, router, baseline, downs), timeout=5)
        assert time.monotonic() - cancelled < 1.5


# ---------------------------------------------------------------------- deadline and drain


def test_request_timeout_ends_a_slow_stream_with_a_timeout() -> None:
    """--request-timeout: the stream's token is cancelled at the deadline, its downstream
    call with it; the client gets a timeout, not a hang."""
    down = ScriptedArrakis(delay=0.05)
    with _router(down, request_timeout=1.0) as (url, service, router):
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as info:
            flight.FlightClient(url).do_get(_stream_ticket(10**4)).read_all()
        took = time.monotonic() - started
        assert wait_until(lambda: _nothing_left(service, router, 10**6, [down]), timeout=5)
    assert 0.9 < took < 1 + 4
    assert "deadline" in str(info.value)


def test_metadata_fails_over_at_once_from_a_dead_first_replica() -> None:
    with RefusesThenRecovers() as dead, _router(dead.url, ScriptedArrakis()) as (url, _, _):
        started = time.monotonic()
        assert CHANNEL.name in arrakis.Client(url).describe([CHANNEL.name])
        assert time.monotonic() - started < 2


def test_cancel_all_ends_every_stream_in_flight() -> None:
    """The drain hook: ``RouterService.cancel_all`` cancels every request's token; their
    downstream calls and threads are gone within a second."""
    downs = [ScriptedArrakis(delay=0.01), ScriptedArrakis(delay=0.01)]
    with _router(*downs) as (url, service, router):
        _fetch(url, 2)
        baseline = threading.active_count()
        readers = [flight.FlightClient(url).do_get(_stream_ticket(10**5)) for _ in range(3)]
        for reader in readers:
            reader.read_chunk()
        assert len(service.requests) == 3
        assert service.cancel_all("the router is draining") == 3
        for reader in readers:
            with pytest.raises(flight.FlightUnavailableError, match="draining"):
                reader.read_all()
        assert wait_until(lambda: _nothing_left(service, router, baseline, downs), timeout=5)
        assert len(service.requests) == 0


def test_router_serve_downstream_timeout_3_names_a_stream_that_never_starts(
    tmp_path: Path,
) -> None:
    """Done when, through the command line: `router serve --downstream-timeout 3` in front
    of a downstream that never starts its DoGet gives the client an error naming it within
    about 3 s (after the metadata, which it does answer)."""
    down = NeverStartsStream()
    with serving(down) as durl:
        smap = tmp_path / "map.yaml"
        smap.write_text(one_endpoint_map(durl))
        argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(smap)]
        argv += ["--url", "grpc://127.0.0.1:0", "--downstream-timeout", "3"]
        with ServerProcess(argv, name="router") as router:
            arrakis.Client(router.url).describe([CHANNEL.name])  # metadata: answered
            started = time.monotonic()
            with pytest.raises(flight.FlightTimedOutError) as info:
                _fetch(router.url)
            took = time.monotonic() - started
    assert 2.5 < took < 3 + 5
    assert durl in str(info.value) and "did not start within 3 s" in str(info.value)
