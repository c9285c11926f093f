"""The router's error tree: the wire-layer errors plus what fan-out and planning add.

Downstream failures are translated to these at the downstream seam (on the call and inside
stream iteration); the server adapter turns them into Flight errors once, at the edge.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.protocol.errors import (
    ArrakisError,
    CancelledError,
    CannotServeError,
    ChannelsNotAvailableError,
    InternalError,
    InvalidRequestError,
    ReplayError,
    ServerError,
    TimedOutError,
    UnauthenticatedError,
    UnauthorizedError,
    UnavailableError,
    UnimplementedError,
    UnknownArgumentsError,
    UnsupportedError,
    bounded,
    from_flight_error,
    name_list,
    to_flight_error,
)

__all__ = [
    "ArrakisError",
    "BusyError",
    "CancelledError",
    "CannotServeError",
    "ChannelsNotAvailableError",
    "InternalError",
    "InvalidRequestError",
    "PlanIncompleteError",
    "ReplayError",
    "ServerError",
    "ShuttingDownError",
    "TimedOutError",
    "UnauthenticatedError",
    "UnauthorizedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownArgumentsError",
    "UnsupportedError",
    "all_replicas_failed",
    "bounded",
    "from_flight_error",
    "is_retryable",
    "name_list",
    "to_flight_error",
]


def is_retryable(exc: ArrakisError) -> bool:
    """A replica may succeed where this endpoint failed (the request itself is not at fault)."""
    if isinstance(exc, ChannelsNotAvailableError):
        return False
    return isinstance(exc, UnavailableError | TimedOutError | InternalError)


class BusyError(UnavailableError):
    """The router is at its concurrent-stream limit (overall or for this client): nothing
    is wrong with the request, it may be retried later (UNAVAILABLE, as gRPC clients retry
    on it)."""


class PlanIncompleteError(UnavailableError):
    """Part of the request (channels x time) has no endpoint; the text lists what and why."""


class ShuttingDownError(UnavailableError):
    """The router is draining (SIGTERM): no new calls; live streams end at a block boundary
    with this error, which tells the client to reconnect (to another router)."""

    TEXT = "server shutting down, reconnect"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.TEXT)


def all_replicas_failed(what: str, errors: Sequence[ArrakisError]) -> ArrakisError:
    """One error for a failover that ran out of replicas: the class of the last failure,
    the text naming every endpoint tried and what it said."""
    if len(errors) == 1:
        return errors[0]
    last = errors[-1]
    text = f"{what} failed on every replica: " + "; ".join(str(e) for e in errors)
    err = type(last).__new__(type(last))
    ArrakisError.__init__(err, text)
    if isinstance(err, ChannelsNotAvailableError) and isinstance(last, ChannelsNotAvailableError):
        err.channels, err.detail = last.channels, last.detail
    return err
