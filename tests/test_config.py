"""``router serve`` settings: flag > ARRAKIS_ROUTER_* environment > TOML --config > default,
over every option of the real parser (options added later are covered by construction)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.cli import build_parser
from router.config import ConfigError, Resolved, Unset, env_name, layered, render, resolve
from router.serve import configure, local_url

ROUTER = [sys.executable, "-m", "router.cli"]


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router serve")
    configure(parser)
    return parser


def settle(
    argv: list[str], environ: dict[str, str] | None = None, toml: str | None = None
) -> Resolved:
    parser = serve_parser()
    args = parser.parse_args(argv)
    if toml is not None:
        path = Path(argv[argv.index("--config") + 1]) if "--config" in argv else None
        assert path is not None
        path.write_text(toml)
    return resolve(args, parser, environ or {})


def test_every_serve_option_is_layered() -> None:
    parser = serve_parser()
    args = parser.parse_args([])
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "config", "print_config"):
            assert isinstance(getattr(args, action.dest), Unset), action.dest


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    toml = 'mode = "redirect"\nidle-timeout = 3\ndescribe_ttl = 7.5\nscope-map = "/from/file"\n'
    env = {env_name("idle_timeout"): "4", env_name("scope_map"): "/from/env"}
    r = settle(["--config", str(cfg), "--scope-map", "/from/flag"], env, toml)
    assert (r.args.scope_map, r.origins["scope_map"]) == ("/from/flag", "flag")
    assert (r.args.idle_timeout, r.origins["idle_timeout"]) == (
        4.0,
        "env ARRAKIS_ROUTER_IDLE_TIMEOUT",
    )
    assert (r.args.mode, r.origins["mode"]) == ("redirect", f"file {cfg}")
    assert (r.args.describe_ttl, r.origins["describe_ttl"]) == (7.5, f"file {cfg}")
    assert (r.args.downstream_timeout, r.origins["downstream_timeout"]) == (10.0, "default")
    assert r.missing == ()


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    cfg.write_text('scope-map = "/m.yaml"\nmetrics-port = 9106\n')
    r = settle([], {env_name("config"): str(cfg)})
    assert r.args.metrics_port == 9106 and r.origins["metrics_port"] == f"file {cfg}"


def test_required_option_missing_everywhere_is_reported() -> None:
    r = settle([])
    assert r.missing == ("--scope-map",)
    assert "# scope-map = (required, not set)" in render(r)


@pytest.mark.parametrize(
    ("environ", "toml", "words"),
    [
        ({env_name("mode"): "fast"}, None, ["ARRAKIS_ROUTER_MODE", "--mode", "'fast'", "proxy"]),
        ({env_name("idle_timeout"): "soon"}, None, ["--idle-timeout", "'soon'", "float"]),
        ({}, "idle-timeout = true\n", ["[idle-timeout]", "single value"]),
        ({}, "idle-timeot = 3\n", ["unknown setting 'idle-timeot'", "idle-timeout"]),
        ({}, "mode = [\n", ["not valid TOML"]),
        ({}, "print-config = true\n", ["unknown setting 'print-config'"]),
    ],
)
def test_bad_values_name_source_option_and_value(
    tmp_path: Path, environ: dict[str, str], toml: str | None, words: list[str]
) -> None:
    cfg = tmp_path / "router.toml"
    cfg.write_text(toml or "")
    with pytest.raises(ConfigError) as err:
        settle(["--config", str(cfg)], environ)
    for word in words:
        assert word in str(err.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        settle(["--config", str(tmp_path / "absent.toml")])


@given(
    flag=st.one_of(st.none(), st.floats(0.1, 1e6)),
    env=st.one_of(st.none(), st.floats(0.1, 1e6)),
    file=st.one_of(st.none(), st.floats(0.1, 1e6)),
)
def test_precedence_holds_for_any_combination(
    flag: float | None, env: float | None, file: float | None
) -> None:
    parser = serve_parser()
    args = parser.parse_args([] if flag is None else ["--idle-timeout", repr(flag)])
    environ = {} if env is None else {env_name("idle_timeout"): repr(env)}
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        if file is not None:
            fh.write(f"idle-timeout = {file!r}\n")
    args.config = fh.name
    try:
        r = resolve(args, parser, environ)
    finally:
        Path(fh.name).unlink()
    expected = next(v for v in (flag, env, file, 30.0) if v is not None)
    assert r.args.idle_timeout == expected


def test_rendered_config_is_toml_that_reproduces_the_settings(tmp_path: Path) -> None:
    env = {env_name("metrics_port"): "9300", env_name("log_format"): "json"}
    r = settle(["--scope-map", "/m.yaml", "--live-buffer", "8"], env)
    text = render(r)
    assert "metrics-port = 9300  # env ARRAKIS_ROUTER_METRICS_PORT" in text
    assert "live-buffer = 8  # flag" in text
    cfg = tmp_path / "again.toml"
    cfg.write_text(text)
    again = settle(["--config", str(cfg)])
    for dest in r.options:
        assert getattr(again.args, dest) == getattr(r.args, dest), dest
    assert tomllib.loads(text)["log-format"] == "json"


def test_print_config_subprocess_shows_env_and_file_values(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    cfg.write_text('scope-map = "/etc/maps/scope-map.yaml"\ndrain-timeout = 9\n')
    env = {"ARRAKIS_ROUTER_URL": "grpc://0.0.0.0:4000", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [*ROUTER, "serve", "--config", str(cfg), "--print-config", "--mode", "redirect"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f'scope-map = "/etc/maps/scope-map.yaml"  # file {cfg}' in lines
    assert "drain-timeout = 9.0  # file " + str(cfg) in lines
    assert 'url = "grpc://0.0.0.0:4000"  # env ARRAKIS_ROUTER_URL' in lines
    assert 'mode = "redirect"  # flag' in lines
    assert 'log-level = "info"  # default' in lines


def test_startup_errors_are_json_with_json_log_format(tmp_path: Path) -> None:
    env = {"ARRAKIS_ROUTER_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"}
    missing = subprocess.run(
        [*ROUTER, "serve"], capture_output=True, text=True, timeout=60, env=env
    )
    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text("not: [a, scope map\n")
    invalid = subprocess.run(
        [*ROUTER, "serve", "--scope-map", str(bad_map)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    for res, code, text in ((missing, 2, "--scope-map"), (invalid, 1, "refusing to start")):
        assert res.returncode == code, res.stderr
        lines = [json.loads(line) for line in res.stderr.splitlines() if line.strip()]
        assert lines, res.stderr
        assert lines[-1]["event"] == "startup_failed" and text in lines[-1]["error"]
        assert all("event" in line and "timestamp" in line for line in lines)


def test_local_url_follows_the_configured_port(tmp_path: Path) -> None:
    assert local_url({}) == "grpc://127.0.0.1:31206"
    assert local_url({env_name("url"): "grpc://0.0.0.0:4100"}) == "grpc://127.0.0.1:4100"
    cfg = tmp_path / "r.toml"
    cfg.write_text('url = "grpc://10.1.2.3:5000"\n')
    assert local_url({env_name("config"): str(cfg)}) == "grpc://10.1.2.3:5000"


def test_the_cli_parser_layers_serve_options() -> None:
    args = build_parser(["serve"]).parse_args(["serve"])
    assert isinstance(args.scope_map, Unset) and args.scope_map.required


def test_unknown_prefixed_variables_are_reported() -> None:
    r = settle(["--scope-map", "m"], {"ARRAKIS_ROUTER_DRAIN_TIMOUT": "5", "OTHER": "x"})
    assert r.unknown_env == ("ARRAKIS_ROUTER_DRAIN_TIMOUT",)
    assert r.args.drain_timeout == 20.0
    assert settle(["--scope-map", "m"], {env_name("config"): ""}).unknown_env == ()


def _synthetic() -> argparse.ArgumentParser:
    """Option shapes other sub-commands or later options may use."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--level", choices=["a", "b"], default="a")
    parser.add_argument("--config")
    layered(parser)
    return parser


def test_any_option_shape_is_layered(tmp_path: Path) -> None:
    parser = _synthetic()
    env = {
        env_name("verbose"): "yes",
        env_name("no-cache"): "true",  # as if --no-cache were given: caching off
        env_name("peer"): "grpc://a:1, grpc://b:2",
        env_name("workers"): "8",
    }
    r = resolve(parser.parse_args([]), parser, env)
    assert r.args.verbose is True and r.args.cache is False
    assert r.args.peer == ["grpc://a:1", "grpc://b:2"] and r.args.workers == 8
    cfg = tmp_path / "c.toml"
    cfg.write_text('verbose = false\npeer = ["grpc://c:3"]\nworkers = 2\nlevel = "b"\n')
    assert env_name("--no-cache") == "ARRAKIS_ROUTER_NO_CACHE"
    r = resolve(parser.parse_args(["--config", str(cfg), "--workers", "16"]), parser, {})
    assert r.args.verbose is False and r.args.peer == ["grpc://c:3"]
    assert r.args.workers == 16 and r.args.level == "b" and r.args.cache is True
    with pytest.raises(ConfigError, match="expected true or false"):
        resolve(parser.parse_args([]), parser, {env_name("verbose"): "maybe"})
    with pytest.raises(ConfigError, match="--workers"):
        resolve(parser.parse_args([]), parser, {env_name("workers"): "many"})


def test_help_names_each_variable() -> None:
    text = serve_parser().format_help()
    for action in serve_parser()._actions:
        if action.option_strings and action.dest not in ("help", "config", "print_config"):
            name = env_name(action.option_strings[-1])
            assert name in text.replace("\n", " ").replace("  ", " "), name
