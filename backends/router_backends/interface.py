"""The backend interface: what a data backend provides and what it may rely on.

A backend answers three questions about its channels and produces blocks of samples:

* ``describe(args, ctx)`` -- the metadata of named channels as of ``args.time`` (None: now);
* ``find(args, ctx)`` -- the channels matching Find's filters, metadata as of ``args.time``;
* ``stream(args, ctx)`` -- a :class:`BlockStream` of the requested channels from
  ``floor(start / D) * D`` while block start < ``end`` (D = lcm of the channels' strides);
  live (``start`` None) from the block containing now; open-ended (``end`` None) forever.

and optionally ``publish``/``partition`` (publishing variant), a ``retention`` window and a
replay registry.  Everything else is the server core's (:mod:`router_backends.server`):
the Flight protocol and envelope validation, request ids, retention and replay refusal,
error translation (a backend raises :mod:`router.protocol.errors`; anything else becomes
``INTERNAL`` without a traceback), the check that blocks are on the grid and in order,
pacing (a block goes out once its end has passed), cancellation, logs and counters.

Subclass :class:`BackendBase` and implement ``find``, ``describe`` and ``stream``; the rest
has defaults.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import structlog

from router.protocol.channel import ChannelMeta, split_channel_name
from router.protocol.envelope import DescribeArgs, FindArgs, PublishArgs, StreamArgs
from router.protocol.errors import ChannelsNotAvailableError, UnsupportedError
from router.protocol.gps import Clock, SystemClock
from router_backends import __version__
from router_backends.retention import Retention

__all__ = [
    "Backend",
    "BackendBase",
    "BlockStream",
    "CallContext",
    "Cancellation",
    "lookup",
    "matches",
    "scopes_of",
]

NS = 1_000_000_000


class Cancellation:
    """One cancel token for a call: the client went away or the server is stopping.

    ``wait(seconds)`` sleeps at most ``seconds`` but wakes at once when the server stops and
    within ``heartbeat_s`` when the client cancels (gRPC offers no wake-up for that)."""

    def __init__(
        self,
        stopping: threading.Event | None = None,
        client_gone: Callable[[], bool] = lambda: False,
        heartbeat_s: float = 0.1,
    ) -> None:
        self.stopping = stopping if stopping is not None else threading.Event()
        self.client_gone = client_gone
        self.heartbeat_s = heartbeat_s

    def __repr__(self) -> str:
        return f"<Cancellation cancelled={self.is_cancelled()} heartbeat_s={self.heartbeat_s}>"

    def is_cancelled(self) -> bool:
        return self.stopping.is_set() or bool(self.client_gone())

    def wait(self, seconds: float) -> None:
        self.stopping.wait(min(max(seconds, 0.0), self.heartbeat_s))


@dataclass(frozen=True)
class CallContext:
    """What a backend may know about the call it serves: its request id, one clock (GPS
    now read once at the start, and read afresh by :meth:`now`), one cancel token and a
    logger bound to the request id."""

    request_id: str
    #: GPS now (ns), read once when the call started
    now_ns: int
    clock: Clock = field(default_factory=SystemClock, repr=False)
    cancel: Cancellation = field(default_factory=Cancellation, repr=False)
    log: Any = field(default_factory=lambda: structlog.get_logger("router_backends"), repr=False)

    @classmethod
    def detached(cls, clock: Clock | None = None, request_id: str = "-") -> CallContext:
        """A context outside any call (start-up, tests): never cancelled."""
        clock = clock or SystemClock()
        return cls(request_id, clock.now_ns(), clock)

    def now(self) -> int:
        """GPS now (ns), read afresh from the call's clock."""
        return self.clock.now_ns()

    def cancelled(self) -> bool:
        return self.cancel.is_cancelled()

    def wait_until(self, t_ns: int) -> bool:
        """Sleep until the call's clock reaches ``t_ns``; False if the call was cancelled
        (or the server stopped) first."""
        while True:
            if self.cancel.is_cancelled():
                return False
            remaining = t_ns - self.clock.now_ns()
            if remaining <= 0:
                return True
            self.cancel.wait(remaining / NS)

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the call's clock; False if cancelled first."""
        return self.wait_until(self.clock.now_ns() + round(seconds * NS))


@dataclass
class BlockStream:
    """A backend's answer to a Stream: the schema and its blocks, each ``block_ns`` long.

    ``schema`` is ``router.protocol.arrow.stream_schema(metas)`` of the stream's metadata;
    ``block_ns`` the lcm of the channels' strides.  Every item of ``blocks`` is a batch of
    one or more consecutive blocks (row i = one block; see
    ``router.protocol.blocks.blocks_batch``), times strictly increasing on the ``block_ns``
    grid: chunks let the server send historical data without per-block Python work.  A
    block the backend does not have may be left out (a gap) or sent null-filled.  ``close``
    is called once on every exit, also when nobody ever reads the stream."""

    schema: pa.Schema
    block_ns: int
    blocks: Iterator[pa.RecordBatch]
    close: Callable[[], None] | None = None


@runtime_checkable
class Backend(Protocol):
    """What the server core asks of a backend (see the module docstring)."""

    @property
    def kind(self) -> str:
        """Short name, reported as ``backend`` by ``server-info`` and in logs."""
        ...

    @property
    def version(self) -> str:
        """Reported as ``backend_version`` by ``server-info``."""
        ...

    @property
    def retention(self) -> Retention:
        """The age window served; the core refuses requests outside it."""
        ...

    def find(self, args: FindArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """Channels matching the filters (``pattern`` anchored at the start of the name,
        data types, rates, publishers, ``replay_id``), metadata valid at ``args.time``."""
        ...

    def count(self, args: FindArgs, ctx: CallContext) -> int:
        """Find's row count."""
        ...

    def describe(self, args: DescribeArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """Metadata of the named channels in request order, valid at ``args.time``; raise
        ``ChannelsNotAvailableError`` naming the unknown ones."""
        ...

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """The metadata a stream starting at ``args.start`` uses; checked already in
        GetFlightInfo, so refuse here what :meth:`stream` cannot serve."""
        ...

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        """The blocks (see :class:`BlockStream`), without pacing: the core releases each
        block once its end has passed.  Live sources should not run far ahead of
        ``ctx.now()``; long loops should return when ``ctx.cancelled()``."""
        ...

    def scopes(self) -> Mapping[str, Sequence[str]]:
        """domain -> subsystems served (``server-info``, ``scope-map``)."""
        ...

    def replays(self) -> Mapping[str, tuple[int, int]]:
        """replay id -> (start ns, end ns); empty: no replay registry."""
        ...

    def publishers(self) -> Sequence[str]:
        """Publisher ids allowed to publish here (``scope-map``)."""
        ...

    @property
    def can_publish(self) -> bool:
        """True when Publish and Partition are served."""
        ...

    def publish(self, args: PublishArgs, ctx: CallContext) -> Mapping[str, str]:
        """The producer properties of ``args.publisher_id``."""
        ...

    def partition(
        self, args: PublishArgs, channels: Sequence[ChannelMeta], ctx: CallContext
    ) -> Sequence[ChannelMeta]:
        """``channels`` with their partition assigned, in the order given."""
        ...

    def close(self) -> None:
        """Release resources when the server stops."""
        ...


def matches(args: FindArgs, meta: ChannelMeta) -> bool:
    """Whether ``meta`` answers Find ``args``: ``pattern`` matched at the start of the name
    (``re.match``), data types, rate range, publishers, ``replay_id``."""
    return (
        re.match(args.pattern, meta.name) is not None
        and meta.replay_id == args.replay_id
        and args.min_rate <= meta.sample_rate <= args.max_rate
        and (not args.data_type or meta.data_type in args.data_type)
        and (not args.publisher or meta.publisher in args.publisher)
    )


def lookup(channels: Mapping[str, ChannelMeta], names: Sequence[str]) -> list[ChannelMeta]:
    """Describe over a name -> metadata mapping: request order, unknown names refused with
    ``ChannelsNotAvailableError`` naming them."""
    unknown = [name for name in names if name not in channels]
    if unknown:
        raise ChannelsNotAvailableError(unknown)
    return [channels[name] for name in names]


def scopes_of(metas: Sequence[ChannelMeta]) -> dict[str, list[str]]:
    """domain -> sorted subsystems seen in the channel names."""
    out: dict[str, set[str]] = {}
    for m in metas:
        domain, subsystem = split_channel_name(m.name)
        out.setdefault(domain, set()).add(subsystem)
    return {d: sorted(s) for d, s in sorted(out.items())}


class BackendBase:
    """Defaults for everything but ``find``, ``describe`` and ``stream``: Count counts
    Find, a stream's metadata is Describe at its start, scopes come from Find, no replays,
    no publishing, unlimited retention."""

    kind: str = "backend"
    version: str = __version__
    retention: Retention = Retention()

    def find(self, args: FindArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        raise NotImplementedError

    def describe(self, args: DescribeArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        raise NotImplementedError

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        raise NotImplementedError

    def count(self, args: FindArgs, ctx: CallContext) -> int:
        return len(self.find(args, ctx))

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        return self.describe(DescribeArgs(args.channels, args.start, args.replay_id), ctx)

    def scopes(self) -> Mapping[str, Sequence[str]]:
        return scopes_of(self.find(FindArgs(), CallContext.detached()))

    def replays(self) -> Mapping[str, tuple[int, int]]:
        return {}

    def publishers(self) -> Sequence[str]:
        return ()

    @property
    def can_publish(self) -> bool:
        return False

    def publish(self, args: PublishArgs, ctx: CallContext) -> Mapping[str, str]:
        raise UnsupportedError("publish not supported for server backend")

    def partition(
        self, args: PublishArgs, channels: Sequence[ChannelMeta], ctx: CallContext
    ) -> Sequence[ChannelMeta]:
        raise UnsupportedError("partition not supported for server backend")

    def close(self) -> None:
        return None
