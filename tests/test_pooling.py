"""Max and average pooling: explicit-loop oracles, finite differences, torch, error paths.

Oracles: per-window loops in NumPy float64 (``np.argmax`` gives the first maximum in row-major
order, which is our documented tie rule), central finite differences, and torch's
``max_pool2d`` / ``avg_pool2d`` with autograd where installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arraycnn.backend import to_numpy
from arraycnn.geometry import resolve_padding
from arraycnn.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from arraycnn.testing import assert_close, check_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# (x shape, kernel_size, stride, padding); padding in every accepted form
GEOMETRIES = [
    ((2, 3, 6, 6), 2, None, 0),
    ((1, 2, 7, 5), 3, 1, 1),  # overlapping windows and padding
    ((2, 1, 7, 8), (3, 2), (2, 1), (1, 0)),
    ((1, 2, 5, 6), 3, 2, ((1, 0), (0, 1))),  # asymmetric padding
    ((1, 1, 5, 5), 2, 1, "same"),
    ((1, 2, 4, 4), 4, None, 0),  # global pooling
    ((1, 1, 9, 7), (2, 3), (3, 2), 0),  # stride > kernel: some inputs in no window
]
# the subset torch accepts (symmetric padding)
TORCH_GEOMETRIES = [g for g in GEOMETRIES if not isinstance(g[3], str) and g[0] != (1, 2, 5, 6)]


# ---------------------------------------------------------------------------------------------
# oracles: explicit loops over windows
# ---------------------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _loop_geometry(shape, kernel_size, stride, padding):
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    (pt, pb), (pl, pr) = resolve_padding(padding, shape[2:], (kh, kw), (sh, sw), (1, 1))
    ho = (shape[2] + pt + pb - kh) // sh + 1
    wo = (shape[3] + pl + pr - kw) // sw + 1
    return kh, kw, sh, sw, (pt, pb, pl, pr), ho, wo


def _windows(shape, kernel_size, stride, padding):
    """Yield (n, c, p, q, row slice, col slice) into the padded input, one per window."""
    kh, kw, sh, sw, _pads, ho, wo = _loop_geometry(shape, kernel_size, stride, padding)
    for n in range(shape[0]):
        for c in range(shape[1]):
            for p in range(ho):
                for q in range(wo):
                    yield n, c, p, q, slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)


def _padded(x, pads, value):
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def loop_max_pool(x, gy, kernel_size, stride, padding):
    """Forward and first-maximum backward by loops."""
    _kh, _kw, _sh, _sw, pads, ho, wo = _loop_geometry(x.shape, kernel_size, stride, padding)
    xpad = _padded(x, pads, -np.inf)
    y = np.empty((*x.shape[:2], ho, wo))
    gxpad = np.zeros_like(xpad)
    for n, c, p, q, rows, cols in _windows(x.shape, kernel_size, stride, padding):
        window = xpad[n, c, rows, cols]
        y[n, c, p, q] = window.max()
        i, j = np.unravel_index(np.argmax(window), window.shape)  # first maximum, row-major
        gxpad[n, c, rows.start + i, cols.start + j] += gy[n, c, p, q]
    pt, _, pl, _ = pads
    return y, gxpad[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]


def loop_avg_pool(x, gy, kernel_size, stride, padding, count_include_pad):
    kh, kw, _sh, _sw, pads, ho, wo = _loop_geometry(x.shape, kernel_size, stride, padding)
    xpad = _padded(x, pads, 0.0)
    inside = _padded(np.ones_like(x), pads, 0.0)
    y = np.empty((*x.shape[:2], ho, wo))
    gxpad = np.zeros_like(xpad)
    for n, c, p, q, rows, cols in _windows(x.shape, kernel_size, stride, padding):
        divisor = kh * kw if count_include_pad else inside[n, c, rows, cols].sum()
        y[n, c, p, q] = xpad[n, c, rows, cols].sum() / divisor
        gxpad[n, c, rows, cols] += gy[n, c, p, q] / divisor
    pt, _, pl, _ = pads
    return y, gxpad[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]


def _distinct_values(rng, shape):
    """Values at least 0.1 apart: no ties, and finite differences never cross one."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.1 - 3.0


def _output_shape(shape, kernel_size, stride, padding):
    *_, ho, wo = _loop_geometry(shape, kernel_size, stride, padding)
    return (*shape[:2], ho, wo)


# ---------------------------------------------------------------------------------------------
# forward and backward against loops, on every backend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_max_pool_matches_loops(geometry, xp, to_xp, rng):
    shape, k, s, p = geometry
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    y_ref, gx_ref = loop_max_pool(x, gy, k, s, p)
    y = max_pool2d(to_xp(x), k, stride=s, padding=p)
    assert_close(y, y_ref, xp=xp, dtype=xp.float64)
    gx = max_pool2d_backward(to_xp(gy), to_xp(x), k, stride=s, padding=p)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_avg_pool_matches_loops(geometry, count_include_pad, xp, to_xp, rng):
    shape, k, s, p = geometry
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    y_ref, gx_ref = loop_avg_pool(x, gy, k, s, p, count_include_pad)
    kwargs = {"stride": s, "padding": p, "count_include_pad": count_include_pad}
    y = avg_pool2d(to_xp(x), k, **kwargs)
    assert_close(y, y_ref, xp=xp, dtype=xp.float64, scale=np.abs(x).max())
    gx = avg_pool2d_backward(to_xp(gy), to_xp(x), k, **kwargs)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64, scale=np.abs(gy).max())


@pytest.mark.parametrize(
    "geometry", [((2, 2, 6, 7), 3, 1, 1), ((1, 3, 6, 6), 2, None, 0), ((1, 1, 7, 7), 3, 2, 1)]
)
def test_max_pool_ties_go_to_first_maximum(geometry, xp, to_xp, rng):
    """Integer data from {0, 1, 2}: most windows hold several maxima; overlapping windows."""
    shape, k, s, p = geometry
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    _y_ref, gx_ref = loop_max_pool(x, gy, k, s, p)
    gx = max_pool2d_backward(to_xp(gy), to_xp(x), k, stride=s, padding=p)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64)


def test_max_pool_tie_rule_on_a_hand_example():
    # window [[1, 3], [3, 3]] (stride 1 overlaps): the first 3 in row-major order wins
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, 3.0], [3.0, 3.0, 3.0]]]])
    gx = max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, stride=1)
    expected = [[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(gx[0, 0], expected)


def test_max_pool_padding_never_wins():
    x = -np.ones((1, 1, 2, 2)) * 5.0  # all negative: zero padding would win, -inf must not
    y = max_pool2d(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), -5.0))


def test_dtype_and_float32(xp, to_xp, rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    gy = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    y_ref, gx_ref = loop_max_pool(x.astype(np.float64), gy.astype(np.float64), 2, None, 0)
    assert_close(max_pool2d(to_xp(x), 2), y_ref, xp=xp, dtype=xp.float32)
    assert_close(max_pool2d_backward(to_xp(gy), to_xp(x), 2), gx_ref, xp=xp, dtype=xp.float32)
    y_ref, gx_ref = loop_avg_pool(x.astype(np.float64), gy.astype(np.float64), 2, None, 0, True)
    assert_close(avg_pool2d(to_xp(x), 2), y_ref, xp=xp, dtype=xp.float32, scale=3.0)
    gx = avg_pool2d_backward(to_xp(gy), to_xp(x), 2)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float32, scale=3.0)


@given(
    h=st.integers(2, 8),
    w=st.integers(2, 8),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    data=st.data(),
)
def test_pooling_property_against_loops(h, w, kh, kw, sh, sw, data):
    kh, kw = min(kh, h), min(kw, w)
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    rng = np.random.default_rng(h * 1000 + w)
    x = rng.integers(0, 4, size=(1, 2, h, w)).astype(np.float64)  # ties are common
    kwargs = {"stride": (sh, sw), "padding": (ph, pw)}
    gy = rng.standard_normal(_output_shape(x.shape, (kh, kw), (sh, sw), (ph, pw)))
    y_ref, gx_ref = loop_max_pool(x, gy, (kh, kw), (sh, sw), (ph, pw))
    np.testing.assert_array_equal(max_pool2d(x, (kh, kw), **kwargs), y_ref)
    assert_close(max_pool2d_backward(gy, x, (kh, kw), **kwargs), gx_ref)
    y_ref, gx_ref = loop_avg_pool(x, gy, (kh, kw), (sh, sw), (ph, pw), False)
    assert_close(avg_pool2d(x, (kh, kw), count_include_pad=False, **kwargs), y_ref, scale=4.0)


# ---------------------------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=str)
def test_max_pool_gradient_finite_differences(geometry, rng):
    shape, k, s, p = geometry
    x = _distinct_values(rng, shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    gx = max_pool2d_backward(gy, x, k, stride=s, padding=p)
    check_grad(lambda v: float(np.sum(gy * max_pool2d(v, k, stride=s, padding=p))), x, gx)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=str)
def test_avg_pool_gradient_finite_differences(geometry, count_include_pad, rng):
    shape, k, s, p = geometry
    kwargs = {"stride": s, "padding": p, "count_include_pad": count_include_pad}
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    gx = avg_pool2d_backward(gy, x, k, **kwargs)
    check_grad(lambda v: float(np.sum(gy * avg_pool2d(v, k, **kwargs))), x, gx)


# ---------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------


def _torch_pool(fn, x, gy, **kwargs):
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt, **kwargs)
    yt.backward(torch.tensor(gy))
    return yt.detach().numpy(), xt.grad.numpy()


@needs_torch
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("geometry", TORCH_GEOMETRIES, ids=str)
def test_max_pool_matches_torch(geometry, ties, rng):
    """torch's CPU kernel also gives a tied window's gradient to its first maximum."""
    shape, k, s, p = geometry
    x = rng.integers(0, 3, size=shape) * 1.0 if ties else rng.standard_normal(shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    y_ref, gx_ref = _torch_pool(
        F.max_pool2d, x, gy, kernel_size=k, stride=s if s is not None else k, padding=p
    )
    assert_close(max_pool2d(x, k, stride=s, padding=p), y_ref)
    assert_close(max_pool2d_backward(gy, x, k, stride=s, padding=p), gx_ref)


@needs_torch
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geometry", TORCH_GEOMETRIES, ids=str)
def test_avg_pool_matches_torch(geometry, count_include_pad, rng):
    shape, k, s, p = geometry
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(_output_shape(shape, k, s, p))
    kwargs = {"padding": p, "count_include_pad": count_include_pad}
    y_ref, gx_ref = _torch_pool(
        F.avg_pool2d, x, gy, kernel_size=k, stride=s if s is not None else k, **kwargs
    )
    assert_close(avg_pool2d(x, k, stride=s, **kwargs), y_ref, scale=np.abs(x).max())
    gx = avg_pool2d_backward(gy, x, k, stride=s, **kwargs)
    assert_close(gx, gx_ref, scale=np.abs(gy).max())


# ---------------------------------------------------------------------------------------------
# error paths
# ---------------------------------------------------------------------------------------------

X = np.zeros((1, 1, 4, 4))


@pytest.mark.parametrize("fn", [max_pool2d, avg_pool2d])
@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        (np.zeros((1, 4, 4)), {}, ValueError, r"x must be 4-D"),
        (np.zeros((1, 0, 4, 4)), {}, ValueError, r"must not be empty"),
        (X, {"kernel_size": 0}, ValueError, r"kernel_size must be positive"),
        (X, {"kernel_size": 2.5}, TypeError, r"kernel_size must be an int"),
        (X, {"kernel_size": (2, 2, 2)}, ValueError, r"kernel_size must be an int or a pair"),
        (X, {"stride": 0}, ValueError, r"stride must be positive"),
        (X, {"padding": 2}, ValueError, r"at most half the kernel_size"),
        (X, {"padding": -1}, ValueError, r"padding must be >= 0"),
        (X, {"padding": "bogus"}, ValueError, r"padding must be .* got 'bogus'"),
        (X, {"kernel_size": 5}, ValueError, r"larger than the padded input"),
        (np.zeros((1, 1, 4, 4), dtype=np.int64), {}, TypeError, r"real floating dtype"),
        ([[[[1.0]]]], {}, TypeError, r"x must be an array"),
    ],
)
def test_forward_errors(fn, x, kwargs, error, match):
    kwargs = {"kernel_size": 2, **kwargs}
    k = kwargs.pop("kernel_size")
    with pytest.raises(error, match=match):
        fn(x, k, **kwargs)


@pytest.mark.parametrize("fn", [max_pool2d_backward, avg_pool2d_backward])
def test_backward_errors(fn):
    with pytest.raises(ValueError, match=r"gy must have the output shape .*\(1, 1, 2, 2\)"):
        fn(np.zeros((1, 1, 3, 3)), X, 2)
    with pytest.raises(TypeError, match=r"gy \(float32\) must have the dtype of x \(float64\)"):
        fn(np.zeros((1, 1, 2, 2), dtype=np.float32), X, 2)


@needs_torch
def test_mixed_namespaces_are_refused():
    with pytest.raises(TypeError, match=r"different namespaces"):
        max_pool2d_backward(torch.zeros((1, 1, 2, 2), dtype=torch.float64), X, 2)


def test_nan_in_a_window_propagates(xp, to_xp):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = to_numpy(max_pool2d(to_xp(x), 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1:, :]).any()
    assert not np.isnan(y[0, 0, 0, 1])
