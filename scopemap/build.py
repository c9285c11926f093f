"""Semantic checks and model construction from a schema-checked raw document.

The builder walks the raw document defensively: shapes the schema already rejected are
skipped here (they have their diagnostic), so each problem is reported once. It reports
semantic errors (URLs, channel names, ignored keys, replays, retention order) and, when there
are none, returns the frozen ``ScopeMap``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, urlsplit

from scopemap.model import (
    NS_PER_S,
    Endpoint,
    EntryKind,
    Replay,
    Retention,
    ScopeEntry,
    ScopeMap,
    SourcePos,
    parse_channel_name,
)
from scopemap.yamlsrc import Path, SourceTree

ENDPOINT_SCHEMES = ("grpc", "grpc+tcp", "grpc+tls")
INFINITY_WORDS = {"inf", "+inf", "infinity", "+infinity"}

#: the usual endpoint URL, accepted without ``urlsplit`` (anything else takes the long way,
#: which explains what is wrong): scheme, a plain host name or address, a port
_PLAIN_URL = re.compile(r"(grpc|grpc\+tcp|grpc\+tls)://([A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})")

_NO_REPLAY_SCOPES: MappingProxyType[str, tuple[ScopeEntry, ...]] = MappingProxyType({})

# report(code, message, path, is_key)
Report = Callable[[str, str, Path, bool], None]


def _endpoint_url(url: str) -> tuple[str | None, str]:
    """``(why url cannot be an endpoint or None, its normalised form when fine)``, from one
    ``urlsplit`` (the loader checks and normalises every endpoint URL of a map)."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None and int(plain[3]) <= 65535:
        scheme = "grpc" if plain[1] == "grpc+tcp" else plain[1]
        return None, f"{scheme}://{plain[2].lower()}:{int(plain[3])}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"endpoint URL {url!r} cannot be parsed: {exc}", ""
    why = _url_problem(url, parts, port)
    if why is not None:
        return why, ""
    scheme = "grpc" if parts.scheme == "grpc+tcp" else parts.scheme
    return None, f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def _url_problem(url: str, parts: SplitResult, port: int | None) -> str | None:
    if parts.scheme == "kafka":
        return f"kafka URL {url!r} cannot be an endpoint; kafka is only valid as direct_read"
    if parts.scheme not in ENDPOINT_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in ENDPOINT_SCHEMES)
        return f"endpoint URL {url!r}: unsupported scheme (use {schemes})"
    if not parts.hostname:
        return f"endpoint URL {url!r} has no host"
    if port is None:
        return f"endpoint URL {url!r} has no port"
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return f"endpoint URL {url!r} must be just scheme://host:port"
    if len(url.split()) != 1:
        return f"endpoint URL {url!r} contains whitespace"
    return None


def check_kafka_url(url: str) -> str | None:
    if not url.startswith("kafka://"):
        return f"direct_read must be a kafka:// URL, got {url!r}"
    for broker in url[len("kafka://") :].split(","):
        try:
            parts = urlsplit("kafka://" + broker.strip())
            port = parts.port
        except ValueError:
            return f"direct_read {url!r}: broker {broker!r} is not host:port"
        if not parts.hostname or port is None:
            return f"direct_read {url!r}: broker {broker!r} is not host:port"
    return None


def parse_age(value: Any) -> float | None:
    """A schema-valid retention value as seconds (``math.inf`` for the infinity forms)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and value.lower() in INFINITY_WORDS:
        return math.inf
    return None


class Builder:
    def __init__(self, tree: SourceTree, file: str, report: Report) -> None:
        self.tree = tree
        self.file = file
        self.report = report
        self.errors = 0
        self.replay_names: set[str] = set()
        #: retention ages written as strings (url, key, text): upstream fails on them (SM201)
        self.string_ages: list[tuple[str, str, str]] = []

    def error(self, code: str, message: str, path: Path, key: bool = False) -> None:
        self.errors += 1
        self.report(code, message, path, key)

    def pos(self, path: Path, key: bool = False) -> SourcePos:
        return self.tree.pos(path, key=key)

    def build(self) -> ScopeMap | None:
        doc = self.tree.value
        if not isinstance(doc, dict):
            return None
        raw_replays = doc.get("replays")
        replays = self._replays(raw_replays)
        # invalid replays are reported once, not again at every reference
        self.replay_names = set(raw_replays) if isinstance(raw_replays, dict) else set()
        endpoints: list[Endpoint] = []
        seen: dict[str, str] = {}
        for url, body in doc.items():
            if url == "replays":
                continue
            why, norm = _endpoint_url(url)
            if why:
                self.error("SM103", why, (url,), True)
            else:
                if norm in seen:
                    first = self.pos((seen[norm],), True)
                    msg = f"endpoint {url!r} is the same as {seen[norm]!r} (line {first.line})"
                    self.error("SM110", msg, (url,), True)
                seen.setdefault(norm, url)
            if isinstance(body, dict):
                ep = self._endpoint(url, body)
                if ep is not None:
                    endpoints.append(ep)
        if self.errors:
            return None
        return ScopeMap(tuple(endpoints), MappingProxyType(replays), self.file)

    # ------------------------------------------------------------------ pieces

    def _replays(self, raw: Any) -> dict[str, Replay]:
        out: dict[str, Replay] = {}
        if not isinstance(raw, dict):
            return out
        for name, body in raw.items():
            if not isinstance(body, dict):
                continue
            start: Any = body.get("start")
            end: Any = body.get("end")
            if not (_is_number(start) and _is_number(end)):
                continue
            if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
                msg = f"replay {name!r}: end ({end}) must be after start ({start})"
                self.error("SM109", msg, ("replays", name), True)
                continue
            out[name] = Replay(
                name, _to_ns(start), _to_ns(end), start, end, self.pos(("replays", name), True)
            )
        return out

    def _endpoint(self, url: str, body: dict[str, Any]) -> Endpoint | None:
        retention = self._retention(url, body)
        scopes = self._scopes((url, "scopes"), body.get("scopes"))
        replay_ids: list[str] = []
        replay_scopes: dict[str, tuple[ScopeEntry, ...]] = {}
        raw_ids = body.get("replay_ids")
        for i, item in enumerate(raw_ids if isinstance(raw_ids, list) else []):
            path: Path = (url, "replay_ids", i)
            if isinstance(item, str):
                rid = item
            elif isinstance(item, dict) and isinstance(item.get("id"), str):
                rid = item["id"]
                if "scopes" in item:
                    got = self._scopes((*path, "scopes"), item["scopes"])
                    replay_scopes[rid] = replay_scopes.get(rid, ()) + got
                path = (*path, "id")
            else:
                continue
            self._check_replay_ref(rid, path)
            replay_ids.append(rid)
        tags = sorted({e.replay for e in scopes if e.replay is not None})
        pubs = body.get("allowed_publishers")
        publishers = tuple(p for p in pubs if isinstance(p, str)) if isinstance(pubs, list) else ()
        if retention is None:
            return None
        return Endpoint(
            url,
            scopes,
            retention,
            tuple(dict.fromkeys([*replay_ids, *tags])) if replay_ids or tags else (),
            MappingProxyType(replay_scopes) if replay_scopes else _NO_REPLAY_SCOPES,
            publishers,
            self.tree.top_key_pos(url),
        )

    def _retention(self, url: str, body: dict[str, Any]) -> Retention | None:
        raw = body.get("retention")
        if not isinstance(raw, dict):
            return None
        ages: list[float] = []
        for key, default in (("newest", 0.0), ("oldest", math.inf)):
            value = raw.get(key, raw)  # raw itself: absent
            if value is raw:
                ages.append(default)
                continue
            age = value if value.__class__ is int or value.__class__ is float else parse_age(value)
            if age is None or age < 0 or math.isnan(age):
                return None  # reported by the schema
            if isinstance(value, str):
                self.string_ages.append((url, key, value))
            ages.append(age)
        newest, oldest = ages
        if newest > oldest:
            msg = f"retention newest ({newest}) is greater than oldest ({oldest}): empty window"
            self.error("SM101", msg, (url, "retention"), False)
            return None
        return Retention(newest, oldest, self.tree.key_pos(body, (url, "retention")))

    def _scopes(self, path: Path, raw: Any) -> tuple[ScopeEntry, ...]:
        out: list[ScopeEntry] = []
        if not isinstance(raw, dict):
            return ()
        for domain, entries in raw.items():
            if not isinstance(entries, list):
                continue
            for i, item in enumerate(entries):
                if isinstance(item, dict):
                    out.extend(self._entry(domain, (*path, domain, i), item))
        return tuple(out)

    def _entry(self, domain: str, path: Path, item: dict[str, Any]) -> list[ScopeEntry]:
        if len(item) == 1:  # the usual entries, {subsystem: NAME} and {all: true}, in short
            sub = item.get("subsystem")
            if isinstance(sub, str) and not ("-" in sub or "_" in sub or ":" in sub):
                pos = self.tree.value_pos(item, path)
                return [ScopeEntry(domain, "subsystem", sub, None, None, None, pos)]
            if item.get("all") is True:
                pos = self.tree.value_pos(item, path)
                return [ScopeEntry(domain, "all", None, None, None, None, pos)]
        replay = item.get("replay") if isinstance(item.get("replay"), str) else None
        if replay is not None:
            self._check_replay_ref(replay, (*path, "replay"))
        direct = item.get("direct_read") if isinstance(item.get("direct_read"), str) else None
        if direct is not None and direct.startswith("kafka://"):
            why = check_kafka_url(direct)
            if why:
                self.error("SM103", why, (*path, "direct_read"))
        pub = item.get("publisher") if isinstance(item.get("publisher"), str) else None
        pos = self.tree.value_pos(item, path)

        def make(kind: EntryKind, value: str | None, p: str | None, d: str | None) -> ScopeEntry:
            return ScopeEntry(domain, kind, value, p, d, replay, pos)

        if "all" in item:
            self._ignored(path, item, ("subsystem", "subsystems", "channel", "channels"), "all")
            return [make("all", None, pub, direct)] if item["all"] is True else []
        if "publisher" in item:
            self._ignored(path, item, ("subsystem", "channel"), "publisher")
            found: list[ScopeEntry] = []
            for key, kind in (("subsystems", "subsystem"), ("channels", "channel")):
                values = item.get(key)
                for j, v in enumerate(values if isinstance(values, list) else []):
                    if isinstance(v, str) and self._name_ok(domain, kind, v, (*path, key, j)):
                        found.append(make(kind, v, pub, direct))  # type: ignore[arg-type]
            return found
        for key in ("subsystem", "channel"):
            if key in item:
                self._ignored(
                    path, item, ("publisher", "direct_read", "subsystems", "channels"), key
                )
                if key == "subsystem" and "channel" in item:
                    self._ignored(path, item, ("channel",), key)
                v = item[key]
                if isinstance(v, str) and self._name_ok(domain, key, v, (*path, key)):
                    return [make(key, v, None, None)]  # type: ignore[arg-type]
                return []
        return []

    def _ignored(self, path: Path, item: dict[str, Any], keys: tuple[str, ...], form: str) -> None:
        for key in keys:
            if key in item:
                hint = {
                    "subsystem": "use 'subsystems: [...]'",
                    "channel": "use 'channels: [...]'",
                    "publisher": "publisher tags need the publisher form",
                    "direct_read": "direct_read needs the publisher or all form",
                    "subsystems": "lists need the publisher form",
                    "channels": "lists need the publisher form",
                }[key]
                msg = f"'{key}' is ignored in a '{form}' entry; {hint}"
                self.error("SM107", msg, (*path, key), True)

    def _name_ok(self, domain: str, kind: str, value: str, path: Path) -> bool:
        if kind == "channel":
            try:
                parsed = parse_channel_name(value)
            except ValueError as exc:
                self.error("SM104", str(exc), path)
                return False
            if parsed.domain != domain:
                msg = (
                    f"channel {value!r} is listed under domain {domain!r} but belongs to "
                    f"{parsed.domain!r}: it can never match"
                )
                self.error("SM104", msg, path)
                return False
            return True
        bad = [c for c in ("-", "_", ":") if c in value]
        if bad:
            msg = (
                f"subsystem {value!r} can never match: a subsystem is the part of a channel "
                "name after the domain's ':' up to the first '-' or '_'"
            )
            self.error("SM104", msg, path)
            return False
        return True

    def _check_replay_ref(self, rid: str, path: Path) -> None:
        if rid not in self.replay_names:
            known = ", ".join(sorted(self.replay_names)) or "none defined"
            self.error("SM108", f"replay {rid!r} is not defined under 'replays' ({known})", path)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _to_ns(seconds: float) -> int:
    if isinstance(seconds, int):
        return seconds * NS_PER_S
    return round(seconds * NS_PER_S)
