"""Hypothesis strategies, in layers: scope-map specs → YAML text → ScopeMap → requests → now.

The universe is deliberately small (two domains, three subsystems, a handful of channels and
retention values on a few round ages) so random maps overlap, carve out and leave gaps often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import strategies as st

from scopemap import RoutingIndex, ScopeMap, StreamRequest, load_text

S = 1_000_000_000
DOMAINS = ("H1", "L1")
SUBSYSTEMS = ("GDS", "LSC", "PEM")
CHANNELS = (
    "H1:GDS-CALIB_STRAIN",
    "H1:GDS-A",
    "H1:LSC-DARM",
    "H1:PEM-X",
    "L1:GDS-CALIB_STRAIN",
    "L1:LSC-DARM",
    "L1:PEM_Y",
    "V1:Hrec_hoft",  # a domain nobody claims
)
AGES = (0, 100, 300, 600, 900, 3600)
NOW_BASE = 1_400_000_000 * S


@dataclass(frozen=True)
class EndpointSpec:
    scopes: dict[str, list[str]]  # domain -> YAML flow entries
    newest: int
    oldest: float


def entry_specs(domain: str) -> st.SearchStrategy[str]:
    chans = [c for c in CHANNELS if c.startswith(domain + ":")]
    return st.one_of(
        st.just("{all: true}"),
        st.just("{all: true}"),
        st.sampled_from([f"{{subsystem: {s}}}" for s in SUBSYSTEMS]),
        st.sampled_from([f"{{channel: '{c}'}}" for c in chans]),
    )


@st.composite
def endpoint_specs(draw: st.DrawFn) -> EndpointSpec:
    domains = draw(st.sampled_from([DOMAINS, DOMAINS, DOMAINS[:1], DOMAINS[1:]]))
    scopes = {
        d: draw(st.lists(entry_specs(d), min_size=1, max_size=2, unique=True)) for d in domains
    }
    newest = draw(st.sampled_from((0, 0, *AGES)))
    oldest = draw(st.sampled_from([a for a in (*AGES, math.inf) if a >= newest]))
    return EndpointSpec(scopes, newest, oldest)


def render(specs: list[EndpointSpec]) -> str:
    lines = []
    for i, ep in enumerate(specs):
        lines.append(f"grpc://ep{i}.example.org:{31000 + i}:")
        lines.append("  scopes:")
        for domain, entries in ep.scopes.items():
            lines.append(f"    {domain}: [{', '.join(entries)}]")
        oldest = ".inf" if math.isinf(ep.oldest) else str(int(ep.oldest))
        lines.append(f"  retention: {{newest: {ep.newest}, oldest: {oldest}}}")
    return "\n".join(lines) + "\n"


@st.composite
def scope_map_texts(draw: st.DrawFn, max_endpoints: int = 6) -> str:
    specs = draw(st.lists(endpoint_specs(), min_size=2, max_size=max_endpoints))
    return render(specs)


@st.composite
def scope_maps(draw: st.DrawFn, max_endpoints: int = 6) -> ScopeMap:
    text = draw(scope_map_texts(max_endpoints))
    result = load_text(text, "generated.yaml")
    assert result.scope_map is not None, result.diagnostics
    return result.scope_map


def indexes(max_endpoints: int = 5) -> st.SearchStrategy[RoutingIndex]:
    return scope_maps(max_endpoints).map(RoutingIndex)


def now_ns() -> st.SearchStrategy[int]:
    """GPS now around 1.4e18 ns, rarely on a whole second."""
    return st.integers(0, 10_000 * S - 1).map(lambda x: NOW_BASE + x)


@st.composite
def stream_requests(draw: st.DrawFn, now: int) -> StreamRequest:
    pool = st.sampled_from(CHANNELS[:-1]) | st.sampled_from(CHANNELS)  # V1: rarely
    channels = tuple(draw(st.lists(pool, min_size=0, max_size=6)))
    live = draw(st.integers(0, 9)) == 0
    if live:
        return StreamRequest(channels, None, None)
    # Ages near retention bounds (so ranges straddle them) or anywhere.
    ages = st.one_of(
        st.sampled_from([*AGES, 1200, 5000]).map(lambda a: a * S),
        st.integers(-200 * S, 5000 * S),
    )
    back = draw(ages)
    start = now - back + draw(st.sampled_from([0, 0, 1, -1, 123_456_789]))
    if draw(st.integers(0, 4)) == 0:
        return StreamRequest(channels, start, None)
    end_back = draw(ages.filter(lambda a: a < back))
    end = now - end_back + draw(st.sampled_from([0, 0, 1, -1]))
    return StreamRequest(channels, start, max(end, start + 1))


# --------------------------------------------------------------------------- mutated maps

_HOSTILE_SNIPPETS = (
    "!!python/object/apply:os.system ['echo pwned']",
    "!!python/object:builtins.dict {}",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "!!omap [a: 1]",
    "!custom x",
    "&anchor {all: true}",
    "*undefined",
    "{<<: [*anchor]}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "'\x00'",
    '"\\ud800"',
    "1e999",
    ".nan",
    "-.inf",
    "~",
)


def _alias_bomb(levels: int, fan: int) -> str:
    lines = [f"b0: &b0 [{', '.join(['x'] * fan)}]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fan)}]")
    return "\n".join(lines) + "\n"


@st.composite
def mutated_map_bytes(draw: st.DrawFn) -> bytes:
    """A scope map as bytes, mutated the ways a careless or hostile author would: hostile
    tags, aliases and merge keys, alias bombs, deep nesting, cut text, non-UTF-8 bytes,
    repeated (large) content."""
    text = draw(scope_map_texts())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["insert", "anchor", "bomb", "deep", "cut", "repeat"]))
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(_HOSTILE_SNIPPETS)) + text[at:]
        elif op == "anchor":
            text = text.replace("{all: true}", "&all {all: true}", 1).replace(
                "{all: true}", "*all", 1
            )
            text += "grpc://merged.example.org:1:\n  <<: *nope\n"
        elif op == "bomb":
            levels = draw(st.integers(min_value=2, max_value=9))
            fan = draw(st.integers(min_value=2, max_value=12))
            text = _alias_bomb(levels, fan) + text
        elif op == "deep":
            depth = draw(st.integers(min_value=10, max_value=3000))
            text = text[:at] + "[" * depth + "]" * depth + text[at:]
        elif op == "cut":
            text = text[:at]
        elif op == "repeat":
            text = text * draw(st.integers(min_value=2, max_value=50))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data
