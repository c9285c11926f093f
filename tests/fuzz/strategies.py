"""Hypothesis strategies for the door fuzzer: malformed and extreme requests, built as
mutations of valid envelopes (deleted / renamed / retyped fields, extreme numbers, huge,
unicode and NUL strings, deep nesting, duplicated and many channels) plus raw bytes, over
every Flight RPC a client can call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from router.protocol.envelope import SCHEMA_VERSION

NS = 1_000_000_000
INT64_MAX = 2**63 - 1

RPCS = (
    "GetFlightInfo",
    "DoGet",
    "DoAction",
    "DoExchange",
    "DoPut",
    "GetSchema",
    "ListFlights",
    "PathDescriptor",
)


@dataclass(frozen=True)
class Probe:
    """One fuzz input: the RPC to call and its bytes (command, ticket or action body);
    ``action``: the action type for DoAction."""

    rpc: str
    payload: bytes
    action: str = ""

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them short
        head = self.payload[:120]
        more = "..." if len(self.payload) > 120 else ""
        return f"Probe({self.rpc!r}, {head!r}{more} ({len(self.payload)} B), {self.action!r})"


def gps_times(now_s: int) -> st.SearchStrategy[Any]:
    """GPS ns around the interesting edges: 0, now, the past, int64's ends and beyond."""
    now = now_s * NS
    return st.one_of(
        st.none(),
        st.integers(min_value=now - 3600 * NS, max_value=now - NS),
        st.integers(min_value=now - NS, max_value=now + NS),
        st.sampled_from([0, 1, -1, INT64_MAX, INT64_MAX + 1, -(2**63), 2**62, 2**64, now]),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def weird_values() -> st.SearchStrategy[Any]:
    """Values of the wrong type or extreme size for any field."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([INT64_MAX, INT64_MAX + 1, -(2**63) - 1, 2**4000]),
        st.floats(),
        st.text(max_size=50),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda s: s + "\x00"),
        st.sampled_from(["\ud800", "\udfff", "\x00", "H1:\u2603", "*" * 5000]),
        st.integers(min_value=1000, max_value=300_000).map(lambda n: "x" * n),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    )


def channel_lists(names: list[str]) -> st.SearchStrategy[list[Any]]:
    known = st.sampled_from(names)
    return st.one_of(
        st.lists(known, min_size=1, max_size=5),
        st.lists(known, min_size=2, max_size=4).map(lambda xs: xs + xs),  # duplicates
        st.lists(st.text(max_size=30), max_size=5),
        st.integers(min_value=1, max_value=20_000).map(
            lambda n: [f"H1:FUZZ-{i}" for i in range(n)]
        ),
        st.lists(weird_values(), max_size=4),
    )


def patterns() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "H1:.*",
                ".*",
                "H1:GDS-.*",
                "(",
                "[",
                "(a+)+$",
                "(.*.*)*Z",
                "a{4294967296}",
                "(a|aa)*b",
                "\\",
                "x" * 5000,
                ".*" * 20,
            ]
        ),
        st.text(alphabet="ab()*+?|.{}[]^$\\0123456789,", max_size=30),
        st.from_regex(r"H1:[A-Z]{1,4}.*", fullmatch=True),
    )


def valid_envelopes(names: list[str], now_s: int) -> st.SearchStrategy[dict[str, Any]]:
    """Valid-looking envelopes of every kind (times near now, known channels)."""
    now = now_s * NS
    start = st.integers(min_value=now - 600 * NS, max_value=now - 10 * NS)
    streams = st.builds(
        lambda chans, s, d: {"channels": chans, "start": s, "end": s + d},
        st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True),
        start,
        st.integers(min_value=1, max_value=2 * NS),
    )
    live = st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True).map(
        lambda c: {"channels": c, "start": None, "end": None}
    )
    find = st.builds(
        lambda p: {
            "pattern": p,
            "data_type": [],
            "min_rate": 0,
            "max_rate": 4294967295,
            "publisher": [],
            "time": None,
        },
        patterns(),
    )
    describe = st.lists(st.sampled_from(names), min_size=1, max_size=3).map(
        lambda c: {"channels": c, "time": None}
    )
    publish = st.text(max_size=12).map(lambda p: {"publisher_id": p})
    kinds = st.one_of(
        st.tuples(st.just("Stream"), st.one_of(streams, live)),
        st.tuples(st.sampled_from(["Find", "Count"]), find),
        st.tuples(st.just("Describe"), describe),
        st.tuples(st.sampled_from(["Publish", "Partition"]), publish),
    )
    return kinds.map(lambda ka: {"request": ka[0], "args": ka[1], "version": SCHEMA_VERSION})


@st.composite
def mutated(draw: st.DrawFn, names: list[str], now_s: int) -> dict[str, Any]:
    """A valid envelope with a few mutations applied."""
    doc = draw(valid_envelopes(names, now_s))
    args: dict[str, Any] = doc["args"]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        fields = sorted(args)
        op = draw(
            st.sampled_from(
                [
                    "delete",
                    "rename",
                    "retype",
                    "time",
                    "channels",
                    "pattern",
                    "replay",
                    "top",
                    "extra",
                ]
            )
        )
        if op == "delete" and fields:
            del args[draw(st.sampled_from(fields))]
        elif op == "rename" and fields:
            old = draw(st.sampled_from(fields))
            args[draw(st.text(max_size=10))] = args.pop(old)
        elif op == "retype" and fields:
            args[draw(st.sampled_from(fields))] = draw(weird_values())
        elif op == "time":
            field = draw(st.sampled_from(["start", "end", "time", "replay_start", "replay_end"]))
            args[field] = draw(gps_times(now_s))
        elif op == "channels":
            args["channels"] = draw(channel_lists(names))
        elif op == "pattern":
            args["pattern"] = draw(patterns())
        elif op == "replay":
            args["replay_id"] = draw(st.one_of(st.text(max_size=10), st.just("\ud800")))
        elif op == "top":
            key = draw(st.sampled_from(["request", "args", "version"]))
            doc[key] = draw(weird_values())
        elif op == "extra":
            args[draw(st.text(max_size=10))] = draw(weird_values())
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


def payloads(names: list[str], now_s: int) -> st.SearchStrategy[bytes]:
    """Request bytes: mostly mutated envelopes, some raw or structurally broken bytes."""
    envelope = mutated(names, now_s).map(_dumps)
    return st.one_of(
        envelope,
        envelope,
        envelope,
        envelope.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # truncated
        st.binary(max_size=200),
        st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=1, max_value=3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.sampled_from([b"", b"null", b"[]", b"{}", b'"x"', b"1e999", b"\xef\xbb\xbf{}"]),
        st.integers(min_value=900_000, max_value=2_000_000).map(
            lambda n: _dumps({"request": "Stream", "args": {"channels": "x" * n}})
        ),
    )


def probes(names: list[str], now_s: int) -> st.SearchStrategy[Probe]:
    actions = st.one_of(
        st.sampled_from(["server-info", "scope-map", "replays"]), st.text(max_size=20)
    )
    return st.builds(
        Probe,
        st.sampled_from(RPCS),
        payloads(names, now_s),
        actions,
    )
