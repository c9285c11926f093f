"""The Dockerfile, checked statically (`make image-test` builds and runs the image).

What could silently break an image without anyone noticing: a package or data file added to
the wheel but not copied into the build context (or excluded by .dockerignore), an install
step that drifts from what the Makefile installs (the same constraints file), an
ENTRYPOINT/HEALTHCHECK naming a command that no longer exists or a port nobody listens on, a
user Kubernetes cannot verify as non-root.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import dockerfile
import pytest

from router.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _final_stage(cmds: tuple[dockerfile.Command, ...]) -> list[dockerfile.Command]:
    last_from = max(i for i, c in enumerate(cmds) if c.cmd == "FROM")
    return list(cmds[last_from:])


def _instr(cmds: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = [c for c in cmds if c.cmd == name]
    assert len(found) == 1, f"expected exactly one {name} in the final stage, found {len(found)}"
    return found[0]


def _pip_targets(shell: str) -> list[str]:
    """Positional arguments of every `pip install` / `pip wheel` in a shell line."""
    targets: list[str] = []
    for part in re.split(r"&&|;|\n", shell):
        words = shlex.split(part.replace("$(PY) -m pip", "pip"))
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value pip ...
            words = words[1:]
        if len(words) >= 2 and words[0].endswith("pip") and words[1] in ("install", "wheel"):
            args = words[2:]
            skip_next = False
            for a in args:
                if skip_next:
                    skip_next = False
                    continue
                if a in ("--wheel-dir", "-w", "-r", "-c"):
                    skip_next = True
                    continue
                if a.startswith("-") and a != "-e":
                    continue
                if a != "-e":
                    targets.append(a)
    return targets


def test_build_context_copies_everything_the_wheel_is_built_from(
    commands: tuple[dockerfile.Command, ...], pyproject: dict[str, object]
) -> None:
    copied: set[str] = set()
    for c in commands:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            copied.update(v.rstrip("/") for v in c.value[:-1])
    tool = pyproject["tool"]
    assert isinstance(tool, dict)
    wheel = tool["hatch"]["build"]["targets"]["wheel"]
    needed = set(wheel["packages"]) | {"pyproject.toml", "README.md", "LICENSE"}
    needed |= {src.split("/")[0] for src in wheel["force-include"]}
    needed |= {hook["path"] for hook in wheel["hooks"].values()}  # hatch_build.py
    missing = sorted(n for n in needed if n not in copied)
    assert not missing, f"Dockerfile does not COPY {missing}, the wheel needs them"


def test_image_installs_the_same_distribution_as_the_makefile(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    docker_targets = [t for c in commands if c.cmd == "RUN" for t in _pip_targets(c.value[0])]
    make_line = next(
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "pip install" in line and "-e" in line
    )
    make_targets = _pip_targets(make_line.strip())
    # The Makefile installs the root project (with test/bench extras) plus the backends;
    # the image builds a wheel of the same root project and installs only that wheel.
    make_root = {t.split("[")[0] for t in make_targets}
    assert "." in make_root, make_targets
    assert "./backends" in make_root, make_targets
    assert "." in docker_targets, docker_targets  # pip wheel .
    assert not any("backends" in t or "[" in t for t in docker_targets), (
        "the image must not install test extras or the mock backends"
    )


def test_entrypoint_and_healthcheck_are_real_commands(
    commands: tuple[dockerfile.Command, ...], pyproject: dict[str, object]
) -> None:
    final = _final_stage(commands)
    entry = _instr(final, "ENTRYPOINT")
    health = _instr(final, "HEALTHCHECK")
    cmd = _instr(final, "CMD")
    assert entry.json and cmd.json, "exec form keeps signals going to the router process"

    project = pyproject["project"]
    assert isinstance(project, dict)
    script = entry.value[0]
    assert script in project["scripts"], f"{script!r} is not a console script of the project"
    installed = {ep.name for ep in entry_points(group="console_scripts")}
    assert script in installed
    assert (Path(sys.executable).parent / script).exists(), f"{script} is not installed"

    assert entry.value[1] in COMMANDS
    # ENTRYPOINT + CMD must parse as a `router serve` invocation.
    args = build_parser().parse_args([*entry.value[1:], *cmd.value])
    assert args._module == COMMANDS["serve"][0]

    assert health.value[0] == "CMD"
    assert health.value[1] == script and health.value[2] in COMMANDS
    hargs = build_parser().parse_args(list(health.value[2:]))
    assert hargs._module == COMMANDS["health"][0]


def test_runs_as_a_numeric_non_root_user(commands: tuple[dockerfile.Command, ...]) -> None:
    user = _instr(_final_stage(commands), "USER").value[0]
    uid, _, gid = user.partition(":")
    # numeric: Kubernetes' runAsNonRoot can only verify a number
    assert uid.isdigit() and int(uid) > 0, user
    assert not gid or (gid.isdigit() and int(gid) > 0), user


def _env(cmds: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in cmds:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    return env


def test_healthcheck_and_expose_follow_the_configured_port(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    from router.serve import local_url

    final = _final_stage(commands)
    env = _env(final)
    health = _instr(final, "HEALTHCHECK").value
    # no URL on the health command: `router health` derives it from ARRAKIS_ROUTER_* (the
    # settings `router serve` uses), so another port in the environment moves both
    assert not any("://" in part or re.fullmatch(r"[\d.]+:\d+", part) for part in health)
    port = local_url(env).rsplit(":", 1)[1]
    exposed = {p.split("/")[0] for p in _instr(final, "EXPOSE").value}
    assert exposed == {port}, (exposed, port)
    moved = local_url({**env, "ARRAKIS_ROUTER_URL": "grpc://0.0.0.0:4100"})
    assert moved == "grpc://127.0.0.1:4100"


def test_image_settings_are_valid_router_serve_settings(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    import argparse

    from router.config import resolve
    from router.serve import configure

    env = {k: v for k, v in _env(_final_stage(commands)).items() if k.startswith("ARRAKIS_")}
    parser = argparse.ArgumentParser()
    configure(parser)
    args = resolve(parser.parse_args([]), parser, env).args
    assert args.scope_map.startswith("/etc/arrakis-router/maps/")  # a directory mount
    # docker stop sends SIGKILL after 10 s by default: drain + 2 s must fit
    assert args.drain_timeout + 2 < 10
    assert args.log_format == "json"


def test_oci_labels(commands: tuple[dockerfile.Command, ...]) -> None:
    labels = {
        k: v
        for c in _final_stage(commands)
        if c.cmd == "LABEL"
        for k, v in zip(c.value[::2], c.value[1::2], strict=True)
    }
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}" in labels, key


def test_image_and_makefile_use_the_same_constraints(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    runs = " ".join(c.value[0] for c in commands if c.cmd == "RUN")
    assert runs.count("-c constraints.txt") >= 2  # the wheel build and the install
    assert "--no-index" in runs  # nothing unpinned from the network
    make = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in make
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # the build stack too: the native output stage is compiled against the pinned pyarrow
    for requirement in [
        *pyproject["project"]["dependencies"],
        *pyproject["build-system"]["requires"],
    ]:
        name = re.split(r"[<>=!~\[ ]", requirement)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_dockerignore_keeps_everything_the_dockerfile_copies(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allow-list"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    for c in commands:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for source in c.value[:-1]:
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
