"""structlog configuration: ``--log-format json|console``; events are lowercase names with
stable keys; the request id is bound per call (contextvars) by the server adapter.

With ``json`` every line the process writes is one JSON object, from the first to the last:
start-up errors (:func:`startup_error`) and the ``serving`` announcement (:func:`announce`,
on stdout, which process supervisors and tests read for the bound URL) included.

Fields of every line: ``event``, ``level``, ``timestamp`` (ISO 8601, UTC); per
call ``request_id`` (one id for GetFlightInfo and the DoGet of the ticket it issued); plus
the event's own keys (``op``, ``error``, ``endpoint``, ...). Values are bounded in size
(:data:`MAX_VALUE`).
"""

from __future__ import annotations

import json
import logging as std_logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

FORMATS = ("console", "json")
LEVELS = ("debug", "info", "warning", "error")
#: longest string value logged (longer ones are cut, marked with "...")
MAX_VALUE = 2000

_format = "console"


def _bounded(logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE:
            event[key] = value[: MAX_VALUE - 3] + "..."
    return event


def configure(fmt: str = "console", level: str = "info", stream: Any = None) -> None:
    global _format
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    _format = fmt
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _bounded,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(std_logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def _json_line(event: str, level: str, **fields: Any) -> str:
    doc = {
        "event": event,
        "level": level,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **fields,
    }
    return json.dumps(doc, default=str)


def announce(url: str, stream: Any = None, **fields: Any) -> None:
    """The ``serving URL`` line on stdout (``{"event": "serving", "url": ...}`` in JSON)."""
    out = stream or sys.stdout
    if _format == "json":
        print(_json_line("serving", "info", url=url, **fields), file=out, flush=True)
    else:
        print(f"serving {url}", file=out, flush=True)


def startup_error(message: str, stream: Any = None, **fields: Any) -> None:
    """A reason the process does not start, on stderr: ``router serve: MESSAGE`` or one JSON
    line (``event`` ``startup_failed``)."""
    out = stream or sys.stderr
    if _format == "json":
        text = message if len(message) <= MAX_VALUE else message[: MAX_VALUE - 3] + "..."
        print(_json_line("startup_failed", "error", error=text, **fields), file=out, flush=True)
    else:
        print(f"router serve: {message}", file=out, flush=True)
