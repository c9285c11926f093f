"""The live merge on scripted blocks and a fake clock: late, silent, recovering, skipping and
catching-up groups, backpressure, live-start alignment, bounded end. No threads, no sleeps."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.protocol.gps import FakeClock
from router.stitch import Block, LiveMerge

D = 62_500_000  # block duration
L = 1_000_000_000  # max latency
GRACE = 500_000_000
ALLOW = L + GRACE
T0 = 1_400_000_000 * 10**9


def cell(x: float) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array([x]))


def block(t: int, *names: str) -> Block:
    return Block(t, {n: cell(float(t // D)) for n in names})


def slot(k: int) -> int:
    return T0 + k * D


def nominal(k: int) -> int:
    """The deadline of slot k: its end + max latency + grace."""
    return slot(k) + D + ALLOW


def merge(groups: int = 2, **kw: object) -> tuple[LiveMerge, FakeClock]:
    clock = FakeClock(slot(0))
    opts: dict[str, object] = {"allowance": ALLOW, "now": clock.now_ns()}
    opts.update(kw)
    return LiveMerge(groups, D, slot(0), **opts), clock  # type: ignore[arg-type]


def emitted(m: LiveMerge, now: int) -> list[tuple[int, list[str]]]:
    return [((b.time - T0) // D, sorted(b.cells)) for b in m.pop_ready(now)]


def test_a_slot_leaves_as_soon_as_every_group_delivered_it() -> None:
    m, clock = merge()
    m.push(0, block(slot(0), "A"))
    assert emitted(m, clock.now_ns()) == []
    m.push(1, block(slot(0), "B"))
    assert emitted(m, clock.now_ns()) == [(0, ["A", "B"])]
    assert m.stats.complete == 1 and m.stats.null_filled == 0


def test_late_group_is_null_filled_at_the_deadline_and_its_late_data_dropped() -> None:
    m, _ = merge()
    m.push(0, block(slot(0), "A"))
    m.push(0, block(slot(1), "A"))
    assert m.deadline() == nominal(0)
    assert emitted(m, nominal(0) - 1) == []
    assert emitted(m, nominal(0)) == [(0, ["A"])]  # B null-filled for slot 0
    assert m.stats.null_filled == 1 and m.absent() == [1]
    m.push(1, block(slot(0), "B"))  # too late: slot 0 has left
    assert m.stats.late_blocks == 1
    m.push(1, block(slot(1), "B"))  # on time again: B is back
    assert m.absent() == []
    assert emitted(m, nominal(0)) == [(1, ["A", "B"])]


def test_silent_group_yields_null_filled_blocks_at_stride_cadence() -> None:
    m, _ = merge()
    out: list[tuple[int, int]] = []  # (slot, emitted at)
    for k in range(40):
        m.push(0, block(slot(k), "A"))
    now = slot(0)
    while now <= nominal(30):
        for b in m.pop_ready(now):
            out.append(((b.time - T0) // D, now))
            assert sorted(b.cells) == ["A"]
        now += D // 4
    # every slot leaves exactly at its own deadline (the first as well: B never answered)
    assert [k for k, _ in out] == list(range(31))
    assert all(at == nominal(k) for k, at in out)
    assert m.stats.null_filled == 31


def test_everything_silent_still_paces_one_block_per_stride() -> None:
    m, _ = merge()
    assert emitted(m, nominal(0) - 1) == []
    assert emitted(m, nominal(0)) == [(0, [])]
    assert emitted(m, nominal(1) - 1) == []
    assert emitted(m, nominal(3)) == [(1, []), (2, []), (3, [])]


def test_recovering_group_is_waited_for_again() -> None:
    m, _ = merge()
    for k in range(3):
        m.push(0, block(slot(k), "A"))
    assert emitted(m, nominal(1)) == [(0, ["A"]), (1, ["A"])]
    m.push(1, block(slot(2), "B"))
    assert emitted(m, nominal(1)) == [(2, ["A", "B"])]
    m.push(0, block(slot(3), "A"))
    # B is present again: slot 3 waits for it up to the deadline
    assert emitted(m, nominal(3) - 1) == []
    m.push(1, block(slot(3), "B"))
    assert emitted(m, nominal(3) - 1) == [(3, ["A", "B"])]


def test_a_group_that_skipped_a_slot_is_not_waited_for() -> None:
    m, clock = merge()
    m.push(0, block(slot(0), "A"))
    m.push(1, block(slot(1), "B"))  # B has no slot 0 and never will (in-order streams)
    assert emitted(m, clock.now_ns()) == [(0, ["A"])]
    assert m.stats.null_filled == 0


def test_catching_up_group_gets_the_allowance_from_when_its_slot_became_the_head() -> None:
    # A stream started in the past: every nominal deadline has passed long ago.
    m, clock = merge(now=slot(0) + 3600 * 10**9)
    now = clock.now_ns() + 3600 * 10**9
    for k in range(3):
        m.push(0, block(slot(k), "A"))
    assert emitted(m, now) == []  # B is present (never late): waited for
    m.push(1, block(slot(0), "B"))
    assert emitted(m, now) == [(0, ["A", "B"])]
    # slot 1 became the head at `now`: B gets the allowance from then on
    assert m.deadline() == now + ALLOW
    assert emitted(m, now + ALLOW - 1) == []
    # B is absent from then on: no more patience, slot 2 (deadline long past) follows at once
    assert emitted(m, now + ALLOW) == [(1, ["A"]), (2, ["A"])]
    assert m.absent() == [1]


def test_backpressure_bounds_what_a_fast_group_may_push() -> None:
    m, _ = merge(buffer=4)
    pushed = 0
    while m.wants(0):
        m.push(0, block(slot(pushed), "A"))
        pushed += 1
    assert pushed == 4
    assert m.wants(1)
    m.push(1, block(slot(0), "B"))
    m.pop_ready(slot(0))
    assert m.wants(0)


def test_live_start_aligns_on_the_first_block_delivered() -> None:
    m, clock = merge(align=True)
    m.push(1, block(slot(2), "B"))
    m.push(0, block(slot(1), "A"))  # earlier than where the stream begins: trimmed
    m.push(0, block(slot(2), "A"))
    assert emitted(m, clock.now_ns()) == [(2, ["A", "B"])]
    assert m.stats.trimmed == 1 and m.stats.late_blocks == 0


def test_bounded_end_and_finished_groups() -> None:
    m, clock = merge(end=slot(3))
    m.push(0, block(slot(0), "A"))
    m.push(1, block(slot(0), "B"))
    m.push(0, block(slot(3), "A"))  # at/after the end: ignored
    m.finish(0)
    m.finish(1)
    assert emitted(m, clock.now_ns()) == [(0, ["A", "B"]), (1, []), (2, [])]
    assert m.done and m.deadline() is None


def test_every_stream_ended_without_end_emits_nothing_more() -> None:
    m, clock = merge()
    m.push(0, block(slot(0), "A"))
    m.finish(0)
    m.finish(1)
    assert emitted(m, clock.now_ns()) == [(0, ["A"])]
    assert m.exhausted
    assert emitted(m, clock.now_ns() + 10 * ALLOW) == []


def test_single_group_passes_the_downstream_batch_through() -> None:
    m, clock = merge(groups=1)
    src = pa.RecordBatch.from_arrays([pa.array([slot(0)], pa.int64())], names=["time"])
    m.push(0, Block(slot(0), {"A": cell(1.0)}, src))
    (out,) = m.pop_ready(clock.now_ns())
    assert out.source is src


@pytest.mark.parametrize("bad", [{"groups": 0}, {"buffer": 0}])
def test_invalid_construction(bad: dict[str, int]) -> None:
    kw: dict[str, int] = {"groups": 1, "buffer": 1}
    kw.update(bad)
    with pytest.raises(ValueError):
        LiveMerge(kw["groups"], D, T0, allowance=ALLOW, now=T0, buffer=kw["buffer"])


def test_live_start_begins_where_every_group_has_data() -> None:
    """Two live downstreams may begin a slot apart (found by CI: the first block lacked one
    group, silently). The stream begins at the later first block; the earlier is trimmed."""
    m, clock = merge(align=True)
    m.push(0, block(slot(1), "A"))
    m.push(0, block(slot(2), "A"))
    assert emitted(m, clock.now_ns()) == []  # B has not shown where it begins
    m.push(1, block(slot(2), "B"))
    assert emitted(m, clock.now_ns()) == [(2, ["A", "B"])]
    assert m.stats.trimmed == 1 and m.stats.null_filled == 0 and m.stats.complete == 1


def test_live_start_follows_only_each_groups_first_block() -> None:
    """A group catching up does not drag the start forward: only first blocks count."""
    m, clock = merge(align=True)
    for k in range(1, 4):
        m.push(0, block(slot(k), "A"))
    m.push(1, block(slot(1), "B"))
    assert emitted(m, clock.now_ns()) == [(1, ["A", "B"])]
    assert m.stats.trimmed == 0


@given(first=st.lists(st.integers(0, 5), min_size=1, max_size=4), rnd=st.randoms())
def test_live_start_first_slot_is_complete(first: list[int], rnd: random.Random) -> None:
    """Whatever slot each group begins at and however their blocks interleave, the first
    slot out begins at the latest first block, every slot is complete, nothing null-filled."""
    m, clock = merge(groups=len(first), align=True)
    turns = [g for g, k0 in enumerate(first) for _ in range(k0, 7)]
    rnd.shuffle(turns)  # an interleaving; each group's own blocks stay in time order
    nxt = list(first)
    out: list[tuple[int, list[str]]] = []
    for g in turns:
        m.push(g, block(slot(nxt[g]), f"G{g}"))
        nxt[g] += 1
        out += emitted(m, clock.now_ns())
    assert out and out[0][0] == max(first)
    assert [k for k, _ in out] == list(range(max(first), 7))
    assert all(cells == sorted(f"G{g}" for g in range(len(first))) for _, cells in out)
    assert m.stats.null_filled == 0
