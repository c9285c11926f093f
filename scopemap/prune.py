"""Find/Count pruning: ask only the endpoints whose claims could hold a matching channel.

A Find pattern is a Python regular expression matched at the *start* of a channel name
(``re.match``, PROTOCOL §2). Its literal prefix (``H1:`` in ``H1:.*``, ``L1:GDS`` in
``L1:GDS.*``) is a string every matching name starts with; an endpoint whose claimed scopes
(domain wildcard, subsystem, channel) hold no name starting with that prefix cannot answer
anything, so it is not asked. A pattern without a usable prefix (``.*``, ``(H1|L1):``,
``[HL]1:``, a leading flag group) still goes everywhere.

Soundness is the rule, not precision: :func:`literal_prefix` may return less than the true
prefix (down to ``""``), never more, and :func:`could_match` says no only when no channel
name the entry claims can start with the prefix. Both are property-tested against ``re``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scopemap.index import RoutingIndex
from scopemap.model import ScopeEntry
from scopemap.plan import FindPlan, FindTarget

__all__ = ["could_match", "entry_reason", "literal_prefix", "prune", "prune_find"]

_SPECIAL = set(".^$*+?{}[]()|\\")
_OPTIONAL = set("*?{")  # quantifiers that allow zero repetitions of the previous atom
# after a backslash, characters that stand for themselves (every other escape is a class,
# an anchor, a back-reference or a code point we do not decode)
_ESCAPED_LITERAL = set(".^$*+?{}[]()|\\-:_/ #&~\"'!%,;<=>@`")


def literal_prefix(pattern: str) -> str:
    """A string that every name ``re.match(pattern, name)`` accepts starts with ("" when
    none can be read off safely)."""
    if "|" in pattern:  # an alternation anywhere may begin at the top level
        return ""
    i = 1 if pattern.startswith("^") else 0
    out: list[str] = []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _ESCAPED_LITERAL:
                break
            atom, width = pattern[i + 1], 2
        elif c in _SPECIAL:
            break
        else:
            atom, width = c, 1
        nxt = pattern[i + width] if i + width < len(pattern) else ""
        if nxt in _OPTIONAL:  # "H1?": the "1" may be absent
            break
        out.append(atom)
        i += width
        if nxt == "+":  # one or more: this atom is certain, what follows is not
            break
    return "".join(out)


def could_match(entry: ScopeEntry, prefix: str) -> bool:
    """Whether a channel name claimed by ``entry`` can start with ``prefix``.

    A name is ``<domain>:<tail>``, the domain ending at its *last* colon (so the tail has no
    colon); a subsystem entry's names are ``<domain>:<subsystem>`` optionally followed by
    ``-`` or ``_`` and more.
    """
    if entry.kind == "channel":
        return entry.value is not None and entry.value.startswith(prefix)
    head = f"{entry.domain}:"
    if entry.kind == "subsystem" and entry.value is not None:
        head += entry.value
    if head.startswith(prefix):
        return True
    if not prefix.startswith(head):
        return False
    rest = prefix[len(head) :]
    if ":" in rest:  # the tail of a name of this domain has no colon
        return False
    return entry.kind == "all" or rest[0] in "-_"


def entry_reason(entry: ScopeEntry) -> str:
    """The scope an entry claims, as an operator reads it (``H1:*``, ``L1:GDS-*``...)."""
    if entry.kind == "all":
        return f"{entry.domain}:*"
    if entry.kind == "subsystem":
        return f"{entry.domain}:{entry.value}*"
    return str(entry.value)


def prune(
    entries_of: Sequence[Iterable[ScopeEntry]], pattern: str
) -> tuple[list[int], list[tuple[int, str]]]:
    """Which of several endpoints (given by their entries) a Find with ``pattern`` asks:
    ``(kept indices, [(dropped index, why)])``."""
    prefix = literal_prefix(pattern)
    kept: list[int] = []
    dropped: list[tuple[int, str]] = []
    for i, entries in enumerate(entries_of):
        entries = tuple(entries)
        if not prefix or any(could_match(e, prefix) for e in entries):
            kept.append(i)
        else:
            claims = ", ".join(entry_reason(e) for e in entries[:5])
            dropped.append((i, f"claims {claims}: no name there starts with {prefix!r}"))
    return kept, dropped


def prune_find(
    index: RoutingIndex, plan: FindPlan, pattern: str
) -> tuple[tuple[FindTarget, str], ...]:
    """The targets of ``plan`` that could hold a channel matching ``pattern``, each with the
    scopes its endpoints claim (for errors naming what a failed target would have answered)."""
    entries_of = [_entries(index, t) for t in plan.targets]
    kept, _ = prune(entries_of, pattern)
    return tuple(
        (plan.targets[i], ", ".join(entry_reason(e) for e in entries_of[i][:8])) for i in kept
    )


def _entries(index: RoutingIndex, target: FindTarget) -> tuple[ScopeEntry, ...]:
    view = index.view(target.replay_id)
    out: list[ScopeEntry] = []
    for url in target.endpoints[:1]:  # replicas claim the same region
        out.extend(view.entries.get(index.urls.index(url), ()))
    return tuple(out)
