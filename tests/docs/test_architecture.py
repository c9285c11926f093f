"""The architecture page's module table names every module of ``router`` and ``scopemap``
(the project rule: the architecture section matches the code), and the README points to it."""

from __future__ import annotations

import re

from tests.docs.pages import DOCS, ROOT

PAGE = DOCS / "background" / "architecture.md"
_CODE = re.compile(r"`([^`]+)`")


def table_paths() -> set[str]:
    """The paths in the first column of the module table: a bare file name continues the folder
    of the path before it in the same cell (``router/serve.py``, ``drain.py``); a folder
    (``router/stitch/``) stands for everything in it."""
    paths: set[str] = set()
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for span in _CODE.findall(line.split("|")[1]):
            if "/" in span:
                folder = span if span.endswith("/") else span.rsplit("/", 1)[0] + "/"
                paths.add(span)
            elif span.endswith(".py"):
                paths.add(folder + span)
    return paths


def modules() -> list[str]:
    found = []
    for package in ("router", "scopemap"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name in {"__init__.py", "__main__.py"}:
                continue
            found.append(path.relative_to(ROOT).as_posix())
    return found


def covered(module: str, paths: set[str]) -> bool:
    return module in paths or any(p.endswith("/") and module.startswith(p) for p in paths)


def test_the_module_table_names_every_module() -> None:
    paths = table_paths()
    missing = [m for m in modules() if not covered(m, paths)]
    assert not missing, f"{PAGE.relative_to(ROOT)}: modules missing from the table: {missing}"


def test_the_module_table_names_no_module_that_is_gone() -> None:
    gone = [p for p in table_paths() if p.endswith(".py") and not (ROOT / p).exists()]
    assert not gone, f"{PAGE.relative_to(ROOT)}: the table names missing files: {gone}"


def test_the_readme_keeps_the_layers_and_points_to_the_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Architecture" in readme
    assert "docs/background/architecture.md" in readme
    for layer in ("router.server", "router.service", "router.fanout.ReplicaFeed", "router.stitch"):
        assert layer in readme, layer
