"""Live merge: per-group block streams in, one block per grid slot out, paced by deadlines.

Pure and clock-free: every call that depends on time takes ``now`` (GPS ns) from the caller,
so tests drive it with a fake clock and no threads.

Rationale. The bounded merge (:func:`router.stitch.merge.merge_groups`) waits for every group
before emitting a slot; a live stream cannot, because the client declares a slot a gap once
``s + max_latency + stride + max(2·stride, 2 s)`` has passed (PROTOCOL §5.4) and gives up on
a silent stream after about 31 s. Here the *head* slot (the oldest not yet emitted) leaves

* as soon as every group has delivered it, or has shown it never will (it delivered a later
  slot, or its stream has finished);
* otherwise at the slot's *deadline*: ``slot end + allowance`` where ``allowance`` is the
  channels' max latency plus a configurable grace. A group still missing then is
  null-filled for that slot and marked *absent*. A slot never waits for an absent group
  beyond its nominal deadline, so a silent downstream yields null-filled blocks at stride
  cadence. A group becomes *present* again as soon as it delivers a slot that is not late.
* A present group that is behind (catching up on history after a start in the past) is
  given ``allowance`` from the moment its slot became the head, so a stream that is behind
  real time does not null-fill data that is on its way.

A block arriving for a slot already emitted is late: dropped and counted. Each group holds
at most ``buffer`` pending blocks; :meth:`LiveMerge.wants` tells the caller to stop reading a
group that is that far ahead (backpressure), which is safe because the head always advances
by the clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pyarrow as pa

from router.stitch.blocks import Block


@dataclass
class LiveStats:
    """Counters of one live merge (shown in logs and ``repr``)."""

    emitted: int = 0
    complete: int = 0
    null_filled: int = 0  # (slot, group) pairs filled with nulls because the group was late
    late_blocks: int = 0  # blocks dropped because their slot had already been emitted
    trimmed: int = 0  # blocks before the first slot (live start alignment), dropped
    absent_since: dict[int, int] = field(default_factory=dict)  # group -> first null slot


@dataclass
class _Group:
    pending: deque[Block] = field(default_factory=deque)
    finished: bool = False
    absent: bool = False
    seen: bool = False  # has delivered a block (live-start alignment)


class LiveMerge:
    """Merge ``groups`` live block streams onto the grid of ``duration`` ns from slot ``head``.

    ``end`` (exclusive, ``None``: forever) bounds the output. ``now`` is the GPS time the
    merge starts waiting (the head's "since"). With ``align`` (a live start), the first slot
    moves forward to the latest of the groups' first blocks (downstreams choose their own
    first live block, and two of them may start a slot apart) as long as nothing has been
    emitted; earlier blocks are trimmed, so the stream begins where every group has data
    instead of with a slot that silently lacks a group. ``head`` is then only the fallback
    used when nothing arrives before its deadline.
    """

    def __init__(
        self,
        groups: int,
        duration: int,
        head: int,
        *,
        allowance: int,
        now: int,
        end: int | None = None,
        buffer: int = 64,
        align: bool = False,
    ) -> None:
        if groups < 1:
            raise ValueError("a live merge needs at least one group")
        if buffer < 1:
            raise ValueError("buffer must hold at least one block")
        self.duration = duration
        self.head = head
        self.end = end
        self.allowance = allowance
        self.buffer = buffer
        self.stats = LiveStats()
        self._groups = [_Group() for _ in range(groups)]
        self._head_since = now
        self._align = align

    def __repr__(self) -> str:
        pending = [len(g.pending) for g in self._groups]
        absent = [i for i, g in enumerate(self._groups) if g.absent]
        return (
            f"<LiveMerge head={self.head} pending={pending} absent={absent} "
            f"emitted={self.stats.emitted} null_filled={self.stats.null_filled} "
            f"late={self.stats.late_blocks}>"
        )

    # ------------------------------------------------------------------ input
    @property
    def done(self) -> bool:
        """The bounded end has been reached (never true for an open-ended stream)."""
        return self.end is not None and self.head >= self.end

    @property
    def exhausted(self) -> bool:
        """Every group has finished and nothing is pending."""
        return all(g.finished and not g.pending for g in self._groups)

    def absent(self) -> list[int]:
        """Groups currently null-filled for having missed a deadline."""
        return [i for i, g in enumerate(self._groups) if g.absent]

    def wants(self, group: int) -> bool:
        """Whether the caller may push another block of ``group`` (backpressure)."""
        return len(self._groups[group].pending) < self.buffer

    def push(self, group: int, block: Block) -> None:
        """One on-grid block of ``group`` (blocks of a group arrive in increasing time)."""
        g = self._groups[group]
        if self._align and not g.seen:
            g.seen = True
            if self.stats.emitted == 0 and block.time > self.head:
                self._start_at(block.time)
        if block.time < self.head:
            if self.stats.emitted == 0:
                self.stats.trimmed += 1  # before the first slot: start alignment
            else:
                self.stats.late_blocks += 1
            return
        if self.end is not None and block.time >= self.end:
            return
        if g.pending and block.time <= g.pending[-1].time:
            self.stats.late_blocks += 1  # out of order within the group: first copy wins
            return
        if g.absent:
            g.absent = False
            self.stats.absent_since.pop(group, None)
        g.pending.append(block)

    def _start_at(self, t: int) -> None:
        """Live start: begin at ``t``, the latest first block so far; earlier ones are trimmed."""
        self.head = t
        for other in self._groups:
            while other.pending and other.pending[0].time < t:
                other.pending.popleft()
                self.stats.trimmed += 1

    def finish(self, group: int) -> None:
        """``group``'s stream has ended: never wait for it again."""
        self._groups[group].finished = True

    def restart(self, group: int) -> None:
        """``group`` is being read again (a new downstream call) after it finished."""
        self._groups[group].finished = False

    # ------------------------------------------------------------------ output
    def deadline(self) -> int | None:
        """GPS ns at which the head slot leaves even if incomplete (None: done)."""
        if self.done:
            return None
        nominal = self.head + self.duration + self.allowance
        waiting_present = any(
            not g.finished and not g.absent and not self._has_or_passed(g) for g in self._groups
        )
        if waiting_present:
            return max(nominal, self._head_since + self.allowance)
        return nominal

    def _has_or_passed(self, g: _Group) -> bool:
        return bool(g.pending) and g.pending[0].time >= self.head

    def _ready(self) -> bool:
        return all(g.finished or self._has_or_passed(g) for g in self._groups)

    def pop_ready(self, now: int) -> list[Block]:
        """Every slot that may leave at ``now``, in order (possibly none)."""
        out: list[Block] = []
        while not self.done:
            if self._ready():
                if self.exhausted and self.end is None:
                    break  # every stream ended: nothing more will come, nothing to pace
                out.append(self._emit(now, late=False))
                continue
            deadline = self.deadline()
            if deadline is None or now < deadline:
                break
            out.append(self._emit(now, late=True))
        return out

    def _emit(self, now: int, *, late: bool) -> Block:
        t = self.head
        cells: dict[str, pa.Array] = {}
        source: pa.RecordBatch | None = None
        present = 0
        for i, g in enumerate(self._groups):
            if g.pending and g.pending[0].time == t:
                block = g.pending.popleft()
                cells.update(block.cells)
                source = block.source
                present += 1
            elif late and not g.finished and not self._has_or_passed(g):
                self.stats.null_filled += 1
                if not g.absent:
                    g.absent = True
                    self.stats.absent_since.setdefault(i, t)
        self.head = t + self.duration
        self._head_since = now
        self._align = False  # the start is fixed once a slot has left
        self.stats.emitted += 1
        if present == len(self._groups):
            self.stats.complete += 1
        if present == 1 and len(self._groups) == 1:
            return Block(t, cells, source)
        return Block(t, cells)
