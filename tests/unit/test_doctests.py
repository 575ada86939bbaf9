"""Every docstring example in monitoring/ and server/ runs (River style: the examples are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import monitoring
import server

MODULES = sorted(
    m.name
    for package in (monitoring, server)
    for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_detectors_have_examples() -> None:
    for name in ("monitoring.cusum", "monitoring.bernoulli"):
        finder = doctest.DocTestFinder()
        assert any(t.examples for t in finder.find(importlib.import_module(name))), name
