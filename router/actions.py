"""The DoAction answers: ``server-info``, ``scope-map``, ``replays`` (PROTOCOL §6)."""

from __future__ import annotations

import json
from typing import Any

from router import __version__
from router.protocol.envelope import SCHEMA_VERSION
from scopemap import ScopeMap, replays_json, to_upstream_json

ACTIONS: dict[str, str] = {
    "server-info": "router version, capabilities, domains, mode",
    "scope-map": "the loaded scope map in upstream's JSON shape",
    "replays": "the replay registry: id -> {start, end} in GPS seconds",
}
CLIENT_VERSION = "0.21.0"


def capabilities(scope_map: ScopeMap) -> list[str]:
    caps = ["find", "count", "describe", "stream"]
    if any(ep.allowed_publishers for ep in scope_map.endpoints):
        caps += ["publish", "partition"]
    return caps


def server_info(
    scope_map: ScopeMap, mode: str, health: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``health``: the router's readiness (``router health --ready`` reads it; upstream
    clients read only the fields they know)."""
    info: dict[str, Any] = {
        "server_version": __version__,
        "arrakis_version": CLIENT_VERSION,
        "arrakis_schema_version": SCHEMA_VERSION,
        "backend": None,
        "backend_version": None,
        "capabilities": capabilities(scope_map),
        "domains": sorted(scope_map.domains),
        "auth": False,
        "auth_mode": None,
        "auth_methods": None,
        "router": "arrakis-router",
        "router_mode": mode,
    }
    if health is not None:
        info["health"] = health
    return info


def _dump(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def action_body(
    kind: str, scope_map: ScopeMap, mode: str, health: dict[str, Any] | None = None
) -> bytes | None:
    """The JSON body of action ``kind``, or None when the action does not exist."""
    if kind == "server-info":
        return _dump(server_info(scope_map, mode, health))
    if kind == "scope-map":
        return _dump(to_upstream_json(scope_map))
    if kind == "replays":
        return _dump(replays_json(scope_map))
    return None
