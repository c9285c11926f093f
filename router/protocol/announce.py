"""The line a server prints on standard output once it listens: ``serving URL`` (or, with
JSON logs, ``{"event": "serving", "url": URL}``). Our backends and ``router serve`` print
it; tests, the demo and the front of data workers (router.workers) read it."""

from __future__ import annotations

import json


def serving_line(line: str) -> str | None:
    """The URL of a ``serving grpc://HOST:PORT`` line, or of its JSON form; None for any
    other line."""
    line = line.strip()
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        url = doc.get("url") if isinstance(doc, dict) and doc.get("event") == "serving" else None
        return url if isinstance(url, str) else None
    return line.removeprefix("serving ").strip() or None if line.startswith("serving ") else None
