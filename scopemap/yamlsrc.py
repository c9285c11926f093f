"""YAML text to plain Python values, remembering where every node came from.

PyYAML's constructors drop positions and silently keep the last of duplicate keys, so we
compose the node graph ourselves (C composer when available) and convert it: scalars through
the safe constructor's resolvers, mappings with duplicate-key detection and ``<<`` merges.
Positions are recorded per *path* (tuple of keys/indices), for the value and, in mappings,
for the key, so later checks can point at the right line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from scopemap.model import SourcePos

Path = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
#: nodes of the document with every alias expanded; checked on the composed graph, before
#: anything is converted, so an alias bomb ("billion laughs") costs no more than its text
MAX_NODES = 2_000_000


@dataclass
class SourceTree:
    """The converted document plus positions and the problems met while converting."""

    value: Any = None
    # nodes, not positions: marks are only turned into positions when a finding needs one
    value_pos: dict[Path, yaml.Node] = field(default_factory=dict)
    key_pos: dict[Path, yaml.Node] = field(default_factory=dict)
    duplicates: list[tuple[Path, SourcePos, SourcePos]] = field(default_factory=list)
    bad_keys: list[tuple[Path, SourcePos]] = field(default_factory=list)
    syntax_error: tuple[str, SourcePos] | None = None

    def pos(self, path: Path, *, key: bool = False) -> SourcePos:
        """Best position for ``path``: its key or value, else the nearest ancestor."""
        while True:
            found = (self.key_pos.get(path) if key else None) or self.value_pos.get(path)
            if found is not None:
                return _mark(found)
            if not path:
                return SourcePos(1, 1)
            path = path[:-1]


def _mark(node: yaml.Node) -> SourcePos:
    return SourcePos(node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()
        self.scalar: dict[str, Callable[[yaml.ScalarNode], Any]] = {
            "tag:yaml.org,2002:null": self.constructor.construct_yaml_null,
            "tag:yaml.org,2002:bool": self.constructor.construct_yaml_bool,
            "tag:yaml.org,2002:int": self.constructor.construct_yaml_int,
            "tag:yaml.org,2002:float": self.constructor.construct_yaml_float,
        }
        self.active: set[int] = set()  # node ids on the current path (recursive aliases)

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        self.tree.value_pos.setdefault(path, node)
        if isinstance(node, yaml.ScalarNode):
            build = self.scalar.get(node.tag)
            if build is None:
                return str(node.value)  # str, and any other tag read as its text
            return build(node)
        if id(node) in self.active:
            raise _Recursive(_mark(node))
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self._item(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return None  # pragma: no cover - no other node kinds
        finally:
            self.active.discard(id(node))

    def _item(self, node: yaml.Node, path: Path) -> Any:
        """:meth:`convert`, with plain strings (most of a map's nodes) handled inline."""
        if node.__class__ is yaml.ScalarNode and node.tag == _STR_TAG:
            self.count += 1
            if self.count > MAX_NODES:
                raise _TooLarge
            self.tree.value_pos.setdefault(path, node)
            return node.value
        return self.convert(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                value = self.convert(value_node, (*path, "<<"))
                sources = value if isinstance(value, list) else [value]
                merged.extend(s for s in sources if isinstance(s, dict))
                continue
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG:
                key = str(key_node.value)
            else:
                raw_key = self.convert(key_node, (*path, "<key>"))
                key = raw_key if isinstance(raw_key, str) else str(raw_key)
                if not isinstance(raw_key, str):
                    self.tree.bad_keys.append(((*path, key), _mark(key_node)))
            child = (*path, key)
            if key in out:
                first = _mark(self.tree.key_pos[child])
                self.tree.duplicates.append((child, _mark(key_node), first))
                continue
            self.tree.key_pos[child] = key_node
            self.tree.value_pos.pop(child, None)
            out[key] = self._item(value_node, child)
        for source in merged:  # explicit keys win over merged ones
            for k, v in source.items():
                out.setdefault(k, v)
        return out


class _TooLarge(Exception):
    pass


class _Recursive(Exception):
    def __init__(self, pos: SourcePos) -> None:
        self.pos = pos


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes the converter visits under ``node`` (plain string keys are not visited)."""
    if not isinstance(node, yaml.MappingNode):
        return list(node.value)
    out = []
    for key, value in node.value:
        if not (isinstance(key, yaml.ScalarNode) and key.tag == _STR_TAG):
            out.append(key)
        out.append(value)
    return out


def expanded_size(root: yaml.Node, limit: int) -> int:
    """The nodes the converter would visit under ``root`` with aliases expanded (a node
    reached twice counts twice), computed on the shared graph in linear time; stops early
    once over ``limit``. Raises ``_Recursive`` for an alias cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = _children(node)
        if children_done:
            active.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            if sizes[key] > limit:
                return sizes[key]
            continue
        if key in active:
            raise _Recursive(_mark(node))
        active.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise _Recursive(_mark(child))
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def parse_yaml(text: str) -> SourceTree:
    """Never raises on user input: problems land in ``syntax_error`` and friends."""
    tree = SourceTree()
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = SourcePos(mark.line + 1, mark.column + 1) if mark else SourcePos(1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        tree.syntax_error = (f"invalid YAML: {problem}", pos)
        return tree
    except (yaml.YAMLError, ValueError, RecursionError, MemoryError) as exc:
        tree.syntax_error = (f"invalid YAML: {exc}", SourcePos(1, 1))
        return tree
    if node is None:
        return tree
    try:
        # without an alias ("*name") nothing is shared: the converter's own count suffices
        size = expanded_size(node, MAX_NODES) if "*" in text else 0
    except _Recursive as exc:
        tree.syntax_error = ("recursive YAML alias", exc.pos)
        return tree
    if size > MAX_NODES:
        msg = f"document too large: more than {MAX_NODES} nodes once aliases are expanded"
        tree.syntax_error = (msg, SourcePos(1, 1))
        return tree
    try:
        tree.value = _Converter(tree).convert(node, ())
    except _TooLarge:
        tree.syntax_error = ("document too large (alias expansion?)", SourcePos(1, 1))
    except _Recursive as exc:
        tree.syntax_error = ("recursive YAML alias", exc.pos)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        tree.syntax_error = (f"invalid YAML value: {exc}", SourcePos(1, 1))
    return tree
