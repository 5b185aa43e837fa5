"""Half precision (float16, bfloat16): every strategy that takes it works and returns the
input dtype; the others (Winograd, whose transforms lose too many digits) refuse it.

The SVD (separable) and the FFT run in float32 where the namespace lacks half precision,
the other strategies in the input dtype; ``auto`` always works. NumPy has float16 (no
bfloat16); torch has both; array-api-strict has neither.

Oracles: the explicit loops / scipy.signal in float64 on the half-precision inputs (rounded
first, so that only the computation's rounding is measured), each strategy held to its own
error model's scale (:data:`oracles.ERROR_MODEL`) with the table's tolerance for the dtype
(:data:`arraycnn.testing.TOLERANCES`).
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.signal

import arraycnn as ac
from arraycnn.testing import assert_close

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

#: (backend, dtype name): the half-precision dtypes each namespace has.
HALF = [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16")]
GEOMETRY = {"stride": (1, 2), "padding": ((1, 2), (0, 1)), "dilation": 1, "groups": 1}
X_SHAPE, W_SHAPE = (2, 3, 9, 8), (4, 3, 3, 3)


def _half(backend: str, dtype: str):
    """(to the backend in ``dtype``, the rounded values back as float64 NumPy)."""
    if backend == "torch" and torch is None:
        pytest.skip("torch is not installed")
    xp = ac.resolve_backend(backend)

    def convert(a: np.ndarray):
        if backend == "numpy":
            h = np.asarray(a).astype(dtype)
        else:
            h = torch.tensor(np.asarray(a), dtype=getattr(torch, dtype))
        return h, np.asarray(ac.to_numpy(h), dtype=np.float64)

    return xp, convert


@pytest.mark.parametrize(("backend", "dtype"), HALF)
@pytest.mark.parametrize("strategy", [*ac.STRATEGY_NAMES, "auto"])
def test_every_strategy_forward_and_backward(backend, dtype, strategy, rng):
    xp, convert = _half(backend, dtype)
    (hx, x), (hw, w) = (
        convert(rng.standard_normal(X_SHAPE)),
        convert(rng.standard_normal(W_SHAPE)),
    )
    ref_y = oracles.correlate_loops(x, w, **GEOMETRY)
    hgy, gy = convert(rng.standard_normal(ref_y.shape))
    if not oracles.runnable([strategy], X_SHAPE, W_SHAPE, dtype, **GEOMETRY):
        match = f"strategy='{strategy}' cannot run this call"
        with pytest.raises(ValueError, match=match):
            ac.conv2d(hx, hw, strategy=strategy, **GEOMETRY)
        with pytest.raises(ValueError, match=match):
            ac.conv2d_backward(hgy, hx, hw, strategy=strategy, **GEOMETRY)
        return
    ref = oracles.reference(x, w, None, gy, **GEOMETRY)
    y = ac.conv2d(hx, hw, strategy=strategy, **GEOMETRY)
    gx, gw, gb = ac.conv2d_backward(hgy, hx, hw, strategy=strategy, **GEOMETRY)
    name = ac.choose_strategy(hx, hw, strategy=strategy, **GEOMETRY)
    back = ac.conv.explain(hx, hw, strategy=strategy, direction="backward", gy=hgy, **GEOMETRY)
    models = {"y": oracles.ERROR_MODEL[name]["y"]}
    models |= {k: oracles.ERROR_MODEL[back["choice"]][k] for k in ("gx", "gw")}
    s_y, s_gx, s_gw, s_gb = ref.scales_for(models)
    for got, want, scale, label in (
        (y, ref.y, s_y, "y"),
        (gx, ref.gx, s_gx, "gx"),
        (gw, ref.gw, s_gw, "gw"),
        (gb, ref.gb, s_gb, "gb"),
    ):
        assert_close(got, want, scale=scale, xp=xp, dtype=hx.dtype, err_msg=f"{name} {label}")


#: The strategies that refuse half precision on a geometry they otherwise take.
NO_HALF = [
    name
    for name in ac.STRATEGY_NAMES
    if oracles.runnable([name], X_SHAPE, W_SHAPE, "float32", padding=1)
    and not oracles.runnable([name], X_SHAPE, W_SHAPE, "float16", padding=1)
]


@pytest.mark.parametrize(("backend", "dtype"), HALF)
@pytest.mark.parametrize("strategy", NO_HALF)
def test_strategies_without_half_precision_refuse_it_by_name(backend, dtype, strategy, rng):
    """At stride 1, where the half dtype is the only reason, the error names it; ``auto``
    chooses another strategy."""
    _, convert = _half(backend, dtype)
    (hx, _), (hw, _), (hgy, _) = (
        convert(rng.standard_normal(shape)) for shape in (X_SHAPE, W_SHAPE, (2, 4, 9, 8))
    )
    match = rf"strategy='{strategy}' cannot run this call: dtype {dtype}\b"
    with pytest.raises(ValueError, match=match):
        ac.conv2d(hx, hw, padding=1, strategy=strategy)
    with pytest.raises(ValueError, match=match):
        ac.conv2d_backward(hgy, hx, hw, padding=1, strategy=strategy)
    assert ac.choose_strategy(hx, hw, padding=1) != strategy


@pytest.mark.parametrize(("backend", "dtype"), HALF)
def test_separable_decides_and_factors_half_kernels(backend, dtype, rng):
    """A rank-1 half-precision kernel: separable is planned at rank 1 and agrees."""
    _, convert = _half(backend, dtype)
    u, v = rng.standard_normal(5), rng.standard_normal(5)
    (hx, x), (hw, w) = (
        convert(rng.standard_normal((1, 1, 30, 30))),
        convert(np.outer(u, v)[None, None]),
    )
    y = ac.conv2d(hx, hw, padding=2, strategy="separable")
    (scale,) = oracles.error_scales(x, w, model="kernel", padding=2)
    assert_close(y, oracles.correlate_loops(x, w, padding=2), scale=scale, dtype=hx.dtype)


@pytest.mark.parametrize(("backend", "dtype"), HALF)
@pytest.mark.parametrize("strategy", ["auto", "naive", "fft", "separable"])
def test_filters_in_half_precision(backend, dtype, strategy, rng):
    xp, convert = _half(backend, dtype)
    (h1, in1), (h2, in2) = (
        convert(rng.standard_normal((12, 11))),
        convert(rng.standard_normal((4, 3))),
    )
    got = ac.convolve2d(h1, h2, "same", boundary="symm", strategy=strategy)
    expected = scipy.signal.convolve2d(in1, in2, "same", boundary="symm")
    scale = scipy.signal.convolve2d(np.abs(in1), np.abs(in2), "same", boundary="symm")
    if strategy in ("fft", "separable"):  # whole-map and kernel-norm scales
        scale = np.maximum(scale, np.linalg.norm(in1) * np.linalg.norm(in2))
    assert_close(got, expected, scale=scale, xp=xp, dtype=h1.dtype, err_msg=strategy)


@pytest.mark.parametrize(("backend", "dtype"), HALF)
def test_pooling_in_half_precision(backend, dtype, rng):
    xp, convert = _half(backend, dtype)
    values = rng.permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) / 16.0  # exact in half
    hx, x = convert(values)
    y = ac.max_pool2d(hx, 2)
    assert_close(y, x.reshape(2, 2, 3, 2, 3, 2).max(axis=(3, 5)), xp=xp, dtype=hx.dtype)
    a = ac.avg_pool2d(hx, 2)
    assert_close(a, x.reshape(2, 2, 3, 2, 3, 2).mean(axis=(3, 5)), xp=xp, dtype=hx.dtype)
    hgy, _ = convert(np.ones((2, 2, 3, 3)))
    assert_close(ac.avg_pool2d_backward(hgy, hx, 2), np.full(x.shape, 0.25), dtype=hx.dtype)


def test_bfloat16_filter_promotion():
    """bfloat16 promotes as float16 does, and with float16 to float32 (as in torch)."""
    if torch is None:
        pytest.skip("torch is not installed")
    image = torch.ones((4, 4), dtype=torch.bfloat16)
    for other, expected in [
        (torch.bfloat16, torch.bfloat16),
        (torch.int8, torch.bfloat16),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ]:
        out = ac.correlate2d(image, torch.ones((2, 2), dtype=other), "valid")
        assert out.dtype == expected, other
        assert bool(torch.all(out == 4))


def test_to_numpy_widens_bfloat16_exactly():
    if torch is None:
        pytest.skip("torch is not installed")
    t = torch.tensor([1.0, 2.0**-8, 3.140625], dtype=torch.bfloat16)
    a = ac.to_numpy(t)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [1.0, 2.0**-8, 3.140625])
