"""The on-disk layout of a recording (see ``backends/README.md, "Recorded data"``) and its writer.

::

    DIR/channels.arrow                      channel metadata + manifest (written last)
    DIR/g0000/01400000000000000000.arrow    blocks of group g0000 from that GPS ns on
    DIR/g0000/01400000256000000000.arrow
    DIR/g0001/...

``channels.arrow`` is an Arrow IPC file with the PROTOCOL §4.1 metadata columns plus a
``group`` column; its schema metadata key ``arrakis-router-files`` holds the manifest (JSON:
format version, recorded span, each group's block duration).  A chunk file is an Arrow IPC
file of the group's §4.3 stream schema, one row per block, strictly increasing times on the
group's block grid; a missing row is a gap.  The writer buffers rows into record batches of
a few MB, so a block is a zero-copy row slice of a memory-mapped batch when read back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from router.protocol.arrow import METADATA_SCHEMA, metadata_batches, stream_schema
from router.protocol.blocks import samples_per_block
from router.protocol.channel import ChannelMeta

__all__ = [
    "CHANNELS_FILE",
    "FORMAT_VERSION",
    "MANIFEST_KEY",
    "GroupInfo",
    "GroupWriter",
    "Manifest",
    "RecordingError",
    "RecordingWriter",
    "chunk_name",
    "parse_chunk_name",
]

NS = 1_000_000_000
CHANNELS_FILE = "channels.arrow"
MANIFEST_KEY = b"arrakis-router-files"
FORMAT_VERSION = 1
#: a chunk file name: the GPS ns of the chunk start, zero-padded so names sort by time
_CHUNK_DIGITS = 20
_TMP_SUFFIX = ".partial"
#: target size of one record batch in a chunk file
BATCH_BYTES = 8 << 20


class RecordingError(ValueError):
    """A recording cannot be written or read (the path and the problem are named)."""


def chunk_name(start_ns: int) -> str:
    if start_ns < 0:
        raise ValueError(f"chunk start {start_ns} is negative")
    return f"{start_ns:0{_CHUNK_DIGITS}d}.arrow"


def parse_chunk_name(name: str) -> int | None:
    """The start ns encoded in a chunk file name, or None if it is not one."""
    stem, dot, ext = name.partition(".")
    if ext != "arrow" or not dot or len(stem) != _CHUNK_DIGITS or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True)
class GroupInfo:
    """Channels stored together: one chunk file holds all of them for a time span."""

    name: str
    block_ns: int
    channels: tuple[ChannelMeta, ...]  # sorted by name, as in the stream schema

    @property
    def schema(self) -> pa.Schema:
        return stream_schema(self.channels)


@dataclass(frozen=True)
class Manifest:
    """What ``channels.arrow`` says about the recording."""

    start_ns: int
    end_ns: int
    groups: tuple[GroupInfo, ...]
    #: channel order of the metadata file (Find answers in this order)
    order: tuple[str, ...]
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "arrakis-router-files",
            "version": FORMAT_VERSION,
            "start": self.start_ns,
            "end": self.end_ns,
            "source": self.source,
            "groups": {g.name: {"block_ns": g.block_ns} for g in self.groups},
        }


def _atomic_ipc_file(path: Path, batches: Sequence[pa.RecordBatch], schema: pa.Schema) -> None:
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    os.replace(tmp, path)


def _conform(batch: pa.RecordBatch, schema: pa.Schema, group: str) -> pa.RecordBatch:
    """``batch`` carried by ``schema`` (same names and types; field metadata may differ)."""
    if batch.schema.names != schema.names:
        raise RecordingError(
            f"group {group}: received columns {batch.schema.names[1:]}, expected {schema.names[1:]}"
        )
    columns = list(batch.columns)
    for i, (col, field) in enumerate(zip(columns, schema, strict=True)):
        if col.type != field.type:
            try:
                columns[i] = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise RecordingError(
                    f"group {group}: column {field.name} has type {col.type}, expected "
                    f"{field.type}: {exc}"
                ) from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class GroupWriter:
    """Appends the blocks of one group to its chunk files."""

    def __init__(
        self, root: Path, info: GroupInfo, start_ns: int, end_ns: int, chunk_ns: int
    ) -> None:
        self.info = info
        self.dir = root / info.name
        self.dir.mkdir()
        self.schema = info.schema
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.chunk_ns = max(1, math.ceil(chunk_ns / info.block_ns)) * info.block_ns
        self.samples = {
            m.name: samples_per_block(m.sample_rate, info.block_ns) for m in info.channels
        }
        row_bytes = sum(
            self.samples[m.name] * self.schema.field(m.name).type.value_type.bit_width // 8
            for m in info.channels
        )
        self.rows_per_batch = max(1, BATCH_BYTES // max(1, row_bytes))
        self.blocks = 0
        self.duplicates = 0
        self._last: int | None = None
        self._chunk: int | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._sink: pa.OSFile | None = None
        self._buffer: list[pa.RecordBatch] = []

    def __repr__(self) -> str:
        return (
            f"<GroupWriter {self.info.name} channels={len(self.info.channels)} "
            f"blocks={self.blocks} duplicates={self.duplicates} chunk={self._chunk}>"
        )

    def write(self, batch: pa.RecordBatch) -> None:
        """Add received blocks (a batch of one or more rows in increasing time)."""
        batch = _conform(batch, self.schema, self.info.name)
        times = batch.column(0).to_numpy()
        for i, t in enumerate(times.tolist()):
            self._add_row(int(t), batch.slice(i, 1))

    def _add_row(self, t: int, row: pa.RecordBatch) -> None:
        d = self.info.block_ns
        if (t - self.start_ns) % d:
            raise RecordingError(
                f"group {self.info.name}: block at GPS ns {t} is not on the {d} ns grid "
                f"starting at {self.start_ns}"
            )
        if not self.start_ns <= t < self.end_ns:
            raise RecordingError(
                f"group {self.info.name}: block at GPS ns {t} lies outside the recorded span "
                f"[{self.start_ns}, {self.end_ns})"
            )
        if self._last is not None and t <= self._last:
            self.duplicates += 1  # duplicate or late block: the first copy wins
            return
        chunk = self.start_ns + (t - self.start_ns) // self.chunk_ns * self.chunk_ns
        if chunk != self._chunk:
            self._close_chunk()
            self._chunk = chunk
        self._buffer.append(row)
        self._last = t
        self.blocks += 1
        if len(self._buffer) >= self.rows_per_batch:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        batch = pa.concat_batches(self._buffer)
        self._buffer = []
        for name, n in self.samples.items():
            col = batch.column(name)
            if col.null_count:
                raise RecordingError(
                    f"group {self.info.name}: channel {name} has a null block (a list of "
                    "nulls is expected for missing samples)"
                )
            lengths = np.diff(col.offsets.to_numpy())
            if not np.all(lengths == n):
                bad = int(lengths[lengths != n][0])
                raise RecordingError(
                    f"group {self.info.name}: channel {name} has a block of {bad} samples, "
                    f"expected {n} (did its metadata change during the recording?)"
                )
        if self._writer is None:
            assert self._chunk is not None
            path = self.dir / (chunk_name(self._chunk) + _TMP_SUFFIX)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_file(self._sink, self.schema)
        self._writer.write_batch(batch)

    def _close_chunk(self) -> None:
        self._flush()
        if self._writer is not None and self._sink is not None and self._chunk is not None:
            self._writer.close()
            self._sink.close()
            name = chunk_name(self._chunk)
            os.replace(self.dir / (name + _TMP_SUFFIX), self.dir / name)
        self._writer = None
        self._sink = None

    def close(self) -> None:
        self._close_chunk()

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except (OSError, pa.ArrowException):
            pass
        self._writer = None
        self._sink = None
        self._buffer = []


class RecordingWriter:
    """Writes a recording into an empty (or new) directory; ``finish`` writes
    ``channels.arrow`` last, so a directory without it is an incomplete recording."""

    def __init__(
        self,
        root: str | Path,
        start_ns: int,
        end_ns: int,
        *,
        chunk_ns: int = 256 * NS,
        source: str | None = None,
    ) -> None:
        self.root = Path(root)
        if start_ns >= end_ns:
            raise RecordingError(f"empty span: start {start_ns} is not before end {end_ns}")
        if self.root.exists():
            if not self.root.is_dir():
                raise RecordingError(f"{self.root}: exists and is not a directory")
            if any(self.root.iterdir()):
                raise RecordingError(f"{self.root}: directory is not empty")
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.chunk_ns = chunk_ns
        self.source = source
        self.groups: list[GroupWriter] = []
        self._order: list[ChannelMeta] = []

    def __repr__(self) -> str:
        return f"<RecordingWriter {self.root} groups={len(self.groups)}>"

    def add_group(self, channels: Sequence[ChannelMeta], block_ns: int) -> GroupWriter:
        seen = {m.name for g in self.groups for m in g.info.channels}
        again = [m.name for m in channels if m.name in seen]
        if again:
            raise RecordingError(f"channel(s) recorded twice: {', '.join(again)}")
        for m in channels:
            if not m.stride or block_ns % m.stride:
                raise RecordingError(
                    f"channel {m.name}: block duration {block_ns} ns is not a multiple of its "
                    f"stride {m.stride}"
                )
        if self.start_ns % block_ns or self.end_ns % block_ns:
            raise RecordingError(
                f"span [{self.start_ns}, {self.end_ns}) is not on the {block_ns} ns block grid"
            )
        info = GroupInfo(
            f"g{len(self.groups):04d}", block_ns, tuple(sorted(channels, key=lambda m: m.name))
        )
        writer = GroupWriter(self.root, info, self.start_ns, self.end_ns, self.chunk_ns)
        self.groups.append(writer)
        self._order.extend(channels)
        return writer

    def manifest(self) -> Manifest:
        return Manifest(
            self.start_ns,
            self.end_ns,
            tuple(g.info for g in self.groups),
            tuple(m.name for m in self._order),
            self.source,
        )

    def finish(self, order: Sequence[str] | None = None) -> Manifest:
        """Close every group and write ``channels.arrow``; ``order`` (channel names, default:
        the order groups were added in) is the order Find answers in."""
        for g in self.groups:
            g.close()
        if order is not None:
            by_name = {m.name: m for m in self._order}
            if sorted(order) != sorted(by_name):
                raise RecordingError("the channel order must name every recorded channel once")
            self._order = [by_name[n] for n in order]
        manifest = self.manifest()
        write_channels_file(self.root, manifest, self._order)
        return manifest

    def abort(self) -> None:
        """Remove everything written so far (the directory itself stays)."""
        for g in self.groups:
            g.abort()
            shutil.rmtree(g.dir, ignore_errors=True)
        self.groups = []


def write_channels_file(root: Path, manifest: Manifest, order: Sequence[ChannelMeta]) -> None:
    group_of = {m.name: g.name for g in manifest.groups for m in g.channels}
    schema = METADATA_SCHEMA.append(pa.field("group", pa.string(), nullable=False))
    schema = schema.with_metadata({MANIFEST_KEY: json.dumps(manifest.to_json()).encode()})
    batches = []
    offset = 0
    for batch in metadata_batches(list(order)):
        names = [group_of[m.name] for m in order[offset : offset + batch.num_rows]]
        offset += batch.num_rows
        batches.append(
            pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(names, pa.string())], schema=schema
            )
        )
    _atomic_ipc_file(root / CHANNELS_FILE, batches, schema)
