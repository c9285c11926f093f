"""``load_text`` / ``load_path``: YAML text to a ``ScopeMap`` plus diagnostics; never raises.

Pipeline: parse (positions, duplicate keys) → JSON Schema → semantic build → lint warnings.
The model exists only when no error was found; warnings never block it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scopemap.build import Builder
from scopemap.codes import severity_of
from scopemap.gcpause import paused_gc
from scopemap.lint import lint
from scopemap.model import Diagnostic, ScopeMap, Severity, SourcePos
from scopemap.schema import validate
from scopemap.yamlsrc import Path as NodePath
from scopemap.yamlsrc import parse_yaml

#: the largest scope-map file read (a 100,000-endpoint map is about 11 MB)
MAX_MAP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LoadResult:
    """What loading returns: the map (None when any diagnostic is an error) and every finding.

    >>> from scopemap import load_text
    >>> result = load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 0, oldest: inf}
    ... ''', "map.yaml")
    >>> result.ok, [d.code for d in result.warnings], result.errors
    (True, ['SM201'], ())
    """

    scope_map: ScopeMap | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.scope_map is not None and not self.errors

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.WARNING)


def load_path(path: str | Path) -> LoadResult:
    """Load and validate the scope map in the file ``path``; never raises on user input.

    A file that cannot be read or is not UTF-8 is a diagnostic (SM003, SM001) like any other:

    >>> result = load_path("no-such-map.yaml")
    >>> result.scope_map is None, [d.code for d in result.diagnostics]
    (True, ['SM003'])
    """
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MAP_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return LoadResult(None, (_diag("SM003", f"cannot read {name}: {reason}", name, None),))
    if len(raw) > MAX_MAP_BYTES:
        msg = f"file larger than {MAX_MAP_BYTES} bytes: not read further"
        return LoadResult(None, (_diag("SM001", msg, name, SourcePos(1, 1)),))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        return LoadResult(None, (_diag("SM001", msg, name, SourcePos(1, 1)),))
    return load_text(text, name)


def load_text(text: str, filename: str = "<string>") -> LoadResult:
    """Load and validate scope-map YAML ``text``; ``filename`` is used in the diagnostics.

    Never raises on user input: ``scope_map`` is None when any diagnostic is an error.

    >>> result = load_text('''
    ... grpc://live.example.org:31206:
    ...   scopes: {H1: [{all: true}]}
    ...   retention: {newest: 600, oldest: 0}
    ... ''', "map.yaml")
    >>> print(result.scope_map)
    None
    >>> for d in result.diagnostics:
    ...     print(d.format())
    map.yaml:4:14: error SM101: retention newest (600) is greater than oldest (0): empty window
    """
    if len(text) > MAX_MAP_BYTES:
        msg = f"text longer than {MAX_MAP_BYTES} characters: not parsed"
        return LoadResult(None, (_diag("SM001", msg, filename, SourcePos(1, 1)),))
    with paused_gc():  # many small acyclic objects: see gcpause
        return _load_text(text, filename)


def _load_text(text: str, filename: str) -> LoadResult:
    found: list[Diagnostic] = []

    def add(code: str, message: str, pos: SourcePos | None) -> None:
        found.append(_diag(code, message, filename, pos))

    tree = parse_yaml(text)
    if tree.syntax_error is not None:
        msg, pos = tree.syntax_error
        add("SM001", msg, pos)
        return LoadResult(None, tuple(found))
    for path, pos, first in tree.duplicates:
        add("SM002", f"duplicate key {path[-1]!r} (first defined at line {first.line})", pos)
    for path, pos in tree.bad_keys:
        add("SM010", f"mapping keys must be strings, got {path[-1]}", pos)
    if tree.value is None:
        add("SM010", "the scope map is empty: expected a mapping of endpoint URLs", SourcePos(1, 1))
        return LoadResult(None, tuple(found))

    for code, message, path, is_key in validate(tree.value):
        add(code, message, tree.pos(path, key=is_key))

    def report(code: str, message: str, path: NodePath, is_key: bool) -> None:
        add(code, message, tree.pos(path, key=is_key))

    builder = Builder(tree, filename, report)
    scope_map = builder.build()
    if any(d.severity is Severity.ERROR for d in found):
        scope_map = None
    if scope_map is not None:
        for url, key, value in builder.string_ages:
            msg = (
                f"{key}: {value} is a string in YAML 1.2 (upstream arrakis-server fails "
                "on it); write .inf"
            )
            add("SM201", msg, tree.pos((url, "retention", key)))

        def retention_pos(url: str) -> SourcePos:
            return tree.pos((url, "retention"), key=True)

        def domain_pos(url: str, domain: str) -> SourcePos:
            return tree.pos((url, "scopes", domain), key=True)

        for code, message, pos in lint(scope_map, retention_pos, domain_pos):
            add(code, message, pos)
    found.sort(key=lambda d: (d.line, d.column, d.code))
    return LoadResult(scope_map, tuple(found))


def _diag(code: str, message: str, file: str, pos: SourcePos | None) -> Diagnostic:
    line, col = (pos.line, pos.column) if pos else (0, 0)
    return Diagnostic(severity_of(code), code, message, file, line, col)
