"""The examples on the documentation pages are correct: every scope map validates (or, when its
title says it shows a mistake, is caught by the checker), every Python example runs, and no page
is a placeholder."""

from __future__ import annotations

import os
import re
from itertools import pairwise
from pathlib import Path

import pytest

from scopemap import load_text
from tests.docs.pages import Block, fenced_blocks, pages

BLOCKS = [block for page in pages() for block in fenced_blocks(page)]


def blocks(lang: str) -> list[Block]:
    return [b for b in BLOCKS if b.lang == lang]


def test_the_pages_have_examples() -> None:
    assert len(blocks("yaml")) >= 5
    assert len(blocks("python")) >= 2


@pytest.mark.parametrize("block", blocks("yaml"), ids=lambda b: b.where)
def test_every_scope_map_example_is_checked(block: Block) -> None:
    result = load_text(block.text, block.where)
    found = [d.format() for d in result.diagnostics]
    if "mistake" in block.title:
        assert found, f"{block.where}: shown as a mistake, but router check finds nothing"
        for code in re.findall(r"SM\d{3}", block.title):
            assert any(code in d for d in found), f"{block.where}: {code} not reported: {found}"
    else:
        assert result.scope_map is not None and not found, f"{block.where}: {found}"


def _shown_diagnostics() -> list[tuple[Block, Block]]:
    """(mistake map, the text block right after it): the diagnostics a page shows for it."""
    pairs = []
    for page in pages():
        found = fenced_blocks(page)
        for block, nxt in pairwise(found):
            if block.lang == "yaml" and "mistake" in block.title and nxt.lang == "text":
                pairs.append((block, nxt))
    return pairs


def test_some_page_shows_the_diagnostics_of_a_mistake() -> None:
    assert _shown_diagnostics()


@pytest.mark.parametrize("pair", _shown_diagnostics(), ids=lambda p: p[0].where)
def test_shown_diagnostics_are_what_router_check_prints(pair: tuple[Block, Block]) -> None:
    block, shown = pair
    printed = [d.format() for d in load_text(block.text, "map.yaml").diagnostics]
    assert shown.text.splitlines() == printed, shown.where


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.where)
def test_every_python_example_runs(block: Block, tmp_path: Path) -> None:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})
    finally:
        os.chdir(cwd)


def test_no_page_is_a_placeholder() -> None:
    for page in pages():
        text = page.read_text()
        assert len(text.split()) > 60, f"{page}: too short to be a page"
        for word in ("TODO", "TBD", "coming soon", "lorem ipsum", "FIXME"):
            assert word.lower() not in text.lower(), f"{page}: {word!r}"
