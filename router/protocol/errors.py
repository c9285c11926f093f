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
    "UnimplementedError",
    "UnknownArgumentsError",
    "UnsupportedError",
    "bounded",
    "from_flight_error",
    "name_list",
    "shorten",
    "to_flight_error",
]

#: the longest error text sent to a client, in UTF-8 bytes, request-id tag included (gRPC
#: carries it in a header whose default limit is 16 KiB)
MAX_MESSAGE_BYTES = 4096
#: names listed in a message before "and K more"
MAX_LISTED_NAMES = 20


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


class ServerError(ArrakisError):
    """Generic server-side refusal (``FlightServerError``, gRPC UNKNOWN)."""

    flight_class = flight.FlightServerError
    wire_class = flight.FlightError


class InvalidRequestError(ServerError):
    """The client's mistake: a malformed envelope or a request over a limit. The text names
    the field, the rule and (shortened) the value.

    pyarrow's Flight server has no traceback-free way to send INVALID_ARGUMENT (a raised
    ``ArrowInvalid`` reaches the client with the server's Python traceback appended, and the
    ``arrakis`` CLI then prints a traceback of its own), so client errors travel as
    ``FlightServerError``, which the CLI prints as ``request error: ...``."""


class UnimplementedError(ServerError):
    """An RPC or descriptor kind the Arrakis protocol does not use (DoPut, GetSchema, path
    descriptors...). Sent as ``FlightServerError`` for the reason given above."""


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
        text = f"channel(s) {{{name_list(self.channels)}}} are not available on this server"
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


def name_list(names: Sequence[str], limit: int = MAX_LISTED_NAMES) -> str:
    """``a, b, c`` for a few names; the first ``limit`` and ``and K more`` for many (each
    name shortened too, so the text stays bounded whatever a client sent)."""
    shown = ", ".join(shorten(n, 80) for n in names[:limit])
    extra = len(names) - limit
    return f"{shown} and {extra} more" if extra > 0 else shown


def shorten(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def bounded(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``text`` as safe, bounded wire text: lone surrogates escaped (gRPC sends UTF-8) and
    at most ``limit`` UTF-8 bytes, a cut one ending with ``... (truncated)``."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    marker = "... (truncated)"
    return data[: limit - len(marker)].decode("utf-8", "ignore") + marker


def _tag(message: str, request_id: str | None) -> str:
    tag = f" [request: {request_id}]" if request_id else ""
    if tag and message.endswith(tag):  # a relayed downstream error already carries our id
        message = message[: -len(tag)]
    # bounded with room for the tag, the "Flight error: " prefix pyarrow adds, and the
    # ". Detail: ..." suffix it appends
    return bounded(message, MAX_MESSAGE_BYTES - len(tag) - 64) + tag


def to_flight_error(exc: BaseException, request_id: str | None) -> flight.FlightError:
    """The Flight error to raise for ``exc`` at a server edge, tagged with the request id.

    Our errors keep their class and text; a Flight error raised by inner code keeps its
    class; anything else (a bug of ours) becomes ``FlightInternalError('internal error
    (Type)')``: the type names the bug for the operator's log search, the exception's own
    text (which may hold internal values) stays in the log. Every text is bounded.
    """
    if isinstance(exc, ArrakisError):
        cls = exc.wire_class or exc.flight_class
        return cls(_tag(exc.message, request_id))
    if isinstance(exc, flight.FlightError):
        text = _strip_detail(str(exc))
        return type(exc)(_tag(text, request_id))
    return flight.FlightInternalError(_tag(f"internal error ({type(exc).__name__})", request_id))


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
