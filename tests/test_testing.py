"""arraycnn.testing must fail when it should: the checkers are themselves tested."""

from __future__ import annotations

import numpy as np
import pytest

from arraycnn.backend import asarray, device_of
from arraycnn.testing import FD_TOLERANCE, TOLERANCES, assert_close, check_grad, tolerance


def test_tolerance_table():
    assert tolerance("float32") == TOLERANCES["float32"]
    assert tolerance(np.float64) == TOLERANCES["float64"]
    assert tolerance(np.dtype("float32")) == TOLERANCES["float32"]
    # a float64 result is held to a tighter bound than float32, float32 than float16
    assert TOLERANCES["float64"][0] < TOLERANCES["float32"][0] < TOLERANCES["float16"][0]


def test_tolerance_of_backend_dtypes(xp):
    assert tolerance(xp.float32) == TOLERANCES["float32"]
    assert tolerance(xp.float64) == TOLERANCES["float64"]


def test_tolerance_unknown_dtype():
    with pytest.raises(ValueError, match=r"no tolerance for dtype 'int64'; known: "):
        tolerance("int64")


def test_assert_close_passes_and_reports_the_worst_ratio(xp, to_xp):
    expected = np.array([1.0, -2.0, 4.0])
    actual = to_xp(expected * (1 + np.array([0.0, 1e-13, -5e-14])))
    ratio = assert_close(actual, expected, xp=xp, dtype=xp.float64, device=device_of(actual))
    assert 0 < ratio <= TOLERANCES["float64"][0]
    assert ratio == pytest.approx(1e-13, rel=1e-2)


def test_assert_close_catches_wrong_values(xp, to_xp):
    actual = to_xp(np.array([1.0, 2.0, 3.0 + 1e-9]))
    with pytest.raises(AssertionError, match=r"1 of 3 values differ .*worst at \(2,\)"):
        assert_close(actual, [1.0, 2.0, 3.0])


def test_assert_close_uses_the_dtype_of_actual(xp, to_xp):
    """A float32 result may be off by 1e-6 relative; a float64 one may not."""
    expected = np.array([1.0, 2.0])
    off = expected * (1 + 1e-6)
    assert_close(to_xp(off, dtype=np.float32), expected)
    with pytest.raises(AssertionError, match="differ beyond rtol=1e-12"):
        assert_close(to_xp(off, dtype=np.float64), expected)


def test_assert_close_scale(xp, to_xp):
    """An error tiny against sum |x||w| passes even where the result itself is ~0."""
    expected = np.array([0.0, 1.0])
    actual = to_xp(np.array([1e-11, 1.0]))
    with pytest.raises(AssertionError):
        assert_close(actual, expected)
    assert_close(actual, expected, scale=np.array([100.0, 1.0]))
    assert_close(actual, expected, scale=100.0)  # broadcast scalar scale
    with pytest.raises(AssertionError, match=r"scale (np\.float64\()?1\.0"):
        assert_close(actual, expected, scale=1.0)


def test_assert_close_overrides(xp, to_xp):
    actual = to_xp(np.array([1.1]))
    assert_close(actual, [1.0], rtol=0.2)
    assert_close(actual, [1.0], atol=0.2, rtol=0.0)
    with pytest.raises(AssertionError, match=r"rtol=0\.01"):
        assert_close(actual, [1.0], rtol=0.01)


def test_assert_close_catches_wrong_dtype(xp, to_xp):
    actual = to_xp(np.ones(2, dtype=np.float32))
    with pytest.raises(AssertionError, match=r"dtype .*float32, expected .*float64"):
        assert_close(actual, np.ones(2), dtype=xp.float64)


def test_assert_close_catches_wrong_shape(xp, to_xp):
    with pytest.raises(AssertionError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        assert_close(to_xp(np.ones((2, 3))), np.ones((3, 2)))
    with pytest.raises(AssertionError, match=r"shape \(6,\), expected \(1, 6\)"):
        assert_close(to_xp(np.ones(6)), np.ones((1, 6)))


def test_assert_close_catches_wrong_namespace():
    torch = pytest.importorskip("torch")
    from arraycnn.backend import resolve_backend

    with pytest.raises(AssertionError, match=r"namespace .*numpy, expected .*torch"):
        assert_close(np.ones(2), np.ones(2), xp=resolve_backend("torch"))
    with pytest.raises(AssertionError, match=r"namespace .*torch, expected .*numpy"):
        assert_close(torch.ones(2, dtype=torch.float64), np.ones(2), xp=resolve_backend("numpy"))


def test_assert_close_catches_wrong_device():
    torch = pytest.importorskip("torch")
    actual = torch.ones(2, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"device cpu, expected meta"):
        assert_close(actual, np.ones(2), device=torch.device("meta"))
    assert_close(actual, np.ones(2), device=torch.device("cpu"))


def test_assert_close_nan_handling(xp, to_xp):
    nan = float("nan")
    assert_close(to_xp(np.array([nan, 1.0])), [nan, 1.0])  # NaN where expected
    with pytest.raises(AssertionError, match="1 of 2 values differ"):
        assert_close(to_xp(np.array([nan, 1.0])), [0.0, 1.0])  # unexpected NaN
    with pytest.raises(AssertionError, match="1 of 2 values differ"):
        assert_close(to_xp(np.array([0.0, 1.0])), [nan, 1.0])  # missing NaN
    with pytest.raises(AssertionError):
        assert_close(to_xp(np.array([np.inf])), [1.0])


def test_assert_close_err_msg_prefix(xp, to_xp):
    with pytest.raises(AssertionError, match=r"^gx naive: 1 of 1 values differ"):
        assert_close(to_xp(np.array([2.0])), [1.0], err_msg="gx naive")


# --------------------------------------------------------------------------- check_grad


def _quadratic(a):
    """f(x) = sum(a * x^2) / 2 + sum(sin x); gradient a * x + cos x."""

    def fun(x):
        return float(np.sum(a * x**2) / 2 + np.sum(np.sin(x)))

    return fun, (lambda x: a * x + np.cos(x))


def test_check_grad_accepts_the_right_gradient():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 2.0, (3, 4))
    x = rng.standard_normal((3, 4))
    fun, grad = _quadratic(a)
    worst = check_grad(fun, x, grad(x), directions=4)
    rtol, _ = FD_TOLERANCE
    assert 0 <= worst <= rtol


def test_check_grad_accepts_a_backend_array_as_gradient(xp):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 2.0, (5,))
    x = rng.standard_normal(5)
    fun, grad = _quadratic(a)
    check_grad(fun, x, asarray(grad(x), backend=xp))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda g: 2 * g,  # factor 2 (a classic backward bug)
        lambda g: -g,  # wrong sign
        lambda g: g + 1e-3,  # small offset
        lambda g: g * (1 + 1e-4),  # 1e-4 relative: above the 1e-6 finite-difference bound
        lambda g: np.zeros_like(g),
        lambda g: g.T.reshape(g.shape),  # transposed layout
    ],
    ids=["double", "sign", "offset", "relative-1e-4", "zero", "transposed"],
)
def test_check_grad_catches_a_wrong_gradient(corrupt):
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 2.0, (3, 4))
    x = rng.standard_normal((3, 4))
    fun, grad = _quadratic(a)
    with pytest.raises(AssertionError, match=r"directional derivative .* \(analytic\) vs"):
        check_grad(fun, x, corrupt(grad(x)), directions=3)


def test_check_grad_catches_one_wrong_entry():
    """One entry off in 200: random directions still see it (all weights are nonzero)."""
    rng = np.random.default_rng(4)
    a = rng.uniform(0.5, 2.0, 200)
    x = rng.standard_normal(200)
    fun, grad = _quadratic(a)
    g = grad(x)
    g[137] += 0.5
    with pytest.raises(AssertionError):
        check_grad(fun, x, g, directions=2)


def test_check_grad_catches_wrong_shape():
    fun, grad = _quadratic(np.ones(6))
    x = np.zeros(6)
    with pytest.raises(AssertionError, match=r"gradient shape \(2, 3\), expected \(6,\)"):
        check_grad(fun, x, grad(x).reshape(2, 3))
