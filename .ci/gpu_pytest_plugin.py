"""pytest plugin of the GPU check (.ci/gpu-check): run only the backend matrix's tests.

``ARRAYCNN_TEST_ONLY_BACKENDS=cupy,torch`` keeps the tests that take the ``backend`` fixture of
tests/conftest.py (directly or through ``xp``/``to_xp``) with one of the named backends, and
deselects every other test: tests that parametrize a ``backend`` argument of their own (plain
strings) are left out too, since they do not run on the device the matrix puts them on.
Unset or empty: every test is kept.

Load it with ``-p gpu_pytest_plugin`` and ``.ci`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import os

import pytest


def wanted_backends() -> set[str]:
    """The backend names of ``ARRAYCNN_TEST_ONLY_BACKENDS`` (empty: no selection)."""
    text = os.environ.get("ARRAYCNN_TEST_ONLY_BACKENDS", "")
    return {name.strip() for name in text.split(",") if name.strip()}


def matrix_backend(item: pytest.Item) -> str | None:
    """The name of the matrix backend ``item`` runs on, or None for a test outside the matrix."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    # the conftest's Backend enum member; a test's own "backend" parameter is a plain string
    return getattr(params.get("backend"), "value", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = wanted_backends()
    if not wanted:
        return
    keep = [item for item in items if matrix_backend(item) in wanted]
    dropped = [item for item in items if matrix_backend(item) not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    wanted = wanted_backends()
    device = os.environ.get("ARRAYCNN_TEST_TORCH_DEVICE", "cpu")
    selection = ", ".join(sorted(wanted)) if wanted else "all tests"
    return f"arraycnn GPU check: backends {selection}; torch tests on {device}"
