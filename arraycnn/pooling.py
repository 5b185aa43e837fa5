"""2-D max and average pooling, forward and backward, on any Array-API namespace.

Semantics are those of ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (NCHW input,
``stride`` defaulting to ``kernel_size``, integer padding at most half the window), with the
geometry of :func:`arraycnn.geometry.pool_geometry` (``"same"`` / ``"valid"`` padding are
accepted too). Letters as in :mod:`arraycnn.geometry`.

A window tap is one strided basic slice of the padded input, shape (N, C, Ho, Wo)::

    y[n, c, p, q] = max_{i, j} xpad[n, c, p*sh + i, q*sw + j]

Maximum and sum are separable: the forward passes reduce the ``kh`` row taps first (each a
slice (N, C, Ho, Wp) with contiguous rows), then the ``kw`` column taps of that, which is
``kh + kw - 2`` elementwise passes instead of ``kh * kw - 1``. Average pooling's backward
spreads ``gy / divisor`` the same way (columns, then rows). Max pooling's backward loops over
the ``kh * kw`` taps, comparing each with the window maxima. Nothing loops over windows.

Max pooling pads with ``-inf``, so padding never wins a window. Where windows overlap
(stride < kernel along an axis) the gradients of one input element accumulate over every
window it belongs to; where they do not (stride >= kernel, e.g. the usual 2x2 pooling of
stride 2), every tap writes its own elements and the backward passes write instead of
accumulating. Input rows and columns in no window (the remainder when the size is not a
multiple of the stride) get a zero gradient.

Tie rule (max pooling backward): when several elements of a window hold the maximum, the whole
gradient goes to the FIRST of them in row-major window order (smallest window row, then smallest
window column). The window's other maxima get nothing from that window. PyTorch's CPU kernel
follows the same rule (it keeps the first maximum while scanning the window row by row); its
CUDA kernel makes no such promise. A NaN in a window makes the output NaN (as in torch); its
gradient is then unspecified.

Memory: results larger than the available memory are refused before anything is allocated
(:func:`arraycnn.budget.check_size`); where the temporaries of the whole batch exceed the
workspace budget, the images run in blocks of samples (and of channels, where one sample is
over the budget): every (sample, channel) plane pools on its own. Temporaries of at most
:data:`arraycnn.budget.CHECK_FLOOR` (a megabyte) run whole whatever the budget (the
dispatcher itself needs more than that for any convolution).

torch autograd: where ``x`` (or ``gy``) requires grad and grad mode is on, each function is
recorded as one node of the graph whose backward is the matching function here (so second
derivatives work too); otherwise nothing is recorded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import array_api_extra as xpx

from . import dask_arrays
from .backend import (
    GraphOp,
    backend_name,
    device_of,
    namespace_of,
    no_graph,
    records_graph,
    values_on_host,
)
from .budget import (
    CHECK_FLOOR,
    WorkspaceError,
    check_size,
    format_bytes,
    itemsize,
    workspace_limit,
)
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


def _check_count_include_pad(count_include_pad: Any) -> bool:
    if not isinstance(count_include_pad, bool):
        raise TypeError(
            f"count_include_pad must be True or False, got {type(count_include_pad).__name__} "
            f"{count_include_pad!r}"
        )
    return count_include_pad


# ---------------------------------------------------------------------------------------------
# memory: the size check, and blocks of planes under the workspace budget
# ---------------------------------------------------------------------------------------------


def _plane_bytes(geom: PoolGeometry, size: int, backward: bool) -> tuple[int, int]:
    """Bytes per (sample, channel) plane: (result, temporaries), conservatively.

    Forward: the output; the padded copy and, beside the result, the reduction over the
    window rows (up to two (Ho, Wp) arrays at once) or over the columns (two (Ho, Wo)).
    Backward: the padded input gradient (the result is a view of it); the padded input, and
    the maxima's row reductions, or per tap a few (Ho, Wo) masks and products, or average
    pooling's (Ho, Wp) spread over the columns.
    """
    padded, outputs, rows = geom.hp * geom.wp, geom.ho * geom.wo, geom.ho * geom.wp
    if not backward:
        return size * outputs, size * (padded + max(2 * outputs, min(geom.kh - 1, 2) * rows))
    return size * padded, size * (padded + max(8 * outputs, 2 * rows))


def _blocks(geom: PoolGeometry, temporaries: int, func: str, budget: int) -> list[tuple]:
    """(samples, channels) index pairs of the blocks of planes whose temporaries fit the
    workspace ``budget``: the whole batch, blocks of samples, or one sample's channels."""
    planes = geom.n * geom.c
    if planes * temporaries <= budget:
        return [(slice(None), slice(None))]
    per_block = budget // max(temporaries, 1)
    if per_block == 0:
        raise WorkspaceError(
            f"{func}: one plane (one channel of one sample, {geom.h}x{geom.w}) needs a "
            f"workspace of {temporaries} bytes ({format_bytes(temporaries)}), over the "
            f"workspace budget of {budget} bytes ({format_bytes(budget)}); raise the budget "
            "with arraycnn.set_workspace_limit()"
        )
    if per_block >= geom.c:
        step = per_block // geom.c
        return [(slice(n, min(n + step, geom.n)), slice(None)) for n in range(0, geom.n, step)]
    return [
        (slice(n, n + 1), slice(c, min(c + per_block, geom.c)))
        for n in range(geom.n)
        for c in range(0, geom.c, per_block)
    ]


def _blockwise(run: Callable[..., Array], blocks: list[tuple], arrays: tuple, *, xp) -> Array:
    """``run`` on each block of ``arrays`` (N, C, ., .), the results put together."""
    if len(blocks) == 1:
        return run(*arrays)
    rows: dict[Any, list[Array]] = {}
    for samples, channels in blocks:
        key = (samples.start, samples.stop)
        rows.setdefault(key, []).append(run(*(a[samples, channels, ...] for a in arrays)))
    # blocks of channels of one sample side by side, then the samples one after the other
    joined = [parts[0] if len(parts) == 1 else xp.concat(parts, axis=1) for parts in rows.values()]
    return xp.concat(joined, axis=0)


def _run(
    func: str,
    kernel: Callable[..., Array],
    arrays: tuple[Array, ...],
    geom: PoolGeometry,
    xp: ModuleType,
    *,
    backward: bool,
) -> Array:
    """Check the result's size, then run ``kernel`` (on blocks of planes where the budget
    needs them) without recording a graph. ``arrays`` are (x,) or (gy, x)."""
    x = arrays[-1]
    result, temporaries = _plane_bytes(geom, itemsize(x.dtype, xp), backward)
    planes = geom.n * geom.c

    def what() -> str:
        shape = (geom.n, geom.c, geom.h, geom.w) if backward else geom.y_shape
        name = "input gradient" if backward else "output"
        return f"{func}: the {name} {shape} of {x.dtype} with its temporaries"

    blocks = [(slice(None), slice(None))]
    if planes * (result + temporaries) > CHECK_FLOOR:  # below: nothing to refuse or cut
        device = device_of(x)
        check_size(planes * (result + temporaries), what, xp, device)
        if planes * temporaries > CHECK_FLOOR:
            blocks = _blocks(geom, temporaries, func, workspace_limit(xp, device))
    if backend_name(xp) != "torch":
        return _blockwise(kernel, blocks, arrays, xp=xp)
    with no_graph(xp):
        return _blockwise(kernel, blocks, arrays, xp=xp)


def _block_geometry(geom: PoolGeometry, x: Array) -> PoolGeometry:
    """``geom`` for a block of ``x`` (its samples and channels)."""
    n, c = x.shape[:2]
    return geom if (n, c) == (geom.n, geom.c) else replace(geom, n=n, c=c)


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


def _row_taps(geom: PoolGeometry) -> list[tuple[slice, ...]]:
    """Index of every window row ``i``; each selects (N, C, Ho, Wp) of the padded input."""
    return [(ALL, ALL, geom.tap_rows(i), ALL) for i in range(geom.kh)]


def _col_taps(geom: PoolGeometry) -> list[tuple[slice, ...]]:
    """Index of every window column ``j``; each selects (N, C, ., Wo) of an (N, C, ., Wp)
    array."""
    return [(ALL, ALL, ALL, geom.tap_cols(j)) for j in range(geom.kw)]


def _disjoint(geom: PoolGeometry) -> tuple[bool, bool]:
    """Per axis (rows, columns): whether neighbouring windows share no element
    (stride >= kernel)."""
    return geom.stride[0] >= geom.kh, geom.stride[1] >= geom.kw


def _separable(xpad: Array, geom: PoolGeometry, combine: Callable[[Array, Array], Array]) -> Array:
    """Each window's elements combined by an associative, commutative ``combine`` (maximum,
    sum), the window rows first: (N, C, Hp, Wp) -> (N, C, Ho, Wp) -> (N, C, Ho, Wo)."""
    rows = functools.reduce(combine, [xpad[index] for index in _row_taps(geom)])
    return functools.reduce(combine, [rows[index] for index in _col_taps(geom)])


def _put(target: Array, index: tuple[slice, ...], values: Array, *, accumulate: bool) -> Array:
    """``target[index]`` plus ``values`` (``accumulate``) or replaced by them."""
    at = xpx.at(target, index)
    return at.add(values) if accumulate else at.set(values)


def _zeros_padded(like: Array, geom: PoolGeometry, *, xp: ModuleType) -> Array:
    """Zeros (N, C, Hp, Wp) with the dtype and device of ``like``."""
    shape = (geom.n, geom.c, geom.hp, geom.wp)
    return xp.zeros(shape, dtype=like.dtype, device=device_of(like))


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------


def _max_forward(xpad: Array, geom: PoolGeometry, *, xp: ModuleType) -> Array:
    """Window maxima of the ``-inf``-padded input: (N, C, Hp, Wp) -> (N, C, Ho, Wo)."""
    return _separable(xpad, geom, xp.maximum)


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
    if dask_arrays.is_dask_array(x):  # lazy, block by block (arraycnn.dask_arrays)
        return dask_arrays.pool2d(max_pool2d, x, kernel_size, stride=stride, padding=padding)
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding)
    if backend_name(xp) == "torch" and records_graph(x):
        return _max_pool_op(geom, xp, kernel_size, stride, padding)(x)
    return _max_pool(x, geom, xp)


def _max_pool(x: Array, geom: PoolGeometry, xp: ModuleType) -> Array:
    """max_pool2d once validated."""

    def kernel(xb: Array) -> Array:
        g = _block_geometry(geom, xb)
        return _max_forward(_pad(xb, g, -math.inf, xp=xp), g, xp=xp)

    return _run("max_pool2d", kernel, (x,), geom, xp, backward=False)


def _max_pool_op(geom: PoolGeometry, xp: ModuleType, *pool: Any) -> GraphOp:
    """max_pool2d as one node of torch's graph; its backward is :func:`max_pool2d_backward`."""
    kernel_size, stride, padding = pool

    def backward(needs, grads, inputs):
        return (
            max_pool2d_backward(grads[0], inputs[0], kernel_size, stride=stride, padding=padding),
        )

    return GraphOp(lambda x: _max_pool(x, geom, xp), backward)


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
    if dask_arrays.is_dask_array(x) or dask_arrays.is_dask_array(gy):  # arraycnn.dask_arrays
        pool = {"stride": stride, "padding": padding}
        return dask_arrays.pool2d_backward(max_pool2d_backward, gy, x, kernel_size, **pool)
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding, gy=gy)
    pool = (kernel_size, stride, padding)
    if backend_name(xp) == "torch" and records_graph(gy, x):
        return _max_backward_op(geom, xp, *pool)(gy, x)
    return _max_backward(gy, x, geom, xp)


def _first_maxima(x: Array, geom: PoolGeometry, *, xp: ModuleType):
    """Per window tap in row-major order: (its index into the padded input, the mask
    (N, C, Ho, Wo) of the windows whose first maximum it is)."""
    xpad = _pad(x, geom, -math.inf, xp=xp)
    y = _max_forward(xpad, geom, xp=xp)
    taken = xp.zeros(geom.y_shape, dtype=xp.bool, device=device_of(x))  # window already paid
    for index in _window_taps(geom):
        first_max = (xpad[index] == y) & ~taken  # (N, C, Ho, Wo)
        yield index, first_max
        taken = taken | first_max


def _selects_by_product(values: Array, xp: ModuleType) -> bool:
    """Whether :func:`_masked` may multiply by the mask instead of calling ``where``: on the
    CPU backends (NumPy's and torch's ``where`` branch per element, slow on the scattered
    masks of max pooling), and only where every value is finite (the product is exact then)."""
    name = backend_name(xp)
    if name not in ("numpy", "array_api_strict", "torch"):
        return False
    if not values_on_host(xp, device_of(values)):
        return False  # a device: no host read (the check below is one)
    return bool(xp.max(xp.abs(values)) < math.inf)  # False where a value is inf or nan


def _masked(values: Array, mask: Array, nothing: Array | None, *, by_product: bool, xp) -> Array:
    """``values`` where ``mask`` and ``+0`` elsewhere, all (N, C, Ho, Wo); ``nothing`` is the
    zeros of ``where`` (used unless ``by_product``, see :func:`_selects_by_product`)."""
    if by_product:
        return values * xp.astype(mask, values.dtype) + 0.0  # + 0.0: -0.0 (values < 0) to +0.0
    return xp.where(mask, values, nothing)


def _max_backward(gy: Array, x: Array, geom: PoolGeometry, xp: ModuleType) -> Array:
    """max_pool2d_backward once validated: each window's gy onto its first maximum."""

    def kernel(gyb: Array, xb: Array) -> Array:
        g = _block_geometry(geom, xb)
        by_product = _selects_by_product(gyb, xp)
        nothing = None if by_product else xp.zeros_like(gyb)
        overlapping = not all(_disjoint(g))  # else every tap of every window is its own
        gxpad = _zeros_padded(xb, g, xp=xp)
        for index, first_max in _first_maxima(xb, g, xp=xp):
            share = _masked(gyb, first_max, nothing, by_product=by_product, xp=xp)
            gxpad = _put(gxpad, index, share, accumulate=overlapping)
        return _crop(gxpad, g)

    return _run("max_pool2d_backward", kernel, (gy, x), geom, xp, backward=True)


def _max_select(ggx: Array, x: Array, geom: PoolGeometry, xp: ModuleType) -> Array:
    """The adjoint of max_pool2d_backward in gy: each window takes ``ggx`` (N, C, H, W) at
    its first maximum -> (N, C, Ho, Wo)."""

    def kernel(ggxb: Array, xb: Array) -> Array:
        g = _block_geometry(geom, xb)
        ggxpad = _pad(ggxb, g, 0.0, xp=xp)
        picked = xp.zeros(g.y_shape, dtype=xb.dtype, device=device_of(xb))
        for index, first_max in _first_maxima(xb, g, xp=xp):
            picked = xp.where(first_max, ggxpad[index], picked)
        return picked

    return _run("max_pool2d_backward", kernel, (ggx, x), geom, xp, backward=False)


def _max_backward_op(geom: PoolGeometry, xp: ModuleType, *pool: Any) -> GraphOp:
    """max_pool2d_backward as one node of torch's graph: linear in gy, its adjoint picks
    each window's first maximum; piecewise constant in x (no gradient)."""

    def backward(needs, grads, inputs):
        return (_max_select_recorded(grads[0], inputs[1], geom, xp, *pool), None)

    return GraphOp(lambda gy, x: _max_backward(gy, x, geom, xp), backward)


def _max_select_recorded(ggx: Array, x: Array, geom: PoolGeometry, xp, *pool: Any) -> Array:
    """:func:`_max_select`, recorded in torch's graph where needed (its adjoint is
    :func:`max_pool2d_backward`)."""
    if not records_graph(ggx, x):
        return _max_select(ggx, x, geom, xp)
    kernel_size, stride, padding = pool

    def backward(needs, grads, inputs):
        gy = max_pool2d_backward(grads[0], inputs[1], kernel_size, stride=stride, padding=padding)
        return (gy, None)

    return GraphOp(lambda g, x: _max_select(g, x, geom, xp), backward)(ggx, x)


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
    if dask_arrays.is_dask_array(x):  # lazy, block by block (arraycnn.dask_arrays)
        pool = {"stride": stride, "padding": padding, "count_include_pad": count_include_pad}
        return dask_arrays.pool2d(avg_pool2d, x, kernel_size, **pool)
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding)
    pool = (kernel_size, stride, padding, _check_count_include_pad(count_include_pad))
    if backend_name(xp) == "torch" and records_graph(x):
        return _avg_pool_op(geom, xp, *pool)(x)
    return _avg_pool(x, geom, xp, pool[3])


def _add(a: Array, b: Array) -> Array:
    return a + b


def _spread(share: Array, geom: PoolGeometry, like: Array, *, xp: ModuleType) -> Array:
    """The adjoint of the window sums: every tap of window (p, q) gets ``share[:, :, p, q]``,
    the window columns first: (N, C, Ho, Wo) -> (N, C, Ho, Wp) -> (N, C, Hp, Wp)."""
    rows_disjoint, cols_disjoint = _disjoint(geom)
    shape = (geom.n, geom.c, geom.ho, geom.wp)
    cols = xp.zeros(shape, dtype=like.dtype, device=device_of(like))
    for index in _col_taps(geom):
        cols = _put(cols, index, share, accumulate=not cols_disjoint)
    gxpad = _zeros_padded(like, geom, xp=xp)
    for index in _row_taps(geom):
        gxpad = _put(gxpad, index, cols, accumulate=not rows_disjoint)
    return gxpad


def _avg_pool(x: Array, geom: PoolGeometry, xp: ModuleType, count_include_pad: bool) -> Array:
    """avg_pool2d once validated."""

    def kernel(xb: Array) -> Array:
        g = _block_geometry(geom, xb)
        total = _separable(_pad(xb, g, 0.0, xp=xp), g, _add)
        return total / _divisor(g, xb, count_include_pad=count_include_pad, xp=xp)

    return _run("avg_pool2d", kernel, (x,), geom, xp, backward=False)


def _avg_pool_op(geom: PoolGeometry, xp: ModuleType, *pool: Any) -> GraphOp:
    """avg_pool2d as one node of torch's graph; its backward is :func:`avg_pool2d_backward`."""
    kernel_size, stride, padding, include = pool

    def backward(needs, grads, inputs):
        gx = avg_pool2d_backward(
            grads[0],
            inputs[0],
            kernel_size,
            stride=stride,
            padding=padding,
            count_include_pad=include,
        )
        return (gx,)

    return GraphOp(lambda x: _avg_pool(x, geom, xp, include), backward)


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
    if dask_arrays.is_dask_array(x) or dask_arrays.is_dask_array(gy):  # arraycnn.dask_arrays
        pool = {"stride": stride, "padding": padding, "count_include_pad": count_include_pad}
        return dask_arrays.pool2d_backward(avg_pool2d_backward, gy, x, kernel_size, **pool)
    xp, geom = _prepare(x, kernel_size, stride=stride, padding=padding, gy=gy)
    pool = (kernel_size, stride, padding, _check_count_include_pad(count_include_pad))
    if backend_name(xp) == "torch" and records_graph(gy, x):
        return _avg_backward_op(geom, xp, *pool)(gy, x)
    return _avg_backward(gy, x, geom, xp, pool[3])


def _avg_backward(gy: Array, x: Array, geom: PoolGeometry, xp, count_include_pad: bool) -> Array:
    """avg_pool2d_backward once validated: every tap of a window gets gy / divisor."""

    def kernel(gyb: Array, xb: Array) -> Array:
        g = _block_geometry(geom, xb)
        share = gyb / _divisor(g, xb, count_include_pad=count_include_pad, xp=xp)
        return _crop(_spread(share, g, xb, xp=xp), g)

    return _run("avg_pool2d_backward", kernel, (gy, x), geom, xp, backward=True)


def _avg_backward_op(geom: PoolGeometry, xp: ModuleType, *pool: Any) -> GraphOp:
    """avg_pool2d_backward as one node of torch's graph: linear in gy, its adjoint is
    :func:`avg_pool2d`; independent of x's values (no gradient)."""
    kernel_size, stride, padding, include = pool

    def backward(needs, grads, inputs):
        ggy = avg_pool2d(
            grads[0], kernel_size, stride=stride, padding=padding, count_include_pad=include
        )
        return (ggy, None)

    return GraphOp(lambda gy, x: _avg_backward(gy, x, geom, xp, include), backward)
