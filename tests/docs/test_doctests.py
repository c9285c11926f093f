"""The examples in ``scopemap``'s docstrings (shown in the API reference) run as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import scopemap

MODULES = sorted(
    ["scopemap", *(f"scopemap.{m.name}" for m in pkgutil.iter_modules(scopemap.__path__))]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_the_main_entry_points_carry_examples() -> None:
    finder = doctest.DocTestFinder()
    for obj in (
        scopemap,
        scopemap.load_text,
        scopemap.load_path,
        scopemap.parse_channel_name,
        scopemap.plan,
        scopemap.plan_stream,
    ):
        tests = finder.find(obj, getattr(obj, "__name__", "scopemap"))
        assert any(t.examples for t in tests if t.name.endswith(obj.__name__)), obj
