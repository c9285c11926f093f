"""Discovery through the entry-point group: `router-backend list`, `serve NAME`, and plugins
that are missing, fail to import, fail to start or build something that is not a backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import arrakis
import pytest

from router_backends.plugins import GROUP, PluginError, discover, find
from router_backends.testing import ServerProcess

from .conftest import CHANNELS_TOML

pytestmark = pytest.mark.integration

PLUGINS = """\
class Crashy:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--size", type=int, default=1)

    @staticmethod
    def from_args(args):
        raise RuntimeError("disk on fire")


class NotABackend:
    @staticmethod
    def add_arguments(parser):
        pass

    @staticmethod
    def from_args(args):
        return object()


class NoMethods:
    pass
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an installed-looking distribution `brokenplug 1.2.3` with four
    plugins (import path: put it on PYTHONPATH)."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "brokenplug.py").write_text("import does_not_exist_xyz  # noqa\n")
    (root / "brokenplug_ok.py").write_text(PLUGINS)
    info = root / "brokenplug-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\n"
        "broken = brokenplug:Backend\n"
        "crashy = brokenplug_ok:Crashy\n"
        "notabackend = brokenplug_ok:NotABackend\n"
        "nomethods = brokenplug_ok:NoMethods\n"
    )
    return root


def _cli(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "router_backends", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_list_shows_every_plugin_without_importing_it(plugin_path: Path) -> None:
    proc = _cli("list", path=plugin_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PACKAGE", "VERSION", "ENTRY", "POINT"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == sorted(names)
    assert {"mock", "files", "record", "npy", "broken", "crashy"} <= set(names)
    broken = next(line for line in lines if line.startswith("broken "))
    assert broken.split() == ["broken", "brokenplug", "1.2.3", "brokenplug:Backend"]


def test_a_plugin_that_fails_to_import_is_named_with_its_package(plugin_path: Path) -> None:
    proc = _cli("serve", "broken", "--url", "grpc://127.0.0.1:0", path=plugin_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "router-backend: error: backend plugin 'broken' from package brokenplug 1.2.3 failed "
        "to import (brokenplug:Backend): ModuleNotFoundError: No module named "
        "'does_not_exist_xyz'"
    )


def test_a_plugin_that_fails_to_start_is_named_with_its_package(plugin_path: Path) -> None:
    proc = _cli("crashy", "--size", "3", "--url", "grpc://127.0.0.1:0", path=plugin_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "router-backend crashy: error: plugin 'crashy' from brokenplug 1.2.3 failed to start: "
        "RuntimeError: disk on fire"
    )


def test_a_plugin_must_build_a_backend(plugin_path: Path) -> None:
    proc = _cli("serve", "notabackend", "--url", "grpc://127.0.0.1:0", path=plugin_path)
    assert proc.returncode == 2
    assert "plugin 'notabackend' from brokenplug 1.2.3 built object, which is not a backend" in (
        proc.stderr
    )
    assert "missing: kind, version, retention, find" in proc.stderr
    proc = _cli("serve", "nomethods", path=plugin_path)
    assert proc.returncode == 2
    assert "has no add_arguments(parser) and from_args(args)" in proc.stderr


def test_an_unknown_name_lists_the_installed_plugins() -> None:
    proc = _cli("serve", "nope")
    assert proc.returncode == 2
    assert "no backend plugin 'nope' is installed (installed: files, mock, npy, record)" in (
        proc.stderr
    )
    proc = _cli("serve")
    assert proc.returncode == 2 and "give the NAME of a backend" in proc.stderr


def test_each_backend_declares_its_own_options_next_to_the_core_ones() -> None:
    mock = _cli("mock", "--help").stdout
    assert "--publishers" in mock and "CHANNELS.toml" in mock
    files = _cli("serve", "files", "--help").stdout
    assert "DIR" in files and "--publishers" not in files
    for text in (mock, files, _cli("serve", "npy", "--help").stdout):
        for core in ("--url", "--retention", "--latency", "--faults"):
            assert core in text
    record = _cli("record", "--help").stdout
    assert "--from" in record and "--faults" not in record  # a command, not a server


def test_serve_mock_works_like_the_old_command_line() -> None:
    argv = [sys.executable, "-m", "router_backends", "serve", "mock", str(CHANNELS_TOML)]
    with ServerProcess([*argv, "--url", "grpc://127.0.0.1:0", "--retention", "0,inf"]) as proc:
        assert arrakis.Client(proc.url).count("X1:TST") == 4
        assert proc.stop() == 0
        log = proc.log_text()
    assert "backend=mock" in log and "arrakis-router-backends 0.1.0" in log
    assert "stopped" in log and "status=0" in log


def test_discover_and_find_in_process() -> None:
    found = discover()
    assert [i.package for i in found["mock"]] == ["arrakis-router-backends"]
    assert find("npy").value == "npy_backend:NpyBackend"
    with pytest.raises(PluginError, match="no backend plugin 'x' is installed"):
        find("x")


def test_our_plugins_work_from_a_source_tree_without_metadata(tmp_path: Path) -> None:
    """The compose demo's mock image puts router_backends on PYTHONPATH without installing
    the distribution: mock, files and record are still found (and nothing else is)."""
    import shutil

    import router_backends

    shutil.copytree(Path(router_backends.__file__).parent, tmp_path / "router_backends")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import importlib.metadata as m; "
        "m.entry_points = lambda **kw: m.EntryPoints([]); "  # as if nothing were installed
        "from router_backends import plugins; "
        "print(sorted(plugins.discover())); "
        "info, plugin = plugins.load('mock'); print(info.origin, type(plugin).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['files', 'mock', 'record']"
    assert lines[1].startswith("arrakis-router-backends (source)")
