"""Testing helpers: the one per-dtype tolerance table, ``assert_close`` and ``check_grad``.

Used by arraycnn's own tests and offered to users who test code built on it. Oracles are
NumPy arrays on the host; the array under test may come from any namespace.

Tolerances are relative to a *scale*, the quantity a method's rounding error is
proportional to, not ``|result|``, which can be tiny by cancellation. Which scale depends
on the method (the test suite's ``tests/oracles.py`` states one per strategy):

- direct sums (naive, im2col, and every weight gradient but FFT's): ``sum |x| |w|`` over
  each output's window — the error is a few eps of it;
- separable's forward and input gradient: the window's ``|x|`` times the Frobenius norm of
  the kernel slice (the SVD factors round the kernel as a whole);
- FFT: whole-map norms ``sum_c |x_nc|_2 |w_fc|_2`` — rounding spreads over the output, so
  an output whose exact value is 0 (say, a window over padding only) may come out as a
  few eps of the map's norm.

Pass the scale as ``scale``; it defaults to ``|expected|``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from .backend import device_of, to_numpy

__all__ = ["FD_TOLERANCE", "TOLERANCES", "assert_close", "check_grad", "tolerance"]

#: (rtol, atol) by dtype name: ``|actual - expected| <= atol + rtol * scale``.
TOLERANCES: dict[str, tuple[float, float]] = {
    "bfloat16": (8e-2, 8e-3),  # float16's rows scaled by the ratio of the epsilons (2**-7 / 2**-10)
    "float16": (1e-2, 1e-3),
    "float32": (2e-5, 1e-6),
    "float64": (1e-12, 1e-13),
    "complex64": (2e-5, 1e-6),  # its float32 parts' rows; errors are moduli |actual - expected|
    "complex128": (1e-12, 1e-13),
}

#: (rtol, atol) for central finite differences in float64 (step 1e-6 relative):
#: truncation error O(h^2) plus rounding O(eps / h).
FD_TOLERANCE: tuple[float, float] = (1e-6, 1e-8)


def _dtype_name(dtype: Any) -> str:
    """Name of a dtype of any namespace: 'float32' for np.float32, torch.float32, ..."""
    try:
        return np.dtype(dtype).name  # NumPy dtypes and scalar types
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.float32


def tolerance(dtype: Any) -> tuple[float, float]:
    """(rtol, atol) for ``dtype`` (a dtype of any namespace, or its name).

    Raises
    ------
    ValueError
        For a dtype without an entry in :data:`TOLERANCES`.

    Examples
    --------
    >>> tolerance(np.float32), tolerance("float64")
    ((2e-05, 1e-06), (1e-12, 1e-13))
    """
    name = dtype if isinstance(dtype, str) else _dtype_name(dtype)
    try:
        return TOLERANCES[name]
    except KeyError:
        raise ValueError(f"no tolerance for dtype {dtype!r}; known: {sorted(TOLERANCES)}") from None


def assert_close(
    actual: Any,
    expected: Any,
    *,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
    scale: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    err_msg: str = "",
) -> float:
    """Check namespace, dtype, shape and device of ``actual``, then its values.

    Parameters
    ----------
    actual : array of any namespace
    expected : array_like
        The oracle's result (converted to float64 NumPy, complex128 where either is complex;
        errors are then the moduli ``|actual - expected|``).
    xp : namespace, optional
        Namespace ``actual`` must belong to.
    dtype, device : optional
        What ``actual.dtype`` / its device must equal.
    scale : array_like, optional
        Error scale, broadcastable to ``expected`` (default ``|expected|``).
    rtol, atol : float, optional
        Override the table entry for ``actual``'s dtype.

    Returns
    -------
    float
        The largest error divided by the scale (for reports).

    Raises
    ------
    AssertionError
        If the namespace, dtype, device or shape differ, or a value is out of tolerance (the
        message shows the worst one).

    Examples
    --------
    >>> worst = assert_close(np.float32([1.0, 2.0]), [1.0, 2.00001])  # within float32's rtol
    >>> round(worst, 6)  # the largest error relative to the scale |expected|
    5e-06
    >>> assert_close(np.float32([1.0, 0.0]), [1.0, 1e-3], scale=1.0, err_msg="forward")
    Traceback (most recent call last):
    ...
    AssertionError: forward: 1 of 2 values differ beyond rtol=2e-05, atol=1e-06; worst at (1,): ...
    """
    prefix = f"{err_msg}: " if err_msg else ""
    if xp is not None:
        got = array_api_compat.array_namespace(actual)
        if got is not xp and got.__name__ != xp.__name__:
            raise AssertionError(f"{prefix}namespace {got.__name__}, expected {xp.__name__}")
    if dtype is not None and actual.dtype != dtype:
        raise AssertionError(f"{prefix}dtype {actual.dtype}, expected {dtype}")
    if device is not None and device_of(actual) != device:
        raise AssertionError(f"{prefix}device {device_of(actual)}, expected {device}")
    a, e = to_numpy(actual), to_numpy(expected)
    values = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(e) else np.float64
    a, e = np.asarray(a, dtype=values), np.asarray(e, dtype=values)
    if a.shape != e.shape:
        raise AssertionError(f"{prefix}shape {a.shape}, expected {e.shape}")
    table_rtol, table_atol = tolerance(actual.dtype)
    rtol = table_rtol if rtol is None else rtol
    atol = table_atol if atol is None else atol
    if scale is None:
        s = np.abs(e)
    else:
        s = np.broadcast_to(np.asarray(to_numpy(scale), dtype=np.float64), e.shape)
    err = np.abs(a - e)
    bad = ~(err <= atol + rtol * s)  # NaN in either counts as bad unless both NaN
    bad &= ~(np.isnan(a) & np.isnan(e))
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), e.shape)
        raise AssertionError(
            f"{prefix}{int(bad.sum())} of {e.size} values differ beyond rtol={rtol}, atol={atol}; "
            f"worst at {tuple(int(i) for i in idx)}: actual {a[idx]!r}, expected {e[idx]!r}, "
            f"scale {s[idx]!r}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(s > 0, err / np.maximum(s, 1e-300), err)
    return float(np.nanmax(rel)) if rel.size else 0.0


def check_grad(
    fun: Callable[[np.ndarray], float],
    x: np.ndarray,
    grad: Any,
    *,
    seed: int = 0,
    directions: int = 2,
    step: float = 1e-6,
) -> float:
    """Compare ``grad`` with central finite differences of ``fun`` along random directions.

    Parameters
    ----------
    fun : callable
        Scalar function of a float64 NumPy array shaped like ``x``.
    x : ndarray, float64
        Point of evaluation.
    grad : array_like
        Claimed gradient of ``fun`` at ``x``.
    seed, directions, step : int, int, float
        Random unit directions ``d``; the derivative ``(f(x + h d) - f(x - h d)) / 2h``
        with ``h = step * max(1, |x|_inf)``.

    Returns
    -------
    float
        Largest relative discrepancy, after asserting it is within :data:`FD_TOLERANCE`.

    Raises
    ------
    AssertionError
        If a directional derivative disagrees beyond :data:`FD_TOLERANCE`.

    Examples
    --------
    >>> x = np.array([1.0, -2.0, 3.0])
    >>> error = check_grad(lambda v: float(np.sum(v**3)), x, 3 * x**2)
    >>> error < 1e-8
    True
    >>> check_grad(lambda v: float(np.sum(v**3)), x, 2 * x**2)
    Traceback (most recent call last):
    ...
    AssertionError: directional derivative ... (analytic) vs ... (finite differences), ...
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(to_numpy(grad), dtype=np.float64)
    if g.shape != x.shape:
        raise AssertionError(f"gradient shape {g.shape}, expected {x.shape}")
    rng = np.random.default_rng(seed)
    h = step * max(1.0, float(np.abs(x).max()))
    rtol, atol = FD_TOLERANCE
    worst = 0.0
    for _ in range(directions):
        d = rng.standard_normal(x.shape)
        d /= np.linalg.norm(d)
        numeric = (fun(x + h * d) - fun(x - h * d)) / (2 * h)
        analytic = float(np.sum(g * d))
        scale = max(abs(numeric), float(np.linalg.norm(g)), 1.0)
        err = abs(numeric - analytic)
        if err > atol + rtol * scale:
            raise AssertionError(
                f"directional derivative {analytic!r} (analytic) vs {numeric!r} (finite "
                f"differences), error {err:.3g} > {atol} + {rtol} * {scale:.3g}"
            )
        worst = max(worst, err / scale)
    return worst
