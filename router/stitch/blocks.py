"""The stitcher's values: the output grid and one block on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ChannelLayout:
    """One channel of the output stream: value type, rate and samples per output block."""

    name: str
    value_type: pa.DataType
    rate: int
    samples: int


@dataclass(frozen=True, eq=False)
class Grid:
    """The output block grid: block ``duration`` (ns, the lcm of the strides) and the schema.

    Block times are multiples of ``duration``. Built from a stream schema whose channel
    fields are ``list<item: T>`` with field metadata ``rate``.
    """

    duration: int
    schema: pa.Schema
    channels: Mapping[str, ChannelLayout]
    _null_cells: dict[str, pa.Array] = field(default_factory=dict, repr=False)

    @classmethod
    def from_schema(cls, schema: pa.Schema, duration: int) -> Grid:
        if duration <= 0:
            raise ValueError(f"block duration must be positive, got {duration}")
        layouts: dict[str, ChannelLayout] = {}
        for f in schema:
            if f.name == "time":
                continue
            rate = int((f.metadata or {})[b"rate"])
            samples, rest = divmod(rate * duration, NS_PER_S)
            if rest:
                raise ValueError(
                    f"channel {f.name}: {rate} Hz does not give a whole number of samples "
                    f"per {duration} ns block"
                )
            layouts[f.name] = ChannelLayout(f.name, f.type.value_type, rate, samples)
        return cls(duration, schema, layouts)

    def floor(self, t: int) -> int:
        return t - t % self.duration

    def ceil(self, t: int) -> int:
        return -((-t) // self.duration) * self.duration

    def null_cell(self, name: str) -> pa.Array:
        """A one-row list array holding ``samples`` nulls (cached: arrays are immutable)."""
        cell = self._null_cells.get(name)
        if cell is None:
            layout = self.channels[name]
            values = pa.nulls(layout.samples, layout.value_type)
            cell = pa.ListArray.from_arrays(pa.array([0, layout.samples], pa.int32()), values)
            self._null_cells[name] = cell
        return cell

    def __repr__(self) -> str:
        return f"<Grid duration={self.duration} channels={len(self.channels)}>"


@dataclass(frozen=True, slots=True)
class Block:
    """One grid slot: ``time`` and, per channel that has data, a one-row list array (a *cell*)
    of exactly the channel's samples per block. Channels without a cell are all-null.

    ``source`` is the downstream batch the block was taken from unchanged, when there is one
    (lets the output reuse it without rebuilding).
    """

    time: int
    cells: Mapping[str, pa.Array]
    source: pa.RecordBatch | None = None

    def __repr__(self) -> str:
        return f"<Block time={self.time} channels={sorted(self.cells)}>"
