"""structlog configuration: ``--log-format json|console``; events are lowercase names with
stable keys; the request id is bound per call (contextvars) by the server adapter.

With ``json`` every line the process writes is one JSON object, from the first to the last:
start-up errors (:func:`startup_error`) and the ``serving`` announcement (:func:`announce`,
on stdout, which process supervisors and tests read for the bound URL) included.

Fields of every line: ``event``, ``level``, ``timestamp`` (ISO 8601, UTC); per
call ``request_id`` (one id for GetFlightInfo and the DoGet of the ticket it issued); plus
the event's own keys (``op``, ``error``, ``endpoint``, ...). Values are bounded in size
(:data:`MAX_VALUE`).

Every log line is bounded (:data:`MAX_LINE_BYTES`): long values are shortened before
rendering (a traceback keeps its end, where the failing frame is), and a line still too
long is replaced by a stub naming the event. Request commands are logged as a short
prefix, their size and a digest (:func:`command_summary`), never whole. Repeated identical
errors from one peer are collapsed by :class:`RepeatFilter`.
"""

from __future__ import annotations

import hashlib
import json
import logging as std_logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

FORMATS = ("console", "json")
LEVELS = ("debug", "info", "warning", "error")
#: longest string value logged (longer ones are cut, marked with "...")
MAX_VALUE = 2000

#: the longest log line written, in characters (UTF-8 bytes for ASCII text)
MAX_LINE_BYTES = 2048
_MAX_VALUE = 400  # characters of one ordinary value
_MAX_TEXT = 1200  # characters of an error text or a traceback
_LONG_KEYS = frozenset({"error", "exception"})
_KEEP_ON_STUB = ("event", "level", "timestamp", "request_id", "op", "error_type", "peer")

_format = "console"
_static: dict[str, Any] = {}  # fields on every line (configure's ``fields``)


_DIGESTED = 64 * 1024  # bytes of a command that go into its digest


def command_summary(data: bytes, prefix: int = 48) -> str:
    """``<prefix...> (N bytes, sha256 abcdef012345)``: enough to recognise and correlate a
    request without writing a 10 MB command into the log. The digest covers the first
    64 KiB (with the size, that tells requests apart; hashing 10 MB would cost 25 ms)."""
    head = bytes(data[:prefix]).decode("utf-8", "backslashreplace")
    more = "..." if len(data) > prefix else ""
    digest = hashlib.sha256(data[:_DIGESTED]).hexdigest()[:12]
    return f"{head!r}{more} ({len(data)} bytes, sha256 {digest})"


def _shorten_value(key: str, value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else repr(value)
    limit = _MAX_TEXT if key in _LONG_KEYS else _MAX_VALUE
    if len(text) <= limit:
        return value
    if key == "exception":  # the end of a traceback says where it failed and why
        lines = [ln if len(ln) <= 200 else ln[:200] + "..." for ln in text.splitlines()]
        text = "\n".join(lines)
        return text if len(text) <= limit else "...\n" + text[-limit:]
    return text[:limit] + f"...({len(text)} characters)"


def bound_values(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: shorten every long value (after ``format_exc_info``)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _shorten_value(key, value)
    return event_dict


class BoundedRenderer:
    """Wraps a renderer: a rendered line over ``limit`` becomes a stub of the identifying
    keys plus ``truncated_from`` (so a JSON line stays JSON)."""

    def __init__(self, renderer: Callable[..., str], limit: int = MAX_LINE_BYTES) -> None:
        self.renderer = renderer
        self.limit = limit

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        stub = {k: event_dict[k] for k in _KEEP_ON_STUB if k in event_dict}
        line = self.renderer(logger, method, event_dict)
        if len(line) <= self.limit:
            return line
        stub = {k: _shorten_value("", v) for k, v in stub.items()}
        stub["truncated_from"] = len(line)
        line = self.renderer(logger, method, stub)
        return line[: self.limit]


class RepeatFilter:
    """Collapses repeated identical errors per peer: the first of a kind is logged, the
    next ones within ``window`` seconds only counted; the first one after the window is
    logged with ``repeated=N`` (how many were not). Thread-safe; remembers at most
    ``max_keys`` kinds (the oldest forgotten first). ``clock``: monotonic seconds."""

    def __init__(
        self,
        window: float = 60.0,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._seen: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RepeatFilter window={self.window}s kinds={len(self._seen)}>"

    def check(self, *key: str) -> int | None:
        """None: suppress this one; else log it, with the number suppressed since the last
        one logged (0 for a new kind)."""
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                self._seen[key] = (entry[0], entry[1] + 1)
                return None
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return entry[1] if entry is not None else 0


def configure(
    fmt: str = "console",
    level: str = "info",
    stream: Any = None,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Log in ``fmt`` from ``level`` up to ``stream`` (stderr); ``fields`` are added to every
    line (a data worker's ``worker=K``)."""
    global _format, _static
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    _format = fmt
    _static = dict(fields or {})
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *([_adder(dict(fields))] if fields else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            bound_values,
            BoundedRenderer(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(std_logging, level.upper())),
        # one write() per line (message and newline together): the lines of a front and its
        # data workers, sharing one standard error, never interleave within a line
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def _adder(fields: dict[str, Any]) -> Any:
    def add(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add


def _json_line(event: str, level: str, **fields: Any) -> str:
    doc = {
        "event": event,
        "level": level,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **_static,
        **fields,
    }
    return json.dumps(doc, default=str)


def _line(out: Any, text: str) -> None:
    """``text`` and its newline in one write (see ``configure``)."""
    out.write(text + "\n")
    out.flush()


def announce(url: str, stream: Any = None, **fields: Any) -> None:
    """The ``serving URL`` line on stdout (``{"event": "serving", "url": ...}`` in JSON)."""
    out = stream or sys.stdout
    if _format == "json":
        _line(out, _json_line("serving", "info", url=url, **fields))
    else:
        _line(out, f"serving {url}")


def startup_error(message: str, stream: Any = None, **fields: Any) -> None:
    """A reason the process does not start, on stderr: ``router serve: MESSAGE`` or one JSON
    line (``event`` ``startup_failed``)."""
    out = stream or sys.stderr
    if _format == "json":
        text = message if len(message) <= MAX_VALUE else message[: MAX_VALUE - 3] + "..."
        _line(out, _json_line("startup_failed", "error", error=text, **fields))
    else:
        tags = "".join(f" {k}={v}" for k, v in _static.items())
        _line(out, f"router serve{tags}: {message}")
