"""The ``router`` command line: ``router check``, ``router serve``, ``router health``.

Each sub-command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported lazily so ``router check`` never pays for pyarrow.flight.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from router import __version__

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("router.check", "validate scope-map files (for CI)"),
    "serve": ("router.serve", "run the router Flight service"),
    "health": ("router.health", "exit 0 when a router/Arrakis server answers server-info"),
    "explain": ("router.explain", "show where a request goes and why (no network)"),
    "verify": ("router.verify", "check that the scope map matches what its endpoints do"),
}


def _selected(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first positional argument), if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: only the chosen sub-command's module is imported.

    With ``argv=None`` every sub-command is configured (for documentation and tests).
    """
    selected = None if argv is None else _selected(argv)
    parser = argparse.ArgumentParser(
        prog="router",
        description="arrakis-router: one Arrow Flight address in front of many Arrakis servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        if argv is None or name == selected:
            importlib.import_module(module_name).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
