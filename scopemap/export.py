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
    """What upstream's ``scope-map`` action returns, ``direct_read`` URLs redacted to true.

    >>> from scopemap import load_text
    >>> doc = to_upstream_json(load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{publisher: H1-lldd, subsystems: [GDS], direct_read: "kafka://k:9092"}]}
    ...   retention: {newest: 0, oldest: .inf}
    ... ''').scope_map)
    >>> endpoint = doc["endpoints"]["grpc://live.example.org:31206"]
    >>> endpoint["scopes"]
    {'H1': [{'subsystem': 'GDS', 'publisher': 'H1-lldd', 'direct_read': True}]}
    >>> endpoint["retention"]
    {'newest': 0, 'oldest': 'inf'}
    """
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
    """What upstream's ``replays`` action returns: id -> start/end in float GPS seconds.

    >>> from scopemap import load_text
    >>> replays_json(load_text('''
    ... grpc://a.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {}
    ...   replay_ids: [ER15]
    ... replays: {ER15: {start: 1400000000, end: 1400000100}}
    ... ''').scope_map)
    {'ER15': {'start': 1400000000.0, 'end': 1400000100.0}}
    """
    return {
        name: {"start": r.start_ns / 1e9, "end": r.end_ns / 1e9}
        for name, r in scope_map.replays.items()
    }
