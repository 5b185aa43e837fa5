"""The Examples sections of the nn modules run as doctests; every module must have some."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "arraycnn.nn.data",
    "arraycnn.nn.model",
    "arraycnn.nn.optim",
    "arraycnn.nn.progress",
    "arraycnn.nn.serialization",
    "arraycnn.nn.training",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True
    )
    assert result.attempted > 0, f"{name} has no doctest examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
