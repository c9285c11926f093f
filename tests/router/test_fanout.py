"""Fan-out over scripted in-memory downstreams: failover, timeouts, cancellation, cleanup."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest

from router.downstream import Call, StaticPool
from router.errors import (
    CancelledError,
    ChannelsNotAvailableError,
    TimedOutError,
    UnavailableError,
)
from router.fanout import GroupFeed, fetch_first
from router.streaming import batch_end
from tests.router.blockgen import downstream_blocks, grid_for, meta
from tests.router.scripted import HANG, ScriptedDownstream

S = 62_500_000
A = meta("H1:A-X", 256, S)
GRID = grid_for([A], S)
CALL = Call("req-1", timeout=1.0, what="Stream")


def _command(resume: int | None) -> bytes:
    return json.dumps({"request": "Stream", "args": {"start": resume or 0}}).encode()


@pytest.fixture(params=[False, True], ids=["producer", "inline"])
def inline(request: pytest.FixtureRequest) -> bool:
    """Every feed test runs in both modes: read ahead by a producer thread, and read in the
    consumer's thread (the one-slice one-group short path) with a watchdog."""
    return bool(request.param)


def _feed(pool: StaticPool, urls: list[str], inline: bool, **kw: object) -> GroupFeed:
    opts: dict[str, object] = {
        "batch_end": batch_end(GRID),
        "poll": 0.01,
        "label": "[0, 1) {A}",
        "inline": inline,
    }
    opts.update(kw)
    return GroupFeed(pool, urls, _command, CALL, **opts)  # type: ignore[arg-type]


def _times(batches: list[pa.RecordBatch]) -> list[int]:
    return [b.column(0)[0].as_py() for b in batches]


def test_failover_resumes_after_last_delivered_batch(inline: bool) -> None:
    blocks = downstream_blocks([A], [k * S for k in range(6)], S)
    a = ScriptedDownstream("grpc://a:1", [[*blocks[:2], UnavailableError("grpc://a:1: gone")]])
    b = ScriptedDownstream("grpc://b:1", [blocks[2:]])
    with _feed(
        StaticPool({"grpc://a:1": a, "grpc://b:1": b}), ["grpc://a:1", "grpc://b:1"], inline
    ) as f:
        got = list(f)
    assert _times(got) == [k * S for k in range(6)]
    assert b.commands[0]["args"]["start"] == 2 * S
    assert a.open == b.open == 0


def test_every_replica_failing_names_each_endpoint(inline: bool) -> None:
    a = ScriptedDownstream("grpc://a:1", [UnavailableError("DoGet on grpc://a:1: refused")])
    b = ScriptedDownstream("grpc://b:1", [UnavailableError("DoGet on grpc://b:1: refused")])
    feed = _feed(
        StaticPool({"grpc://a:1": a, "grpc://b:1": b}), ["grpc://a:1", "grpc://b:1"], inline
    )
    with feed, pytest.raises(UnavailableError) as info:
        list(feed)
    assert "grpc://a:1" in str(info.value) and "grpc://b:1" in str(info.value)


def test_request_errors_are_not_failed_over(inline: bool) -> None:
    a = ScriptedDownstream("grpc://a:1", [ChannelsNotAvailableError(["H1:A-X"])])
    b = ScriptedDownstream("grpc://b:1", [[]])
    feed = _feed(
        StaticPool({"grpc://a:1": a, "grpc://b:1": b}), ["grpc://a:1", "grpc://b:1"], inline
    )
    with feed, pytest.raises(ChannelsNotAvailableError):
        list(feed)
    assert b.commands == []


def test_idle_downstream_times_out_naming_endpoint_and_slice(inline: bool) -> None:
    blocks = downstream_blocks([A], [0], S)
    a = ScriptedDownstream("grpc://silent:1", [[blocks[0], HANG]])
    feed = _feed(StaticPool({"grpc://silent:1": a}), ["grpc://silent:1"], inline, idle_timeout=0.2)
    with feed, pytest.raises(TimedOutError) as info:
        list(feed)
    assert "grpc://silent:1" in str(info.value) and "[0, 1)" in str(info.value)
    assert a.open == 0


def test_idle_replica_fails_over_to_the_next(inline: bool) -> None:
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    a = ScriptedDownstream("grpc://silent:1", [[blocks[0], HANG]])
    b = ScriptedDownstream("grpc://b:1", [blocks[1:]])
    pool = StaticPool({"grpc://silent:1": a, "grpc://b:1": b})
    with _feed(pool, ["grpc://silent:1", "grpc://b:1"], inline, idle_timeout=0.2) as feed:
        assert _times(list(feed)) == [0, S, 2 * S]
    assert b.commands[0]["args"]["start"] == S


def test_early_consumer_exit_closes_the_downstream_stream(inline: bool) -> None:
    blocks = downstream_blocks([A], [k * S for k in range(100)], S)
    a = ScriptedDownstream("grpc://a:1", [[*blocks, HANG]])
    feed = _feed(StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, queue_size=2)
    it = iter(feed)
    next(it)
    it.close()  # type: ignore[attr-defined]
    feed.close()
    assert a.open == 0
    assert not any(t.name.startswith("feed ") and t.is_alive() for t in threading.enumerate())


def test_client_cancel_stops_the_feed(inline: bool) -> None:
    a = ScriptedDownstream("grpc://a:1", [[HANG]])
    cancelled = threading.Event()
    feed = _feed(
        StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, should_stop=cancelled.is_set
    )
    cancelled.set()
    with feed, pytest.raises(CancelledError):
        list(feed)
    assert a.open == 0


def test_fetch_first_uses_next_replica_and_forwards_request_id() -> None:
    a = ScriptedDownstream("grpc://a:1", answers={"Describe": UnavailableError("a down")})
    b = ScriptedDownstream("grpc://b:1", answers={"Describe": [pa.record_batch({"x": [1]})]})
    url, batches = fetch_first(
        StaticPool({"grpc://a:1": a, "grpc://b:1": b}),
        ["grpc://a:1", "grpc://b:1"],
        b'{"request": "Describe"}',
        CALL,
    )
    assert url == "grpc://b:1" and batches[0].num_rows == 1
    assert b.calls[0].request_id == "req-1"


def test_client_cancel_during_a_blocked_read_ends_the_feed(inline: bool) -> None:
    """The client leaves while the downstream is silent: the feed (either mode) notices
    within a poll, cancels the read and raises CancelledError; nothing stays open."""
    blocks = downstream_blocks([A], [0], S)
    a = ScriptedDownstream("grpc://a:1", [[blocks[0], HANG]])
    cancelled = threading.Event()
    feed = _feed(
        StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, should_stop=cancelled.is_set
    )
    got = []
    with feed, pytest.raises(CancelledError):
        for batch in feed:
            got.append(batch)
            cancelled.set()
    assert _times(got) == [0]
    assert a.open == 0
    assert not any(t.name.startswith("feed ") and t.is_alive() for t in threading.enumerate())


def test_a_slow_consumer_is_not_an_idle_downstream(inline: bool) -> None:
    """The idle clock runs only while waiting for the downstream: a consumer holding each
    batch longer than the idle timeout does not make the feed fail over."""
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    a = ScriptedDownstream("grpc://a:1", [blocks])
    b = ScriptedDownstream("grpc://b:1", [blocks])
    pool = StaticPool({"grpc://a:1": a, "grpc://b:1": b})
    got = []
    # idle timeout long enough that an in-memory downstream never trips it on a loaded CI
    # machine, consumer hold twice as long
    with _feed(pool, ["grpc://a:1", "grpc://b:1"], inline, idle_timeout=0.3) as feed:
        for batch in feed:
            got.append(batch)
            threading.Event().wait(0.6)
    assert _times(got) == [0, S, 2 * S]
    assert b.commands == []
