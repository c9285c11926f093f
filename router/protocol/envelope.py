"""Request envelopes (PROTOCOL §2): typed values, JSON encoding, validated parsing.

Parsing validates against our own JSON Schemas (``schemas/requests/*.json``), then reports
undeclared arguments the way upstream does, then applies semantic checks (channel names,
rate bounds, time order, replay arguments).  Every failure is one of our errors with a text
that names the field and the problem.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from pathlib import Path
from typing import Any, TypeAlias

import jsonschema
from jsonschema.exceptions import ValidationError

from router.protocol.errors import (
    InvalidRequestError,
    ReplayError,
    UnknownArgumentsError,
    name_list,
    shorten,
)
from router.protocol.reqid import sanitize_request_id

__all__ = [
    "ARGS_CLASSES",
    "REQUEST_KINDS",
    "SCHEMA_VERSION",
    "Args",
    "DescribeArgs",
    "Envelope",
    "FindArgs",
    "PublishArgs",
    "StreamArgs",
    "parse_envelope",
    "schema_dir",
]

SCHEMA_VERSION = "0.5.0"
REQUEST_KINDS = ("Find", "Count", "Describe", "Stream", "Publish", "Partition")
MAX_RATE = 4294967295
#: JSON nesting accepted by default (an envelope needs 3: object, args, a list)
MAX_DEPTH = 32
_ERRORS_EXAMINED = 50  # schema errors looked at to pick the most relevant one


@dataclass(frozen=True, slots=True)
class FindArgs:
    """Arguments of Find and Count (field order = the client's key order)."""

    pattern: str = ".*"
    data_type: tuple[str, ...] = ()
    min_rate: int = 0
    max_rate: int = MAX_RATE
    publisher: tuple[str, ...] = ()
    time: int | None = None
    replay_id: str | None = None


@dataclass(frozen=True, slots=True)
class DescribeArgs:
    channels: tuple[str, ...] = ()
    time: int | None = None
    replay_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamArgs:
    channels: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    replay_start: int | None = None
    replay_end: int | None = None
    replay_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishArgs:
    """Arguments of Publish and Partition."""

    publisher_id: str = ""
    replay_id: str | None = None


Args: TypeAlias = FindArgs | DescribeArgs | StreamArgs | PublishArgs

ARGS_CLASSES: dict[str, type[Args]] = {
    "Find": FindArgs,
    "Count": FindArgs,
    "Describe": DescribeArgs,
    "Stream": StreamArgs,
    "Publish": PublishArgs,
    "Partition": PublishArgs,
}
_TUPLE_FIELDS = frozenset({"data_type", "publisher", "channels"})


def _args_json(args: Args) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _normalise(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k in _TUPLE_FIELDS and v is not None else v for k, v in changes.items()}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One request.  ``version`` is the sender's schema version (``None``: pre-versioning)."""

    request: str
    args: Args
    version: str | None = SCHEMA_VERSION
    #: the id of the client operation a router-issued ticket belongs to (top-level key
    #: ``request_id``; not part of the request, never sent downstream)
    request_id: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.request not in ARGS_CLASSES:
            raise ValueError(f"unknown request kind {self.request!r}")
        if not isinstance(self.args, ARGS_CLASSES[self.request]):
            raise TypeError(
                f"{self.request} takes {ARGS_CLASSES[self.request].__name__}, "
                f"got {type(self.args).__name__}"
            )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"request": self.request, "args": _args_json(self.args)}
        if self.version is not None:
            doc["version"] = self.version
        return doc

    def encode(self) -> bytes:
        """JSON bytes as the client writes them: every argument present (null when absent),
        in the client's order; ``version`` omitted only when it is ``None``."""
        return json.dumps(self.to_json()).encode()

    def ticket(self, request_id: str) -> bytes:
        """The request as a ticket the router issues: :meth:`encode` plus ``request_id``
        (an extra top-level key, tolerated by every server: PROTOCOL §2.1)."""
        return json.dumps({**self.to_json(), "request_id": request_id}).encode()

    def replace(self, **arg_changes: Any) -> Envelope:
        """A copy with some arguments changed (lists become tuples)."""
        return Envelope(
            self.request,
            dataclasses.replace(self.args, **_normalise(arg_changes)),
            self.version,
            self.request_id,
        )


# --------------------------------------------------------------------------- schemas


def schema_dir() -> Path:
    """Folder of the request schemas: the source tree if present, else the wheel copy."""
    src = Path(__file__).resolve().parents[2] / "schemas" / "requests"
    if (src / "envelope.json").is_file():
        return src
    return Path(str(resources.files("router.protocol") / "_schemas" / "requests"))


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((schema_dir() / f"{name}.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


@functools.cache
def _declared(kind: str) -> frozenset[str]:
    schema = _validator(kind.lower()).schema
    return frozenset(schema.get("properties", {}))


_ANNOTATIONS = frozenset({"description", "title", "$comment"})


@functools.cache
def _string_lists(kind: str) -> tuple[str, ...]:
    """The arguments whose schema is exactly "an array of strings" (nothing else but
    annotations). Any list of strings is as valid there as an empty one, so validation may
    look at ``[]`` instead of every channel name (jsonschema costs ~5 us per item)."""
    names = []
    for name, sub in _validator(kind.lower()).schema.get("properties", {}).items():
        items = sub.get("items")
        if (
            set(sub) - _ANNOTATIONS == {"type", "items"}
            and sub["type"] == "array"
            and isinstance(items, dict)
            and set(items) - _ANNOTATIONS == {"type"}
            and items["type"] == "string"
        ):
            names.append(name)
    return tuple(names)


def _validation_view(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw``, with lists of strings emptied where that cannot change the verdict."""
    view = raw
    for name in _string_lists(kind):
        value = raw.get(name)
        if isinstance(value, list) and value and all(map(isinstance, value, repeat(str))):
            if view is raw:
                view = dict(raw)
            view[name] = []
    return view


def _path(prefix: str, error: ValidationError) -> str:
    out = prefix
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _first_error(validator: jsonschema.protocols.Validator, doc: Any) -> ValidationError | None:
    found = itertools.islice(validator.iter_errors(doc), _ERRORS_EXAMINED)
    errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    best = jsonschema.exceptions.best_match(errors)
    return best if best is not None else errors[0]


# --------------------------------------------------------------------------- parsing


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests lists/objects deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _decode(data: bytes, max_depth: int) -> Any:
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"invalid request: not UTF-8 text ({exc.reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"invalid request: not JSON ({exc})") from None
    except RecursionError:
        doc = None  # nested beyond the interpreter's limit: certainly beyond ours
    else:
        # a document with no more brackets than the limit cannot nest deeper than it
        brackets = text.count("[") + text.count("{")
        if brackets <= max_depth or not _depth_exceeds(doc, max_depth):
            return doc
    raise InvalidRequestError(f"invalid request: JSON nested deeper than {max_depth} levels")


def _schema_text(err: ValidationError) -> str:
    # jsonschema's messages quote the offending value: keep them short
    return shorten(err.message, 200)


def _check_list_sizes(doc: dict[str, Any], max_items: int) -> None:
    """Refuse an argument list over ``max_items`` before any validation work on it."""
    args = doc.get("args")
    if not isinstance(args, dict):
        return
    kind = doc.get("request")
    kind = kind if isinstance(kind, str) and kind in ARGS_CLASSES else ""
    for key, value in args.items():
        if isinstance(value, list) and len(value) > max_items:
            where = shorten(str(key), 40)
            raise InvalidRequestError(
                f"invalid {kind + ' ' if kind else ''}request: args.{where}: {len(value)} "
                f"entries, limit {max_items} (max_channels)"
            )


def parse_envelope(
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_pattern: int | None = None,
    max_items: int | None = None,
) -> Envelope:
    """Decode and validate a request; raises InvalidRequestError, UnknownArgumentsError or
    ReplayError with a message naming the field and the problem. Duplicate channel names are
    dropped (the first occurrence is kept, as upstream does). ``max_depth``: JSON nesting
    refused beyond it; ``max_pattern``: longer Find/Count patterns are refused before they
    are compiled (compiling costs about 1 s per MB); ``max_items``: longer argument lists
    (channels...) are refused right after decoding."""
    doc = _decode(data, max_depth)
    if not isinstance(doc, dict):
        raise InvalidRequestError(
            f"invalid request: expected a JSON object, got {type(doc).__name__}"
        )
    if max_items is not None:
        _check_list_sizes(doc, max_items)
    err = _first_error(_validator("envelope"), doc)
    if err is not None:
        where = _path("", err).lstrip(".") or "envelope"
        raise InvalidRequestError(f"invalid request: {where}: {_schema_text(err)}")
    kind: str = doc["request"]
    raw: dict[str, Any] = doc["args"]
    version = doc.get("version")
    err = _first_error(_validator(kind.lower()), _validation_view(kind, raw))
    if err is not None:
        raise InvalidRequestError(
            f"invalid {kind} request: {_path('args', err)}: {_schema_text(err)}"
        )
    unknown = sorted(set(raw) - _declared(kind))
    if unknown:
        origin = f"request schema {version}" if version else "request predates schema versioning"
        raise UnknownArgumentsError(
            f"unknown {kind} argument(s): {name_list(unknown)} "
            f"({origin}; server schema {SCHEMA_VERSION})"
        )
    ticket_id = doc.get("request_id")
    request_id = sanitize_request_id(ticket_id) if isinstance(ticket_id, str) else None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, float):
            raise InvalidRequestError(
                f"invalid {kind} request: args.{key}: {value!r} is not an integer"
            )
        if key == "channels" and isinstance(value, list):
            value = list(dict.fromkeys(value))  # duplicates dropped, first occurrence kept
        values[key] = value
    args = ARGS_CLASSES[kind](**_normalise(values))
    _check(kind, args, max_pattern)
    return Envelope(kind, args, version, request_id)


def _bad(kind: str, where: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid {kind} request: args.{where}: {problem}")


def _check(kind: str, args: Args, max_pattern: int | None = None) -> None:
    if isinstance(args, FindArgs):
        if max_pattern is not None and len(args.pattern) > max_pattern:
            raise _bad(
                kind,
                "pattern",
                f"{len(args.pattern)} characters, limit {max_pattern}: "
                f"{shorten(repr(args.pattern), 60)}",
            )
        if args.min_rate > args.max_rate:
            raise _bad(
                kind, "min_rate", f"min_rate {args.min_rate} exceeds max_rate {args.max_rate}"
            )
        try:
            re.compile(args.pattern)
        except re.error as exc:
            pattern = shorten(repr(args.pattern), 200)
            raise _bad(kind, "pattern", f"invalid regular expression {pattern}: {exc}") from None
        except (OverflowError, RecursionError, MemoryError):
            raise _bad(
                kind,
                "pattern",
                f"regular expression too large or too deeply nested to compile "
                f"({len(args.pattern)} characters)",
            ) from None
    if isinstance(args, DescribeArgs | StreamArgs):
        bad = [c for c in args.channels if ":" not in c]
        if bad:
            names = name_list([repr(c) for c in bad])
            raise _bad(
                kind, "channels", f"channel name(s) without ':' (domain:subsystem...): {names}"
            )
    if isinstance(args, StreamArgs):
        if args.start is not None and args.end is not None and args.start > args.end:
            raise _bad(kind, "start", f"start {args.start} is after end {args.end}")
        check_replay_args(args)


def check_replay_args(args: StreamArgs) -> None:
    """Upstream's replay-argument rules (PROTOCOL §8.8), as ReplayError."""
    has_window = args.replay_start is not None or args.replay_end is not None
    if args.replay_id is not None and has_window:
        raise ReplayError("replay_id and replay_start/replay_end are mutually exclusive")
    if has_window and (args.replay_start is None or args.replay_end is None):
        raise ReplayError("both replay_start and replay_end must be provided together")
    if (
        args.replay_start is not None
        and args.replay_end is not None
        and args.replay_start >= args.replay_end
    ):
        raise ReplayError("replay_start must be less than replay_end")
