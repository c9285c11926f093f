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


# ``Plan`` is a type alias (the union of the four plan classes): it has no docstring of its own.
WITHOUT_DOCSTRING = {"Plan"}


@pytest.mark.parametrize("name", sorted(set(scopemap.__all__) - WITHOUT_DOCSTRING))
def test_every_public_name_carries_an_example(name: str) -> None:
    obj = getattr(scopemap, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, module=False, globs={})
    assert any(t.examples for t in tests), f"scopemap.{name} has no docstring example"


def test_the_package_docstring_is_a_runnable_walkthrough() -> None:
    (test,) = doctest.DocTestFinder(recurse=False).find(scopemap, "scopemap")
    assert len(test.examples) >= 5
