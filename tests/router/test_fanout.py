"""Fan-out over scripted in-memory downstreams: failover, timeouts, cancellation, cleanup.
Every feed test runs twice: the feed read in the consumer's thread (the one-group short
path) and read ahead by its own thread (a ReadAhead)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from router import outstream
from router.context import CLIENT_LEFT, RequestContext
from router.downstream import Call, StaticPool
from router.errors import (
    CancelledError,
    ChannelsNotAvailableError,
    TimedOutError,
    UnavailableError,
)
from router.fanout import ReplicaFeed, fetch_first
from router.readahead import ReadAhead
from router.streaming import batch_end
from router.timers import Timer
from tests.router.blockgen import downstream_blocks, grid_for, meta
from tests.router.scripted import HANG, ScriptedDownstream, ScriptedStream

S = 62_500_000
A = meta("H1:A-X", 256, S)
GRID = grid_for([A], S)
CALL = Call("req-1", timeout=1.0, what="Stream")


def _command(resume: int | None) -> bytes:
    return json.dumps({"request": "Stream", "args": {"start": resume or 0}}).encode()


TIMER = Timer()


@pytest.fixture(params=[False, True], ids=["read-ahead", "inline"])
def inline(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


class _Feed:
    """A ReplicaFeed, iterated inline or through a ReadAhead; closed on exit."""

    def __init__(self, feed: ReplicaFeed, inline: bool, queue_size: int) -> None:
        self.feed = feed
        self.inline = inline
        self.buffer: ReadAhead[pa.RecordBatch] | None = None
        self._iter: Iterator[pa.RecordBatch] | None = None
        if not inline:
            self.buffer = ReadAhead(iter(feed), feed.ctx, size=queue_size, interrupt=feed.cancel)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        self._iter = iter(self.feed) if self.buffer is None else iter(self.buffer)
        return self._iter

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]
        if self.buffer is not None:
            self.buffer.close()
        self.feed.cancel()

    def __enter__(self) -> _Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _feed(
    pool: StaticPool,
    urls: list[str],
    inline: bool,
    *,
    ctx: RequestContext | None = None,
    queue_size: int = 16,
    end: int = 6 * S,
    **kw: object,
) -> _Feed:
    feed = ReplicaFeed(
        pool,
        ctx or RequestContext("req-1"),
        urls,
        _command,
        CALL,
        start=0,
        end=end,
        batch_end=batch_end(GRID),
        timer=TIMER,
        label="[0, 1) {A}",
        retry_backoff=0.01,
        **kw,  # type: ignore[arg-type]
    )
    return _Feed(feed, inline, queue_size)


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
    feed = _feed(pool, ["grpc://silent:1", "grpc://b:1"], inline, idle_timeout=0.2, end=3 * S)
    with feed:
        assert _times(list(feed)) == [0, S, 2 * S]
    assert b.commands[0]["args"]["start"] == S


def test_early_consumer_exit_closes_the_downstream_stream(inline: bool) -> None:
    blocks = downstream_blocks([A], [k * S for k in range(100)], S)
    a = ScriptedDownstream("grpc://a:1", [[*blocks, HANG]])
    feed = _feed(StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, queue_size=2)
    it = iter(feed)
    next(it)
    feed.close()
    assert a.open == 0
    assert not any(t.name.startswith("feed ") and t.is_alive() for t in threading.enumerate())


def test_client_cancel_stops_the_feed(inline: bool) -> None:
    a = ScriptedDownstream("grpc://a:1", [[HANG]])
    ctx = RequestContext("req-1")
    feed = _feed(StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, ctx=ctx)
    ctx.cancel(CLIENT_LEFT)
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
    """The client leaves while the downstream is silent: the token cancels the read at once
    and the feed (either mode) raises CancelledError; nothing stays open."""
    blocks = downstream_blocks([A], [0], S)
    a = ScriptedDownstream("grpc://a:1", [[blocks[0], HANG]])
    ctx = RequestContext("req-1")
    feed = _feed(StaticPool({"grpc://a:1": a}), ["grpc://a:1"], inline, ctx=ctx)
    got = []
    with feed, pytest.raises(CancelledError):
        for batch in feed:
            got.append(batch)
            ctx.cancel(CLIENT_LEFT)
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
    feed = _feed(pool, ["grpc://a:1", "grpc://b:1"], inline, idle_timeout=0.3, end=3 * S)
    with feed:
        for batch in feed:
            got.append(batch)
            threading.Event().wait(0.6)
    assert _times(got) == [0, S, 2 * S]
    assert b.commands == []


# ---------------------------------------------------------------------- deadlines, on a fake clock


class _Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _group_feed(
    members: dict[str, ScriptedDownstream], timer: Timer, **options: float
) -> ReplicaFeed:
    """A feed of group {A} over [0, 3 S) on ``members`` in order (open limit 3 s, idle 1 s)."""
    return ReplicaFeed(
        StaticPool(members),
        RequestContext("req-1"),
        list(members),
        _command,
        CALL,
        start=0,
        end=3 * S,
        batch_end=batch_end(GRID),
        timer=timer,
        open_timeout=3.0,
        idle_timeout=1.0,
        label="[0, 1) {A}",
        **options,
    )


def _watched(
    script: list[object], *, replica: list[object] | None = None
) -> tuple[ReplicaFeed, Timer, _Monotonic, ScriptedDownstream, list[object]]:
    """A feed over a scripted downstream read by a thread; its open and idle deadlines are
    watched by a timer on a fake clock that only the test moves (no sleeps)."""
    clock = _Monotonic()
    timer = Timer(clock, thread=False)
    a = ScriptedDownstream("grpc://a:1", [script])
    members = {"grpc://a:1": a}
    if replica is not None:
        members["grpc://b:1"] = ScriptedDownstream("grpc://b:1", [replica])
    feed = _group_feed(members, timer)
    result: list[object] = []

    def read() -> None:
        try:
            result.extend(feed)
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return feed, timer, clock, a, result


def test_batches_arriving_within_one_long_read_count_as_progress() -> None:
    """A consumer taking 3 rows at a time: the downstream sends 2 and goes silent inside
    that one read. The rows received count as progress at the watch's look (the open limit
    no longer applies), and the silence fails the attempt on the idle limit, within 2 x idle
    of the last row. The two rows read are kept and the replica resumes after them."""
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    clock = _Monotonic()
    timer = Timer(clock, thread=False)
    a = ScriptedDownstream("grpc://a:1", [[blocks[0], blocks[1], HANG]])
    b = ScriptedDownstream("grpc://b:1", [blocks[2:]])
    feed = _group_feed({"grpc://a:1": a, "grpc://b:1": b}, timer)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.extend(feed.take(3)), daemon=True)
    thread.start()
    _wait(lambda: a.opened and a.opened[0].received == 2)
    _settle(timer, clock, 1000.0 + 1.0)  # rows came within the read: progress, no verdict
    assert not result and a.open == 1 and feed.attempt_delivered == 0
    _settle(timer, clock, 1000.0 + 2.0)  # a second look without a new row: idle
    thread.join(5)
    assert _times(result) == [0, S, 2 * S]  # type: ignore[arg-type]
    assert "no data for 1 s" in str(feed.outcomes[0].error)
    assert b.commands[0]["args"]["start"] == 2 * S
    feed.stop_reading()
    assert a.open == 0 and b.open == 0


def test_rows_taken_before_a_failure_go_out_before_it() -> None:
    """take(3) over an endpoint that fails after 2 rows (no replica): the 2 rows come back
    first, the next take raises the failure, which says how far data was delivered."""
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    a = ScriptedDownstream("grpc://a:1", [[blocks[0], blocks[1], UnavailableError("a: gone")]])
    feed = _group_feed({"grpc://a:1": a}, Timer(_Monotonic(), thread=False), retry_backoff=0.0)
    assert _times(feed.take(3)) == [0, S]  # type: ignore[arg-type]
    with pytest.raises(UnavailableError) as info:
        feed.take(3)
    assert "a: gone" in str(info.value) and "data delivered up to 0.125 GPS s" in str(info.value)
    assert feed.take(3) == [] and a.open == 0


def test_rows_the_output_stage_took_over_still_count_for_the_failover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The native output stage empties the Rows it sends (router._chunkstream), while the
    feed that read them is still suspended after handing them over: its accounting (rows
    delivered, the last one, where a replica resumes) must not read them again."""
    if not outstream.NATIVE:
        pytest.fail("router._chunkstream is not built (make native)")
    read_many = ScriptedStream.read_many
    monkeypatch.setattr(ScriptedStream, "read_many", lambda s, n: outstream.Run(read_many(s, n)))
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    a = ScriptedDownstream("grpc://a:1", [[blocks[0], blocks[1], UnavailableError("a: gone")]])
    b = ScriptedDownstream("grpc://b:1", [blocks[2:]])
    feed = _group_feed({"grpc://a:1": a, "grpc://b:1": b}, Timer(_Monotonic(), thread=False))
    rows = feed.take(2)
    assert type(rows) is outstream.Run and _times(list(rows)) == [0, S]
    schema = blocks[0].schema
    assert [b.num_rows for b in _native_reader(schema, rows)] == [1, 1] and len(rows) == 0
    assert _times(list(feed.take(2))) == [2 * S]  # a failed after 2 rows: b resumes at 2 S
    assert b.commands[0]["args"]["start"] == 2 * S
    assert feed.delivered == 3 and feed.take(2) == []


def _native_reader(schema: pa.Schema, rows: object) -> list[pa.RecordBatch]:
    """The batches the native output stage reads out of ``rows`` (emptying it)."""
    from router import _chunkstream

    return list(_chunkstream.chunk_reader(schema, iter([rows])))


def _settle(timer: Timer, clock: _Monotonic, to: float) -> None:
    clock.t = to
    timer.run_due()


def _wait(predicate: object) -> None:
    """Wait (on the real clock, for the reader thread) until ``predicate()``."""
    for _ in range(500):
        if predicate():  # type: ignore[operator]
            return
        threading.Event().wait(0.01)
    raise AssertionError("the reader thread did not get there")


def test_a_stream_that_never_starts_fails_at_the_open_deadline_not_before() -> None:
    _, timer, clock, a, result = _watched([HANG])
    _wait(lambda: a.open == 1)
    _settle(timer, clock, 1000.0 + 2.9)  # the idle limit (1 s) does not apply yet
    assert not result and a.open == 1
    _settle(timer, clock, 1000.0 + 3.0)
    _wait(lambda: result)
    (error,) = result
    assert isinstance(error, TimedOutError)
    assert "did not start within 3 s" in str(error) and "grpc://a:1" in str(error)
    assert a.open == 0 and timer.pending == 0


def test_once_started_the_idle_limit_applies_and_the_replica_takes_over() -> None:
    blocks = downstream_blocks([A], [0, S, 2 * S], S)
    feed, timer, clock, a, result = _watched([blocks[0], HANG], replica=blocks[1:])
    _wait(lambda: feed.delivered == 1 and feed.reading)
    _settle(timer, clock, 1000.0 + 0.9)
    assert feed.delivered == 1 and feed.url == "grpc://a:1"
    _settle(timer, clock, 1000.0 + 1.0)
    _settle(timer, clock, 1000.0 + 1.0)
    _wait(lambda: len(result) == 3)
    assert _times(result) == [0, S, 2 * S]  # type: ignore[arg-type]
    assert feed.outcomes[0].url == "grpc://a:1" and "no data for 1 s" in str(feed.outcomes[0].error)
    assert a.open == 0 and timer.pending == 0
