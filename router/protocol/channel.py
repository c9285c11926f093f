"""Channel metadata value and channel-name grammar (PROTOCOL §4.1, §7.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ChannelMeta", "split_channel_name"]

_SEP = re.compile(r"[-_]")


@dataclass(frozen=True, slots=True)
class ChannelMeta:
    """One row of a Find/Describe answer."""

    name: str
    data_type: str
    sample_rate: int
    stride: int | None = None
    max_latency: int | None = None
    publisher: str | None = None
    partition_id: str | None = None
    partition_index: int | None = None
    replay_id: str | None = None

    @property
    def domain(self) -> str:
        return split_channel_name(self.name)[0]

    @property
    def subsystem(self) -> str:
        return split_channel_name(self.name)[1]


def split_channel_name(name: str) -> tuple[str, str]:
    """``(domain, subsystem)`` of a channel name; ``ValueError`` when it has no colon.

    The domain is everything before the last colon, the subsystem everything after it up to
    the first ``-`` or ``_``.
    """
    domain, colon, rest = name.rpartition(":")
    if not colon:
        raise ValueError(f"invalid channel name {name!r}: no ':' between domain and subsystem")
    match = _SEP.search(rest)
    subsystem = rest[: match.start()] if match else rest
    return domain, subsystem
