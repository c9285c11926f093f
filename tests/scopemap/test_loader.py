"""Loader and diagnostics: one bad map per code, positions, never raising on arbitrary text."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scopemap import Severity, load_path, load_text, parse_channel_name
from scopemap.codes import CODES
from tests.strategies import scope_map_texts

BAD = Path(__file__).parent / "bad-maps"
EXPECT = re.compile(r"#\s*expect:\s*(SM\d{3})\s+line\s+(\d+)")


def _bad_maps() -> list[Path]:
    return sorted(BAD.glob("*.yaml"))


@pytest.mark.parametrize("path", _bad_maps(), ids=lambda p: p.stem)
def test_bad_map_yields_its_code_at_its_line(path: Path) -> None:
    m = EXPECT.search(path.read_text())
    assert m, f"{path.name} needs an '# expect: SMxxx line N' comment"
    code, line = m.group(1), int(m.group(2))
    result = load_path(path)
    found = [(d.code, d.line) for d in result.diagnostics]
    assert (code, line) in found, found
    assert all(d.code == code for d in result.diagnostics), found
    if CODES[code][0] is Severity.ERROR:
        assert result.scope_map is None and not result.ok
    else:
        assert result.scope_map is not None and result.ok


def test_every_code_has_a_bad_map() -> None:
    covered = {EXPECT.search(p.read_text()).group(1) for p in _bad_maps()}  # type: ignore[union-attr]
    assert covered | {"SM003"} == set(CODES)


def test_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    result = load_path(tmp_path / "nope.yaml")
    assert result.scope_map is None
    assert [d.code for d in result.diagnostics] == ["SM003"]


def test_non_utf8_file_is_a_diagnostic(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"grpc://a:1: \xff\n")
    assert [d.code for d in load_path(p).diagnostics] == ["SM001"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_document_is_an_error(text: str) -> None:
    result = load_text(text)
    assert not result.ok and [d.code for d in result.diagnostics] == ["SM010"]


@pytest.mark.parametrize("word", [".inf", ".Inf", "inf", "Infinity", "+inf"])
def test_infinity_spellings(word: str) -> None:
    result = load_text(
        f"grpc://a.b:1:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{oldest: {word}}}\n"
    )
    assert result.scope_map is not None
    assert math.isinf(result.scope_map.endpoints[0].retention.oldest_s)
    codes = [d.code for d in result.diagnostics]
    assert codes == ([] if word.startswith(".") else ["SM201"])


def test_defaults_and_model() -> None:
    result = load_text(
        "grpc://a.b:1:\n"
        "  scopes:\n"
        "    H1:\n"
        "      - publisher: P\n"
        "        subsystems: [GDS]\n"
        "        channels: ['H1:LSC-X']\n"
        "        direct_read: kafka://k:1\n"
        "  retention: {}\n"
        "  allowed_publishers: [P]\n"
    )
    assert result.ok, result.diagnostics
    sm = result.scope_map
    assert sm is not None
    ep = sm.endpoint("grpc://a.b:1")
    assert ep.retention.newest_s == 0 and math.isinf(ep.retention.oldest_s)
    assert [(e.kind, e.value, e.publisher) for e in ep.scopes] == [
        ("subsystem", "GDS", "P"),
        ("channel", "H1:LSC-X", "P"),
    ]
    assert ep.scopes[0].source is not None and ep.scopes[0].source.line == 4
    assert sm.domains == ("H1",)


def test_merge_keys_and_anchors() -> None:
    text = (
        "grpc://a.b:1: &base\n  retention: {newest: 0, oldest: 600}\n"
        "  scopes: {H1: [{all: true}]}\n"
        "grpc://c.d:2:\n  <<: *base\n  retention: {newest: 300}\n"
    )
    result = load_text(text)
    assert result.ok, result.diagnostics
    assert result.scope_map is not None
    second = result.scope_map.endpoint("grpc://c.d:2")
    assert second.retention.newest_s == 300 and math.isinf(second.retention.oldest_s)
    assert second.scopes == result.scope_map.endpoint("grpc://a.b:1").scopes


def test_alias_bomb_does_not_hang() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    result = load_text("\n".join(lines) + "\n")
    assert [d.code for d in result.diagnostics] == ["SM001"]


@given(st.text(max_size=300))
def test_loader_never_raises_on_arbitrary_text(text: str) -> None:
    result = load_text(text)
    assert result.ok == (result.scope_map is not None and not result.errors)


@given(scope_map_texts(), st.data())
def test_loader_never_raises_on_mangled_maps(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(["", ":", "- ", "{", "  ", "\t", "&a", "*b", "'", "\n  x: 1"]))
    result = load_text(text[:cut] + junk + text[cut + 1 :])
    for d in result.diagnostics:
        assert d.code in {*CODES}
        assert d.line >= 1 and d.column >= 1


@given(scope_map_texts())
def test_generated_maps_load(text: str) -> None:
    assert load_text(text).scope_map is not None


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("H1:GDS-CALIB_STRAIN", ("H1", "GDS", "-", "CALIB_STRAIN")),
        ("H1:LSC_FOO-BAR", ("H1", "LSC", "_", "FOO-BAR")),
        ("V1:Hrec_hoft_16384Hz", ("V1", "Hrec", "_", "hoft_16384Hz")),
        ("H1:GDS", ("H1", "GDS", None, None)),
        ("H1:GDS-", ("H1", "GDS", "-", "")),
        ("H1:_X", ("H1", "", "_", "X")),
        ("H1:", ("H1", "", None, None)),
        ("H1:A:B-C", ("H1:A", "B", "-", "C")),
        (":X-Y", ("", "X", "-", "Y")),
        ("X1:a b-c", ("X1", "a b", "-", "c")),
    ],
)
def test_parse_channel_name(name: str, parts: tuple[object, ...]) -> None:
    p = parse_channel_name(name)
    assert (p.domain, p.subsystem, p.sep, p.rest) == parts


def test_parse_channel_name_rejects_no_colon() -> None:
    with pytest.raises(ValueError):
        parse_channel_name("NOCOLON")


def test_import_scopemap_does_not_import_pyarrow() -> None:
    code = (
        "import sys, scopemap, router.check\n"
        "bad = [m for m in sys.modules if m.startswith('pyarrow')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@given(scope_map_texts(), st.data())
def test_fast_check_never_hides_a_schema_finding(text: str, data: st.DataObject) -> None:
    from scopemap.fastcheck import fast_valid
    from scopemap.schema import _translate, _validator
    from scopemap.yamlsrc import parse_yaml

    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(["", "x", "-1", "{", " [1]", "\n  foo: 1", "\n    - x"]))
    for variant in (text, text[:cut] + junk + text[cut:]):
        doc = parse_yaml(variant).value
        if fast_valid(doc):
            assert [f for e in _validator().iter_errors(doc) for f in _translate(e)] == []


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "examples").rglob("*.yaml")))
def test_examples_take_the_fast_path(path: Path) -> None:
    from scopemap.fastcheck import fast_valid
    from scopemap.yamlsrc import parse_yaml

    assert fast_valid(parse_yaml(path.read_text()).value)
