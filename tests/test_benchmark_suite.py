"""The asv suite reads well on the dashboard: every benchmark says what it measures, and
every tracked quantity names its unit (asv shows both on the graph page)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("time_", "track_", "peakmem_", "mem_")
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


def benchmarks_of(module_name: str) -> list[tuple[str, object]]:
    """(qualified name, function) of each benchmark method of one suite module."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"benchmarks.{module_name}")
    found = []
    for class_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__ or class_name.startswith("_"):
            continue
        for name, function in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith(PREFIXES):
                found.append((f"{module_name}.{class_name}.{name}", function))
    return found


@pytest.mark.parametrize("module_name", MODULES)
def test_every_benchmark_has_a_description(module_name):
    found = benchmarks_of(module_name)
    assert found, f"no benchmark found in benchmarks/{module_name}.py"
    missing = [name for name, function in found if not inspect.getdoc(function)]
    assert missing == [], f"benchmarks without a docstring: {missing}"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_tracked_value_has_a_unit_and_a_readable_name(module_name):
    tracks = [
        (n, f) for n, f in benchmarks_of(module_name) if n.split(".")[-1].startswith("track_")
    ]
    missing = [n for n, f in tracks if not getattr(f, "unit", None)]
    unnamed = [n for n, f in tracks if not getattr(f, "pretty_name", None)]
    assert missing == [], f"track_ benchmarks without a unit: {missing}"
    assert unnamed == [], f"track_ benchmarks without a pretty_name: {unnamed}"
