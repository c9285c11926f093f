"""Catch-up then live on a fake clock: re-planning as retention boundaries move, the
hand-over (no gap, no duplicate, values intact) and cleanup, over in-memory downstreams."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from router.context import CLIENT_LEFT, RequestContext
from router.downstream import Call, StaticPool
from router.errors import CancelledError, UnavailableError
from router.live import LiveExecution, catch_up
from router.protocol.envelope import Envelope, StreamArgs
from router.protocol.gps import FakeClock
from scopemap import RoutingIndex, StreamPlan, StreamRequest, load_text, plan_stream
from tests.router.blockgen import downstream_batch, grid_for, meta, rows, values
from tests.router.scripted import HANG, ScriptedDownstream, ScriptedStream, feeds_for

NS = 1_000_000_000
D = 62_500_000
CH = meta("H1:TST-A", 256, D)
GRID = grid_for([CH], D)
N = 1_400_000_000 * NS  # the fake "now" at request time (a whole second)
ARCHIVE, LIVE = "grpc://archive:1", "grpc://live:1"
DEMO = f"""
{LIVE}:
  scopes: {{H1: [{{all: true}}]}}
  retention: {{newest: 0, oldest: 600}}
{ARCHIVE}:
  scopes: {{H1: [{{all: true}}]}}
  retention: {{newest: 300, oldest: .inf}}
"""


def _index() -> RoutingIndex:
    result = load_text(DEMO, "demo.yaml")
    assert result.ok and result.scope_map is not None
    return RoutingIndex(result.scope_map)


def _plan_at(index: RoutingIndex, clock: FakeClock) -> Any:
    def plan_at(start: int | None) -> StreamPlan:
        return plan_stream(index, StreamRequest((CH.name,), start, None), clock.now_ns())

    return plan_at


def _where(sl: Any) -> tuple[int, int | None, tuple[str, ...]]:
    return (
        (sl.start - N) // NS,
        None if sl.end is None else (sl.end - N) // NS,
        (sl.groups[0].endpoints),
    )


def test_catch_up_replans_where_each_slice_ends_as_the_boundary_moves() -> None:
    index, clock = _index(), FakeClock(N)
    plan_at = _plan_at(index, clock)
    slices = catch_up(plan_at(N - 3600 * NS), plan_at)
    assert _where(next(slices)) == (-3600, -300, (ARCHIVE,))
    # reading the hour of archive takes 400 s: the live endpoint no longer holds now-300
    clock.advance(400 * NS)
    assert _where(next(slices)) == (-300, 100, (ARCHIVE,))
    clock.advance(10 * NS)
    handover = next(slices)
    assert _where(handover) == (100, None, (LIVE,))
    assert handover.start is not None and handover.start >= clock.now_ns() - 600 * NS
    assert next(slices, None) is None


def test_catch_up_inside_the_live_window_is_one_live_slice() -> None:
    index, clock = _index(), FakeClock(N)
    plan_at = _plan_at(index, clock)
    assert [_where(s) for s in catch_up(plan_at(N - 100 * NS), plan_at)] == [(-100, None, (LIVE,))]


class GeneratedDownstream(ScriptedDownstream):
    """Serves CH for whatever range a Stream ticket asks; an open-ended ticket gets
    ``live_blocks`` blocks and then hangs (a live stream waiting for data). ``advance``:
    fake seconds the clock moves when the n-th stream is opened (reading takes time)."""

    def __init__(
        self, url: str, clock: FakeClock, live_blocks: int = 0, advance: tuple[int, ...] = ()
    ) -> None:
        super().__init__(url)
        self.clock = clock
        self.live_blocks = live_blocks
        self.advance = list(advance)
        self.opened_at: list[int] = []

    def stream(self, command: bytes, call: Call) -> ScriptedStream:
        args = json.loads(command)["args"]
        self.commands.append(args)
        self.opened_at.append(self.clock.now_ns())
        if self.advance:
            self.clock.advance(self.advance.pop(0) * NS)
        start, end = args["start"], args["end"]
        count = (end - start) // D if end is not None else self.live_blocks
        items: list[Any] = [downstream_batch([CH], start + k * D, D) for k in range(count)]
        if end is None:
            items.append(HANG)
        with self.lock:
            self.open += 1
        return ScriptedStream(self, items)


def _execution(
    index: RoutingIndex, clock: FakeClock, pool: StaticPool, start: int, reconnect: float = 0.5
) -> LiveExecution:
    plan_at = _plan_at(index, clock)
    envelope = Envelope("Stream", StreamArgs((CH.name,), start, None))
    return LiveExecution(
        plan_at(start),
        feeds_for(pool, GRID, envelope, live_reconnect=reconnect),
        clock=clock,
        max_latency=NS,
        plan_at=plan_at,
    )


def _take(batches: Iterator[pa.RecordBatch], n: int) -> list[pa.RecordBatch]:
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == n:
            break
    return out


def _feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feed ") and t.is_alive()]


@pytest.mark.parametrize("reading_takes", [0, 400], ids=["quick", "boundary-moves"])
def test_archive_to_live_handover_has_no_gap_no_duplicate(reading_takes: int) -> None:
    index, clock = _index(), FakeClock(N)
    archive = GeneratedDownstream(ARCHIVE, clock, advance=(reading_takes,))
    live = GeneratedDownstream(LIVE, clock, live_blocks=40)
    pool = StaticPool({ARCHIVE: archive, LIVE: live})
    start = N - 610 * NS + 3  # before the live window (off grid: from the slot below)
    execution = _execution(index, clock, pool, start)
    archived = (310 + reading_takes) * NS // D  # the archive serves up to the hand-over
    batches = iter(execution)
    got = rows(_take(batches, archived + 40))
    batches.close()  # type: ignore[attr-defined]

    first = start - start % D
    assert [t for t, _ in got] == [first + k * D for k in range(archived + 40)]
    for t, cells in got:
        assert cells[CH.name] == list(values(256, t, 16)), t
    handover = N + (reading_takes - 300) * NS
    assert [c["start"] for c in archive.commands] == [
        first,
        *([N - 300 * NS] * bool(reading_takes)),
    ]
    assert [c["start"] for c in live.commands] == [handover]
    assert live.commands[0]["end"] is None
    assert handover >= live.opened_at[0] - 600 * NS  # inside the live retention when opened
    assert execution.handover == handover
    assert archive.open == 0 and live.open == 0
    assert _feed_threads() == []


def test_live_group_lost_is_reconnected_at_the_merge_head() -> None:
    index, clock = _index(), FakeClock(N)
    live = GeneratedDownstream(LIVE, clock, live_blocks=5)
    # first live stream: 5 blocks then an error; the reconnect resumes at the merge head
    first: list[Any] = [downstream_batch([CH], N - 100 * NS + k * D, D) for k in range(5)]
    first.append(UnavailableError("backend went away"))
    scripted_once = [first]

    def stream(command: bytes, call: Call) -> ScriptedStream:
        if scripted_once:
            args = json.loads(command)["args"]
            live.commands.append(args)
            with live.lock:
                live.open += 1
            return ScriptedStream(live, scripted_once.pop())
        return GeneratedDownstream.stream(live, command, call)

    live.stream = stream  # type: ignore[method-assign]
    pool = StaticPool({LIVE: live})
    execution = _execution(index, clock, pool, N - 100 * NS, reconnect=0.001)
    batches = iter(execution)
    got = rows(_take(batches, 10))
    batches.close()  # type: ignore[attr-defined]
    assert [t for t, _ in got] == [N - 100 * NS + k * D for k in range(10)]
    assert all(c[CH.name] == list(values(256, t, 16)) for t, c in got)
    assert [c["start"] for c in live.commands] == [N - 100 * NS, N - 100 * NS + 5 * D]
    assert live.open == 0 and _feed_threads() == []


class RefusingDownstream(ScriptedDownstream):
    """Refuses every Stream (a downstream that is down), counting the attempts."""

    def stream(self, command: bytes, call: Call) -> ScriptedStream:
        self.commands.append(json.loads(command))
        raise UnavailableError(
            f"GetFlightInfo on {self.url}: failed to connect: Connection refused"
        )


def test_refused_live_reconnects_back_off_cost_nothing_and_end_with_the_client() -> None:
    """A live group whose reconnects are all refused waits with exponential backoff (no busy
    loop), holds no thread while it waits, and ends as soon as the client leaves."""
    index, clock = _index(), FakeClock(N)
    live = RefusingDownstream(LIVE)
    ctx = RequestContext("req-live")
    plan_at = _plan_at(index, clock)
    execution = LiveExecution(
        plan_at(None),
        feeds_for(
            StaticPool({LIVE: live}),
            GRID,
            Envelope("Stream", StreamArgs((CH.name,), None, None)),
            ctx=ctx,
            live_reconnect=0.05,
            retry_backoff=0.01,
        ),
        clock=clock,
        max_latency=NS,
        plan_at=plan_at,
        jitter=lambda: 0.0,
    )
    before = threading.active_count()
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            for _ in execution:
                pass
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    cpu = time.process_time()
    reader.start()
    ctx.token.wait(1.5)  # let it be refused for a while (real time: the cost of waiting)
    used = time.process_time() - cpu
    attempts = len(live.commands)
    # backoff from 25 ms doubling: about six reconnects (x2 stream calls: a refused call is
    # retried once on a fresh client, then once more after retry_backoff) in 1.5 s
    assert 1 <= attempts <= 40, attempts
    assert used < 1.0, f"{used:.2f} s of CPU while refused"
    assert threading.active_count() <= before + 2  # the reader, at most one feed thread
    ctx.cancel(CLIENT_LEFT)
    reader.join(1.0)
    assert not reader.is_alive()
    assert isinstance(outcome[0], CancelledError)
    assert _feed_threads() == []
