"""YAML text to plain Python values, remembering where every node came from.

PyYAML's constructors drop positions and silently keep the last of duplicate keys, so we
compose the node graph ourselves (C composer when available) and convert it: scalars through
the safe constructor's resolvers, mappings with duplicate-key detection and ``<<`` merges.
The node graph is kept: a finding names a *path* (tuple of keys/indices) and the position of
its key or value is looked up in the graph then, so later checks can point at the right line
without a position being recorded for each of a large map's million nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from scopemap.model import SourcePos

Path = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
#: nodes of the document with every alias expanded; checked on the composed graph, before
#: anything is converted, so an alias bomb ("billion laughs") costs no more than its text
MAX_NODES = 2_000_000
#: collections nested deeper than this are refused as the recursion limit refused them
#: before conversion was flattened (a little over 300 levels); nothing downstream (schema
#: messages, repr) is asked to go deeper
MAX_DEPTH = 300

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Scalar, _Sequence, _Mapping = yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader with its resolver made cheap. The composer asks the Python resolver
    about every node, and a map repeats a few plain words (keys, ``true``, ages) hundreds of
    thousands of times: a plain scalar's tag depends on its text only, so it is resolved
    once per text; with no path resolvers (the safe loader has none) a collection's tag is
    the default and the resolver's path tracking around every node has nothing to do."""

    #: first characters for which some implicit resolver (int, bool, null...) may apply
    _resolvable = frozenset(k for k in _Base.yaml_implicit_resolvers if k is not None)
    _simple = not _Base.yaml_path_resolvers and None not in _Base.yaml_implicit_resolvers

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}
        if self._simple:
            # C callables that do nothing, with the signatures the composer calls
            self.descend_resolver: Callable[[Any, Any], Any] = {}.get  # (parent, index)
            self.ascend_resolver: Callable[[], Any] = tuple

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if not self._simple:
            resolved: str = super().resolve(kind, value, implicit)
            return resolved
        if kind is _Scalar:
            if not implicit[0] or value[:1] not in self._resolvable:
                return _STR_TAG
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = super().resolve(kind, value, implicit)
            return tag
        return _SEQ_TAG if kind is _Sequence else _MAP_TAG


@dataclass
class SourceTree:
    """The converted document, its node graph (for positions) and the problems met while
    converting."""

    value: Any = None
    #: the composed document: positions are found in it when a finding needs one
    root: yaml.Node | None = None
    duplicates: list[tuple[Path, SourcePos, SourcePos]] = field(default_factory=list)
    bad_keys: list[tuple[Path, SourcePos]] = field(default_factory=list)
    syntax_error: tuple[str, SourcePos] | None = None
    _top: dict[str, tuple[yaml.Node, yaml.Node]] | None = field(default=None, repr=False)
    #: id of each converted dict -> its mapping node, and whether any ``<<`` merge was met
    #: (a merged value is not where :meth:`pos` would place it: then only paths are used)
    _nodes: dict[int, yaml.Node] = field(default_factory=dict, repr=False)
    _merged: bool = False

    def top_key_pos(self, key: str) -> SourcePos:
        """``pos((key,), key=True)``, for a key of the root mapping (an endpoint URL)."""
        found = None
        if self.root.__class__ is _Mapping:
            top = self._top if self._top is not None else self._index_top()
            found = top.get(key)
        return self.pos((key,), key=True) if found is None else _mark(found[0])

    def value_pos(self, value: dict[str, Any], path: Path) -> SourcePos:
        """``pos(path)`` for the mapping ``value`` found at ``path`` of :attr:`value`, in
        constant time (the builder asks for the position of every scope entry)."""
        node = None if self._merged else self._nodes.get(id(value))
        return self.pos(path) if node is None else _mark(node)

    def key_pos(self, parent: dict[str, Any], path: Path) -> SourcePos:
        """``pos(path, key=True)`` for a key of the mapping ``parent`` found at ``path[:-1]``."""
        node = None if self._merged else self._nodes.get(id(parent))
        if node is not None:
            for k, _ in node.value:
                if k.tag != _STR_TAG or k.__class__ is not _Scalar:
                    break  # a key written otherwise may stand for the same text first
                if k.value == path[-1]:
                    return _mark(k)
        return self.pos(path, key=True)

    def pos(self, path: Path, *, key: bool = False) -> SourcePos:
        """Best position for ``path``: its key or value, else the nearest ancestor.

        ``path`` is followed through the node graph as the converter read it: the first of
        duplicate keys, sequence items by index; keys merged in by ``<<`` are not followed
        (the mapping holding them is the position)."""
        node = self.root
        if node is None:
            return SourcePos(1, 1)
        key_node: yaml.Node | None = None
        rest = path
        if path and node.__class__ is _Mapping:
            top = self._top if self._top is not None else self._index_top()
            found = top.get(path[0]) if isinstance(path[0], str) else None
            if found is None:
                return _mark(node)
            key_node, node = found
            rest = path[1:]
        for part in rest:
            # inline: the builder asks for a position per endpoint, retention and entry
            cls = node.__class__
            if cls is _Mapping:
                for pair in node.value:
                    k = pair[0]
                    if k.tag == _STR_TAG and k.__class__ is _Scalar:
                        if k.value == part:
                            break
                    elif _key_text(k) == part:
                        break
                else:
                    break
                key_node, node = pair
            elif cls is _Sequence and isinstance(part, int) and 0 <= part < len(node.value):
                key_node, node = None, node.value[part]
            else:
                break
        return _mark(key_node if key and key_node is not None else node)

    def _index_top(self) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The root mapping's keys (the first of duplicates) to their key and value nodes,
        built on first use: the root holds every endpoint."""
        assert self.root is not None
        top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in self.root.value:
            text = _key_text(k)
            if text is not None:
                top.setdefault(text, (k, v))
        self._top = top
        return top


def _key_text(key_node: yaml.Node) -> str | None:
    """The key as the converter stores it (None for a ``<<`` merge key)."""
    if key_node.__class__ is _Scalar and key_node.tag == _STR_TAG:
        text: str = key_node.value
        return text
    if key_node.tag == _MERGE_TAG:
        return None
    raw = _Converter(SourceTree()).convert(key_node, ())
    return raw if isinstance(raw, str) else str(raw)


_MISSING = object()


def _mark(node: yaml.Node) -> SourcePos:
    return SourcePos(node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    """Nodes to plain values in one pass. Paths are only built for collections (where a
    duplicate or non-string key may need one); positions are not recorded at all."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self.nodes = tree._nodes
        self.count = 0
        constructor = yaml.constructor.SafeConstructor()
        self.scalar: dict[str, Callable[[yaml.ScalarNode], Any]] = {
            "tag:yaml.org,2002:null": constructor.construct_yaml_null,
            "tag:yaml.org,2002:bool": constructor.construct_yaml_bool,
            "tag:yaml.org,2002:int": constructor.construct_yaml_int,
            "tag:yaml.org,2002:float": constructor.construct_yaml_float,
        }
        # the values built are immutable and a map repeats the same few ages: once per text
        self.built: dict[tuple[str, str], Any] = {}

    def convert(self, node: yaml.Node, path: Path) -> Any:
        """Aliases are followed; an alias cycle must have been ruled out before (by
        :func:`expanded_size`), else this ends in a RecursionError."""
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        cls = node.__class__
        if cls is _Scalar:
            return self._scalar(node)
        if len(path) >= MAX_DEPTH:
            raise RecursionError("maximum recursion depth exceeded")
        if cls is _Mapping:
            return self._mapping(node, path)
        if cls is _Sequence:
            out = []
            for i, item in enumerate(node.value):
                if item.__class__ is _Scalar:
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise _TooLarge
                    out.append(item.value if item.tag == _STR_TAG else self._scalar(item))
                elif item.__class__ is _Mapping and len(path) + 1 < MAX_DEPTH:
                    # convert() inline for the scope entries
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise _TooLarge
                    out.append(self._mapping(item, (*path, i)))
                else:
                    out.append(self.convert(item, (*path, i)))
            return out
        return None  # pragma: no cover - no other node kinds

    def _scalar(self, node: Any) -> Any:
        if node.tag == _STR_TAG:
            return node.value
        key = (node.tag, node.value)
        found = self.built.get(key, _MISSING)
        if found is _MISSING:
            build = self.scalar.get(node.tag)
            found = str(node.value) if build is None else build(node)  # other tags: text
            if found == found:  # a NaN stays a new object each time, as before
                self.built[key] = found
        return found

    def _mapping(self, node: yaml.Node, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.nodes[id(out)] = node
        merged: list[dict[str, Any]] | None = None
        # the root mapping (every endpoint) is indexed for positions while it is read
        top: dict[str, tuple[yaml.Node, yaml.Node]] | None = {} if not path else None
        for key_node, value_node in node.value:
            if key_node.__class__ is _Scalar and key_node.tag == _STR_TAG:
                key = key_node.value
            elif key_node.tag == _MERGE_TAG:
                self.tree._merged = True
                value = self.convert(value_node, (*path, "<<"))
                sources = value if isinstance(value, list) else [value]
                merged = (merged or []) + [s for s in sources if isinstance(s, dict)]
                continue
            else:
                raw_key = self.convert(key_node, (*path, "<key>"))
                key = raw_key if isinstance(raw_key, str) else str(raw_key)
                if not isinstance(raw_key, str):
                    self.tree.bad_keys.append(((*path, key), _mark(key_node)))
            if top is not None:
                top.setdefault(key, (key_node, value_node))
            if key in out:
                first = next(k for k, _ in node.value if _key_text(k) == key)
                self.tree.duplicates.append(((*path, key), _mark(key_node), _mark(first)))
                continue
            if value_node.__class__ is _Scalar:
                self.count += 1
                if self.count > MAX_NODES:
                    raise _TooLarge
                tag = value_node.tag
                out[key] = value_node.value if tag == _STR_TAG else self._scalar(value_node)
            elif value_node.__class__ is _Mapping and len(path) + 1 < MAX_DEPTH:
                # convert() inline for endpoint bodies, scopes and retention
                self.count += 1
                if self.count > MAX_NODES:
                    raise _TooLarge
                out[key] = self._mapping(value_node, (*path, key))
            else:
                out[key] = self.convert(value_node, (*path, key))
        for source in merged or ():  # explicit keys win over merged ones
            for k, v in source.items():
                out.setdefault(k, v)
        if top is not None:
            self.tree._top = top
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
    tree.root = node
    try:
        tree.value = _Converter(tree).convert(node, ())
    except _TooLarge:
        tree.syntax_error = ("document too large (alias expansion?)", SourcePos(1, 1))
    except _Recursive as exc:
        tree.syntax_error = ("recursive YAML alias", exc.pos)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        tree.syntax_error = (f"invalid YAML value: {exc}", SourcePos(1, 1))
    return tree
