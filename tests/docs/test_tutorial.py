"""The tutorial runs as written: its ``sh`` blocks, taken from docs/tutorial.md, run in order in
one bash shell (as a reader pasting them into one terminal would), each must succeed, and each
output block shown on the page must match what the commands print.

Only the page's fixed loopback ports are swapped for free ones, and the scratch directory the
page creates with ``mktemp -d`` lands in pytest's temporary directory. The servers the page
starts are real (two ``router-backend mock`` processes and ``router serve``), the client is the
real ``arrakis`` CLI; the page stops them itself, and the test checks that nothing it started is
left running (and stops whatever is, failing).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.docs.pages import DOCS, ROOT, Step, missing_lines, tutorial_steps

TUTORIAL = DOCS / "tutorial.md"
_PORT = re.compile(r"127\.0\.0\.1:(\d{4,5})\b")
_MARK = "@@tutorial-step"


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_map(steps: list[Step]) -> dict[str, str]:
    """Every loopback port the page uses -> a free port."""
    text = "".join(s.command.text + (s.expected.text if s.expected else "") for s in steps)
    ports = sorted(set(_PORT.findall(text)))
    return dict(zip(ports, map(str, free_ports(len(ports))), strict=True))


def with_ports(text: str, ports: dict[str, str]) -> str:
    return _PORT.sub(lambda m: f"127.0.0.1:{ports[m[1]]}", text)


def script(steps: list[Step], ports: dict[str, str]) -> str:
    parts = []
    for k, step in enumerate(steps):
        parts.append(f"printf '\\n{_MARK} {k} start\\n'\n")
        parts.append(with_ports(step.command.text, ports))
        parts.append(f"printf '\\n{_MARK} {k} status %d\\n' \"$?\"\n")
    return "".join(parts)


def split_output(output: str, count: int) -> list[tuple[str, int | None]]:
    """(output, exit status) of each step; status None when the step never finished."""
    results: list[tuple[str, int | None]] = []
    for k in range(count):
        m = re.search(rf"^{_MARK} {k} start\n(.*?)^{_MARK} {k} status (\d+)$", output, re.S | re.M)
        if m:
            results.append((m[1], int(m[2])))
        else:
            started = output.split(f"{_MARK} {k} start\n", 1)
            results.append((started[1] if len(started) == 2 else "", None))
    return results


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_the_page_has_the_steps_the_tutorial_promises() -> None:
    commands = "".join(step.command.text for step in tutorial_steps(TUTORIAL))
    for needle in (
        "router-backend mock",
        "router serve",
        "router check",
        "arrakis fetch",
        "arrakis stream",
        "kill %1 %2 %3",
    ):
        assert needle in commands, needle


@pytest.mark.integration
@pytest.mark.slow
def test_tutorial_commands_run_as_written(tmp_path: Path) -> None:
    steps = tutorial_steps(TUTORIAL)
    ports = port_map(steps)
    assert len(ports) == 3, ports
    (tmp_path / "tutorial.sh").write_text(script(steps, ports))
    log = tmp_path / "tutorial.out"
    env = {k: v for k, v in os.environ.items() if k not in ("ARRAKIS_SERVER", "VIRTUAL_ENV")}
    env["TMPDIR"] = str(tmp_path)
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(tmp_path / "tutorial.sh")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    leftovers: list[int] = []
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 5
        while (leftovers := session_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)

    output = log.read_text(errors="replace")
    results = split_output(output, len(steps))
    for step, (text, status) in zip(steps, results, strict=True):
        where = step.command.where
        assert status is not None, f"{where}: the step did not finish\n{text[-4000:]}"
        assert status == 0, f"{where}: exit status {status}\n{text[-4000:]}"
        if step.expected is not None:
            missing = missing_lines(with_ports(step.expected.text, ports), text)
            assert not missing, (
                f"{step.expected.where}: output shown on the page not printed:\n"
                + "\n".join(missing)
                + f"\n--- actual output ---\n{text[-4000:]}"
            )
    assert proc.returncode == 0
    assert not leftovers, f"the tutorial left processes running: {leftovers}"
