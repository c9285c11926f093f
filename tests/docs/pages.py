"""Reading the documentation pages as data: fenced code blocks and the tutorial's steps.

The docs tests take every command and every example from the pages themselves, so a page
cannot drift from what the code does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`\n]*)$")
_TITLE = re.compile(r'title="([^"]*)"')
_HEX_ID = re.compile(r"\b[0-9a-f]{8}\b")
# what changes between runs: decimals (sample values, times, latencies) and long integers (GPS
# times, sample counts); short integers (counts, exit statuses, line numbers) must match
_VOLATILE = re.compile(r"-?\d*\.\d+(?:[eE][+-]?\d+)?|-?\d{5,}")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language (first word of the info string), text, and the
    line of the page where it starts (1-based)."""

    page: Path
    lang: str
    text: str
    line: int
    title: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Step:
    """A command block of the tutorial and the output block that follows it, if any."""

    command: Block
    expected: Block | None


def pages() -> list[Path]:
    """Every Markdown page of the site (the hooks folder holds Python only)."""
    return sorted(DOCS.rglob("*.md"))


def fenced_blocks(page: Path) -> list[Block]:
    """The top-level fenced code blocks of ``page``, in order."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: unclosed code fence")
        lang = info.split()[0] if info else ""
        title = _TITLE.search(info)
        blocks.append(Block(page, lang, "\n".join(body) + "\n", i + 1, title[1] if title else ""))
        i = j + 1
    return blocks


def tutorial_steps(page: Path) -> list[Step]:
    """The ``sh`` blocks of a tutorial page, each with the ``text`` block right after it (its
    expected output) when there is one."""
    blocks = fenced_blocks(page)
    steps: list[Step] = []
    for k, block in enumerate(blocks):
        if block.lang != "sh":
            continue
        nxt = blocks[k + 1] if k + 1 < len(blocks) else None
        steps.append(Step(block, nxt if nxt is not None and nxt.lang == "text" else None))
    return steps


def normalise(line: str) -> str:
    """A line of output with what changes from run to run taken out: request ids, decimals and
    integers of five digits or more become ``#``; runs of blanks become one space; a trailing
    ``…`` (an excerpt of a long line) is dropped."""
    line = _HEX_ID.sub("#", line)
    line = _VOLATILE.sub("#", line).removesuffix("…")
    return " ".join(line.split())


def missing_lines(expected: str, actual: str) -> list[str]:
    """The expected lines not found, in order, inside the actual output.

    Each expected line, normalised, must be contained in a later actual line, normalised,
    than the previous expected line was (so a page may show an excerpt of the output).
    """
    have = [normalise(line) for line in actual.splitlines()]
    missing: list[str] = []
    pos = 0
    for line in expected.splitlines():
        want = normalise(line)
        if not want:
            continue
        for k in range(pos, len(have)):
            if want in have[k]:
                pos = k + 1
                break
        else:
            missing.append(line)
    return missing
