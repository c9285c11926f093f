"""MkDocs hook: the command-line reference, generated from the argparse parsers.

A page line of the form ``<!-- argparse: PROG -->`` (PROG is ``router`` or ``router-backend``)
is replaced by the reference of that command and every sub-command: usage, description and a
table of every option with its argument, default and help, straight from the parser the command
itself uses. The options in the docs therefore cannot drift from the code. An unknown PROG
fails the build.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from typing import Any

MARKER = re.compile(r"^<!-- argparse: (?P<prog>[\w-]+) -->$", re.M)


def _router_parser() -> argparse.ArgumentParser:
    from router.cli import build_parser

    return build_parser(None)  # None: every sub-command configured


def _backend_parser() -> argparse.ArgumentParser:
    from router_backends.cli import reference_parser

    return reference_parser()


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "router": _router_parser,
    "router-backend": _backend_parser,
}


def _cell(text: str) -> str:
    """Markdown table cell text: no pipes, no line breaks."""
    return " ".join(text.replace("|", "\\|").split())


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params: dict[str, Any] = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return action.help % params


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and action.metavar is None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    text = f"`{metavar if isinstance(metavar, str) else ' '.join(metavar)}`"
    if action.nargs in ("*", "+"):
        text += " …"
    return text


def _default(action: argparse.Action) -> str:
    default = action.default
    # `router serve` options are layered (flag > env > file > default, router.config): the
    # parser holds a marker that keeps the real default and whether a value is required
    required = action.required or bool(getattr(default, "required", False))
    if required:
        return "required"
    if type(default).__name__ == "Unset":
        default = default.default
    if default is None or default == argparse.SUPPRESS or action.nargs == 0:
        return ""
    if isinstance(default, list) and not default:
        return ""
    return f"`{default}`"


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def options_table(parser: argparse.ArgumentParser) -> list[str]:
    """The rows of ``parser``'s own arguments (sub-commands excluded), as Markdown lines."""
    rows = ["| option | argument | default | meaning |", "| --- | --- | --- | --- |"]
    count = 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        help_text = _help(action, parser.prog)
        rows.append(
            f"| {names} | {_argument(action)} | {_cell(_default(action))} | {_cell(help_text)} |"
        )
        count += 1
    return rows if count else []


def render(prog: str, parser: argparse.ArgumentParser, level: int = 2) -> str:
    """The reference of ``parser`` and, one heading level down, of each sub-command."""
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    table = options_table(parser)
    if table:
        lines += [*table, ""]
    subs = list(_subcommands(parser))
    if subs:
        lines += ["| command | what it does |", "| --- | --- |"]
        for _name, sub in subs:
            lines.append(f"| `{sub.prog}` | {_cell(sub.description or '')} |")
        lines.append("")
        for _name, sub in subs:
            lines += [render(prog, sub, level + 1), ""]
    return "\n".join(lines).rstrip() + "\n"


def expand(markdown: str) -> str:
    """``markdown`` with every ``<!-- argparse: PROG -->`` line replaced by its reference."""

    def replace(match: re.Match[str]) -> str:
        prog = match["prog"]
        if prog not in PARSERS:
            raise ValueError(f"unknown command in argparse marker: {prog!r}")
        return render(prog, PARSERS[prog]())

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)
