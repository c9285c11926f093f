"""The example outputs of ``router explain`` and ``router verify`` on the operator tools page
(``docs/guide/tools.md``) are what the tools print today (for ``examples/scope-maps/``; explain
with a fixed ``--now``).

An example is a ```sh block holding one ``router explain|verify`` command, followed by a
```text block with its output. ``python -m tests.docs.test_tool_examples`` prints every
example's current output, to paste after a deliberate change of the tools' output.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.cli import main

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "guide" / "tools.md"
BLOCK = re.compile(r"```sh\n(router (?:explain|verify) [^\n]*)\n```\n+```text\n(.*?)```", re.S)
DEMO = "examples/scope-maps/demo.yaml"
LIVE, ARCHIVE = "grpc://127.0.0.1:31207", "grpc://127.0.0.1:31208"
# The verify example runs the demo layout with an archive that has been reconfigured to
# keep nothing younger than 10 minutes (the map still says 5): a drift to find.
ARCHIVE_RETENTION = "600,inf"


def examples() -> list[tuple[str, str]]:
    found = BLOCK.findall(PAGE.read_text())
    assert len(found) >= 3, "the tools page lost its router explain/verify examples"
    return found


@contextlib.contextmanager
def in_root() -> Iterator[None]:
    before = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(before)


def run(argv: list[str]) -> str:
    buf = io.StringIO()
    with in_root(), contextlib.redirect_stdout(buf):
        main(argv)
    return buf.getvalue()


def explain_output(command: str) -> str:
    return run(shlex.split(command)[1:])


def verify_output(command: str) -> str:
    """The command's output against the demo layout on free ports, written as if on the
    demo's ports (31207 live, 31208 archive) and the example map's path."""
    from router_backends.testing import serve_mock

    argv = shlex.split(command)[1:]
    text = (ROOT / DEMO).read_text()
    with (
        serve_mock(retention="0,600") as live,
        serve_mock(retention=ARCHIVE_RETENTION) as archive,
        tempfile.TemporaryDirectory() as tmp,
    ):
        path = Path(tmp) / "demo.yaml"
        path.write_text(text.replace(LIVE, live).replace(ARCHIVE, archive))
        out = run([str(path) if a == DEMO else a for a in argv])
    lines = out.splitlines()  # in-process mocks log to stdout too: keep the report
    first = next(i for i, line in enumerate(lines) if line.startswith("verify "))
    report = "\n".join(lines[first:]) + "\n"
    return report.replace(live, LIVE).replace(archive, ARCHIVE).replace(str(path), DEMO)


def normalise(text: str) -> str:
    """Verify output without what changes from run to run: times, request ids."""
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<UTC>", text)
    text = re.sub(r"verify-[0-9a-f]{8}", "verify-<id>", text)
    return re.sub(r"\d{10,}(\.\d+)?", "<GPS>", text)


def output_of(command: str) -> str:
    return (
        verify_output(command) if command.startswith("router verify") else explain_output(command)
    )


@pytest.mark.parametrize("command, shown", examples(), ids=[c for c, _ in examples()])
def test_tools_page_example_is_what_the_tool_prints(command: str, shown: str) -> None:
    if command.startswith("router verify"):
        assert normalise(verify_output(command)) == normalise(shown)
    else:
        assert "--now" in command, "explain examples need a fixed --now"
        assert explain_output(command) == shown


if __name__ == "__main__":  # pragma: no cover
    for cmd, _ in examples():
        print(f"```sh\n{cmd}\n```\n\n```text\n{output_of(cmd)}```\n")
