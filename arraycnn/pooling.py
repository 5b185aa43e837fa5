"""2-D max and average pooling, forward and backward, on any Array-API namespace.

Semantics are those of ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (NCHW input,
``stride`` defaulting to ``kernel_size``, integer padding at most half the window), with the
geometry of :func:`arraycnn.geometry.pool_geometry` (``"same"`` / ``"valid"`` padding are
accepted too). Letters as in :mod:`arraycnn.geometry`.

Both directions loop over the ``kh * kw`` window taps; each tap is one strided basic slice of
the padded input, shape (N, C, Ho, Wo)::

    y[n, c, p, q] = max_{i, j} xpad[n, c, p*sh + i, q*sw + j]

Max pooling pads with ``-inf``, so padding never wins a window. Where windows overlap
(stride < kernel) the gradients of one input element accumulate over every window it wins.

Tie rule (max pooling backward): when several elements of a window hold the maximum, the whole
gradient goes to the FIRST of them in row-major window order (smallest window row, then smallest
window column). The window's other maxima get nothing from that window. PyTorch's CPU kernel
follows the same rule (it keeps the first maximum while scanning the window row by row); its
CUDA kernel makes no such promise. A NaN in a window makes the output NaN (as in torch); its
gradient is then unspecified.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_extra as xpx

from .backend import device_of, namespace_of
from .geometry import Padding, PoolGeometry, pool_geometry

__all__ = ["avg_pool2d", "avg_pool2d_backward", "max_pool2d", "max_pool2d_backward"]

Array = Any
ALL = slice(None)


# ---------------------------------------------------------------------------------------------
# boundary: namespace, dtype, geometry
# ---------------------------------------------------------------------------------------------


def _prepare(
    x: Array,
    kernel_size: Any,
    *,
    stride: Any,
    padding: Padding,
    gy: Array | None = None,
) -> tuple[ModuleType, PoolGeometry]:
    """Resolve the namespace and validate ``x`` (and ``gy``) against the pooling geometry."""
    xp = namespace_of(x, gy, names=("x", "gy"))
    geom = pool_geometry(tuple(x.shape), kernel_size, stride=stride, padding=padding)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must have a real floating dtype, got {x.dtype}")
    if gy is not None:
        if tuple(gy.shape) != geom.y_shape:
            raise ValueError(
                f"gy must have the output shape (N, C, Ho, Wo) = {geom.y_shape}, "
                f"got {tuple(gy.shape)}"
            )
        if gy.dtype != x.dtype:
            raise TypeError(f"gy ({gy.dtype}) must have the dtype of x ({x.dtype})")
        if device_of(gy) != device_of(x):
            raise ValueError(f"gy is on device {device_of(gy)} but x is on {device_of(x)}")
    return xp, geom


def _pad(x: Array, geom: PoolGeometry, value: float, *, xp: ModuleType) -> Array:
    """Pad (N, C, H, W) -> (N, C, Hp, Wp) with ``value``; no copy without padding."""
    (top, bottom), (left, right) = geom.padding
    if not (top or bottom or left or right):
        return x
    return xpx.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value, xp=xp)


def _crop(xpad: Array, geom: PoolGeometry) -> Array:
    """(N, C, Hp, Wp) -> (N, C, H, W): drop the padding again."""
    top, left = geom.padding[0][0], geom.padding[1][0]
    return xpad[..., top : top + geom.h, left : left + geom.w]


def _window_taps(geom: PoolGeometry) -> list[tuple[slice, ...]]:
    """Index of every window tap (i, j) in row-major order; each selects (N, C, Ho, Wo)."""
    return [
        (ALL, ALL, geom.tap_rows(i), geom.tap_cols(j))
        for i in range(geom.kh)
        for j in range(geom.kw)
    ]


def _zeros_padded(like: Array, geom: PoolGeometry, *, xp: ModuleType) -> Array:
    """Zeros (N, C, Hp, Wp) with the dtype and device of ``like``."""
    shape = (geom.n, geom.c, geom.hp, geom.wp)
    return xp.zeros(shape, dtype=like.dtype, device=device_of(like))


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------


def _max_forward(xpad: Array, geom: PoolGeometry, *, xp: ModuleType) -> Array:
    """Window maxima of the ``-inf``-padded input: (N, C, Hp, Wp) -> (N, C, Ho, Wo)."""
    taps = _window_taps(geom)
    y = xpad[taps[0]]
    for index in taps[1:]:
        y = xp.maximum(y, xpad[index])
    return y


def max_pool2d(x: Array, kernel_size: Any, *, stride: Any = None, padding: Padding = 0) -> Array:
    """Maximum over each ``kh x kw`` window of a batch of images.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input, real floating.
    kernel_size : int or (int, int)
        Window size ``(kh, kw)``.
    stride : int or (int, int), optional
        Window step; defaults to ``kernel_size``.
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        Implicit ``-inf`` padding; integer padding must be at most half the window.

    Returns
    -------
    array, shape (N, C, Ho, Wo)
        ``Ho = floor((H + pt + pb - kh) / sh) + 1``, likewise ``Wo``; namespace, dtype and
        device of ``x``.

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)  # (16,) -> (N, C, H, W)
    >>> max_pool2d(x, 2)
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    >>> max_pool2d(x, 3, stride=1, padding=1)[0, 0, 0]  # -inf padding never wins
    array([5., 6., 7., 7.])
    """
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding)
    return _max_forward(_pad(x, geom, -math.inf, xp=xp), geom, xp=xp)


def max_pool2d_backward(
    gy: Array, x: Array, kernel_size: Any, *, stride: Any = None, padding: Padding = 0
) -> Array:
    """Gradient of ``sum(gy * max_pool2d(x, ...))`` with respect to ``x``.

    Each window's gradient goes to the first maximum of the window in row-major order (see the
    module docstring); overlapping windows accumulate.

    Parameters
    ----------
    gy : array, shape (N, C, Ho, Wo)
        Gradient with respect to the pooled output.
    x, kernel_size, stride, padding
        As in :func:`max_pool2d`.

    Returns
    -------
    array, shape (N, C, H, W)

    Examples
    --------
    >>> x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])  # (1, 1, 2, 2): two maxima tie
    >>> max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2)  # to the first in row-major order
    array([[[[0., 1.],
             [0., 0.]]]])
    """
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding, gy=gy)
    xpad = _pad(x, geom, -math.inf, xp=xp)
    y = _max_forward(xpad, geom, xp=xp)
    nothing = xp.zeros_like(gy)
    taken = xp.zeros(geom.y_shape, dtype=xp.bool, device=device_of(x))  # window already paid
    gxpad = _zeros_padded(x, geom, xp=xp)
    for index in _window_taps(geom):
        first_max = (xpad[index] == y) & ~taken  # (N, C, Ho, Wo)
        gxpad = xpx.at(gxpad, index).add(xp.where(first_max, gy, nothing))
        taken = taken | first_max
    return _crop(gxpad, geom)


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------


def _inside_counts(size: int, start_pad: int, kernel: int, stride: int, out: int) -> list[int]:
    """Per output position along one axis: how many window taps fall inside the unpadded input."""
    counts = []
    for o in range(out):
        lo = o * stride - start_pad
        counts.append(min(lo + kernel, size) - max(lo, 0))
    return counts


def _divisor(
    geom: PoolGeometry, like: Array, *, count_include_pad: bool, xp: ModuleType
) -> Array | float:
    """Window sizes to divide by: ``kh * kw``, or (Ho, Wo) counts of unpadded taps.

    The counts are host arithmetic on the geometry (Python ints), moved once to the device.
    """
    if count_include_pad:
        return float(geom.kh * geom.kw)
    rows = _inside_counts(geom.h, geom.padding[0][0], geom.kh, geom.stride[0], geom.ho)
    cols = _inside_counts(geom.w, geom.padding[1][0], geom.kw, geom.stride[1], geom.wo)
    device = device_of(like)
    r = xp.asarray(rows, dtype=like.dtype, device=device)
    c = xp.asarray(cols, dtype=like.dtype, device=device)
    # (Ho,) x (Wo,) -> (Ho, Wo)
    return xp.reshape(r, (geom.ho, 1)) * xp.reshape(c, (1, geom.wo))


def avg_pool2d(
    x: Array,
    kernel_size: Any,
    *,
    stride: Any = None,
    padding: Padding = 0,
    count_include_pad: bool = True,
) -> Array:
    """Mean over each ``kh x kw`` window of a batch of images.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input, real floating.
    kernel_size, stride, padding
        As in :func:`max_pool2d`; padding is with zeros.
    count_include_pad : bool
        True (torch's default): divide by ``kh * kw``. False: divide by the number of taps
        inside the unpadded input.

    Returns
    -------
    array, shape (N, C, Ho, Wo)

    Examples
    --------
    >>> x = np.ones((1, 1, 2, 2))
    >>> avg_pool2d(x, 2, stride=1, padding=1)[0, 0]  # zeros count: divide by 4
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    >>> avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False)[0, 0]
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    """
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding)
    xpad = _pad(x, geom, 0.0, xp=xp)
    taps = _window_taps(geom)
    total = xpad[taps[0]]
    for index in taps[1:]:
        total = total + xpad[index]
    return total / _divisor(geom, x, count_include_pad=bool(count_include_pad), xp=xp)


def avg_pool2d_backward(
    gy: Array,
    x: Array,
    kernel_size: Any,
    *,
    stride: Any = None,
    padding: Padding = 0,
    count_include_pad: bool = True,
) -> Array:
    """Gradient of ``sum(gy * avg_pool2d(x, ...))`` with respect to ``x``.

    Every tap of a window receives ``gy / divisor``; overlapping windows accumulate.

    Returns
    -------
    array, shape (N, C, H, W)

    Examples
    --------
    >>> x = np.zeros((1, 1, 3, 3))
    >>> avg_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, stride=1)[0, 0]  # windows overlap
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    """
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding, gy=gy)
    share = gy / _divisor(geom, x, count_include_pad=bool(count_include_pad), xp=xp)
    gxpad = _zeros_padded(x, geom, xp=xp)
    for index in _window_taps(geom):
        gxpad = xpx.at(gxpad, index).add(share)
    return _crop(gxpad, geom)
