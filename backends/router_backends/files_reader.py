"""Reading a recording: memory-mapped chunk files, block lookup by time, re-blocking.

A request's channels may live in several groups with different block durations.  The
output block duration ``D`` is the lcm of the requested channels' strides; for each output
block ``[T, T + D)`` and each group, the group's blocks overlapping it are found by
arithmetic (the group grid) plus a dictionary lookup in the chunk file (``bisect`` over the
chunk start times names the file).  Consecutive stored rows of one record batch hold
time-contiguous samples, so a channel's samples for ``[a, b)`` are one zero-copy slice of the
batch's values; only pieces that cross a gap or a batch boundary are concatenated, and gaps
become nulls.  The common case (one group, ``D`` equal to its block duration) yields the
stored row itself, a zero-copy slice of the memory map.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from router.protocol.arrow import METADATA_SCHEMA, metas_from_batches, stream_schema
from router.protocol.blocks import block_duration, blocks_batch, samples_per_block
from router.protocol.channel import ChannelMeta
from router_backends.files_layout import (
    CHANNELS_FILE,
    FORMAT_VERSION,
    MANIFEST_KEY,
    GroupInfo,
    Manifest,
    RecordingError,
    chunk_name,
    parse_chunk_name,
)

__all__ = ["ChunkFile", "GroupStore", "Recording"]

NS = 1_000_000_000
#: open chunk files kept memory-mapped (least recently used ones are dropped first)
MAX_OPEN_CHUNKS = 256


def _ipc_batches(path: Path) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    # The batches keep the mapped region alive on their own: the file is closed on every
    # path instead of waiting for the garbage collector to release its descriptor.
    try:
        with pa.memory_map(str(path), "r") as source:
            reader = pa.ipc.open_file(source)
            return reader.schema, [reader.get_batch(i) for i in range(reader.num_record_batches)]
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{path}: not a readable Arrow IPC file ({exc})") from None


class ChunkFile:
    """One memory-mapped chunk file: its record batches and where each block time is."""

    def __init__(self, path: Path, info: GroupInfo) -> None:
        self.path = path
        schema, self.batches = _ipc_batches(path)
        expected = info.schema
        if schema.names != expected.names or schema.types != expected.types:
            raise RecordingError(
                f"{path}: columns {schema.names} do not match the channels of group {info.name}"
            )
        self._where: dict[int, tuple[pa.RecordBatch, int, np.ndarray]] = {}
        samples = {m.name: samples_per_block(m.sample_rate, info.block_ns) for m in info.channels}
        last = -1
        for batch in self.batches:
            for name, n in samples.items():
                offsets = batch.column(name).offsets.to_numpy()
                if offsets[0] != 0 or not np.all(np.diff(offsets) == n):
                    raise RecordingError(
                        f"{path}: channel {name} has blocks that are not {n} samples long"
                    )
            times = batch.column(0).to_numpy()
            for row, t in enumerate(times.tolist()):
                if t <= last or t % info.block_ns:
                    raise RecordingError(
                        f"{path}: block time {t} is out of order or off the {info.block_ns} ns grid"
                    )
                last = t
                self._where[t] = (batch, row, times)

    def __repr__(self) -> str:
        return f"<ChunkFile {self.path.name} blocks={len(self._where)}>"

    def locate(self, t: int) -> tuple[pa.RecordBatch, int, np.ndarray] | None:
        """``(batch, row, times of the batch's rows)`` of the block starting at ``t``."""
        return self._where.get(t)


class GroupStore:
    """The chunk files of one group; opens them on demand through the recording's cache."""

    def __init__(self, recording: Recording, info: GroupInfo) -> None:
        self.recording = recording
        self.info = info
        self.dir = recording.path / info.name
        if not self.dir.is_dir():
            raise RecordingError(f"{self.dir}: group directory is missing")
        starts = sorted(
            s for s in (parse_chunk_name(p.name) for p in self.dir.iterdir()) if s is not None
        )
        self.starts = starts

    def __repr__(self) -> str:
        return (
            f"<GroupStore {self.info.name} block_ns={self.info.block_ns} chunks={len(self.starts)}>"
        )

    @property
    def block_ns(self) -> int:
        return self.info.block_ns

    def locate(self, t: int) -> tuple[pa.RecordBatch, int, np.ndarray] | None:
        """Where the block that starts at ``t`` is stored (see :meth:`ChunkFile.locate`),
        None for a gap."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return None
        return self.recording.chunk(self, self.starts[i]).locate(t)


@dataclass
class _Part:
    """The requested channels of one group, with what re-blocking needs per channel."""

    group: GroupStore
    names: list[str]
    types: list[pa.DataType]
    rates: list[int]
    #: samples of each channel in one stored block
    stored: list[int]
    #: requested channels == all channels of the group, in the same (sorted) order
    whole: bool


_OFFSETS: dict[int, pa.Array] = {}
#: at most this many missing blocks go out as one null batch
MAX_GAP_ROWS = 256


def _run_length(times: np.ndarray, row: int, t: int, d: int, limit: int) -> int:
    """How many rows from ``row`` on hold the consecutive blocks ``t, t + d, ...`` (at most
    ``limit``): stored times are increasing and on the grid, so they match a prefix."""
    ahead = times[row : row + limit]
    gaps = ahead != t + d * np.arange(len(ahead), dtype=np.int64)
    return int(np.argmax(gaps)) if gaps.any() else len(ahead)


def _one_list(values: pa.Array, list_type: pa.DataType) -> pa.Array:
    n = len(values)
    offsets = _OFFSETS.get(n)
    if offsets is None:
        offsets = _OFFSETS[n] = pa.array([0, n], pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=list_type)


class Recording:
    """A recording directory opened for reading (validated up front, chunks lazily)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"{self.path}: no such directory")
        if not self.path.is_dir():
            raise RecordingError(f"{self.path}: not a directory")
        chan_file = self.path / CHANNELS_FILE
        if not chan_file.is_file():
            raise RecordingError(
                f"{self.path}: not a recording (no {CHANNELS_FILE}; an interrupted "
                "`router-backend record` leaves it out)"
            )
        schema, batches = _ipc_batches(chan_file)
        self.manifest = self._manifest(chan_file, schema, batches)
        self.channels: dict[str, ChannelMeta] = {
            m.name: m for g in self.manifest.groups for m in g.channels
        }
        self.order = [self.channels[n] for n in self.manifest.order]
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[str, int], ChunkFile] = OrderedDict()
        self.groups = {g.name: GroupStore(self, g) for g in self.manifest.groups}
        self.group_of = {
            m.name: self.groups[g.name] for g in self.manifest.groups for m in g.channels
        }

    def __repr__(self) -> str:
        return (
            f"<Recording {self.path} channels={len(self.channels)} groups={len(self.groups)} "
            f"span=[{self.start_ns}, {self.end_ns}) open_chunks={len(self._open)}>"
        )

    @property
    def start_ns(self) -> int:
        return self.manifest.start_ns

    @property
    def end_ns(self) -> int:
        return self.manifest.end_ns

    @staticmethod
    def _manifest(path: Path, schema: pa.Schema, batches: list[pa.RecordBatch]) -> Manifest:
        raw = (schema.metadata or {}).get(MANIFEST_KEY)
        if raw is None:
            raise RecordingError(f"{path}: no {MANIFEST_KEY.decode()} manifest in the schema")
        try:
            doc: dict[str, Any] = json.loads(raw)
            version = doc["version"]
            start, end = int(doc["start"]), int(doc["end"])
            durations = {str(k): int(v["block_ns"]) for k, v in doc["groups"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RecordingError(f"{path}: malformed manifest ({exc!r})") from None
        if version != FORMAT_VERSION:
            raise RecordingError(
                f"{path}: recording format version {version}, this server reads {FORMAT_VERSION}"
            )
        for name in (*METADATA_SCHEMA.names, "group"):
            if name not in schema.names:
                raise RecordingError(f"{path}: no {name!r} column")
        try:
            metas = metas_from_batches(batches)
        except (ValueError, TypeError) as exc:
            raise RecordingError(f"{path}: bad channel metadata ({exc})") from None
        group_names = [g for b in batches for g in b.column("group").to_pylist()]
        members: dict[str, list[ChannelMeta]] = {g: [] for g in durations}
        for meta, g in zip(metas, group_names, strict=True):
            if g not in members:
                raise RecordingError(f"{path}: channel {meta.name} is in unknown group {g!r}")
            if not meta.stride or durations[g] % meta.stride:
                raise RecordingError(
                    f"{path}: channel {meta.name}: group {g} block duration {durations[g]} ns "
                    f"is not a multiple of its stride {meta.stride}"
                )
            try:
                samples_per_block(meta.sample_rate, durations[g])
            except ValueError as exc:
                raise RecordingError(f"{path}: channel {meta.name}: {exc}") from None
            members[g].append(meta)
        groups = tuple(
            GroupInfo(g, durations[g], tuple(sorted(ms, key=lambda m: m.name)))
            for g, ms in members.items()
        )
        if len({m.name for m in metas}) != len(metas):
            raise RecordingError(f"{path}: a channel is listed twice")
        return Manifest(start, end, groups, tuple(m.name for m in metas), doc.get("source"))

    def chunk(self, group: GroupStore, start: int) -> ChunkFile:
        key = (group.info.name, start)
        with self._lock:
            found = self._open.get(key)
            if found is not None:
                self._open.move_to_end(key)
                return found
        opened = ChunkFile(group.dir / chunk_name(start), group.info)
        with self._lock:
            self._open[key] = opened
            while len(self._open) > MAX_OPEN_CHUNKS:
                self._open.popitem(last=False)
        return opened

    def close(self) -> None:
        with self._lock:
            self._open.clear()

    # ------------------------------------------------------------------ streaming

    def blocks(
        self, metas: Sequence[ChannelMeta], start: int, end: int
    ) -> tuple[pa.Schema, int, Generator[pa.RecordBatch, None, None]]:
        """Schema, block duration and the one-row blocks from ``floor(start / D) * D`` while
        block start < ``end`` (the caller checked the span against the recording)."""
        metas = sorted(metas, key=lambda m: m.name)
        block_ns = block_duration(m.stride or 0 for m in metas)
        schema = stream_schema(metas)
        parts: dict[str, _Part] = {}
        for m in metas:
            group = self.group_of[m.name]
            part = parts.get(group.info.name)
            if part is None:
                part = parts[group.info.name] = _Part(group, [], [], [], [], False)
            part.names.append(m.name)
            part.types.append(schema.field(m.name).type)
            part.rates.append(m.sample_rate)
            part.stored.append(samples_per_block(m.sample_rate, group.block_ns))
        for part in parts.values():
            part.whole = part.names == [c.name for c in part.group.info.channels]
        first = start // block_ns * block_ns
        return schema, block_ns, self._iter(schema, block_ns, list(parts.values()), first, end)

    def _iter(
        self, schema: pa.Schema, d: int, parts: list[_Part], first: int, end: int
    ) -> Generator[pa.RecordBatch, None, None]:
        names = schema.names[1:]
        samples = {
            name: rate * d // NS for p in parts for name, rate in zip(p.names, p.rates, strict=True)
        }
        null_cols: dict[str, pa.Array] = {}

        def nulls(name: str, list_type: pa.DataType) -> pa.Array:
            col = null_cols.get(name)
            if col is None:
                col = null_cols[name] = _one_list(
                    pa.nulls(samples[name], list_type.value_type), list_type
                )
            return col

        single = parts[0] if len(parts) == 1 and parts[0].group.block_ns == d else None
        t = first
        while t < end:
            if single is not None:
                # one group at its own block duration: runs of stored rows go out as
                # zero-copy multi-row slices, runs of missing rows as one null batch
                left = -(-(end - t) // d)
                loc = single.group.locate(t)
                if loc is not None:
                    batch, row, times = loc
                    k = _run_length(times, row, t, d, left)
                    out = batch.slice(row, k)
                    yield out if single.whole else out.select(["time", *single.names])
                    t += k * d
                    continue
                k = 1
                while k < min(left, MAX_GAP_ROWS) and single.group.locate(t + k * d) is None:
                    k += 1
                yield blocks_batch(schema, [t + i * d for i in range(k)], {}, samples)
                t += k * d
                continue
            columns: dict[str, pa.Array] = {}
            for part in parts:
                columns.update(self._part_columns(part, t, d, nulls))
            yield pa.RecordBatch.from_arrays(
                [pa.array([t], pa.int64()), *(columns[n] for n in names)], schema=schema
            )
            t += d

    @staticmethod
    def _part_columns(part: _Part, t: int, d: int, nulls: Any) -> dict[str, pa.Array]:
        """Columns of one group's channels for the output block ``[t, t + d)``."""
        g = part.group.block_ns
        # segments [batch|None, first row, its time, a, b): a coalesced run of stored
        # blocks (or of gap) covering [a, b)
        segments: list[list[Any]] = []
        s = t // g * g
        while s < t + d:
            loc = part.group.locate(s)
            a, b = max(t, s), min(t + d, s + g)
            prev = segments[-1] if segments else None
            if prev is not None and (
                (loc is None and prev[0] is None)
                or (
                    loc is not None and prev[0] is loc[0] and loc[1] == prev[1] + (s - prev[2]) // g
                )
            ):
                prev[4] = b
            else:
                segments.append([None, 0, s, a, b] if loc is None else [loc[0], loc[1], s, a, b])
            s += g
        out: dict[str, pa.Array] = {}
        if len(segments) == 1:
            batch, row, s0, a, b = segments[0]
            if batch is None:
                return {n: nulls(n, ty) for n, ty in zip(part.names, part.types, strict=True)}
            if a == s0 and b == s0 + g:  # exactly one stored block: zero-copy row slice
                return {n: batch.column(n).slice(row, 1) for n in part.names}
        for name, ty, rate, stored in zip(
            part.names, part.types, part.rates, part.stored, strict=True
        ):
            pieces = []
            for batch, row, s0, a, b in segments:
                n = (b - a) * rate // NS
                if batch is None:
                    pieces.append(pa.nulls(n, ty.value_type))
                else:
                    first = row * stored + (a - s0) * rate // NS
                    pieces.append(batch.column(name).values.slice(first, n))
            values = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
            out[name] = _one_list(values, ty)
        return out
