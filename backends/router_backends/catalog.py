"""The mock's channel catalogue: channel specs with time-valued metadata, TOML loading.

TOML format (upstream's, plus ``changes``)::

    [common]                      # defaults for every channel of this file
    publisher = "MOCK_X1"
    sample_rate = 256
    data_type = "float32"
    stride = 62_500_000           # ns
    max_latency = 1_000_000_000   # ns

    ["X1:TST-RAMP"]
    func = "t - 1400000000"       # SymPy expression in t (GPS seconds)
    changes = [{time = 1400000100, sample_rate = 512}]   # GPS seconds -> new metadata

Recognised metadata keys: ``data_type``, ``sample_rate``, ``publisher``, ``partition_id``,
``partition_index``, ``stride``, ``max_latency``, ``replay_id``; extras: ``func``,
``changes``.  Unknown keys are kept (upstream does the same) and ignored.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.protocol.arrow import DTYPES
from router.protocol.channel import ChannelMeta, split_channel_name

__all__ = ["Catalog", "CatalogError", "ChannelSpec", "load_toml"]

NS = 1_000_000_000
_META_KEYS = (
    "data_type",
    "sample_rate",
    "publisher",
    "partition_id",
    "partition_index",
    "stride",
    "max_latency",
    "replay_id",
)
_CHANGE_KEYS = frozenset(_META_KEYS) - {"replay_id"}


class CatalogError(ValueError):
    """A channel definition is invalid (file, channel and problem named)."""


def channel_key(name: str) -> int:
    """A stable 64-bit key of a channel name (seeds its pseudo-random samples)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class ChannelSpec:
    """A channel: metadata versions valid from given times, and how to make its samples.

    ``versions[0]`` is valid since forever; ``versions[i]`` from ``change_times[i-1]`` (ns).
    """

    versions: tuple[ChannelMeta, ...]
    change_times: tuple[int, ...] = ()
    func: str | None = None
    key: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if len(self.versions) != len(self.change_times) + 1:
            raise ValueError("one metadata version per change time, plus the initial one")
        if list(self.change_times) != sorted(set(self.change_times)):
            raise ValueError("change times must be strictly increasing")
        if not self.key:
            object.__setattr__(self, "key", channel_key(self.name))

    @classmethod
    def simple(cls, meta: ChannelMeta, func: str | None = None) -> ChannelSpec:
        return cls((meta,), (), func)

    @property
    def name(self) -> str:
        return self.versions[0].name

    def meta_at(self, t_ns: int) -> ChannelMeta:
        """Metadata valid at ``t_ns``."""
        return self.versions[bisect.bisect_right(self.change_times, t_ns)]

    def next_change_after(self, t_ns: int) -> int | None:
        i = bisect.bisect_right(self.change_times, t_ns)
        return self.change_times[i] if i < len(self.change_times) else None


def _check_meta(meta: ChannelMeta, where: str) -> None:
    try:
        split_channel_name(meta.name)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if meta.data_type not in DTYPES:
        raise CatalogError(f"{where}: unsupported data_type {meta.data_type!r}")
    if not isinstance(meta.sample_rate, int) or meta.sample_rate <= 0:
        raise CatalogError(f"{where}: sample_rate must be a positive integer")
    if meta.stride is not None:
        if meta.stride <= 0:
            raise CatalogError(f"{where}: stride must be a positive number of ns")
        if (meta.sample_rate * meta.stride) % NS:
            raise CatalogError(
                f"{where}: a stride of {meta.stride} ns does not hold a whole number of "
                f"samples at {meta.sample_rate} Hz"
            )


def _gps_ns(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{where}: change time must be GPS seconds, got {value!r}")
    return round(value * NS) if isinstance(value, float) else value * NS


def spec_from_table(name: str, table: Mapping[str, Any], where: str) -> ChannelSpec:
    """One channel from its (common-merged) TOML table."""
    for key in ("data_type", "sample_rate"):
        if not table.get(key):
            raise CatalogError(f"{where}: channel {name}: {key} is required")
    meta = ChannelMeta(name=name, **{k: table[k] for k in _META_KEYS if k in table})
    _check_meta(meta, f"{where}: channel {name}")
    func = table.get("func")
    if func is not None and not isinstance(func, str | int | float):
        raise CatalogError(f"{where}: channel {name}: func must be an expression string")
    versions = [meta]
    times: list[int] = []
    raw_changes = table.get("changes", [])
    if not isinstance(raw_changes, list):
        raise CatalogError(f"{where}: channel {name}: changes must be an array of tables")
    for i, change in enumerate(
        sorted(raw_changes, key=lambda c: c.get("time", 0) if isinstance(c, dict) else 0)
    ):
        cw = f"{where}: channel {name}: changes[{i}]"
        if not isinstance(change, dict) or "time" not in change:
            raise CatalogError(f"{cw}: each change is a table with a time (GPS seconds)")
        unknown = set(change) - _CHANGE_KEYS - {"time"}
        if unknown:
            raise CatalogError(f"{cw}: cannot change {', '.join(sorted(unknown))}")
        t = _gps_ns(change["time"], cw)
        if times and t == times[-1]:
            raise CatalogError(f"{cw}: two changes at the same time")
        new = dataclasses.replace(versions[-1], **{k: v for k, v in change.items() if k != "time"})
        _check_meta(new, cw)
        versions.append(new)
        times.append(t)
    return ChannelSpec(tuple(versions), tuple(times), None if func is None else str(func))


def load_toml(path: str | Path) -> list[ChannelSpec]:
    """Channels of one TOML file, in file order."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{p}: {exc}") from None
    common = doc.pop("common", {})
    if not isinstance(common, dict):
        raise CatalogError(f"{p}: [common] must be a table")
    out = []
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise CatalogError(f"{p}: {name!r} is not a channel table")
        out.append(spec_from_table(name, {**common, **table}, str(p)))
    return out


class Catalog:
    """Channels in load order, looked up by name; thread-safe for readers, and for the
    single writer path (``add``) used by dynamic publishers (it swaps whole structures)."""

    def __init__(self, specs: Iterable[ChannelSpec] = ()) -> None:
        self._specs: dict[str, ChannelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise CatalogError(f"channel {spec.name} is defined twice")
            self._specs[spec.name] = spec

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[ChannelSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"Catalog({len(self._specs)} channels, domains={sorted(self.scopes())})"

    def get(self, name: str) -> ChannelSpec | None:
        return self._specs.get(name)

    def __getitem__(self, name: str) -> ChannelSpec:
        return self._specs[name]

    def add(self, spec: ChannelSpec) -> None:
        """Add or replace a channel (dynamic publishers)."""
        specs = dict(self._specs)
        specs[spec.name] = spec
        self._specs = specs

    def unknown(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n not in self._specs]

    def scopes(self) -> dict[str, list[str]]:
        """domain -> sorted subsystems seen in channel names."""
        out: dict[str, set[str]] = {}
        for name in self._specs:
            domain, subsystem = split_channel_name(name)
            out.setdefault(domain, set()).add(subsystem)
        return {d: sorted(s) for d, s in sorted(out.items())}
