"""Pooling with disjoint windows (stride >= kernel, e.g. 2x2 of stride 2): explicit loops.

Where neighbouring windows share no element the backward passes write each tap instead of
accumulating, and NumPy selects each window's gradient by a product with the mask (exact for
finite ``gy``; ``where`` otherwise). These tests hold that path to per-window loops in float64
NumPy (``np.argmax`` is the first maximum in row-major window order, the documented tie rule)
on every backend: ties, ``-inf`` and NaN inputs, non-finite ``gy``, sizes with a remainder
(input rows and columns in no window), padding; and to the overlapping path on problems both
can express (stride-1 windows kept every ``k``-th row and column).
"""

from __future__ import annotations

import numpy as np
import pytest

from arraycnn.backend import to_numpy
from arraycnn.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from arraycnn.testing import assert_close

# (x shape, kernel (kh, kw), stride (sh, sw)): stride >= kernel along both axes
DISJOINT = [
    ((2, 3, 6, 8), (2, 2), (2, 2)),  # tiles the input
    ((2, 2, 7, 9), (2, 2), (2, 2)),  # a row and a column left over
    ((1, 2, 8, 7), (3, 2), (3, 2)),  # two rows and one column left over
    ((1, 1, 9, 10), (2, 3), (3, 4)),  # stride > kernel: gaps between windows
    ((2, 1, 5, 5), (1, 1), (1, 1)),  # one-element windows
    ((1, 2, 4, 6), (4, 6), (4, 6)),  # one window over everything
]


def _output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _window_loops(x, kernel, stride, pad, fill):
    """Yield (n, c, p, q, window rows, window cols, window values) of the padded input."""
    (kh, kw), (sh, sw) = kernel, stride
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    ho = _output_size(x.shape[2], kh, sh, pad)
    wo = _output_size(x.shape[3], kw, sw, pad)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for p in range(ho):
                for q in range(wo):
                    rows, cols = slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)
                    yield n, c, p, q, rows, cols, xpad[n, c, rows, cols]


def loop_max(x, gy, kernel, stride, pad=0):
    """max_pool2d and its first-maximum gradient, one window at a time (float64)."""
    h, w = x.shape[2:]
    ho = _output_size(h, kernel[0], stride[0], pad)
    wo = _output_size(w, kernel[1], stride[1], pad)
    y = np.empty((*x.shape[:2], ho, wo))
    gxpad = np.zeros((*x.shape[:2], h + 2 * pad, w + 2 * pad))
    for n, c, p, q, rows, cols, window in _window_loops(x, kernel, stride, pad, -np.inf):
        y[n, c, p, q] = window.max()
        i, j = np.unravel_index(np.argmax(window), window.shape)  # first maximum, row-major
        gxpad[n, c, rows.start + i, cols.start + j] += gy[n, c, p, q]
    return y, gxpad[:, :, pad : pad + h, pad : pad + w]


def loop_avg(x, gy, kernel, stride, pad=0, count_include_pad=True):
    """avg_pool2d and its gradient, one window at a time (float64)."""
    h, w = x.shape[2:]
    ho = _output_size(h, kernel[0], stride[0], pad)
    wo = _output_size(w, kernel[1], stride[1], pad)
    y = np.empty((*x.shape[:2], ho, wo))
    inside = np.pad(np.ones((h, w)), pad)
    gxpad = np.zeros((*x.shape[:2], h + 2 * pad, w + 2 * pad))
    for n, c, p, q, rows, cols, window in _window_loops(x, kernel, stride, pad, 0.0):
        divisor = window.size if count_include_pad else inside[rows, cols].sum()
        y[n, c, p, q] = window.sum() / divisor
        gxpad[n, c, rows, cols] += gy[n, c, p, q] / divisor
    return y, gxpad[:, :, pad : pad + h, pad : pad + w]


def _gy_shape(shape, kernel, stride, pad=0):
    return (
        *shape[:2],
        _output_size(shape[2], kernel[0], stride[0], pad),
        _output_size(shape[3], kernel[1], stride[1], pad),
    )


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", DISJOINT, ids=str)
def test_max_pool_disjoint_windows_match_loops_with_ties(geometry, xp, to_xp, rng):
    """Values from {0, 1, 2}: most windows hold several maxima; the first in row-major order
    takes the gradient, the rows and columns in no window get zero."""
    shape, kernel, stride = geometry
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    gy = rng.standard_normal(_gy_shape(shape, kernel, stride))
    y_ref, gx_ref = loop_max(x, gy, kernel, stride)
    assert_close(max_pool2d(to_xp(x), kernel, stride=stride), y_ref, xp=xp, dtype=xp.float64)
    gx = max_pool2d_backward(to_xp(gy), to_xp(x), kernel, stride=stride)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64)


def test_max_pool_tie_rule_on_a_hand_example_of_stride_2(xp, to_xp):
    x = np.array(
        [
            [1.0, 3.0, 2.0, 2.0, 9.0],
            [3.0, 3.0, 2.0, 2.0, 9.0],
            [0.0, 0.0, 5.0, 4.0, 9.0],
            [7.0, 7.0, 5.0, 5.0, 9.0],
            [9.0, 9.0, 9.0, 9.0, 9.0],  # last row and column in no window
        ]
    )[None, None]  # (H, W) -> (1, 1, H, W)
    gy = np.array([[10.0, 20.0], [30.0, 40.0]])[None, None]
    expected = [
        [0.0, 10.0, 20.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 40.0, 0.0, 0.0],
        [30.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    gx = max_pool2d_backward(to_xp(gy), to_xp(x), 2)
    assert_close(gx, np.array(expected)[None, None], xp=xp, dtype=xp.float64)


def test_max_pool_disjoint_windows_with_minus_infinity(xp, to_xp, rng):
    """A window of -inf only has the maximum -inf and its first element takes the gradient;
    -inf elsewhere never wins."""
    x = rng.standard_normal((2, 2, 6, 6))
    x[0, 0, :2, :2] = -np.inf  # a whole window
    x[1, 1, 2:4, 2] = -np.inf  # half a window
    gy = rng.standard_normal((2, 2, 3, 3))
    y_ref, gx_ref = loop_max(x, gy, (2, 2), (2, 2))
    y = to_numpy(max_pool2d(to_xp(x), 2))
    np.testing.assert_array_equal(y, y_ref)  # exact: maxima are elements of x
    assert y[0, 0, 0, 0] == -np.inf
    assert_close(max_pool2d_backward(to_xp(gy), to_xp(x), 2), gx_ref, xp=xp, dtype=xp.float64)


def test_max_pool_disjoint_windows_with_nan(xp, to_xp, rng):
    """A NaN makes its window's maximum NaN and leaves the other windows, forward and
    backward, as they are (the NaN window's own gradient is unspecified)."""
    x = rng.standard_normal((1, 2, 4, 6))
    x[0, 1, 2, 3] = np.nan  # window (1, 1) of channel 1
    gy = rng.standard_normal((1, 2, 2, 3))
    y_ref, gx_ref = loop_max(np.nan_to_num(x, nan=-np.inf), gy, (2, 2), (2, 2))
    y = to_numpy(max_pool2d(to_xp(x), 2))
    assert np.isnan(y[0, 1, 1, 1]) and np.isnan(y).sum() == 1
    y_ref[0, 1, 1, 1] = y[0, 1, 1, 1] = 0.0
    assert_close(y, y_ref)
    gx = to_numpy(max_pool2d_backward(to_xp(gy), to_xp(x), 2))
    gx[0, 1, 2:4, 2:4] = gx_ref[0, 1, 2:4, 2:4] = 0.0  # the NaN window
    assert_close(gx, gx_ref)


@pytest.mark.filterwarnings("error")  # and no floating-point warning on the way
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_max_pool_disjoint_windows_non_finite_gy_reaches_only_the_maximum(bad, xp, to_xp, rng):
    """A non-finite gy goes to its window's first maximum; the window's other elements and
    every other window get their own (finite or zero) gradient, never a NaN."""
    x = rng.standard_normal((1, 1, 4, 4))
    gy = rng.standard_normal((1, 1, 2, 2))
    gy[0, 0, 0, 1] = bad
    _, gx_ref = loop_max(x, gy, (2, 2), (2, 2))
    gx = to_numpy(max_pool2d_backward(to_xp(gy), to_xp(x), 2))
    np.testing.assert_array_equal(gx, gx_ref)  # NaN where the oracle has NaN, nowhere else


def test_max_pool_gradient_is_positive_zero_off_the_maxima(xp, to_xp, rng):
    x = rng.standard_normal((2, 2, 6, 6))
    gy = -np.abs(rng.standard_normal((2, 2, 3, 3))) - 1.0  # negative everywhere
    gx = to_numpy(max_pool2d_backward(to_xp(gy), to_xp(x), 2))
    off = gx == 0.0
    assert off.sum() == 3 * gy.size
    assert not np.signbit(gx[off]).any()


def test_max_pool_disjoint_windows_float32(xp, to_xp, rng):
    x = rng.integers(-2, 3, size=(3, 4, 9, 8)).astype(np.float32)
    gy = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    y_ref, gx_ref = loop_max(x.astype(np.float64), gy.astype(np.float64), (2, 2), (2, 2))
    assert_close(max_pool2d(to_xp(x), 2), y_ref, xp=xp, dtype=xp.float32)
    assert_close(max_pool2d_backward(to_xp(gy), to_xp(x), 2), gx_ref, xp=xp, dtype=xp.float32)


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", DISJOINT, ids=str)
def test_avg_pool_disjoint_windows_match_loops(geometry, xp, to_xp, rng):
    shape, kernel, stride = geometry
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(_gy_shape(shape, kernel, stride))
    y_ref, gx_ref = loop_avg(x, gy, kernel, stride)
    y = avg_pool2d(to_xp(x), kernel, stride=stride)
    assert_close(y, y_ref, xp=xp, dtype=xp.float64, scale=np.abs(x).max())
    gx = avg_pool2d_backward(to_xp(gy), to_xp(x), kernel, stride=stride)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64, scale=np.abs(gy).max())


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_disjoint_windows_with_padding_match_loops(count_include_pad, xp, to_xp, rng):
    """2x2 windows of stride 2 over an input padded by one on every side."""
    x = rng.integers(-2, 3, size=(2, 2, 5, 6)).astype(np.float64)
    gy = rng.standard_normal(_gy_shape(x.shape, (2, 2), (2, 2), 1))
    y_ref, gx_ref = loop_max(x, gy, (2, 2), (2, 2), 1)
    assert_close(max_pool2d(to_xp(x), 2, padding=1), y_ref, xp=xp, dtype=xp.float64)
    gx = max_pool2d_backward(to_xp(gy), to_xp(x), 2, padding=1)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64)
    y_ref, gx_ref = loop_avg(x, gy, (2, 2), (2, 2), 1, count_include_pad)
    kwargs = {"padding": 1, "count_include_pad": count_include_pad}
    assert_close(avg_pool2d(to_xp(x), 2, **kwargs), y_ref, xp=xp, dtype=xp.float64, scale=2.0)
    gx = avg_pool2d_backward(to_xp(gy), to_xp(x), 2, **kwargs)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float64, scale=np.abs(gy).max())


def test_avg_pool_disjoint_windows_float32(xp, to_xp, rng):
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    gy = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    y_ref, gx_ref = loop_avg(x.astype(np.float64), gy.astype(np.float64), (2, 2), (2, 2))
    assert_close(avg_pool2d(to_xp(x), 2), y_ref, xp=xp, dtype=xp.float32, scale=4.0)
    gx = avg_pool2d_backward(to_xp(gy), to_xp(x), 2)
    assert_close(gx, gx_ref, xp=xp, dtype=xp.float32, scale=np.abs(gy).max())


# ---------------------------------------------------------------------------------------------
# disjoint and overlapping windows agree where both apply
# ---------------------------------------------------------------------------------------------


def _every_kth_window(gy, kernel, full_shape):
    """gy of the stride-k windows (N, C, Ho, Wo) as the gradient of the stride-1 windows
    (N, C, H-kh+1, W-kw+1): zero for the windows in between."""
    dense = np.zeros(full_shape)
    dense[:, :, :: kernel[0], :: kernel[1]][:, :, : gy.shape[2], : gy.shape[3]] = gy
    return dense


@pytest.mark.parametrize("shape, kernel", [((2, 3, 8, 8), (2, 2)), ((1, 2, 7, 11), (3, 2))])
def test_disjoint_and_overlapping_windows_agree(shape, kernel, xp, to_xp, rng):
    """Stride-k windows are the stride-1 windows at every k-th row and column: the same
    maxima and means, and the same gradients when the windows in between get zero."""
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # ties
    gy = rng.standard_normal(_gy_shape(shape, kernel, kernel))
    every = (shape[0], shape[1], shape[2] - kernel[0] + 1, shape[3] - kernel[1] + 1)
    gy_every = _every_kth_window(gy, kernel, every)
    ho, wo = gy.shape[2:]
    pick = (slice(None), slice(None), slice(0, ho * kernel[0], kernel[0]))
    pick += (slice(0, wo * kernel[1], kernel[1]),)
    tx = to_xp(x)
    for forward, backward in [(max_pool2d, max_pool2d_backward), (avg_pool2d, avg_pool2d_backward)]:
        overlapping = to_numpy(forward(tx, kernel, stride=1))[pick]  # (N, C, Ho, Wo)
        assert_close(forward(tx, kernel), overlapping, xp=xp, dtype=xp.float64, scale=2.0)
        gx_overlapping = backward(to_xp(gy_every), tx, kernel, stride=1)
        gx = backward(to_xp(gy), tx, kernel)
        assert_close(gx, to_numpy(gx_overlapping), xp=xp, dtype=xp.float64, scale=np.abs(gy).max())
