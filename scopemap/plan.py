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
    """A Stream request: channels over ``[start, end)`` in GPS ns; ``start`` None is live,
    ``end`` None open-ended; optional replay arguments as in the protocol.

    >>> live = StreamRequest(("H1:GDS-CALIB_STRAIN",), None, None)
    >>> live.start is None and live.end is None and live.replay_id is None
    True
    """

    channels: tuple[str, ...]
    start: int | None
    end: int | None
    replay_id: str | None = None
    replay_start: int | None = None
    replay_end: int | None = None


@dataclass(frozen=True)
class DescribeRequest:
    """A Describe request: the named channels' metadata at ``time`` (GPS ns; None: now).

    >>> DescribeRequest(("H1:GDS-CALIB_STRAIN",), None).time is None
    True
    """

    channels: tuple[str, ...]
    time: int | None
    replay_id: str | None = None


@dataclass(frozen=True)
class FindRequest:
    """Find and Count share their routing (the pattern is never narrowed).

    >>> FindRequest(time=None)
    FindRequest(time=None, replay_id=None)
    """

    time: int | None
    replay_id: str | None = None


@dataclass(frozen=True)
class PublishRequest:
    """Publish and Partition: routed by publisher authority only.

    >>> PublishRequest("H1-lldd").publisher_id
    'H1-lldd'
    """

    publisher_id: str
    replay_id: str | None = None


# --------------------------------------------------------------------------- plans


class Reason(str, Enum):  # noqa: UP042 (str() of members is part of the contract)
    """Why a (channel, time range) cannot be served. Stable strings, shown to clients.

    >>> Reason.NO_LIVE.value
    'no endpoint claiming this channel serves live data'
    """

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

    >>> group = ChannelGroup(("H1:A-B",), ("grpc://a.example.org:31206", "grpc://b:31206"))
    >>> group.endpoints[0]  # the preferred replica
    'grpc://a.example.org:31206'
    """

    channels: tuple[str, ...]
    endpoints: tuple[str, ...]
    direct_read: tuple[str, ...] = ()


@dataclass(frozen=True)
class Uncovered:
    """A part of a request no endpoint can serve, and why.

    >>> gap = Uncovered(("L1:C-D",), 0, 10**9, Reason.NO_SCOPE)
    >>> f"{', '.join(gap.channels)}: {gap.reason.value}"
    'L1:C-D: no endpoint claims this channel'
    """

    channels: tuple[str, ...]
    start: int | None
    end: int | None
    reason: Reason


@dataclass(frozen=True)
class StreamSlice:
    """A time slice ``[start, end)`` of a stream, with its channel groups.

    ``start``/``end`` are client-facing times (what the downstream ticket carries).
    Slices of one plan are ordered, non-overlapping and tile the request exactly.

    >>> s = StreamSlice(0, 10**9, (ChannelGroup(("H1:A-B",), ("grpc://a:31206",)),))
    >>> s.end - s.start, len(s.groups)
    (1000000000, 1)
    """

    start: int | None
    end: int | None
    groups: tuple[ChannelGroup, ...]


@dataclass(frozen=True)
class StreamPlan:
    """A stream's plan: ordered slices tiling the request, and what cannot be served.

    >>> request = StreamRequest(("H1:A-B",), 0, 2 * 10**9)
    >>> group = ChannelGroup(("H1:A-B",), ("grpc://a:31206",))
    >>> StreamPlan(request, (StreamSlice(0, 2 * 10**9, (group,)),)).complete
    True
    """

    request: StreamRequest
    slices: tuple[StreamSlice, ...]
    uncovered: tuple[Uncovered, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.uncovered


@dataclass(frozen=True)
class DescribePlan:
    """A Describe's plan: channel groups, each asked of one of its replicas.

    >>> from scopemap import RoutingIndex, load_text, plan_describe
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 0, oldest: 600}
    ... grpc://archive.example.org:31206:
    ...   scopes: {H1: [{subsystem: GDS}]}
    ...   retention: {newest: 300, oldest: .inf}
    ... ''').scope_map)
    >>> now = 1_400_000_000_000_000_000
    >>> at = now - 400 * 10**9  # both retain it; the subsystem claim is more specific
    >>> p = plan_describe(index, DescribeRequest(("H1:GDS-CALIB_STRAIN", "H1:LSC-X"), at), now)
    >>> for g in p.groups:
    ...     print(g.channels, g.endpoints)
    ('H1:LSC-X',) ('grpc://live.example.org:31206',)
    ('H1:GDS-CALIB_STRAIN',) ('grpc://archive.example.org:31206',)
    """

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
    """One disjoint scope group: ask exactly one of ``endpoints`` (replicas, preferred first).

    >>> FindTarget(("grpc://a:31206", "grpc://b:31206")).endpoints[0]
    'grpc://a:31206'
    """

    endpoints: tuple[str, ...]
    replay_id: str | None = None
    time: int | None = None


@dataclass(frozen=True)
class FindPlan:
    """A Find or Count's plan: one target per disjoint scope set, so replicas are asked once
    and nothing is counted twice.

    >>> from scopemap import RoutingIndex, load_text, plan_find
    >>> index = RoutingIndex(load_text('''
    ... grpc://a.example.org:31206: {scopes: {H1: [{all: true}]}, retention: {}}
    ... grpc://b.example.org:31206: {scopes: {H1: [{all: true}]}, retention: {}}
    ... grpc://c.example.org:31206: {scopes: {L1: [{all: true}]}, retention: {}}
    ... ''').scope_map)
    >>> for t in plan_find(index, FindRequest(None), 1_400_000_000_000_000_000).targets:
    ...     print(t.endpoints)
    ('grpc://a.example.org:31206', 'grpc://b.example.org:31206')
    ('grpc://c.example.org:31206',)
    """

    request: FindRequest
    targets: tuple[FindTarget, ...]


@dataclass(frozen=True)
class PublishPlan:
    """Where a publisher's Publish and Partition go: the first endpoint listing it in
    ``allowed_publishers``, or None.

    >>> from scopemap import RoutingIndex, load_text, plan_publish
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {}
    ...   allowed_publishers: [H1-lldd]
    ... ''').scope_map)
    >>> now = 1_400_000_000_000_000_000
    >>> plan_publish(index, PublishRequest("H1-lldd"), now).endpoint
    'grpc://live.example.org:31206'
    >>> print(plan_publish(index, PublishRequest("nobody"), now).endpoint)
    None
    """

    request: PublishRequest
    endpoint: str | None  # None: no endpoint is authoritative for this publisher


Plan = StreamPlan | DescribePlan | FindPlan | PublishPlan
