"""``router check FILE...``: validate scope maps, print diagnostics, exit 0/1/2 (for CI).

Output: one ``file:line:col: error|warning CODE: message`` line per finding, then a summary;
``--format json`` prints one JSON document instead. ``--strict`` counts warnings as errors.
Exit 0 when clean, 1 when errors were found, 2 on usage problems (a file that cannot be read).
Imports only ``scopemap`` (never pyarrow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from scopemap import Diagnostic, Severity, load_path

EXIT_CLEAN, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
UNREADABLE = "SM003"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="scope-map YAML files")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")


def _as_json(d: Diagnostic, strict: bool) -> dict[str, Any]:
    severity = Severity.ERROR if strict else d.severity
    return {
        "file": d.file,
        "line": d.line,
        "column": d.column,
        "severity": severity.value,
        "code": d.code,
        "message": d.message,
    }


def run(args: argparse.Namespace) -> int:
    strict: bool = args.strict
    per_file: list[tuple[str, bool, tuple[Diagnostic, ...]]] = []
    for name in args.files:
        result = load_path(name)
        per_file.append((name, result.scope_map is not None, result.diagnostics))
    diagnostics = [d for _, _, ds in per_file for d in ds]
    errors = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    warnings = len(diagnostics) - errors
    failing = errors + (warnings if strict else 0)
    unreadable = any(d.code == UNREADABLE for d in diagnostics)
    code = EXIT_USAGE if unreadable else (EXIT_ERRORS if failing else EXIT_CLEAN)

    if args.format == "json":
        doc = {
            "files": [
                {
                    "file": name,
                    "ok": loaded and not any(d.severity is Severity.ERROR or strict for d in ds),
                    "diagnostics": [_as_json(d, strict) for d in ds],
                }
                for name, loaded, ds in per_file
            ],
            "errors": errors,
            "warnings": warnings,
            "strict": strict,
            "exit_code": code,
        }
        _emit(json.dumps(doc, indent=2) + "\n")
        return code

    lines = []
    for d in diagnostics:
        line = d.format()
        if strict and d.severity is Severity.WARNING:
            line += " [--strict]"
        lines.append(line + "\n")
    files = len(per_file)
    summary = (
        f"{files} file{'s' if files != 1 else ''} checked: "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )
    if strict and warnings:
        summary += " (warnings count as errors: --strict)"
    _emit("".join(lines) + summary + "\n")
    return code


def _emit(text: str) -> None:
    """Write ``text`` to stdout; a reader that went away (``router check ... | head``) ends
    the output quietly, as Unix tools do, instead of with a BrokenPipeError traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
