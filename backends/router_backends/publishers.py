"""Publishing variant of the mock (``--publishers FILE``): Publish properties and Kafka
partition assignment for Partition exchanges.

File format (TOML), one table per publisher id, ``[common]`` supplies defaults::

    [common]
    bootstrap_servers = "127.0.0.1:9092"   # -> "bootstrap.servers"

    ["H1-lldd"]
    dynamic = true                 # may register channels with a Partition exchange
    stride = 62_500_000            # ns, given to dynamically registered channels
    max_latency = 1_000_000_000    # ns
    max_channels = 100             # channels per partition
    properties = {"compression.type" = "lz4"}   # extra producer properties

Partition ids are ``<publisher>_<subsystem>_<k>`` (k = 0, 1, ... as partitions fill up);
indexes count from 0 within a partition.  Assignment is deterministic: new channels are
taken in name order.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from router.protocol.channel import ChannelMeta, split_channel_name
from router_backends.defaults import DEFAULT_MAX_LATENCY, DEFAULT_STRIDE

__all__ = ["Partitioner", "PublisherConfig", "load_publishers"]


@dataclass(frozen=True)
class PublisherConfig:
    id: str
    properties: Mapping[str, str] = field(default_factory=dict)
    dynamic: bool = False
    stride: int = DEFAULT_STRIDE
    max_latency: int = DEFAULT_MAX_LATENCY
    max_channels: int = 100


def _config(pid: str, table: Mapping[str, Any], where: str) -> PublisherConfig:
    known = {"bootstrap_servers", "dynamic", "stride", "max_latency", "max_channels", "properties"}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{where}: publisher {pid}: unknown key(s) {sorted(unknown)}")
    props = {str(k): str(v) for k, v in dict(table.get("properties", {})).items()}
    if "bootstrap_servers" in table:
        props.setdefault("bootstrap.servers", str(table["bootstrap_servers"]))
    if "bootstrap.servers" not in props:
        raise ValueError(f"{where}: publisher {pid}: bootstrap_servers is required")
    cfg = PublisherConfig(
        pid,
        props,
        bool(table.get("dynamic", False)),
        int(table.get("stride", DEFAULT_STRIDE)),
        int(table.get("max_latency", DEFAULT_MAX_LATENCY)),
        int(table.get("max_channels", 100)),
    )
    if cfg.stride <= 0 or cfg.max_channels <= 0:
        raise ValueError(f"{where}: publisher {pid}: stride and max_channels must be positive")
    return cfg


def load_publishers(path: str | Path) -> dict[str, PublisherConfig]:
    p = Path(path)
    doc = tomllib.loads(p.read_text(encoding="utf-8"))
    common = doc.pop("common", {})
    return {pid: _config(pid, {**common, **table}, str(p)) for pid, table in doc.items()}


class Partitioner:
    """Deterministic partition assignment, remembering what it handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fill: dict[str, int] = {}  # partition id -> next index
        self._current: dict[tuple[str, str], int] = {}  # (publisher, subsystem) -> k

    def seed(self, metas: Iterable[ChannelMeta]) -> None:
        """Record assignments that already exist."""
        with self._lock:
            for m in metas:
                if m.partition_id is not None and m.partition_index is not None:
                    nxt = max(self._fill.get(m.partition_id, 0), m.partition_index + 1)
                    self._fill[m.partition_id] = nxt

    def assign(self, cfg: PublisherConfig, metas: Sequence[ChannelMeta]) -> dict[str, ChannelMeta]:
        """New assignments for ``metas`` (publisher, stride and latency from ``cfg``)."""
        out: dict[str, ChannelMeta] = {}
        with self._lock:
            for m in sorted(metas, key=lambda m: m.name):
                subsystem = split_channel_name(m.name)[1]
                key = (cfg.id, subsystem)
                k = self._current.get(key, 0)
                pid = f"{cfg.id}_{subsystem}_{k}"
                while self._fill.get(pid, 0) >= cfg.max_channels:
                    k += 1
                    pid = f"{cfg.id}_{subsystem}_{k}"
                self._current[key] = k
                index = self._fill.get(pid, 0)
                self._fill[pid] = index + 1
                out[m.name] = replace(
                    m,
                    publisher=cfg.id,
                    partition_id=pid,
                    partition_index=index,
                    stride=m.stride or cfg.stride,
                    max_latency=m.max_latency or cfg.max_latency,
                )
        return out
