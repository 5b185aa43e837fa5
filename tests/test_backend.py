"""arraycnn.backend: namespace resolution, data movement, FFT module, synchronize."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
import scipy.fft

from arraycnn.backend import (
    BACKEND_NAMES,
    asarray,
    backend_name,
    device_of,
    fft_module,
    is_floating,
    namespace_of,
    random_generator,
    random_uniform,
    resolve_backend,
    resolve_dtype,
    synchronize,
    to_numpy,
)


def _torch():
    return pytest.importorskip("torch")


def test_backend_names():
    assert BACKEND_NAMES == ("numpy", "cupy", "torch", "jax", "array_api_strict")


def test_resolve_numpy_by_name_module_and_default():
    for spec in ("numpy", np, None):
        xp = resolve_backend(spec)
        assert array_api_compat.is_numpy_namespace(xp)
        assert backend_name(xp) == "numpy"


def test_resolve_array_api_strict_by_name_and_module():
    strict = pytest.importorskip("array_api_strict")
    assert resolve_backend("array_api_strict") is strict
    assert resolve_backend(strict) is strict
    assert backend_name(strict) == "array_api_strict"


def test_resolve_torch_by_name_and_module():
    torch = _torch()
    for spec in ("torch", torch):
        xp = resolve_backend(spec)
        assert array_api_compat.is_torch_namespace(xp)
        assert backend_name(xp) == "torch"


def test_resolve_a_namespace_returns_it(xp):
    """An already resolved namespace resolves to an equivalent namespace."""
    again = resolve_backend(xp)
    assert backend_name(again) == backend_name(xp)
    assert again.__name__ == xp.__name__


@pytest.mark.parametrize("name", ["jax", "cupy"])
def test_resolve_unavailable_backends_raise_runtime_error(name):
    """jax and cupy are not usable here (no jax, no GPU): RuntimeError naming the backend."""
    try:
        resolve_backend(name)
    except RuntimeError as exc:
        assert repr(name) in str(exc)
    else:  # pragma: no cover - depends on the installation
        pytest.skip(f"{name} is usable on this machine")


def test_resolve_refuses_non_namespaces():
    with pytest.raises(TypeError, match=r"backend: module 'math' is not an array namespace"):
        resolve_backend(math)
    with pytest.raises(
        TypeError, match=r"backend must be a name in .* or a namespace module, got int"
    ):
        resolve_backend(3)
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'numpy2'"):
        resolve_backend("numpy2")


def test_namespace_of_one_backend(xp, to_xp):
    a = to_xp(np.ones(3))
    b = to_xp(np.zeros((2, 2), dtype=np.float32))
    assert namespace_of(a, b).__name__ == xp.__name__
    assert namespace_of(a, None, b).__name__ == xp.__name__  # None entries are skipped


def test_namespace_of_mixed_namespaces_names_the_arguments():
    torch = _torch()
    with pytest.raises(TypeError, match=r"different namespaces \(a: .*numpy, b: .*torch\)"):
        namespace_of(np.ones(2), torch.ones(2), names=("a", "b"))
    with pytest.raises(TypeError, match=r"argument 0: .*numpy, argument 1: .*torch"):
        namespace_of(np.ones(2), torch.ones(2))


def test_namespace_of_mixed_strict_and_numpy():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"different namespaces"):
        namespace_of(np.ones(2), strict.ones(2), names=("x", "w"))


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, "text", object()])
def test_namespace_of_non_arrays(bad):
    with pytest.raises(TypeError, match=rf"x must be an array .*got {type(bad).__name__}"):
        namespace_of(bad, np.ones(2), names=("x", "w"))


def test_namespace_of_only_none_is_a_type_error():
    """namespace_of(None) has no array to take a namespace from: say so with a TypeError."""
    with pytest.raises(TypeError):
        namespace_of(None, names=("x",))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asarray_to_numpy_round_trip(xp, dtype):
    rng = np.random.default_rng(0)
    host = rng.standard_normal((2, 3, 4)).astype(dtype)
    moved = asarray(host, backend=xp)
    assert backend_name(array_api_compat.array_namespace(moved)) == backend_name(xp)
    assert moved.dtype == getattr(xp, dtype)
    assert tuple(moved.shape) == host.shape
    back = to_numpy(moved)
    assert isinstance(back, np.ndarray) and back.dtype == host.dtype
    np.testing.assert_array_equal(back, host)


def test_asarray_across_namespaces():
    """numpy -> torch -> array_api_strict -> numpy keeps values, dtype and shape."""
    torch = _torch()
    strict = pytest.importorskip("array_api_strict")
    host = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    t = asarray(host, backend="torch")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    s = asarray(t, backend="array_api_strict")
    assert array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(s))
    assert s.dtype == strict.float32
    n = asarray(s, backend="numpy")
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    np.testing.assert_array_equal(n, host)


def test_asarray_dtype_by_name_and_object(xp):
    a = asarray([[1, 2], [3, 4]], backend=xp, dtype="float32")
    assert a.dtype == xp.float32
    b = asarray([1, 2], backend=xp, dtype=xp.float64)
    assert b.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(b), [1.0, 2.0])


def test_asarray_default_backend_is_numpy():
    a = asarray([1.0, 2.0])
    assert isinstance(a, np.ndarray)


def test_asarray_on_the_device_of_another_array(xp, to_xp):
    ref = to_xp(np.ones(2))
    a = asarray(np.zeros(3), backend=xp, device=device_of(ref))
    assert device_of(a) == device_of(ref)


def test_to_numpy_of_a_torch_tensor_that_requires_grad():
    torch = _torch()
    t = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(to_numpy(t), [2.0, 2.0, 2.0])


def test_to_numpy_of_numpy_is_the_same_array():
    a = np.ones(3)
    assert to_numpy(a) is a


def test_is_floating(xp, to_xp):
    assert is_floating(to_xp(np.ones(2, dtype=np.float32)), xp)
    assert is_floating(to_xp(np.ones(2, dtype=np.float64)), xp)
    assert not is_floating(to_xp(np.ones(2, dtype=np.int64)), xp)
    assert not is_floating(to_xp(np.ones(2, dtype=bool)), xp)


def test_fft_module_choice(xp):
    fft = fft_module(xp)
    if backend_name(xp) == "numpy":
        assert fft is scipy.fft
    else:
        assert fft is xp.fft


def test_fft_module_transforms_stay_in_the_namespace(xp, to_xp):
    """rfftn / irfftn of the chosen module round-trip a backend array in its namespace."""
    x = to_xp(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    fft = fft_module(xp)
    back = fft.irfftn(fft.rfftn(x, s=(3, 4), axes=(-2, -1)), s=(3, 4), axes=(-2, -1))
    assert backend_name(array_api_compat.array_namespace(back)) == backend_name(xp)
    np.testing.assert_allclose(to_numpy(back), np.arange(24).reshape(2, 3, 4), atol=1e-12)


def test_synchronize_is_a_no_op_on_cpu(xp, to_xp):
    a = to_xp(np.ones(3))
    assert synchronize() is None
    assert synchronize(xp) is None
    assert synchronize(a) is None
    np.testing.assert_array_equal(to_numpy(a), [1.0, 1.0, 1.0])


def test_device_of(xp, to_xp):
    a = to_xp(np.ones(3))
    assert device_of(a) == array_api_compat.device(a)
    torch_ns = backend_name(xp) == "torch"
    if torch_ns:
        assert device_of(a).type == "cpu"
    elif backend_name(xp) == "numpy":
        assert device_of(a) == "cpu"


def test_resolve_dtype_by_default_name_and_object(xp):
    assert resolve_dtype(xp, None) == xp.float32
    assert resolve_dtype(xp, "float64") == xp.float64
    assert resolve_dtype(xp, xp.int32) == xp.int32
    with pytest.raises(ValueError, match=r"dtype 'float99' is not a dtype of"):
        resolve_dtype(xp, "float99")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_uniform_draws_in_the_unit_interval_on_the_namespace(xp, dtype):
    generator = random_generator(xp, 7)
    u, generator = random_uniform(generator, (50, 40), xp=xp, dtype=getattr(xp, dtype))
    assert backend_name(namespace_of(u)) == backend_name(xp)
    assert u.dtype == getattr(xp, dtype) and tuple(u.shape) == (50, 40)
    host = np.asarray(to_numpy(u), dtype=np.float64)
    assert host.min() >= 0.0 and host.max() < 1.0
    assert abs(host.mean() - 0.5) < 0.02  # 2 000 draws: the mean's standard error is 0.0065


def test_random_uniform_is_seeded_and_advances(xp):
    def draws(seed, calls):
        generator = random_generator(xp, seed)
        out = []
        for _ in range(calls):
            u, generator = random_uniform(generator, (3, 4), xp=xp, dtype=xp.float64)
            out.append(np.asarray(to_numpy(u)))
        return out

    first, second = draws(11, 2)
    np.testing.assert_array_equal(first, draws(11, 1)[0])  # the same seed, the same draws
    assert not np.array_equal(first, second)  # a second call draws anew
    assert not np.array_equal(first, draws(12, 1)[0])


def test_random_uniform_uses_the_native_generator(xp):
    """NumPy and the host fallback draw what numpy.random.default_rng(seed) draws; torch and
    CuPy what their own generators seeded alike draw."""
    u, _ = random_uniform(random_generator(xp, 5), (2, 3), xp=xp, dtype=xp.float64)
    name = backend_name(xp)
    if name == "torch":
        torch = _torch()
        generator = torch.Generator().manual_seed(5)
        expected = torch.rand((2, 3), generator=generator, dtype=torch.float64).numpy()
    elif name == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        expected = cupy.random.default_rng(5).random((2, 3), dtype=cupy.float64).get()
    elif name == "jax":  # a key, split on every draw: the first draw uses the second half
        import jax

        _, key = jax.random.split(jax.random.key(5))
        expected = np.asarray(jax.random.uniform(key, (2, 3), dtype=xp.float64))
    else:
        expected = np.random.default_rng(5).random((2, 3))
    np.testing.assert_array_equal(to_numpy(u), expected)
