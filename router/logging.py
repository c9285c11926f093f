"""structlog configuration: ``--log-format json|console``; events are lowercase names with
stable keys; the request id is bound per call (contextvars) by the server adapter."""

from __future__ import annotations

import logging as std_logging
import sys
from typing import Any

import structlog

FORMATS = ("console", "json")
LEVELS = ("debug", "info", "warning", "error")


def configure(fmt: str = "console", level: str = "info", stream: Any = None) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(std_logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
