"""Stable diagnostic codes. Tests and `router check --format json` consumers rely on them."""

from __future__ import annotations

from types import MappingProxyType

from scopemap.model import Severity

E, W = Severity.ERROR, Severity.WARNING

CODES = MappingProxyType(
    {
        # reading and parsing
        "SM001": (E, "the file is not valid YAML"),
        "SM002": (E, "duplicate mapping key (YAML would silently keep the last one)"),
        "SM003": (E, "the file cannot be read"),
        # structure (JSON Schema)
        "SM010": (E, "schema violation: wrong type, missing key, empty map"),
        "SM011": (E, "unknown key (the nearest valid key is suggested)"),
        # semantics
        "SM101": (E, "retention newest is greater than oldest"),
        "SM102": (E, "negative (or NaN) retention age"),
        "SM103": (
            E,
            "unparseable or unsupported URL (endpoints: grpc, grpc+tcp, grpc+tls; "
            "kafka only as direct_read)",
        ),
        "SM104": (E, "invalid channel name or subsystem in a scope entry"),
        "SM105": (E, "'all' must be the boolean true"),
        "SM106": (E, "scope entry with none of all / publisher / subsystem / channel"),
        "SM107": (E, "key ignored by this entry form (upstream silently drops it)"),
        "SM108": (E, "replay tag or replay_ids item names a replay missing from 'replays'"),
        "SM109": (E, "replay end is not after its start"),
        "SM110": (E, "the same endpoint is listed twice"),
        # warnings
        "SM201": (
            W,
            "'inf' written as a string: YAML 1.2 loaders (upstream) fail on it; write .inf",
        ),
        "SM202": (W, "retention gap: an age range no endpoint serves for a domain/scope"),
        "SM203": (W, "domain with no live endpoint (newest: 0)"),
        "SM204": (W, "scope entry that can never win (inert beside 'all: true' or repeated)"),
        "SM205": (W, "replay never referenced by any endpoint"),
    }
)


def severity_of(code: str) -> Severity:
    return CODES[code][0]
