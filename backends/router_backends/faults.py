"""Fault injection for streams (``--faults``), applied by the server base to any backend.

Spec: comma-separated items, the option may be repeated::

    drop=N        omit every N-th block (blocks N, 2N, ...; block 0 never)
    nulls=N       replace every N-th block by an all-null block (a gap the server admits)
    delay=S[/N]   hold every N-th block (default: every block) S seconds before sending it
    stall=S@N     after N blocks, send nothing for S seconds (once per stream)
    error=N       after N blocks, end the stream with FlightUnavailableError
    exit=N        after N blocks, end the stream with FlightUnavailableError and stop the
                  whole server process (exit status 3)

Block counts are per stream (per DoGet), counted from 0.  :class:`FaultyBackend` applies a
plan to any backend by wrapping its streams, so every backend can be fault-injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa

from router.protocol.blocks import batch_columns, null_block, split_blocks
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, FindArgs, PublishArgs, StreamArgs
from router.protocol.errors import UnavailableError
from router_backends.interface import Backend, BlockStream, CallContext
from router_backends.retention import Retention

__all__ = ["FaultPlan", "FaultyBackend", "parse_faults"]


@dataclass(frozen=True)
class FaultPlan:
    drop_every: int | None = None
    nulls_every: int | None = None
    delay_s: float = 0.0
    delay_every: int = 1
    stall_s: float = 0.0
    stall_after: int | None = None
    error_after: int | None = None
    exit_after: int | None = None

    @property
    def active(self) -> bool:
        return self != FaultPlan()

    def drops(self, index: int) -> bool:
        return bool(self.drop_every) and index > 0 and index % self.drop_every == 0  # type: ignore[operator]

    def nulls(self, index: int) -> bool:
        return bool(self.nulls_every) and index > 0 and index % self.nulls_every == 0  # type: ignore[operator]

    def delay_for(self, index: int) -> float:
        if self.delay_s <= 0:
            return 0.0
        return self.delay_s if index % self.delay_every == 0 else 0.0

    def describe(self) -> str:
        parts = []
        if self.drop_every:
            parts.append(f"drop={self.drop_every}")
        if self.nulls_every:
            parts.append(f"nulls={self.nulls_every}")
        if self.delay_s:
            parts.append(f"delay={self.delay_s}/{self.delay_every}")
        if self.stall_after is not None:
            parts.append(f"stall={self.stall_s}@{self.stall_after}")
        if self.error_after is not None:
            parts.append(f"error={self.error_after}")
        if self.exit_after is not None:
            parts.append(f"exit={self.exit_after}")
        return ",".join(parts) or "none"


def _int(value: str, item: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not an integer") from None
    if n < minimum:
        raise ValueError(f"fault {item!r}: must be at least {minimum}")
    return n


def _seconds(value: str, item: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not a number of seconds") from None
    if not s >= 0:
        raise ValueError(f"fault {item!r}: seconds must be >= 0")
    return s


def parse_faults(specs: Iterable[str]) -> FaultPlan:
    """A plan from ``--faults`` values; ValueError naming the bad item."""
    plan = FaultPlan()
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"fault {item!r}: expected NAME=VALUE")
            if key == "drop":
                plan = replace(plan, drop_every=_int(value, item, 1))
            elif key == "nulls":
                plan = replace(plan, nulls_every=_int(value, item, 1))
            elif key == "delay":
                secs, _, every = value.partition("/")
                plan = replace(
                    plan,
                    delay_s=_seconds(secs, item),
                    delay_every=_int(every, item, 1) if every else 1,
                )
            elif key == "stall":
                secs, at, after = value.partition("@")
                if not at:
                    raise ValueError(f"fault {item!r}: expected stall=SECONDS@BLOCKS")
                plan = replace(plan, stall_s=_seconds(secs, item), stall_after=_int(after, item, 0))
            elif key == "error":
                plan = replace(plan, error_after=_int(value, item, 0))
            elif key == "exit":
                plan = replace(plan, exit_after=_int(value, item, 0))
            else:
                raise ValueError(
                    f"unknown fault {key!r} (known: drop, nulls, delay, stall, error, exit)"
                )
    return plan


class FaultyBackend:
    """``backend`` with ``plan`` applied to every stream (and nothing else changed).

    The faults act where the blocks are produced, before pacing: a stream fails or stalls
    when the server asks for the block concerned.  ``on_exit`` is what the ``exit`` fault
    calls (the command line stops the process with status 3); without it an ``exit`` plan
    is refused, since nothing could honour it.
    """

    def __init__(
        self, backend: Backend, plan: FaultPlan, on_exit: Callable[[], None] | None = None
    ) -> None:
        if plan.exit_after is not None and on_exit is None:
            raise ValueError("the exit fault would end this process: run it as a subprocess")
        self.backend = backend
        self.plan = plan
        self.on_exit = on_exit

    def __repr__(self) -> str:
        return f"<FaultyBackend {self.plan.describe()} over {self.backend!r}>"

    @property
    def kind(self) -> str:
        return self.backend.kind

    @property
    def version(self) -> str:
        return self.backend.version

    @property
    def retention(self) -> Retention:
        return self.backend.retention

    def find(self, args: FindArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        return self.backend.find(args, ctx)

    def count(self, args: FindArgs, ctx: CallContext) -> int:
        return self.backend.count(args, ctx)

    def describe(self, args: DescribeArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        return self.backend.describe(args, ctx)

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        return self.backend.stream_metadata(args, ctx)

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = self.backend.stream(args, ctx)
        return replace(inner, blocks=self._faulty(inner.blocks, ctx))

    def scopes(self) -> Mapping[str, Sequence[str]]:
        return self.backend.scopes()

    def replays(self) -> Mapping[str, tuple[int, int]]:
        return self.backend.replays()

    def publishers(self) -> Sequence[str]:
        return self.backend.publishers()

    @property
    def can_publish(self) -> bool:
        return self.backend.can_publish

    def publish(self, args: PublishArgs, ctx: CallContext) -> Mapping[str, str]:
        return self.backend.publish(args, ctx)

    def partition(
        self, args: PublishArgs, channels: Sequence[ChannelMeta], ctx: CallContext
    ) -> Sequence[ChannelMeta]:
        return self.backend.partition(args, channels, ctx)

    def close(self) -> None:
        self.backend.close()

    def _faulty(
        self, chunks: Iterator[pa.RecordBatch], ctx: CallContext
    ) -> Iterator[pa.RecordBatch]:
        plan = self.plan
        index = 0
        for chunk in chunks:
            for block in split_blocks(chunk):
                if plan.exit_after is not None and index >= plan.exit_after:
                    ctx.log.warning("fault_exit", blocks=index)
                    assert self.on_exit is not None
                    self.on_exit()
                    raise UnavailableError(f"injected fault: server exiting after {index} blocks")
                if plan.error_after is not None and index >= plan.error_after:
                    raise UnavailableError(
                        f"injected fault: stream error after {plan.error_after} blocks"
                    )
                if plan.stall_after is not None and index == plan.stall_after:
                    ctx.log.info("fault_stall", seconds=plan.stall_s)
                    if not ctx.sleep(plan.stall_s):
                        return
                index += 1
                if plan.drops(index - 1):
                    continue
                delay = plan.delay_for(index - 1)
                if delay and not ctx.sleep(delay):
                    return
                yield _nulls_like(block) if plan.nulls(index - 1) else block


def _nulls_like(block: pa.RecordBatch) -> pa.RecordBatch:
    t, cols = batch_columns(block)
    return null_block(block.schema, t, {name: len(values) for name, values in cols.items()})
