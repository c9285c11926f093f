"""The JSON payloads of the ``scope-map`` and ``replays`` Flight actions (PROTOCOL §6.2, §6.3)."""

from __future__ import annotations

from typing import Any

from scopemap.model import ScopeEntry, ScopeMap


def _scopes(entries: tuple[ScopeEntry, ...]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for e in entries:
        out.setdefault(e.domain, []).append(e.as_upstream(redact=True))
    return out


def to_upstream_json(scope_map: ScopeMap) -> dict[str, Any]:
    """What upstream's ``scope-map`` action returns, ``direct_read`` URLs redacted to true."""
    endpoints: dict[str, Any] = {}
    for ep in scope_map.endpoints:
        body: dict[str, Any] = {
            "scopes": _scopes(ep.scopes),
            "retention": ep.retention.as_upstream(),
        }
        if ep.replay_ids:
            body["replay_ids"] = list(ep.replay_ids)
        if ep.replay_scopes:
            body["replay_scopes"] = {rid: _scopes(v) for rid, v in ep.replay_scopes.items()}
        if ep.allowed_publishers:
            body["allowed_publishers"] = list(ep.allowed_publishers)
        endpoints[ep.url] = body
    return {"endpoints": endpoints, "local_endpoint": None}


def replays_json(scope_map: ScopeMap) -> dict[str, dict[str, float]]:
    """What upstream's ``replays`` action returns: id -> start/end in float GPS seconds."""
    return {
        name: {"start": r.start_ns / 1e9, "end": r.end_ns / 1e9}
        for name, r in scope_map.replays.items()
    }
