"""Find pruning: the literal prefix of a pattern and whether a claim can hold a match.

The properties state soundness against Python's own ``re``: a name the pattern matches
starts with the prefix, and an entry that claims such a name is never pruned.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scopemap import ScopeEntry, load_text, parse_channel_name, plan_find
from scopemap.index import RoutingIndex
from scopemap.plan import FindRequest
from scopemap.prune import could_match, literal_prefix, prune, prune_find


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("H1:.*", "H1:"),
        ("L1:GDS.*", "L1:GDS"),
        ("^H1:GDS-CALIB", "H1:GDS-CALIB"),
        ("H1:GDS-CALIB_STRAIN", "H1:GDS-CALIB_STRAIN"),
        (".*", ""),
        ("", ""),
        ("H1?:", "H"),
        ("H1*", "H"),
        ("H1{0,2}", "H"),
        ("H1+:X", "H1"),
        ("H1:(A|B)", ""),
        ("H1:A|L1:B", ""),
        ("[HL]1:", ""),
        ("(?i)h1:", ""),
        (r"H1\:GDS\-X", "H1:GDS-X"),
        (r"H1:\d", "H1:"),
        ("H1:GDS.", "H1:GDS"),
        ("\\", ""),
    ],
)
def test_literal_prefix_table(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


def entry(domain: str, kind: str, value: str | None = None) -> ScopeEntry:
    return ScopeEntry(domain, kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("claim", "prefix", "expected"),
    [
        (entry("H1", "all"), "H1:", True),
        (entry("H1", "all"), "H", True),
        (entry("H1", "all"), "L1:", False),
        (entry("H1", "all"), "H1:GDS-X", True),
        (entry("H1", "all"), "H1:A:B", False),
        (entry("V1", "all"), "H1:", False),
        (entry("L1", "subsystem", "GDS"), "L1:GDS", True),
        (entry("L1", "subsystem", "GDS"), "L1:G", True),
        (entry("L1", "subsystem", "GDS"), "L1:GDS-CALIB", True),
        (entry("L1", "subsystem", "GDS"), "L1:GDS_X", True),
        (entry("L1", "subsystem", "GDS"), "L1:GDSX", False),
        (entry("L1", "subsystem", "PEM"), "L1:GDS", False),
        (entry("L1", "channel", "L1:GDS-A"), "L1:GDS", True),
        (entry("L1", "channel", "L1:GDS-A"), "L1:GDS-B", False),
    ],
)
def test_could_match_table(claim: ScopeEntry, prefix: str, expected: bool) -> None:
    assert could_match(claim, prefix) is expected


# --------------------------------------------------------------------------- properties

ALPHA = "HLV1:GDS-_AB"
names_part = st.text(alphabet="HLV1GDSAB", min_size=1, max_size=4)
channel_names = st.builds(
    lambda d, s, sep, rest: f"{d}:{s}{sep}{rest}" if sep else f"{d}:{s}",
    st.sampled_from(["H1", "L1", "V1", "H"]),
    names_part,
    st.sampled_from(["", "-", "_"]),
    st.text(alphabet="ABGDS_-1", max_size=4),
)
# regex tokens: literals, escapes, classes, quantifiers, groups and alternations
tokens = st.sampled_from(
    [*ALPHA, ".", ".*", "?", "*", "+", "{0,2}", "\\-", "\\:", "\\d", "[HL]", "(", ")", "|", "^"]
)
patterns = st.lists(tokens, max_size=8).map("".join)


@given(patterns, channel_names)
def test_prefix_is_sound(pattern: str, name: str) -> None:
    """Every name the pattern matches at its start begins with the literal prefix."""
    try:
        rx = re.compile(pattern)
    except re.error:
        assume(False)
        return
    if rx.match(name):
        assert name.startswith(literal_prefix(pattern)), (pattern, name)


@given(patterns, channel_names)
def test_prefix_of_literal_start(pattern: str, name: str) -> None:
    """A prefix written out literally is found: ``NAME.*`` yields ``NAME`` itself."""
    assume("|" not in name and "." not in name)
    assert literal_prefix(re.escape(name) + ".*") == name


claims = st.one_of(
    st.builds(lambda d: entry(d, "all"), st.sampled_from(["H1", "L1", "V1", "H"])),
    st.builds(
        lambda d, s: entry(d, "subsystem", s), st.sampled_from(["H1", "L1", "V1"]), names_part
    ),
    channel_names.map(lambda n: entry(parse_channel_name(n).domain, "channel", n)),
)


@st.composite
def claim_name_pattern(draw: st.DrawFn) -> tuple[ScopeEntry, str, str]:
    """A claim, a name it holds, and a pattern matching that name: a literal piece of the
    name (escaped, or with some characters wildcarded) followed by arbitrary tokens."""
    claim = draw(claims)
    if claim.kind == "channel":
        assert claim.value is not None
        name = claim.value
    else:
        head = claim.value if claim.kind == "subsystem" else draw(names_part)
        sep = draw(st.sampled_from(["", "-", "_"]))
        rest = draw(st.text(alphabet="ABGDS_-1", max_size=4)) if sep else ""
        name = f"{claim.domain}:{head}{sep}{rest}"
    cut = draw(st.integers(0, len(name)))
    literal = "".join("." if draw(st.integers(0, 5)) == 0 else re.escape(c) for c in name[:cut])
    pattern = literal + draw(st.sampled_from(["", ".*", ".", "[HL]", "\\d*", "(A|B)?"]))
    return claim, name, pattern


@given(claim_name_pattern())
def test_never_prunes_a_claim_holding_a_match(case: tuple[ScopeEntry, str, str]) -> None:
    """If the claim holds ``name`` and the pattern matches it, the claim is kept."""
    claim, name, pattern = case
    assert claim.matches(parse_channel_name(name), name)
    assume(re.match(pattern, name))
    assert could_match(claim, literal_prefix(pattern))
    kept, dropped = prune([[claim]], pattern)
    assert kept == [0] and not dropped


@given(claim_name_pattern())
def test_prefix_of_a_claimed_name_keeps_the_claim(case: tuple[ScopeEntry, str, str]) -> None:
    claim, name, _ = case
    for cut in range(len(name) + 1):
        assert could_match(claim, name[:cut]), (claim, name[:cut])


MAP = """\
grpc://h1:1:
  scopes:
    H1:
      - all: true
  retention: {newest: 0, oldest: .inf}
grpc://l1:1:
  scopes:
    L1:
      - subsystem: GDS
      - subsystem: PEM
  retention: {newest: 0, oldest: .inf}
grpc://v1:1:
  scopes:
    V1:
      - all: true
  retention: {newest: 0, oldest: .inf}
"""


@pytest.mark.parametrize(
    ("pattern", "asked"),
    [
        ("H1:.*", ["grpc://h1:1"]),
        ("L1:GDS.*", ["grpc://l1:1"]),
        ("L1:ASC", []),
        (".*", ["grpc://h1:1", "grpc://l1:1", "grpc://v1:1"]),
        ("(H1|V1):", ["grpc://h1:1", "grpc://l1:1", "grpc://v1:1"]),
    ],
)
def test_prune_find_plan(pattern: str, asked: list[str]) -> None:
    result = load_text(MAP, "m.yaml")
    assert result.scope_map is not None, [d.format() for d in result.diagnostics]
    index = RoutingIndex(result.scope_map)
    plan = plan_find(index, FindRequest(None), 1_400_000_000 * 10**9)
    kept = prune_find(index, plan, pattern)
    assert sorted(u for t, _ in kept for u in t.endpoints) == asked
    scopes = dict((t.endpoints[0], s) for t, s in kept)
    if "grpc://l1:1" in scopes:
        assert scopes["grpc://l1:1"] == "L1:GDS*, L1:PEM*"
