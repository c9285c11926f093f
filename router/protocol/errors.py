"""Our error tree and its translation to and from pyarrow Flight errors.

Every error class names the Flight class a client receives for it (``flight_class``).  The
translation happens in exactly two places: :func:`to_flight_error` at the edge of a server,
:func:`from_flight_error` where a downstream call fails.  Neither ever leaks a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import pyarrow.flight as flight

__all__ = [
    "ArrakisError",
    "CancelledError",
    "CannotServeError",
    "ChannelsNotAvailableError",
    "InternalError",
    "InvalidRequestError",
    "ReplayError",
    "ServerError",
    "TimedOutError",
    "UnauthenticatedError",
    "UnauthorizedError",
    "UnavailableError",
    "UnknownArgumentsError",
    "UnsupportedError",
    "from_flight_error",
    "to_flight_error",
]


class ArrakisError(Exception):
    """Base of every error we raise on purpose; the text is safe to show to a client."""

    #: the pyarrow class the client receives
    flight_class: ClassVar[type[flight.FlightError]] = flight.FlightInternalError
    #: the pyarrow class raised on the server side.  Upstream raises the base ``FlightError``
    #: for its "server" conditions, which reaches the client as ``FlightServerError`` with the
    #: text prefixed ``Flight error: `` and without pyarrow's ``. Detail: Failed`` suffix; we
    #: do the same so messages match upstream's byte for byte.
    wire_class: ClassVar[type[flight.FlightError] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InternalError(ArrakisError):
    """Something went wrong inside a server (ours or a downstream)."""


class InvalidRequestError(ArrakisError):
    """The request envelope is malformed (kept on upstream's class, with a clear text)."""


class ServerError(ArrakisError):
    """Generic server-side refusal (``FlightServerError``)."""

    flight_class = flight.FlightServerError
    wire_class = flight.FlightError


class UnknownArgumentsError(ServerError):
    """The request carries arguments the schema does not declare."""


class CannotServeError(ServerError):
    """Nothing can serve the request (channels + time)."""


class ReplayError(ServerError):
    """Replay arguments are inconsistent or name an unknown replay."""


class UnsupportedError(ServerError):
    """The operation is not supported by this server (publish, partition, DoGet on info...)."""


class UnavailableError(ArrakisError):
    """The data or service is not available here (``FlightUnavailableError``)."""

    flight_class = flight.FlightUnavailableError


class ChannelsNotAvailableError(UnavailableError):
    """Channels unknown to this server (or outside its scope / retention)."""

    def __init__(self, channels: Sequence[str], detail: str = "") -> None:
        self.channels = tuple(channels)
        self.detail = detail
        text = f"channel(s) {{{', '.join(self.channels)}}} are not available on this server"
        if detail:
            text = f"{text}: {detail}"
        super().__init__(text)


class UnauthenticatedError(ArrakisError):
    flight_class = flight.FlightUnauthenticatedError


class UnauthorizedError(ArrakisError):
    flight_class = flight.FlightUnauthorizedError


class TimedOutError(ArrakisError):
    flight_class = flight.FlightTimedOutError


class CancelledError(ArrakisError):
    flight_class = flight.FlightCancelledError


def _tag(message: str, request_id: str | None) -> str:
    if not request_id:
        return message
    tag = f" [request: {request_id}]"
    # a relayed downstream error already carries our id (we pass it on): tag once
    return message if message.endswith(tag) else message + tag


def to_flight_error(exc: BaseException, request_id: str | None) -> flight.FlightError:
    """The Flight error to raise for ``exc`` at a server edge, tagged with the request id.

    Our errors keep their class and text; a Flight error raised by inner code keeps its
    class; anything else becomes ``FlightInternalError('internal error (Type): msg')``.
    """
    if isinstance(exc, ArrakisError):
        cls = exc.wire_class or exc.flight_class
        return cls(_tag(exc.message, request_id))
    if isinstance(exc, flight.FlightError):
        text = _strip_detail(str(exc))
        return type(exc)(_tag(text, request_id))
    text = f"internal error ({type(exc).__name__})"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if msg:
        text = f"{text}: {msg}"
    return flight.FlightInternalError(_tag(text, request_id))


# Most specific first: the subclasses must be tested before their bases.
_FROM_FLIGHT: tuple[tuple[type[flight.FlightError], type[ArrakisError]], ...] = (
    (flight.FlightUnavailableError, UnavailableError),
    (flight.FlightUnauthenticatedError, UnauthenticatedError),
    (flight.FlightUnauthorizedError, UnauthorizedError),
    (flight.FlightTimedOutError, TimedOutError),
    (flight.FlightCancelledError, CancelledError),
    (flight.FlightInternalError, InternalError),
    (flight.FlightServerError, ServerError),
)

_DETAIL_RE = re.compile(r"\. Detail: [A-Za-z]+$", re.DOTALL)
_GRPC_DETAIL_RE = re.compile(r"\. gRPC client debug context: .*$", re.DOTALL)
_PREFIX = "Flight error: "


def _strip_detail(text: str) -> str:
    text = _GRPC_DETAIL_RE.sub("", text)
    text = _DETAIL_RE.sub("", text)
    return text.removeprefix(_PREFIX)


def from_flight_error(exc: flight.FlightError, context: str) -> ArrakisError:
    """Map a Flight error received from a downstream to our tree, keeping its class.

    pyarrow's ``. Detail: ...`` suffix and the ``Flight error: `` prefix are removed and
    ``context`` (e.g. the endpoint URL and what was being done) is put in front.
    """
    cls: type[ArrakisError] = ServerError
    for flight_cls, ours in _FROM_FLIGHT:
        if isinstance(exc, flight_cls):
            cls = ours
            break
    text = _strip_detail(str(exc))
    message = f"{context}: {text}" if context else text
    err = cls.__new__(cls)
    ArrakisError.__init__(err, message)
    err.__cause__ = exc
    return err
