"""Every docstring example in sluice's three packages runs (River style: the examples are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sluice.converters
import sluice.monitoring
import sluice.server

MODULES = sorted(
    m.name
    for package in (sluice.converters, sluice.monitoring, sluice.server)
    for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_detectors_have_examples() -> None:
    for name in ("sluice.monitoring.cusum", "sluice.monitoring.bernoulli"):
        finder = doctest.DocTestFinder()
        assert any(t.examples for t in finder.find(importlib.import_module(name))), name
