"""An example third-party backend for ``router-backend``: NumPy ``.npy`` files.

    DIR/channels.json                  {"X1:TST-A": {"sample_rate": 16}, ...}
    DIR/<channel>/<GPS second>.npy     one GPS hour of samples (3600 x rate values), the file
                                       named for the second it starts at (a multiple of 3600)

``channels.json`` may also give a channel's ``stride`` (ns, default 1 s, dividing an hour)
and ``publisher``; the data type is the files'.  Serve it with

    router-backend serve npy DIR --url grpc://127.0.0.1:0

A missing hour is a gap (null samples); live and open-ended streams are refused, since the
files hold archived data only.  Everything else (Flight, validation, errors, pacing,
retention, fault injection) is the server core's.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from router.protocol.arrow import stream_schema
from router.protocol.blocks import block_duration, blocks_batch, samples_per_block
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, FindArgs, StreamArgs
from router.protocol.errors import InternalError, UnavailableError
from router_backends.interface import BackendBase, BlockStream, CallContext, lookup, matches

__all__ = ["NpyBackend"]
__version__ = "0.1.0"

NS = 1_000_000_000
HOUR_NS = 3600 * NS
#: blocks built at once: few Arrow calls per channel, bounded memory
MAX_BLOCKS = 1024


class NpyBackend(BackendBase):
    """Serve a directory of NumPy .npy files, one per channel and GPS hour."""

    kind = "npy"
    version = __version__

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            spec = json.loads((self.root / "channels.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.root}: cannot read channels.json: {exc}") from None
        self.channels: dict[str, ChannelMeta] = {}
        for name, opts in spec.items():
            files = sorted((self.root / name).glob("*.npy"))
            if not files:
                raise ValueError(f"{self.root}: channel {name} has no .npy files")
            rate, stride = int(opts["sample_rate"]), int(opts.get("stride", NS))
            samples_per_block(rate, stride)  # ValueError unless whole samples
            if HOUR_NS % stride:
                raise ValueError(f"{self.root}: channel {name}: stride must divide an hour")
            dtype = np.load(files[0], mmap_mode="r").dtype
            self.channels[name] = ChannelMeta(
                name, dtype.name, rate, stride, NS, opts.get("publisher")
            )

    def __repr__(self) -> str:
        return f"<NpyBackend {self.root} channels={len(self.channels)}>"

    # -- the plugin: options and construction (the core adds --url, --retention, ...)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", metavar="DIR", help="directory of channels.json and .npy files")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NpyBackend:
        return cls(args.dir)

    # -- metadata

    def find(self, args: FindArgs, ctx: CallContext) -> list[ChannelMeta]:
        return [m for m in self.channels.values() if matches(args, m)]

    def describe(self, args: DescribeArgs, ctx: CallContext) -> list[ChannelMeta]:
        return lookup(self.channels, args.channels)

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> list[ChannelMeta]:
        if args.start is None or args.end is None:
            raise UnavailableError(f"{self.kind}: archived data only, give a start and an end")
        return self.describe(DescribeArgs(args.channels, args.start), ctx)

    # -- blocks

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        metas = self.stream_metadata(args, ctx)
        assert args.start is not None and args.end is not None
        block_ns = block_duration(m.stride or NS for m in metas)
        schema = stream_schema(metas)
        first = args.start // block_ns * block_ns
        return BlockStream(
            schema, block_ns, self._blocks(schema, metas, first, args.end, block_ns, ctx)
        )

    def _blocks(
        self,
        schema: pa.Schema,
        metas: Sequence[ChannelMeta],
        t: int,
        end: int,
        block_ns: int,
        ctx: CallContext,
    ) -> Iterator[pa.RecordBatch]:
        samples = {m.name: samples_per_block(m.sample_rate, block_ns) for m in metas}
        while t < end and not ctx.cancelled():
            hour = t // HOUR_NS * HOUR_NS  # blocks never straddle an hour: D divides it
            count = min(MAX_BLOCKS, -(-(min(end, hour + HOUR_NS) - t) // block_ns))
            times = [t + i * block_ns for i in range(count)]
            columns = {m.name: self._samples(m, hour, t, count * samples[m.name]) for m in metas}
            yield blocks_batch(schema, times, columns, samples)
            t += count * block_ns

    def _samples(self, meta: ChannelMeta, hour: int, t: int, n: int) -> np.ndarray | None:
        """``n`` samples of ``meta`` from ``t`` (inside the hour file), None if no file."""
        path = self.root / meta.name / f"{hour // NS}.npy"
        if not path.exists():
            return None
        data = np.load(path, mmap_mode="r")
        if data.shape != (3600 * meta.sample_rate,):
            raise InternalError(f"{path.name} of {meta.name}: {data.shape} is not one hour")
        i = (t - hour) * meta.sample_rate // NS
        return np.asarray(data[i : i + n])
