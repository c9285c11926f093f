"""Request and answer checks the server core applies to every backend.

``check_request`` runs in GetFlightInfo and again in DoGet (a ticket may be replayed later):
replay arguments, retention, channels.  ``check_stream`` and ``aligned`` hold a backend's
answer to the contract of :class:`~router_backends.interface.BlockStream` (block duration,
schema, blocks on the grid and in order, nothing at or past ``end``): a backend breaking it
is a bug on the server side, answered as ``INTERNAL`` with a message naming the backend.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa

from router.protocol.arrow import stream_schema
from router.protocol.blocks import block_duration
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, Envelope, FindArgs, PublishArgs, StreamArgs
from router.protocol.errors import (
    InternalError,
    InvalidRequestError,
    ReplayError,
    ServerError,
    UnsupportedError,
)
from router_backends.interface import Backend, BlockStream, CallContext
from router_backends.retention import Retention

__all__ = ["aligned", "check_request", "check_stream", "first_block"]


def check_request(
    env: Envelope, backend: Backend, ctx: CallContext, retention: Retention | None = None
) -> Sequence[ChannelMeta] | None:
    """Checks shared by GetFlightInfo and DoGet; the stream metadata for a Stream.
    ``retention``: the window served (default: the backend's)."""
    now_ns = ctx.now_ns
    window = retention if retention is not None else backend.retention
    args = env.args
    if isinstance(args, DescribeArgs | StreamArgs) and args.replay_id is not None:
        replays = backend.replays()
        if not replays:
            raise ReplayError(
                f"replay_id {args.replay_id!r} was provided but no replay registry is "
                "configured on this server"
            )
        if args.replay_id not in replays:
            raise ReplayError(
                f"unknown replay_id {args.replay_id!r}; available replays: {sorted(replays)}"
            )
    if isinstance(args, FindArgs | DescribeArgs) and args.time is not None:
        window.check_time(args.time, now_ns, f"{env.request} request")
    if isinstance(args, PublishArgs) and not backend.can_publish:
        raise UnsupportedError(f"{env.request.lower()} not supported for server backend")
    if not isinstance(args, StreamArgs):
        return None
    window.check_span(args.start, args.end, now_ns, "stream")
    if not args.channels:
        raise InvalidRequestError("invalid Stream request: args.channels: no channels")
    metas = backend.stream_metadata(args, ctx)
    names = [m.name for m in metas]
    if names != list(args.channels):
        raise InternalError(
            f"backend {backend.kind!r} answered stream metadata for {names[:8]}, "
            f"not for the channels asked {list(args.channels)[:8]}"
        )
    missing = [m.name for m in metas if not m.stride]
    if missing:
        raise ServerError(f"channel(s) without a stride cannot stream: {missing}")
    return metas


def first_block(start_ns: int, block_ns: int) -> int:
    """The first block of a stream from ``start_ns``: ``floor(start / D) * D``."""
    return start_ns // block_ns * block_ns


def check_stream(stream: BlockStream, metas: Sequence[ChannelMeta], kind: str) -> None:
    """The block duration and schema a backend answered match the metadata."""
    expected = block_duration(m.stride or 0 for m in metas)
    if stream.block_ns != expected:
        raise InternalError(
            f"backend {kind!r} streams blocks of {stream.block_ns} ns; the channels' strides "
            f"need {expected} ns (their lcm)"
        )
    schema = _schema_of(tuple(metas))
    if not stream.schema.equals(schema):
        raise InternalError(
            f"backend {kind!r} streams schema {_short(stream.schema)}; the metadata needs "
            f"{_short(schema)}"
        )


@lru_cache(maxsize=64)
def _schema_of(metas: tuple[ChannelMeta, ...]) -> pa.Schema:
    """``stream_schema`` of recently streamed channel sets (hundreds of fields cost ms)."""
    return stream_schema(metas)


def _short(schema: pa.Schema) -> str:
    text = ", ".join(f"{f.name}: {f.type}" for f in schema)
    return text if len(text) <= 300 else text[:297] + "..."


def aligned(
    chunks: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    block_ns: int,
    lo: int | None,
    end: int | None,
    kind: str,
) -> Generator[pa.RecordBatch, None, None]:
    """``chunks`` as they are, checking every batch's schema and every block time: on the
    ``block_ns`` grid, strictly increasing, not before ``lo`` (the first block) and before
    ``end``.  One vectorised check per chunk, not per block."""
    last: int | None = None
    for chunk in chunks:
        rows = chunk.num_rows
        if rows == 0:
            continue
        problem = None
        if not chunk.schema.equals(schema):
            problem = f"a batch has schema {_short(chunk.schema)}, the stream {_short(schema)}"
        elif rows == 1:  # the common live / per-block case: no numpy round trip
            first_t = last_t = chunk.column(0)[0].as_py()
            if first_t % block_ns:
                problem = f"block at {first_t} is off the {block_ns} ns grid"
        else:
            times = np.asarray(chunk.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
            first_t, last_t = int(times[0]), int(times[-1])
            off = np.flatnonzero(times % block_ns)
            if off.size:
                problem = f"block at {int(times[off[0]])} is off the {block_ns} ns grid"
            elif np.any(np.diff(times) <= 0):
                problem = f"block times go backwards or repeat within a chunk from {first_t}"
        if problem is not None:
            pass
        elif last is not None and first_t <= last:
            problem = f"block at {first_t} does not follow the previous block at {last}"
        elif lo is not None and first_t < lo:
            problem = f"block at {first_t} is before the stream's first block {lo}"
        elif end is not None and last_t >= end:
            problem = f"block at {last_t} is at or past the stream's end {end}"
        if problem is not None:
            raise InternalError(f"backend {kind!r} broke the block contract: {problem}")
        last = last_t
        yield chunk
