"""Scope maps as hostile input: size and alias-expansion limits checked before converting,
schema explanations only for the items that failed, and `router check` / `router serve`
surviving mutated maps (exit 0, 1 or 2, never a traceback) and agreeing."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import check
from scopemap import load_path, load_text, loader
from scopemap.schema import _translate, _validator, validate
from scopemap.yamlsrc import MAX_NODES, parse_yaml
from tests.strategies import _alias_bomb, mutated_map_bytes, scope_map_texts

ROOT = Path(__file__).parents[2]


def _full_schema_findings(doc: object) -> list[tuple[object, ...]]:
    return sorted((f for e in _validator().iter_errors(doc) for f in _translate(e)), key=repr)


@given(scope_map_texts(), st.data())
def test_explaining_only_failing_items_finds_what_the_whole_walk_finds(
    text: str, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(
        st.sampled_from(["x", "-1", " [1]", "\n  foo: 1", "\n    - x", "\n  retention: 3"])
    )
    doc = parse_yaml(text[:cut] + junk + text[cut:]).value
    assert sorted(validate(doc), key=repr) == _full_schema_findings(doc)


def test_alias_bomb_is_refused_before_expansion() -> None:
    bomb = _alias_bomb(levels=9, fan=10)  # 10^9 nodes expanded, 300 bytes of text
    started = time.perf_counter()
    result = load_text(bomb)
    elapsed = time.perf_counter() - started
    assert [d.code for d in result.diagnostics] == ["SM001"]
    assert f"more than {MAX_NODES} nodes once aliases are expanded" in result.diagnostics[0].message
    assert elapsed < 2.0  # generous: the expansion itself took ~10 s before the check


def test_recursive_alias_is_a_diagnostic() -> None:
    result = load_text("a: &a [x, *a]\n")
    assert [d.message for d in result.diagnostics] == ["recursive YAML alias"]


def test_file_over_the_size_limit_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_MAP_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("# x\n" * 1000)
    result = load_path(path)
    assert [d.code for d in result.diagnostics] == ["SM001"]
    assert "larger than 1000 bytes" in result.diagnostics[0].message


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> int:
    parser = argparse.ArgumentParser()
    check.configure(parser)
    code = check.run(parser.parse_args([str(path), "--format", "json"]))
    capsys.readouterr()
    return code


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated_map_bytes())
def test_router_check_survives_mutated_maps(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "map.yaml"
    path.write_bytes(data)
    assert _check(path, capsys) in (0, 1, 2)


def _serve_exit(path: Path) -> int:
    """0 when `router serve` started on the map (then stopped with SIGTERM), else its
    exit status. stderr goes to a file: a map with many diagnostics must not block the
    process on a full pipe."""
    argv = [sys.executable, "-m", "router.cli", "serve", "--scope-map", str(path)]
    argv += ["--url", "grpc://127.0.0.1:0", "--watch-interval", "0"]
    err_path = path.with_suffix(".stderr")
    with (
        err_path.open("w") as err,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True) as proc,
    ):
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().startswith("serving "):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                return 0
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = err_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-2000:]
    return code


@settings(max_examples=4, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=mutated_map_bytes())
def test_router_check_and_router_serve_agree(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("agree") / "map.yaml"
    path.write_bytes(data)
    checked = subprocess.run(
        [sys.executable, "-m", "router.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode in (0, 1, 2) and "Traceback" not in checked.stderr
    served = _serve_exit(path)
    assert (checked.returncode == 0) == (served == 0), (checked.stdout[-500:], served)


def test_router_check_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"x{i}: 1\n" for i in range(20_000)))  # many diagnostics
    proc = subprocess.run(
        f"{sys.executable} -m router.cli check --format json {path} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.strip() == "{"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@given(scope_map_texts(), st.booleans())
def test_expanded_size_counts_what_the_converter_visits(text: str, aliased: bool) -> None:
    import yaml

    from scopemap.yamlsrc import SourceTree, _Converter, expanded_size

    if aliased:  # share one scope entry and one endpoint body through anchors and aliases
        head, found, tail = text.partition("{all: true}")
        if found:
            text = head + "&e {all: true}" + tail.replace("{all: true}", "*e ")
        text += "'grpc://copy.example.org:1': *first\n"
        text = text.replace(":\n  scopes:", ": &first\n  scopes:", 1)
    node = yaml.compose(text, Loader=yaml.CSafeLoader)
    converter = _Converter(SourceTree())
    converter.convert(node, ())
    assert expanded_size(node, MAX_NODES) == converter.count
