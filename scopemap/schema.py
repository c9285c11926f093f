"""JSON Schema validation of the raw document, translated into our diagnostic codes.

The schema (``schemas/scope-map.schema.json``) is the format's contract for editors and for us.
jsonschema's own messages are generic, so each error is re-worded from its keyword and path
(unknown key with a suggestion, negative age, ``all`` not true, ...). Endpoint URLs are left to
the semantic checks, which explain *why* a URL is refused.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from scopemap.fastcheck import item_valid
from scopemap.yamlsrc import Path as NodePath

SCHEMA_NAME = "scope-map.schema.json"

# (code, message, path, is_key)
Finding = tuple[str, str, NodePath, bool]


def schema_path() -> Path:
    """The schema file: the source tree first, else the copy inside the installed wheel."""
    src = Path(__file__).resolve().parents[1] / "schemas" / SCHEMA_NAME
    if src.is_file():
        return src
    return Path(str(resources.files("scopemap") / "_schemas" / SCHEMA_NAME))


@cache
def load_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return data


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "mapping"


def _where(path: NodePath) -> str:
    return "/".join(str(p) for p in path) or "top level"


def suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(allowed)
    return f"unknown key '{key}' in {_context(allowed)}; {hint}"


def _context(allowed: list[str]) -> str:
    if "scopes" in allowed and "retention" in allowed:
        return "endpoint"
    if "newest" in allowed:
        return "retention"
    if "all" in allowed:
        return "scope entry"
    if "start" in allowed:
        return "replay"
    return "replay_ids item"


def validate(doc: Any) -> Iterator[Finding]:
    """Yield findings for ``doc``; nothing when it matches the schema.

    Only the top-level items the fast check cannot vouch for go through jsonschema (keys
    kept, so paths are unchanged): one bad endpoint in a 100,000-endpoint map costs the
    explanation of that endpoint, not a schema walk of the whole map."""
    target = doc
    if isinstance(doc, dict) and doc:  # one pass: fast_valid(doc) is "nothing failing"
        failing = {k: v for k, v in doc.items() if not item_valid(k, v)}
        if not failing:
            return
        target = failing
    for err in _validator().iter_errors(target):
        yield from _translate(err)


def _translate(err: Any) -> Iterator[Finding]:
    path: NodePath = tuple(err.absolute_path)
    keyword = err.validator
    instance = err.instance
    if keyword == "propertyNames" or "propertyNames" in err.relative_schema_path:
        return  # endpoint URLs: explained by the semantic checks (SM103)
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                yield "SM011", suggest(key, allowed), (*path, key), True
        return
    if keyword == "const" and path and path[-1] == "all":
        yield "SM105", f"'all' must be true, got {instance!r}", path, False
        return
    is_entry = len(path) >= 4 and path[-3] == "scopes" and isinstance(instance, dict)
    if keyword == "anyOf" and is_entry:
        yield (
            "SM106",
            "scope entry has none of the keys all, publisher, subsystem, channel"
            + _entry_hint(instance),
            path,
            False,
        )
        return
    if keyword == "pattern" and path and path[-1] == "direct_read":
        yield "SM103", f"direct_read must be a kafka:// URL, got {instance!r}", path, False
        return
    if len(path) >= 3 and path[-2] == "retention" and path[-1] in ("newest", "oldest"):
        number = isinstance(instance, int | float) and not isinstance(instance, bool)
        if number and (instance < 0 or math.isnan(instance)):
            msg = f"retention {path[-1]} must be a non-negative age in seconds, got {instance}"
            yield "SM102", msg, path, False
            return
        msg = f"retention {path[-1]} must be a number of seconds or .inf, got {instance!r}"
        yield "SM010", msg, path, False
        return
    if keyword == "required":
        yield "SM010", f"{_where(path)}: {err.message}", path, False
        return
    if keyword == "type":
        expected = err.validator_value
        if isinstance(expected, list):
            expected = " or ".join(expected)
        msg = f"{_where(path)}: expected {_plain(expected)}, got {_type_name(instance)}"
        yield "SM010", msg, path, False
        return
    if keyword == "minProperties" and not path:
        yield "SM010", "the scope map lists no endpoint", path, False
        return
    yield "SM010", f"{_where(path)}: {err.message}", path, False


def _plain(expected: str) -> str:
    return expected.replace("object", "mapping").replace("array", "list")


def _entry_hint(entry: dict[str, Any]) -> str:
    if "subsystems" in entry or "channels" in entry:
        return " ('subsystems'/'channels' lists need a 'publisher')"
    return ""
