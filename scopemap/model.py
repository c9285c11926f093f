"""The scope-map model: frozen values built by the loader, read by the index and the planner.

A scope map says which downstream endpoint claims which channels (``ScopeEntry``), over which
window of data age (``Retention``), for which replay contexts (``Replay``). Nothing here reads a
clock or a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

NS_PER_S = 1_000_000_000


class Severity(StrEnum):
    """How bad a ``Diagnostic`` is: an error refuses the map, a warning does not.

    >>> [s.value for s in Severity]
    ['error', 'warning']
    """

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a scope map. ``code`` is stable (documented in ``scopemap.codes``).

    >>> d = Diagnostic(Severity.WARNING, "SM201", "write .inf", "map.yaml", 8, 36)
    >>> d.format()
    'map.yaml:8:36: warning SM201: write .inf'
    """

    severity: Severity
    code: str
    message: str
    file: str
    line: int  # 1-based; 0 when the finding has no position (e.g. unreadable file)
    column: int  # 1-based

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.severity.value} {self.code}: {self.message}"


@dataclass(frozen=True)
class SourcePos:
    line: int
    column: int


# --------------------------------------------------------------------------- channel names


@dataclass(frozen=True)
class ChannelName:
    """``<domain>:<subsystem>[<sep><rest>]``, as ``parse_channel_name`` splits it.

    >>> parse_channel_name("L1:ISI-ETMX_ST1").subsystem
    'ISI'
    """

    domain: str
    subsystem: str
    sep: str | None
    rest: str | None


def parse_channel_name(name: str) -> ChannelName:
    """Split a channel name; the domain ends at the *last* colon. Raises ValueError.

    >>> parse_channel_name("H1:GDS-CALIB_STRAIN")
    ChannelName(domain='H1', subsystem='GDS', sep='-', rest='CALIB_STRAIN')
    >>> parse_channel_name("L1:PEM")
    ChannelName(domain='L1', subsystem='PEM', sep=None, rest=None)
    """
    domain, colon, tail = name.rpartition(":")
    if not colon:
        raise ValueError(f"invalid channel name {name!r}: expected '<domain>:<subsystem>...'")
    cut = len(tail)
    for sep in ("-", "_"):
        i = tail.find(sep)
        if i != -1 and i < cut:
            cut = i
    if cut == len(tail):
        return ChannelName(domain, tail, None, None)
    return ChannelName(domain, tail[:cut], tail[cut], tail[cut + 1 :])


# --------------------------------------------------------------------------- scope entries

EntryKind = Literal["channel", "subsystem", "all"]

# Specificity of a claim on a channel: exact channel > subsystem > domain wildcard.
SPECIFICITY: Mapping[str, int] = MappingProxyType({"channel": 3, "subsystem": 2, "all": 1})


@dataclass(frozen=True)
class ScopeEntry:
    """One claim of an endpoint inside a domain (after expanding publisher-grouped entries).

    ``value`` is the channel name for ``kind == "channel"``, the subsystem for ``"subsystem"``
    and ``None`` for ``"all"``. ``replay`` tags the entry to one replay context only.

    >>> entry = ScopeEntry("H1", "subsystem", "GDS")
    >>> entry.specificity
    2
    >>> name = "H1:GDS-CALIB_STRAIN"
    >>> entry.matches(parse_channel_name(name), name)
    True
    """

    domain: str
    kind: EntryKind
    value: str | None = None
    publisher: str | None = None
    direct_read: str | None = None
    replay: str | None = None
    source: SourcePos | None = field(default=None, compare=False, repr=False)

    @property
    def specificity(self) -> int:
        return SPECIFICITY[self.kind]

    def matches(self, channel: ChannelName, name: str) -> bool:
        if channel.domain != self.domain:
            return False
        if self.kind == "all":
            return True
        if self.kind == "subsystem":
            return channel.subsystem == self.value
        return name == self.value

    def as_upstream(self, *, redact: bool = True) -> dict[str, object]:
        """The entry as upstream's ``scope-map`` action prints it (PROTOCOL §6.2)."""
        out: dict[str, object] = {}
        if self.kind == "subsystem":
            out["subsystem"] = self.value
        elif self.kind == "channel":
            out["channel"] = self.value
        if self.publisher is not None:
            out["publisher"] = self.publisher
        if self.direct_read is not None:
            out["direct_read"] = True if redact else self.direct_read
        if self.replay is not None:
            out["replay"] = self.replay
        if self.kind == "all":
            out["all"] = True
        return out


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class Retention:
    """The window of data *age* (seconds before now) an endpoint serves.

    ``newest_s == 0`` means the endpoint reaches the present and serves live data; ``oldest_s``
    may be ``math.inf``. Values are kept as written (int or float) for the upstream JSON.

    >>> archive = Retention(newest_s=300)
    >>> archive.is_live, archive.oldest_ns
    (False, None)
    >>> archive.window_ns(1_400_000_000_500_000_000)  # [lo, hi): now truncated, minus 300 s
    (None, 1399999700000000000)
    """

    newest_s: float = 0
    oldest_s: float = math.inf
    source: SourcePos | None = field(default=None, compare=False, repr=False)

    @property
    def is_live(self) -> bool:
        return self.newest_s == 0

    @property
    def newest_ns(self) -> int:
        return round(self.newest_s * NS_PER_S)

    @property
    def oldest_ns(self) -> int | None:
        """``None`` when the endpoint looks back forever."""
        return None if math.isinf(self.oldest_s) else round(self.oldest_s * NS_PER_S)

    def window_ns(self, now_ns: int) -> tuple[int | None, int | None]:
        """Absolute half-open ``[lo, hi)`` of the instants retained at ``now_ns``.

        The boundary rule: ``N = floor(now_ns / 1e9) * 1e9`` (now truncated to a whole second),
        ``lo = N - oldest``, ``hi = N - newest``; ``None`` for an unbounded side. A live
        endpoint (newest 0) has no upper bound: it also serves the present and the future.
        """
        n = now_ns - now_ns % NS_PER_S
        oldest = self.oldest_ns
        lo = None if oldest is None else n - oldest
        hi = None if self.is_live else n - self.newest_ns
        return lo, hi

    def as_upstream(self) -> dict[str, object]:
        oldest: object = "inf" if math.isinf(self.oldest_s) else self.oldest_s
        return {"newest": self.newest_s, "oldest": oldest}


# --------------------------------------------------------------------------- endpoints, replays


@dataclass(frozen=True)
class Replay:
    """A named replay window, ``[start_ns, end_ns)`` in absolute GPS ns (YAML: seconds).

    >>> from scopemap import load_text
    >>> result = load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {}
    ...   replay_ids: [ER15]
    ... replays:
    ...   ER15: {start: 1400000000, end: 1400000100}
    ... ''')
    >>> replay = result.scope_map.replays["ER15"]
    >>> replay.start_ns, replay.end_ns
    (1400000000000000000, 1400000100000000000)
    """

    name: str
    start_ns: int
    end_ns: int
    start_s: float = 0
    end_s: float = 0
    source: SourcePos | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Endpoint:
    """One downstream. ``scopes`` are expanded entries in YAML order.

    ``replay_ids`` lists the explicit ids then the ids implied by ``replay`` tags (upstream
    order); ``replay_scopes`` holds the explicit per-replay scopes of ``replay_ids`` items.

    >>> from scopemap import load_text
    >>> endpoint = load_text('''
    ... grpc://archive.example.org:31206:
    ...   scopes: {H1: [{subsystem: GDS}], L1: [{all: true}]}
    ...   retention: {newest: 300, oldest: .inf}
    ... ''').scope_map.endpoints[0]
    >>> endpoint.url, endpoint.domains, endpoint.retention.is_live
    ('grpc://archive.example.org:31206', ('H1', 'L1'), False)
    """

    url: str
    scopes: tuple[ScopeEntry, ...]
    retention: Retention = Retention()
    replay_ids: tuple[str, ...] = ()
    replay_scopes: Mapping[str, tuple[ScopeEntry, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    allowed_publishers: tuple[str, ...] = ()
    source: SourcePos | None = field(default=None, compare=False, repr=False)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.domain for e in self.scopes))

    def narrows(self, replay_id: str) -> bool:
        """True when the endpoint has replay-specific scopes for ``replay_id`` (§8.8)."""
        return replay_id in self.replay_scopes or any(e.replay == replay_id for e in self.scopes)

    def serves_replay(self, replay_id: str) -> bool:
        return replay_id in self.replay_ids


@dataclass(frozen=True)
class ScopeMap:
    """A validated scope map: its endpoints in file order and its replay windows.

    Built by ``load_text`` / ``load_path``, never by hand-written YAML parsing; frozen, so one
    value can be shared by every request that plans on it.

    >>> from scopemap import load_text
    >>> scope_map = load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 0, oldest: 600}
    ... ''', "map.yaml").scope_map
    >>> [e.url for e in scope_map.endpoints], scope_map.file, dict(scope_map.replays)
    (['grpc://live.example.org:31206'], 'map.yaml', {})
    """

    endpoints: tuple[Endpoint, ...]
    replays: Mapping[str, Replay] = field(default_factory=lambda: MappingProxyType({}))
    file: str = "<string>"
    _by_url: Mapping[str, Endpoint] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_url", MappingProxyType({e.url: e for e in self.endpoints}))

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({d for ep in self.endpoints for d in ep.domains}))

    def endpoint(self, url: str) -> Endpoint:
        return self._by_url[url]
