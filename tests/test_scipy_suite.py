"""SciPy's own ``TestConvolve2d`` and ``TestCorrelate2d``, run on arraycnn's filters.

The installed SciPy's ``scipy/signal/tests/test_signaltools.py`` is parsed; its imports and
module-level assignments run unchanged, then ``convolve2d`` and ``correlate2d`` (and the
``signal`` module the tests also call them through) are rebound to
``functools.partial(arraycnn.filters.X, strategy=S)``, and the two class definitions run
with their bodies unchanged (so their ``parametrize`` lists hold arraycnn's functions). One
pair of classes is built per strategy, ``TestConvolve2d_auto`` and so on.

``xp`` is NumPy, as in SciPy's own runs without ``SCIPY_ARRAY_API=1``.

The strategies run by default are ``auto``, ``naive`` and ``im2col``; set
``ARRAYCNN_SCIPY_SUITE_STRATEGIES`` (comma-separated, e.g. ``fft,separable``) to run others::

    ARRAYCNN_SCIPY_SUITE_STRATEGIES=auto,naive,im2col,fft,separable \\
        python -m pytest -q tests/test_scipy_suite.py -p no:randomly

Deselected tests (skipped with their reason) are listed in :data:`DESELECTED`.
"""

from __future__ import annotations

import ast
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import array_api_compat.numpy as np_compat
import pytest

import arraycnn.filters

scipy_signal = pytest.importorskip("scipy.signal")

#: The installed SciPy's test file.
SCIPY_TEST_FILE = Path(scipy_signal.__file__).parent / "tests" / "test_signaltools.py"
#: The SciPy test classes run here.
CLASSES = ("TestConvolve2d", "TestCorrelate2d")
#: Strategies run by default (module docstring for the others).
DEFAULT_STRATEGIES = ("auto", "naive", "im2col")
STRATEGIES = tuple(
    s.strip()
    for s in os.environ.get("ARRAYCNN_SCIPY_SUITE_STRATEGIES", ",".join(DEFAULT_STRATEGIES)).split(
        ","
    )
    if s.strip()
)

#: SciPy tests that cannot apply to arraycnn, by ``Class::test``, with the reason.
DESELECTED = {
    "TestConvolve2d::test_large_array": (
        "needs over 4 GB of free memory (SciPy marks it slow); it checks that SciPy's C loop "
        "indexes a 2**31-byte strided array without int overflow"
    ),
}


class _SignalWith:
    """``scipy.signal`` with some functions replaced (the tests call ``signal.correlate2d``)."""

    def __init__(self, **replaced: Any) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(scipy_signal, name)


def _scipy_test_classes(strategy: str) -> dict[str, type]:
    """SciPy's test classes, their module globals rebound to arraycnn's ``strategy``."""
    tree = ast.parse(SCIPY_TEST_FILE.read_text(), filename=str(SCIPY_TEST_FILE))
    header = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign))]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in CLASSES]
    missing = set(CLASSES) - {n.name for n in classes}
    assert not missing, f"{SCIPY_TEST_FILE} has no {sorted(missing)}"
    replaced = {
        "convolve2d": functools.partial(arraycnn.filters.convolve2d, strategy=strategy),
        "correlate2d": functools.partial(arraycnn.filters.correlate2d, strategy=strategy),
    }
    namespace: dict[str, Any] = {"__name__": f"scipy_signaltools_on_arraycnn_{strategy}"}
    with warnings.catch_warnings():  # SciPy's own markers are not registered here
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        exec(compile(ast.Module(header, []), str(SCIPY_TEST_FILE), "exec"), namespace)
        namespace.update(replaced, signal=_SignalWith(**replaced))
        namespace["make_xp_test_case"] = _capabilities_of_scipy(
            namespace["make_xp_test_case"],
            {id(f): getattr(scipy_signal, n) for n, f in replaced.items()},
        )
        exec(compile(ast.Module(classes, []), str(SCIPY_TEST_FILE), "exec"), namespace)
    return {name: namespace[name] for name in CLASSES}


def _capabilities_of_scipy(make_xp_test_case, scipy_function: dict[int, Any]):
    """SciPy's decorator, given SciPy's function where a test names arraycnn's (it reads
    SciPy's capability table of that function: which backends to skip)."""

    def decorator(*funcs: Any, **kwargs: Any):
        return make_xp_test_case(*(scipy_function.get(id(f), f) for f in funcs), **kwargs)

    return decorator


def _deselect(cls: type) -> None:
    for key, reason in DESELECTED.items():
        owner, test = key.split("::")
        if owner == cls.__name__:
            setattr(cls, test, pytest.mark.skip(reason=reason)(getattr(cls, test)))


@pytest.fixture
def xp():
    """NumPy, as SciPy's ``xp`` fixture gives without ``SCIPY_ARRAY_API=1``."""
    return np_compat


for _strategy in STRATEGIES:
    for _name, _cls in _scipy_test_classes(_strategy).items():
        _deselect(_cls)
        globals()[f"{_name}_{_strategy}"] = type(f"{_name}_{_strategy}", (_cls,), {})
del _strategy, _name, _cls
