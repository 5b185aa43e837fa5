"""Shared fixtures: the backend under test, seeded data, Hypothesis profiles.

Every test that takes ``xp`` runs once per backend: NumPy, array-api-strict (on its default
device and on ``Device("device1")``, its stand-in for a GPU: take the ``device`` fixture to
build there), torch (CPU,
one thread; skipped when torch is not installed), JAX (its default device, float64 enabled;
only with ``ARRAYCNN_TEST_JAX=1``: eager JAX compiles every operation at every new shape,
which makes the whole suite about 15 times slower; ``tests/test_jax.py`` runs wherever jax
is installed) and CuPy (skipped without a CUDA device). Build inputs with NumPy (the
oracles' side) and move them with ``to_xp``.

``ARRAYCNN_TEST_TORCH_DEVICE=cuda`` runs the torch backend's tests on that device instead
(torch's default device for each such test; skipped where torch cannot use it): the GPU
check, ``.ci/gpu-check``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

try:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 tests; float32 stays float32
except ImportError:  # pragma: no cover - jax is an optional extra
    jax = None

#: Whether the xp-parametrized tests run on JAX too (module docstring).
JAX_MATRIX = os.environ.get("ARRAYCNN_TEST_JAX", "0") == "1"
#: The device of the torch backend's tests (module docstring).
TORCH_DEVICE = os.environ.get("ARRAYCNN_TEST_TORCH_DEVICE", "cpu")


class Backend(enum.Enum):
    """Namespaces the suite runs on."""

    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    STRICT_DEVICE1 = "array_api_strict-device1"
    TORCH = "torch"
    JAX = "jax"
    CUPY = "cupy"


def _cupy_usable() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def _torch_device_unusable() -> str | None:
    try:
        torch.empty(0, device=TORCH_DEVICE)
    except Exception as exc:
        return f"torch cannot use ARRAYCNN_TEST_TORCH_DEVICE={TORCH_DEVICE!r}: {exc}"
    return None


def _skip_reason(backend: Backend) -> str | None:
    if backend is Backend.TORCH and torch is None:
        return "torch is not installed"
    if backend is Backend.TORCH and TORCH_DEVICE != "cpu":
        return _torch_device_unusable()
    if backend is Backend.JAX and jax is None:
        return "jax is not installed"
    if backend is Backend.JAX and not JAX_MATRIX:
        return "set ARRAYCNN_TEST_JAX=1 to run the xp tests on JAX (slow: eager compiles)"
    if backend is Backend.CUPY and not _cupy_usable():
        return "CuPy is not installed or no CUDA device is usable"
    return None


@pytest.fixture(params=list(Backend), ids=lambda b: b.value)
def backend(request) -> Iterator[Backend]:
    """The backend under test (skips where it is unavailable)."""
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    if request.param is Backend.TORCH and TORCH_DEVICE != "cpu":
        with torch.device(TORCH_DEVICE):  # torch's default device while the test runs
            yield request.param
    else:
        yield request.param


@pytest.fixture
def xp(backend):
    """The array namespace of the backend under test."""
    from arraycnn.backend import resolve_backend

    return resolve_backend(backend.value.split("-")[0])


@pytest.fixture
def device(xp, backend):
    """The device of the backend under test: array-api-strict's ``Device("device1")`` (its
    CPU stand-in for a GPU, where planning must read no values) or None (the default)."""
    return xp.Device("device1") if backend is Backend.STRICT_DEVICE1 else None


@pytest.fixture
def on_device(device) -> bool:
    """Whether the backend under test stands in for a device (values are not read there)."""
    return device is not None


@pytest.fixture
def to_xp(xp, device):
    """Move a NumPy array (or nested list) onto the backend (and device) under test, keeping
    its dtype."""
    from arraycnn.backend import asarray

    def convert(a, dtype=None):
        a = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
        return asarray(a, backend=xp, device=device)

    return convert


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator for test data."""
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def fresh_settings_and_caches(tmp_path):
    """Each test gets its own cache directory, default settings and empty caches."""
    import arraycnn as ac

    with ac.config(
        cache_dir=tmp_path / "cache", autotune=None, deterministic=None, workspace_limit=None
    ):
        ac.clear_caches()
        yield
        ac.clear_caches()


@pytest.fixture
def array_operations(monkeypatch):
    """naive's depthwise layers and Winograd's transforms on the array operations on every
    backend: the compiled loops (NumPy with numba) off, for tests of the array-operation
    path itself."""
    import arraycnn as ac
    from arraycnn.conv import naive

    monkeypatch.setenv(naive.ENV_NUMBA, "0")
    ac.clear_caches()  # the next test starts with cleared caches too (fresh_settings_and_caches)


@pytest.fixture
def favour():
    """favour(name): write a user calibration (into the test's cache directory) under which
    the cost model predicts strategy ``name`` a million times cheaper than the others, on
    every backend; returns that calibration (for ``dispatch.plan(calibration=...)``)."""
    from arraycnn import STRATEGY_NAMES
    from arraycnn.conv import cost

    def apply(name: str):
        factor = {s: (1e-6 if s == name else 1.0) for s in STRATEGY_NAMES}
        cal = cost.Calibration(0.0, 0.0, 1e-10, 1e-10, 1e-6, factor, source=f"favours {name}")
        for backend in Backend:
            cost.save_user_calibration(backend.value, cal)
        return cal

    return apply


@pytest.fixture
def traced_peak():
    """traced_peak(run): ``(run(), bytes)``, the peak NumPy allocated while ``run`` ran
    (NumPy reports its allocations to tracemalloc), the library's scratch buffers dropped
    before and after so that the call allocates its own."""
    import tracemalloc

    import arraycnn as ac

    def measure(run):
        ac.clear_caches()
        tracemalloc.start()
        try:
            result = run()
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            ac.clear_caches()

    return measure
