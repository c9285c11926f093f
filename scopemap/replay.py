"""Replay arguments (PROTOCOL §8.8): resolution, errors with upstream's texts, time folding."""

from __future__ import annotations

from dataclasses import dataclass

from scopemap.model import ScopeMap


class ReplayError(ValueError):
    """A request's replay arguments cannot be honoured; the message is upstream's text.

    >>> from scopemap import RoutingIndex, StreamRequest, load_text, plan_stream
    >>> index = RoutingIndex(load_text('''
    ... grpc://live.example.org:31206: {scopes: {H1: [{all: true}]}, retention: {}}
    ... ''').scope_map)
    >>> try:
    ...     plan_stream(index, StreamRequest(("H1:A-B",), None, None, replay_id="ER15"), 0)
    ... except ReplayError as exc:
    ...     print(exc)
    replay_id 'ER15' was provided but no replay registry is configured on this server
    """


@dataclass(frozen=True)
class ReplayWindow:
    """The window ``[start, end)`` (GPS ns) requests are folded into; ``name`` None: anonymous."""

    start: int
    end: int
    name: str | None = None

    def translate(self, t: int) -> int:
        """Fold ``t`` into ``[start, end)`` by whole window lengths (floor, also below start)."""
        span = self.end - self.start
        return t - ((t - self.start) // span) * span

    def offset(self, t: int) -> int:
        """Client time minus routing time for ``t``: ``t - translate(t)``."""
        return t - self.translate(t)


def resolve(
    scope_map: ScopeMap,
    replay_id: str | None,
    replay_start: int | None = None,
    replay_end: int | None = None,
) -> ReplayWindow | None:
    """The replay a request asks for, or None; raises ``ReplayError`` like upstream does."""
    if replay_id is not None and (replay_start is not None or replay_end is not None):
        raise ReplayError("replay_id and replay_start/replay_end are mutually exclusive")
    if replay_id is not None:
        if not scope_map.replays:
            raise ReplayError(
                f"replay_id '{replay_id}' was provided but no replay registry is configured "
                "on this server"
            )
        found = scope_map.replays.get(replay_id)
        if found is None:
            raise ReplayError(
                f"unknown replay_id '{replay_id}'; available replays: {list(scope_map.replays)}"
            )
        return ReplayWindow(found.start_ns, found.end_ns, replay_id)
    if (replay_start is None) != (replay_end is None):
        raise ReplayError("both replay_start and replay_end must be provided together")
    if replay_start is None or replay_end is None:
        return None
    if replay_start >= replay_end:
        raise ReplayError("replay_start must be less than replay_end")
    return ReplayWindow(replay_start, replay_end)
