"""Plan values: what the planner returns and the router executes.

These are pure, frozen values. Times are integer GPS nanoseconds; intervals are half-open
``[start, end)``; ``None`` as a start means "now / live", ``None`` as an end means "open-ended".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# --------------------------------------------------------------------------- requests
# scopemap has its own request values so that it never imports the wire layer.


@dataclass(frozen=True)
class StreamRequest:
    channels: tuple[str, ...]
    start: int | None
    end: int | None
    replay_id: str | None = None
    replay_start: int | None = None
    replay_end: int | None = None


@dataclass(frozen=True)
class DescribeRequest:
    channels: tuple[str, ...]
    time: int | None
    replay_id: str | None = None


@dataclass(frozen=True)
class FindRequest:
    """Find and Count share their routing (the pattern is never narrowed)."""

    time: int | None
    replay_id: str | None = None


@dataclass(frozen=True)
class PublishRequest:
    """Publish and Partition: routed by publisher authority only."""

    publisher_id: str
    replay_id: str | None = None


# --------------------------------------------------------------------------- plans


class Reason(str, Enum):  # noqa: UP042 (str() of members is part of the contract)
    """Why a (channel, time range) cannot be served. Stable strings, shown to clients."""

    NO_SCOPE = "no endpoint claims this channel"
    NO_RETENTION = "no endpoint claiming this channel retains this time range"
    NO_LIVE = "no endpoint claiming this channel serves live data"
    NO_REPLAY = "no endpoint serves this channel for the requested replay"


@dataclass(frozen=True)
class ChannelGroup:
    """Channels fetched together in one downstream call.

    ``endpoints`` are replicas in preference order (first = preferred); each one claims every
    channel of the group at the highest specificity and retains the whole slice.
    ``direct_read`` holds Kafka locations (``kafka://host:port``) when every channel of the
    group is tagged ``direct_read`` in the scope map (redirect mode may hand them out).
    """

    channels: tuple[str, ...]
    endpoints: tuple[str, ...]
    direct_read: tuple[str, ...] = ()


@dataclass(frozen=True)
class Uncovered:
    """A part of a request no endpoint can serve, and why."""

    channels: tuple[str, ...]
    start: int | None
    end: int | None
    reason: Reason


@dataclass(frozen=True)
class StreamSlice:
    """A time slice ``[start, end)`` of a stream, with its channel groups.

    ``start``/``end`` are client-facing times (what the downstream ticket carries).
    Slices of one plan are ordered, non-overlapping and tile the request exactly.
    """

    start: int | None
    end: int | None
    groups: tuple[ChannelGroup, ...]


@dataclass(frozen=True)
class StreamPlan:
    request: StreamRequest
    slices: tuple[StreamSlice, ...]
    uncovered: tuple[Uncovered, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.uncovered


@dataclass(frozen=True)
class DescribePlan:
    request: DescribeRequest
    groups: tuple[ChannelGroup, ...]
    uncovered: tuple[Uncovered, ...] = ()
    # Per group (parallel to ``groups``), the ``time`` its downstream ticket carries when that
    # differs from the request's (replay translation). Empty: every group uses request.time.
    group_times: tuple[int | None, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return not self.uncovered


@dataclass(frozen=True)
class FindTarget:
    """One disjoint scope group: ask exactly one of ``endpoints`` (replicas, preferred first)."""

    endpoints: tuple[str, ...]
    replay_id: str | None = None
    time: int | None = None


@dataclass(frozen=True)
class FindPlan:
    request: FindRequest
    targets: tuple[FindTarget, ...]


@dataclass(frozen=True)
class PublishPlan:
    request: PublishRequest
    endpoint: str | None  # None: no endpoint is authoritative for this publisher


Plan = StreamPlan | DescribePlan | FindPlan | PublishPlan
