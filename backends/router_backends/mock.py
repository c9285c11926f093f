"""The deterministic mock backend: catalogue lookups and generated blocks."""

from __future__ import annotations

import argparse
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa

from router.protocol.arrow import stream_schema
from router.protocol.blocks import block_duration, blocks_batch, samples_per_block
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, FindArgs, PublishArgs, StreamArgs
from router.protocol.errors import ChannelsNotAvailableError, UnauthorizedError
from router_backends.catalog import Catalog, ChannelSpec, load_toml
from router_backends.defaults import default_channels
from router_backends.interface import BackendBase, BlockStream, CallContext
from router_backends.publishers import Partitioner, PublisherConfig, load_publishers
from router_backends.retention import Retention
from router_backends.signals import generate

__all__ = ["SAMPLES_PER_CHUNK", "MockBackend", "default_catalog"]

NS = 1_000_000_000
#: samples generated per chunk of blocks (all channels together).  Each chunk costs a few
#: Python and Arrow calls per channel whatever its length, so historical chunks are large
#: (with 500 channels of 16 samples per block, 64-block chunks spent more time building
#: columns than pyarrow spent writing them); memory stays bounded (8 MiB of float32) and
#: live streams are not delayed: near the clock a chunk never runs ahead of it.
SAMPLES_PER_CHUNK = 1 << 21
MAX_BLOCKS_PER_CHUNK = 1024


def default_catalog() -> Catalog:
    """The default H1 and L1 channel sets."""
    return Catalog(ChannelSpec.simple(m) for ifo in ("H1", "L1") for m in default_channels(ifo))


class MockBackend(BackendBase):
    """Deterministic synthetic channels (see :mod:`router_backends.signals`)."""

    kind = "mock"

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        retention: Retention | None = None,
        publishers: Mapping[str, PublisherConfig] | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self.retention = retention or Retention()
        self._publishers = dict(publishers or {})
        self._partitioner = Partitioner()
        self._lock = threading.Lock()
        self._partitioner.seed(s.versions[0] for s in self.catalog)
        for cfg in self._publishers.values():
            static = [s for s in self.catalog if s.versions[0].publisher == cfg.id]
            unassigned = [s.versions[0] for s in static if s.versions[0].partition_id is None]
            assigned = self._partitioner.assign(cfg, unassigned)
            for spec in static:
                if spec.name in assigned:
                    a = assigned[spec.name]
                    self.catalog.add(
                        replace(
                            spec,
                            versions=tuple(
                                replace(
                                    v,
                                    partition_id=a.partition_id,
                                    partition_index=a.partition_index,
                                )
                                for v in spec.versions
                            ),
                        )
                    )

    def __repr__(self) -> str:
        return f"<MockBackend {self.catalog!r} retention={self.retention}>"

    # ------------------------------------------------------------------ plugin

    description = "Serve deterministic synthetic channels (default: H1 and L1 sets)."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Options of ``router-backend mock`` (the server core adds ``--url`` & co)."""
        parser.add_argument(
            "--publishers",
            default=None,
            metavar="FILE",
            help="TOML publisher file: enables Publish and Partition",
        )
        parser.add_argument("channels", nargs="*", metavar="CHANNELS.toml", help="channel files")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MockBackend:
        catalog = (
            Catalog(spec for path in args.channels for spec in load_toml(path))
            if args.channels
            else None
        )
        publishers = load_publishers(args.publishers) if args.publishers else None
        return cls(catalog, publishers=publishers)

    # ------------------------------------------------------------------ metadata

    def scopes(self) -> Mapping[str, Sequence[str]]:
        return self.catalog.scopes()

    def find(self, args: FindArgs, ctx: CallContext) -> list[ChannelMeta]:
        t = ctx.now_ns if args.time is None else args.time
        pattern = re.compile(args.pattern)
        dtypes = set(args.data_type)
        pubs = set(args.publisher)
        out = []
        for spec in self.catalog:
            if not pattern.match(spec.name):
                continue
            m = spec.meta_at(t)
            if (
                m.replay_id == args.replay_id
                and args.min_rate <= m.sample_rate <= args.max_rate
                and (not dtypes or m.data_type in dtypes)
                and (not pubs or m.publisher in pubs)
            ):
                out.append(m)
        return out

    def describe(self, args: DescribeArgs, ctx: CallContext) -> list[ChannelMeta]:
        unknown = self.catalog.unknown(args.channels)
        if unknown:
            raise ChannelsNotAvailableError(unknown)
        t = ctx.now_ns if args.time is None else args.time
        return [self.catalog[name].meta_at(t) for name in args.channels]

    # ------------------------------------------------------------------ streams

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        metas = self.stream_metadata(args, ctx)
        duration = block_duration(m.stride or 0 for m in metas)
        t0 = ctx.now_ns if args.start is None else args.start
        first = t0 // duration * duration
        schema = stream_schema(metas)
        specs = [self.catalog[m.name] for m in metas]
        dtypes = {m.name: np.dtype(m.data_type) for m in metas}
        return BlockStream(
            schema,
            duration,
            self._blocks(schema, specs, dtypes, first, args.end, duration, ctx),
        )

    def _blocks(
        self,
        schema: pa.Schema,
        specs: Sequence[ChannelSpec],
        dtypes: Mapping[str, np.dtype],
        first: int,
        end: int | None,
        duration: int,
        ctx: CallContext,
    ) -> Iterator[pa.RecordBatch]:
        t = first
        while end is None or t < end:
            metas = [(s, s.meta_at(t)) for s in specs]
            samples = {s.name: samples_per_block(m.sample_rate, duration) for s, m in metas}
            per_block = max(1, sum(samples.values()))
            count = max(1, min(MAX_BLOCKS_PER_CHUNK, SAMPLES_PER_CHUNK // per_block))
            if end is not None:
                count = min(count, -(-(end - t) // duration))
            if end is None or end > ctx.now_ns:
                # live part: do not run far ahead of the clock
                ahead = (ctx.now() - t) // duration + 1
                count = max(1, min(count, ahead))
            changes = [c for s in specs if (c := s.next_change_after(t)) is not None]
            if changes:
                count = max(1, min(count, -(-(min(changes) - t) // duration)))
            times = [t + i * duration for i in range(count)]
            cols = generate(metas, times, samples, dtypes)
            yield blocks_batch(schema, times, cols, samples)
            t += count * duration

    # ------------------------------------------------------------------ publishing

    def publishers(self) -> Sequence[str]:
        return list(self._publishers)

    @property
    def can_publish(self) -> bool:
        return bool(self._publishers)

    def _publisher(self, pid: str) -> PublisherConfig:
        cfg = self._publishers.get(pid)
        if cfg is None:
            raise UnauthorizedError(f"publisher {pid!r} is not known to this server")
        return cfg

    def publish(self, args: PublishArgs, ctx: CallContext) -> Mapping[str, str]:
        return dict(self._publisher(args.publisher_id).properties)

    def partition(
        self, args: PublishArgs, channels: Sequence[ChannelMeta], ctx: CallContext
    ) -> list[ChannelMeta]:
        cfg = self._publisher(args.publisher_id)
        if not cfg.dynamic:
            raise UnauthorizedError(f"publisher {cfg.id!r} may not register channels dynamically")
        with self._lock:
            keep: dict[str, ChannelMeta] = {}
            new: list[ChannelMeta] = []
            for m in channels:
                spec = self.catalog.get(m.name)
                old = spec.versions[-1] if spec is not None else None
                if (
                    old is not None
                    and old.publisher == cfg.id
                    and old.data_type == m.data_type
                    and old.sample_rate == m.sample_rate
                    and old.partition_id is not None
                ):
                    keep[m.name] = old
                elif old is not None and old.publisher not in (None, cfg.id):
                    raise UnauthorizedError(
                        f"channel {m.name} belongs to publisher {old.publisher!r}, not {cfg.id!r}"
                    )
                else:
                    new.append(replace(m, replay_id=args.replay_id))
            assigned = self._partitioner.assign(cfg, new)
            for meta in assigned.values():
                self.catalog.add(ChannelSpec.simple(meta))
            keep.update(assigned)
        ctx.log.info(
            "partitioned", publisher=cfg.id, new=len(assigned), kept=len(keep) - len(assigned)
        )
        return [keep[m.name] for m in channels]
