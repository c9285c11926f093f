"""A fast, conservative structural check: True only when the schema would find nothing.

jsonschema walks every node through ``$ref``/``anyOf`` machinery, which costs seconds on a
10 000-endpoint map. Valid maps are the common case, so the loader first runs this plain
walk; only when it says "not sure" does the full schema validation run to explain what is
wrong. A property test holds the promise: ``fast_valid(doc)`` implies no schema finding.
"""

from __future__ import annotations

import re
from typing import Any

_ENDPOINT_KEYS = frozenset({"scopes", "retention", "replay_ids", "allowed_publishers"})
_ENTRY_KEYS = frozenset(
    {"all", "publisher", "subsystems", "channels", "subsystem", "channel", "direct_read", "replay"}
)
_FORMS = ("all", "publisher", "subsystem", "channel")
_INF = re.compile(r"^[+]?([Ii][Nn][Ff]|[Ii]nfinity|INFINITY)$")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _age(v: Any) -> bool:
    if v.__class__ is int or v.__class__ is float:
        return not v < 0  # NaN passes, as with the schema's "minimum"
    if _number(v):
        return not v < 0  # NaN passes, as with the schema's "minimum"
    return isinstance(v, str) and _INF.match(v) is not None


def _entry(e: Any) -> bool:
    if not isinstance(e, dict):
        return False
    if len(e) == 1 and (isinstance(e.get("subsystem"), str) or e.get("all") is True):
        return True  # the usual entries, in short
    if not e.keys() <= _ENTRY_KEYS:
        return False
    if not any(k in e for k in _FORMS):
        return False
    for key, value in e.items():
        if key == "all":
            ok = value is True
        elif key in ("subsystems", "channels"):
            ok = _strings(value)
        elif key == "direct_read":
            ok = isinstance(value, str) and value.startswith("kafka://")
        else:
            ok = isinstance(value, str)
        if not ok:
            return False
    return True


def _scopes(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    for v in s.values():  # loops, not all(generator): this runs for every endpoint
        if not isinstance(v, list):
            return False
        for e in v:
            if not _entry(e):
                return False
    return True


def _replay_item(item: Any) -> bool:
    if isinstance(item, str):
        return True
    return (
        isinstance(item, dict)
        and item.keys() <= {"id", "scopes"}
        and isinstance(item.get("id"), str)
        and ("scopes" not in item or _scopes(item["scopes"]))
    )


def _endpoint(ep: Any) -> bool:
    if not isinstance(ep, dict) or not ep.keys() <= _ENDPOINT_KEYS:
        return False
    if "scopes" not in ep or "retention" not in ep or not _scopes(ep["scopes"]):
        return False
    r = ep["retention"]
    if not isinstance(r, dict) or not r.keys() <= {"newest", "oldest"}:
        return False
    for v in r.values():
        if not _age(v):
            return False
    if "replay_ids" in ep and not (
        isinstance(ep["replay_ids"], list) and all(_replay_item(i) for i in ep["replay_ids"])
    ):
        return False
    return "allowed_publishers" not in ep or _strings(ep["allowed_publishers"])


def _replays(r: Any) -> bool:
    if r is None:
        return True
    return isinstance(r, dict) and all(
        isinstance(v, dict)
        and v.keys() == {"start", "end"}
        and _number(v["start"])
        and _number(v["end"])
        for v in r.values()
    )


def item_valid(key: str, value: Any) -> bool:
    """One top-level item (an endpoint, or ``replays``) as :func:`fast_valid` judges it."""
    return _replays(value) if key == "replays" else _endpoint(value)


def fast_valid(doc: Any) -> bool:
    if not isinstance(doc, dict) or not doc:
        return False
    return all(item_valid(k, v) for k, v in doc.items())
