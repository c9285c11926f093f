"""Griffe extension: docstrings written for Python readers, shown well in the API reference.

Docstrings carry their examples as doctests, which ``make test`` runs. Rendered as Markdown they
would be plain paragraphs; this extension wraps each session (the ``>>>`` and ``...`` lines and
the expected output after them, up to a blank line) in a ``pycon`` fence before mkdocstrings
renders the docstring. Sphinx cross-reference roles (``:func:`name```) become code spans.
The docstring in the source is not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|data|class|meth|attr|mod|exc|obj):`~?([^`]+)`")


def fence_sessions(text: str) -> str:
    """``text`` with every doctest session wrapped in a ```` ```pycon ```` fence."""
    out: list[str] = []
    in_session = False
    in_fence = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and not in_session and stripped.startswith(">>>"):
            out.append("```pycon")
            in_session = True
        elif in_session and not stripped:
            out.append("```")
            in_session = False
        out.append(line)
    if in_session:
        out.append("```")
    return "\n".join(out)


def plain_roles(text: str) -> str:
    """``text`` with Sphinx roles such as ``:func:`name``` turned into code spans."""
    return _ROLE.sub(lambda m: f"`{m[1]}`", text)


class DoctestBlocks(griffe.Extension):
    """Fence the doctest sessions and plain the roles of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(fence_sessions(obj.docstring.value))
