"""Channel metadata: a TTL cache of Describe answers and the Describe/Find fan-out.

The cache is keyed by ``(channel, time, replay_id, scope)``: the client's Describe (``time`` =
the stream start) followed by its Stream (whose schema and null fill need the same metadata)
costs one downstream Describe, not two. ``scope`` separates callers with different credentials
(a digest of the forwarded ``authorization`` header), so one client's token never serves
another client's Describe from the cache.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor

import structlog
from cachetools import TTLCache

from router.context import RequestContext
from router.downstream import Call, DownstreamPool
from router.errors import ArrakisError, ChannelsNotAvailableError, UnavailableError, is_retryable
from router.fanout import fetch_first, gather
from router.protocol.arrow import metas_from_batches
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, Envelope, FindArgs

log = structlog.get_logger("router.metadata")

Key = tuple[str, int | None, str | None, str | None]


class DescribeCache:
    """Thread-safe TTL cache of channel metadata.

    ``clear()`` starts a new generation. A fetch reads :attr:`generation` before it plans
    and passes it to :meth:`store`; answers fetched under an older generation (a Describe
    still running against the map a reload replaced) are dropped, not cached.
    """

    def __init__(
        self, ttl: float, maxsize: int = 200_000, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: TTLCache[Key, ChannelMeta] = TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        self.hits = 0
        self.misses = 0
        self.stale_stores = 0
        self._generation = 0

    def __repr__(self) -> str:
        return (
            f"<DescribeCache size={len(self._cache)} generation={self._generation} "
            f"hits={self.hits} misses={self.misses} stale_stores={self.stale_stores}>"
        )

    @property
    def generation(self) -> int:
        """Bumped by every :meth:`clear`; read it before fetching what is to be stored."""
        with self._lock:
            return self._generation

    def lookup(
        self,
        channels: Iterable[str],
        time_ns: int | None,
        replay_id: str | None,
        scope: str | None = None,
    ) -> tuple[dict[str, ChannelMeta], list[str]]:
        found: dict[str, ChannelMeta] = {}
        missing: list[str] = []
        with self._lock:
            for name in channels:
                key = (name, time_ns, replay_id, scope)
                meta = self._cache.get(key) if self.ttl > 0 else None
                if meta is None:
                    missing.append(name)
                else:
                    found[name] = meta
            self.hits += len(found)
            self.misses += len(missing)
        return found, missing

    def store(
        self,
        metas: Iterable[ChannelMeta],
        time_ns: int | None,
        replay_id: str | None,
        scope: str | None = None,
        *,
        generation: int,
    ) -> None:
        """Cache ``metas``, fetched by a call that read ``generation`` before it started;
        dropped if the cache was cleared since."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self._generation:
                self.stale_stores += 1
                return
            for meta in metas:
                self._cache[(meta.name, time_ns, replay_id, scope)] = meta

    def clear(self) -> None:
        """Drop every entry and start a new generation (stores from older ones are dropped)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1


def describe_groups(
    pool: DownstreamPool,
    executor: Executor,
    envelope: Envelope,
    groups: Sequence[tuple[tuple[str, ...], tuple[str, ...], int | None]],
    call: Call,
    ctx: RequestContext | None = None,
) -> dict[str, ChannelMeta]:
    """Describe every ``(channels, endpoints, time)`` group concurrently (replica failover,
    each call within what remains of ``ctx``'s deadline);
    channels a downstream did not describe raise one ChannelsNotAvailableError."""
    assert isinstance(envelope.args, DescribeArgs)

    def one(
        channels: tuple[str, ...], endpoints: tuple[str, ...], t: int | None
    ) -> list[ChannelMeta]:
        command = envelope.replace(channels=channels, time=t).encode()
        _, batches = fetch_first(pool, endpoints, command, call, ctx)
        return metas_from_batches(batches)

    answers = gather(executor, [functools.partial(one, *g) for g in groups])
    out: dict[str, ChannelMeta] = {}
    for (channels, _, _), metas in zip(groups, answers, strict=True):
        wanted = set(channels)
        for meta in metas:
            if meta.name in wanted:
                out.setdefault(meta.name, meta)
    missing = [c for channels, _, _ in groups for c in channels if c not in out]
    if missing:
        raise ChannelsNotAvailableError(missing, "the downstream did not describe them")
    return out


def find_targets(
    pool: DownstreamPool,
    executor: Executor,
    envelope: Envelope,
    targets: Sequence[tuple[tuple[str, ...], int | None, str | None, str]],
    call: Call,
    ctx: RequestContext | None = None,
) -> list[ChannelMeta]:
    """Find on one replica per ``(endpoints, time, replay_id, scopes)`` target, concurrently;
    the rows merged in target order and de-duplicated by channel name (first answer wins).
    A target no replica answers fails the whole Find with an error naming its endpoints and
    the scopes they would have answered for: never a silently smaller answer."""
    assert isinstance(envelope.args, FindArgs)
    find = Envelope("Find", envelope.args, envelope.version)
    pattern = envelope.args.pattern

    def one(
        endpoints: tuple[str, ...], t: int | None, replay: str | None, scopes: str
    ) -> list[ChannelMeta]:
        command = find.replace(time=t, replay_id=replay).encode()
        try:
            _, batches = fetch_first(pool, endpoints, command, call, ctx)
        except ArrakisError as exc:
            if not is_retryable(exc):
                raise
            raise UnavailableError(
                f"{envelope.request} {pattern[:200]!r} needs {', '.join(endpoints)} "
                f"(scopes {scopes[:500]}), which did not answer: {str(exc)[:1500]}"
            ) from exc
        return metas_from_batches(batches)

    answers = gather(executor, [functools.partial(one, *t) for t in targets])
    seen: set[str] = set()
    out: list[ChannelMeta] = []
    for metas in answers:
        for meta in metas:
            if meta.name not in seen:
                seen.add(meta.name)
                out.append(meta)
    return out
