"""Request ids: honour an incoming ``x-request-id`` header or invent one (PROTOCOL §1)."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pyarrow.flight as flight

__all__ = [
    "REQUEST_ID_HEADER",
    "REQUEST_ID_MIDDLEWARE_KEY",
    "RequestIdMiddleware",
    "RequestIdMiddlewareFactory",
    "correlate",
    "new_request_id",
    "request_id_from_context",
    "sanitize_request_id",
]

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_MIDDLEWARE_KEY = "request-id"
_MAX_LEN = 32
_DROP = re.compile(r"[^A-Za-z0-9._-]")


def sanitize_request_id(value: str | bytes | None) -> str | None:
    """Keep only ``A-Za-z0-9._-``, at most 32 characters; ``None`` when nothing is left."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    cleaned = _DROP.sub("", value)[:_MAX_LEN]
    return cleaned or None


def new_request_id() -> str:
    """A fresh id of 8 hex digits."""
    return secrets.token_hex(4)


class RequestIdMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """Holds the id of one call; sends it back as a response header."""

    def __init__(self, request_id: str, from_client: bool = True) -> None:
        self.request_id = request_id
        #: the client sent the id (``x-request-id``); False: invented here
        self.from_client = from_client

    def sending_headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id}


class RequestIdMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Install under :data:`REQUEST_ID_MIDDLEWARE_KEY` in ``FlightServerBase(middleware=...)``."""

    def start_call(self, info: Any, headers: dict[str, list[str | bytes]]) -> RequestIdMiddleware:
        value: str | bytes | None = None
        for key, values in headers.items():
            if key.lower() == REQUEST_ID_HEADER and values:
                value = values[0]
                break
        sent = sanitize_request_id(value)
        return RequestIdMiddleware(sent or new_request_id(), from_client=sent is not None)


def request_id_from_context(context: flight.ServerCallContext) -> str:
    """The call's request id (from the middleware, i.e. the header), or a new one."""
    try:
        mw = context.get_middleware(REQUEST_ID_MIDDLEWARE_KEY)
    except Exception:  # pragma: no cover - defensive: no middleware registered
        mw = None
    if isinstance(mw, RequestIdMiddleware):
        return mw.request_id
    return new_request_id()


def correlate(context: flight.ServerCallContext, request_id: str, ticket_id: str | None) -> str:
    """The request id of a DoGet: the one the router put into the ticket at GetFlightInfo
    (one id for the whole client operation) unless the client sent its own ``x-request-id``;
    the response header carries the id chosen."""
    if ticket_id is None:
        return request_id
    try:
        mw = context.get_middleware(REQUEST_ID_MIDDLEWARE_KEY)
    except Exception:  # pragma: no cover - defensive: no middleware registered
        mw = None
    if isinstance(mw, RequestIdMiddleware):
        if mw.from_client:
            return request_id
        mw.request_id = ticket_id
    return ticket_id
