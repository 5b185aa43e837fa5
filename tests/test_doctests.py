"""The Examples sections of the library's docstrings run as doctests, one test per module.

Every module under ``arraycnn/`` (the package, ``conv``, ``nn``, the tools and the examples)
is searched with :class:`doctest.DocTestFinder`; a failing example fails the test named after
its module. Examples may assume ``import numpy as np`` (the numpydoc convention).

Every public function and class has an Examples section: those of ``arraycnn.__all__`` and
``arraycnn.nn.__all__``, and those exported (``__all__``) by the public modules, that is
``arraycnn``'s own modules and packages and the modules of ``arraycnn.nn``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import pkgutil

import numpy as np
import pytest

import arraycnn

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def library_modules() -> list[str]:
    """Every importable module name of the package (``__main__`` would run the CLI)."""
    found = ["arraycnn"]
    for info in pkgutil.walk_packages(arraycnn.__path__, prefix="arraycnn."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return sorted(found)


MODULES = library_modules()
#: Modules that import an optional extra at module level: module -> the extra's package
#: (their examples run where it is installed).
NEEDS = {"arraycnn.conv._numba_depthwise": "numba", "arraycnn.conv._numba_winograd": "numba"}
#: Modules whose exports are the public API: arraycnn.<module> and arraycnn.nn.<module>.
PUBLIC_MODULES = [
    name
    for name in MODULES
    if name.count(".") <= 1 or (name.startswith("arraycnn.nn.") and name.count(".") == 2)
]


def failed_examples(module_name: str) -> tuple[int, str]:
    """(number of examples run, report of the failing ones) for one module."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = io.StringIO()
    for test in finder.find(module, module_name, extraglobs={"np": np}):
        runner.run(test, out=report.write)
    return runner.tries, report.getvalue() if runner.failures else ""


def has_examples(obj: object) -> bool:
    """Whether the docstring of ``obj`` has a numpydoc Examples section."""
    return "Examples\n--------\n" in (inspect.getdoc(obj) or "")


def exported_without_examples(module_name: str, *, defined_here: bool = True) -> list[str]:
    """Functions and classes in the module's ``__all__`` without an Examples section; with
    ``defined_here``, only those defined in the module (re-exports are checked at home)."""
    module = importlib.import_module(module_name)
    missing = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if defined_here and obj.__module__ != module_name:
            continue
        if not has_examples(obj):
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_pass(module_name):
    if module_name in NEEDS:
        pytest.importorskip(NEEDS[module_name])
    _tries, report = failed_examples(module_name)
    assert not report, f"doctest failures in {module_name}:\n{report}"


@pytest.mark.parametrize("package", ["arraycnn", "arraycnn.nn"])
def test_the_public_api_has_examples(package):
    assert exported_without_examples(package, defined_here=False) == []


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_modules_exports_have_examples(module_name):
    assert exported_without_examples(module_name) == []


def test_the_finder_sees_the_packages_and_their_modules():
    assert {"arraycnn", "arraycnn.nn", "arraycnn.nn.model", "arraycnn.conv"} <= set(MODULES)
    assert {"arraycnn.conv.dispatch", "arraycnn.tools.bench"} <= set(MODULES)
    assert not any(name.endswith("__main__") for name in MODULES)
    assert {"arraycnn.pooling", "arraycnn.nn.optim", "arraycnn.conv"} <= set(PUBLIC_MODULES)
    assert not {"arraycnn.conv.dispatch", "arraycnn.tools.bench"} & set(PUBLIC_MODULES)


def test_a_failing_example_and_a_missing_section_are_reported(tmp_path, monkeypatch):
    source = [
        '__all__ = ["adds", "undocumented"]',
        "def adds():",
        '    """Examples',
        "    --------",
        "    >>> 1 + 1",
        "    3",
        '    """',
        "def undocumented():",
        "    pass",
    ]
    (tmp_path / "broken_examples.py").write_text("\n".join(source) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tries, report = failed_examples("broken_examples")
    assert tries == 1 and "Expected:\n    3\nGot:\n    2" in report
    assert exported_without_examples("broken_examples") == ["undocumented"]
