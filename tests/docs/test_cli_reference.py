"""The command-line reference is generated from the parsers, and shows every option."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.docs.pages import DOCS


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", DOCS / "_hooks" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOK = load_hook()


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)


def rendered_page() -> str:
    return str(HOOK.expand((DOCS / "reference" / "cli.md").read_text()))


@pytest.mark.parametrize("prog", ["router", "router-backend"])
def test_every_option_of_every_subcommand_is_on_the_page(prog: str) -> None:
    page = rendered_page()
    parsers = list(walk(HOOK.PARSERS[prog]()))
    assert len(parsers) >= 4  # the command and its sub-commands
    for parser in parsers:
        section = page.split(f"`{parser.prog}`\n", 1)
        assert len(section) == 2, f"no section for {parser.prog}"
        body = section[1].split("\n#", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            for name in action.option_strings or [action.dest]:
                assert f"`{name}`" in body, f"{parser.prog}: {name} missing"
            if action.help:
                assert HOOK._cell(HOOK._help(action, parser.prog)) in body


def test_defaults_and_choices_come_from_the_parser() -> None:
    page = rendered_page()
    assert "| `--scope-map` | `FILE` | required |" in page
    assert "| `--mode` | `proxy` \\| `redirect` | `proxy` |" in page
    assert "| `--retention` | `NEWEST,OLDEST` |" in page


def test_an_unknown_command_fails_the_build() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        HOOK.expand("<!-- argparse: nonsense -->\n")


def test_every_marker_is_replaced() -> None:
    assert "<!-- argparse:" not in rendered_page()
