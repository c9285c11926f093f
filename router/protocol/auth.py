"""Bearer-token passthrough: hold a call's ``authorization`` header (PROTOCOL §1).

The router never validates the token; it forwards the header unchanged to every downstream
call made for the request, so each downstream enforces its own policy. The value is never
shown: reprs and logs say only whether a header was present.
"""

from __future__ import annotations

from typing import Any

import pyarrow.flight as flight

__all__ = [
    "AUTHORIZATION_HEADER",
    "AUTHORIZATION_MIDDLEWARE_KEY",
    "AuthorizationMiddleware",
    "AuthorizationMiddlewareFactory",
    "authorization_from_context",
]

AUTHORIZATION_HEADER = "authorization"
AUTHORIZATION_MIDDLEWARE_KEY = "authorization"


class AuthorizationMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """Holds the ``authorization`` header value of one call."""

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization

    def __repr__(self) -> str:
        return "<AuthorizationMiddleware auth=True>"


class AuthorizationMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Install under :data:`AUTHORIZATION_MIDDLEWARE_KEY` in
    ``FlightServerBase(middleware=...)``; calls without the header are not intercepted."""

    def start_call(
        self, info: Any, headers: dict[str, list[str | bytes]]
    ) -> AuthorizationMiddleware | None:
        for key, values in headers.items():
            if key.lower() == AUTHORIZATION_HEADER and values:
                value = values[0]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="replace")
                return AuthorizationMiddleware(value)
        return None


def authorization_from_context(context: flight.ServerCallContext) -> str | None:
    """The call's ``authorization`` header value, or ``None`` when it carried none."""
    try:
        mw = context.get_middleware(AUTHORIZATION_MIDDLEWARE_KEY)
    except Exception:  # pragma: no cover - defensive: no middleware registered
        mw = None
    if isinstance(mw, AuthorizationMiddleware):
        return mw.authorization
    return None
