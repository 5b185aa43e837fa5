"""conv2d, conv2d_backward and pooling of dask NCHW arrays, block by block, lazily.

Chunks along N map block by block. Along H and W the output is cut into blocks that follow
the input's chunks (an input chunk boundary ``b`` becomes the output boundary
``(b + pad_lo) // stride``); each output block is the in-memory function on the input band
it reads (:meth:`.halo.AxisSweep.band`: the block's rows times the stride, plus the halo
``d (k - 1) + 1 - stride`` of the dilated kernel), with the padding of the geometry only
where the band reaches past the array's edge. A band is a slice of the dask array that
may span several input chunks, so input chunks smaller than the halo are correct as they
are (the band gathers them). Channels C (and F of gy) are gathered into one chunk: every
output needs all of them.

The input gradient of each input chunk comes from the outputs whose windows reach it
(:meth:`.halo.AxisSweep.touching`) and their band; the weight gradient is the sum over the
output blocks (and batch chunks) of each block's weight gradient, a dask reduction; the
bias gradient is ``gy.sum(axis=(0, 2, 3))``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import array_api_compat
import array_api_extra as xpx

from ..geometry import conv_geometry, pool_geometry
from .checks import check_dtype, check_known_chunks, chunk_namespace, is_dask_array, local_operand
from .halo import AxisSweep, follow_chunks

__all__ = ["conv2d", "conv2d_backward", "pool2d", "pool2d_backward"]

Array = Any


# --------------------------------------------------------------------------- conv2d


def conv2d(
    inmemory: Callable[..., Array],
    x: Array,
    w: Array,
    b: Array | None,
    *,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    strategy: Any,
    autotune: Any,
) -> Array:
    """``inmemory`` (:func:`arraycnn.conv2d`) on a dask ``x`` (N, C, H, W), lazily.

    ``w`` (F, C / groups, kh, kw) and ``b`` (F,) are NumPy arrays (or of the chunks'
    namespace; dask ones are computed). Arguments are validated as the in-memory function
    does (on a one-window sample) before the graph is built. Returns a dask array
    (N, F, Ho, Wo) whose N chunks are ``x``'s and whose Ho / Wo chunks follow ``x``'s.
    """
    func = "conv2d"
    _check_input(x, "x", func)
    w = local_operand(w, x, "w", func)
    b = None if b is None else local_operand(b, x, "b", func)
    geom = conv_geometry(
        x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    options = {
        "stride": geom.stride,
        "dilation": geom.dilation,
        "groups": geom.groups,
        "strategy": strategy,
        "autotune": autotune,
    }
    sample = chunk_namespace(x).zeros((1, geom.c, geom.kh_dilated, geom.kw_dilated), dtype=x.dtype)
    dtype = inmemory(sample, w, b, padding=0, **options).dtype  # validates dtypes, strategy
    rows, cols = _sweeps(geom)
    x = x.rechunk({1: -1})
    call = functools.partial(_conv_block, inmemory=inmemory, w=w, b=b, options=options)
    blank = functools.partial(_blank_block, b=b, f=geom.f)
    outs = (
        follow_chunks(x.chunks[2], geom.ho, offset=rows.pad_lo, scale=rows.stride),
        follow_chunks(x.chunks[3], geom.wo, offset=cols.pad_lo, scale=cols.stride),
    )
    return _forward_sweep(x, (rows, cols), outs, (call, blank), (geom.f,), dtype)


def _conv_block(xb: Array, *, padding, inmemory, w, b, options) -> Array:
    """conv2d of one band with its own padding."""
    return inmemory(xb, w, b, padding=padding, **options)


def _blank_block(xb: Array, *, hw: tuple[int, int], b, f: int, dtype) -> Array:
    """Outputs that read padding only: zeros (plus the bias), (n, F, ho, wo)."""
    xp = array_api_compat.array_namespace(xb)
    y = xp.zeros((xb.shape[0], f, *hw), dtype=dtype)
    return y if b is None else y + xp.reshape(b, (1, f, 1, 1))  # (F,) -> (1, F, 1, 1)


def conv2d_backward(
    inmemory: Callable[..., Array],
    gy: Array,
    x: Array,
    w: Array,
    *,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    strategy: Any,
    autotune: Any,
    needs: Collection[str],
) -> tuple[Array | None, Array | None, Array | None]:
    """``inmemory`` (:func:`arraycnn.conv2d_backward`) on dask ``gy`` (N, F, Ho, Wo) and
    ``x`` (N, C, H, W), lazily: (gx, gw, gb) as dask arrays (None where not needed).

    gx has ``x``'s chunks (C gathered); gw (F, C / groups, kh, kw) and gb (F,) are single
    chunks, the sums over every block of the batch and the image.
    """
    func = "conv2d_backward"
    gy, x = _dask_pair(gy, x, func)
    w = local_operand(w, x, "w", func)
    geom = conv_geometry(
        x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    if tuple(gy.shape) != geom.y_shape:
        raise ValueError(
            f"gy must have the output shape (N, F, Ho, Wo) = {geom.y_shape}, got {tuple(gy.shape)}"
        )
    options = {
        "stride": geom.stride,
        "dilation": geom.dilation,
        "groups": geom.groups,
        "strategy": strategy,
        "autotune": autotune,
    }
    xp = chunk_namespace(x)
    samples = (
        xp.zeros((1, geom.f, 1, 1), dtype=gy.dtype),
        xp.zeros((1, geom.c, geom.kh_dilated, geom.kw_dilated), dtype=x.dtype),
    )
    probe = inmemory(*samples, w, padding=0, needs=needs, **options)  # validates
    wanted = [g is not None for g in probe]
    dtype = next((g.dtype for g in probe if g is not None), x.dtype)
    x = x.rechunk({1: -1})
    gy = gy.rechunk({0: x.chunks[0], 1: -1})
    sweeps = _sweeps(geom)
    gx = gw = gb = None
    if wanted[0]:
        call = functools.partial(_conv_gx, inmemory=inmemory, w=w, options=options)
        gx = _input_sweep(gy, x, sweeps, call, dtype)
    if wanted[1]:
        call = functools.partial(_conv_gw, inmemory=inmemory, w=w, options=options)
        gw = _weight_sum(gy, x, sweeps, call, tuple(w.shape), dtype)
    if wanted[2]:
        gb = gy.sum(axis=(0, 2, 3))
    return gx, gw, gb


def _conv_gx(gyb: Array, xb: Array, *, padding, inmemory, w, options) -> Array:
    """Input gradient of one band."""
    return inmemory(gyb, xb, w, padding=padding, needs=("x",), **options)[0]


def _conv_gw(gyb: Array, xb: Array, *, padding, inmemory, w, options) -> Array:
    """Weight gradient of one band (F, C / groups, kh, kw)."""
    return inmemory(gyb, xb, w, padding=padding, needs=("w",), **options)[1]


# --------------------------------------------------------------------------- pooling


def pool2d(
    inmemory: Callable[..., Array],
    x: Array,
    kernel_size: Any,
    *,
    stride: Any,
    padding: Any,
    **extra: Any,
) -> Array:
    """``inmemory`` (:func:`arraycnn.max_pool2d` or :func:`arraycnn.avg_pool2d`, with
    ``extra`` such as ``count_include_pad``) on a dask ``x`` (N, C, H, W), lazily; N and C
    chunks are kept, Ho / Wo chunks follow H / W."""
    func = getattr(inmemory, "__name__", "pool2d")
    _check_input(x, "x", func)
    geom = pool_geometry(x.shape, kernel_size, stride=stride, padding=padding)
    sample = chunk_namespace(x).zeros((1, 1, geom.kh, geom.kw), dtype=x.dtype)
    dtype = inmemory(sample, kernel_size, stride=geom.stride, padding=0, **extra).dtype
    rows, cols = _sweeps(geom)
    call = functools.partial(
        _pool_block, inmemory=inmemory, kernel_size=kernel_size, stride=geom.stride, extra=extra
    )
    outs = (
        follow_chunks(x.chunks[2], geom.ho, offset=rows.pad_lo, scale=rows.stride),
        follow_chunks(x.chunks[3], geom.wo, offset=cols.pad_lo, scale=cols.stride),
    )
    return _forward_sweep(x, (rows, cols), outs, (call, None), None, dtype)


def _pool_block(xb: Array, *, padding, inmemory, kernel_size, stride, extra) -> Array:
    return inmemory(xb, kernel_size, stride=stride, padding=padding, **extra)


def pool2d_backward(
    inmemory: Callable[..., Array],
    gy: Array,
    x: Array,
    kernel_size: Any,
    *,
    stride: Any,
    padding: Any,
    **extra: Any,
) -> Array:
    """``inmemory`` (:func:`arraycnn.max_pool2d_backward` or
    :func:`arraycnn.avg_pool2d_backward`) on dask ``gy`` and ``x``: the input gradient,
    lazily, with ``x``'s chunks."""
    func = getattr(inmemory, "__name__", "pool2d_backward")
    gy, x = _dask_pair(gy, x, func)
    geom = pool_geometry(x.shape, kernel_size, stride=stride, padding=padding)
    if tuple(gy.shape) != geom.y_shape:
        raise ValueError(
            f"gy must have the output shape (N, C, Ho, Wo) = {geom.y_shape}, got {tuple(gy.shape)}"
        )
    xp = chunk_namespace(x)
    samples = (
        xp.zeros((1, 1, 1, 1), dtype=gy.dtype),
        xp.zeros((1, 1, geom.kh, geom.kw), dtype=x.dtype),
    )
    dtype = inmemory(*samples, kernel_size, stride=geom.stride, padding=0, **extra).dtype
    gy = gy.rechunk({0: x.chunks[0], 1: x.chunks[1]})
    call = functools.partial(
        _pool_gx, inmemory=inmemory, kernel_size=kernel_size, stride=geom.stride, extra=extra
    )
    return _input_sweep(gy, x, _sweeps(geom), call, dtype)


def _pool_gx(gyb: Array, xb: Array, *, padding, inmemory, kernel_size, stride, extra) -> Array:
    return inmemory(gyb, xb, kernel_size, stride=stride, padding=padding, **extra)


# --------------------------------------------------------------------------- sweeps


def _check_input(x: Array, name: str, func: str) -> None:
    check_known_chunks(x, name, func)
    check_dtype(x, name, func)


def _dask_pair(gy: Array, x: Array, func: str) -> tuple[Array, Array]:
    """gy and x as dask arrays (an in-memory one of the two gets one chunk per batch
    chunk of the other), with known chunks and numeric dtypes."""
    import dask.array as da

    if not is_dask_array(x):
        x = da.from_array(x, chunks=(gy.chunks[0], -1, -1, -1), asarray=False)
    if not is_dask_array(gy):
        gy = da.from_array(gy, chunks=(x.chunks[0], -1, -1, -1), asarray=False)
    for name, a in (("gy", gy), ("x", x)):
        _check_input(a, name, func)
    return gy, x


def _sweeps(geom) -> tuple[AxisSweep, AxisSweep]:
    """The row and column sweeps of a conv or pool geometry."""
    (top, bottom), (left, right) = geom.padding
    rows = AxisSweep(geom.h, geom.kh, geom.stride[0], geom.dilation[0], top, bottom, geom.ho)
    cols = AxisSweep(geom.w, geom.kw, geom.stride[1], geom.dilation[1], left, right, geom.wo)
    return rows, cols


def _meta(like: Array, dtype: Any) -> Array:
    return chunk_namespace(like).empty((0, 0, 0, 0), dtype=dtype)


def _offsets(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive chunks."""
    edges, start = [], 0
    for c in chunks:
        edges.append((start, start + c))
        start += c
    return edges


def _forward_sweep(x: Array, sweeps, outs, calls, channels, dtype) -> Array:
    """Output blocks (rows ``outs[0]`` x columns ``outs[1]``), each the in-memory call on
    the band of ``x`` it reads; ``channels`` the output channel chunks (None: x's)."""
    import dask.array as da

    rows, cols = sweeps
    call, blank = calls
    grid = []
    for r0, r1 in _offsets(outs[0]):
        lo, hi, pt, pb = rows.band(r0, r1)
        line = []
        for c0, c1 in _offsets(outs[1]):
            clo, chi, pl, pr = cols.band(c0, c1)
            chunks = (x.chunks[0], channels or x.chunks[1], (r1 - r0,), (c1 - c0,))
            if hi <= lo or chi <= clo:  # padding only (conv2d with wide padding)
                band = x[:, :, :1, :1]
                fn = functools.partial(blank, hw=(r1 - r0, c1 - c0), dtype=dtype)
            else:
                band = x[:, :, lo:hi, clo:chi].rechunk({2: -1, 3: -1})
                fn = functools.partial(call, padding=((pt, pb), (pl, pr)))
            line.append(band.map_blocks(fn, chunks=chunks, dtype=dtype, meta=_meta(x, dtype)))
        grid.append(line)
    return da.block(grid)


def _input_sweep(gy: Array, x: Array, sweeps, call, dtype) -> Array:
    """The input gradient by x's chunks: each from the outputs that reach it and their
    band, cropped (and zero-padded where no window reaches) to the chunk."""
    import dask.array as da

    rows, cols = sweeps
    grid = []
    for a, b in _offsets(x.chunks[2]):
        o0, o1 = rows.touching(a, b)
        line = []
        for c, d in _offsets(x.chunks[3]):
            q0, q1 = cols.touching(c, d)
            chunks = (x.chunks[0], x.chunks[1], (b - a,), (d - c,))
            if o1 <= o0 or q1 <= q0:  # no window reaches these rows / columns
                zeros = functools.partial(_zeros_like_block, hw=(b - a, d - c), dtype=dtype)
                block = x[:, :, :1, :1].map_blocks(zeros, chunks=chunks, dtype=dtype)
                line.append(block)
                continue
            lo, hi, pt, pb = rows.band(o0, o1)
            clo, chi, pl, pr = cols.band(q0, q1)
            g = gy[:, :, o0:o1, q0:q1].rechunk({2: -1, 3: -1})
            band = x[:, :, lo:hi, clo:chi].rechunk({2: -1, 3: -1})
            fn = functools.partial(
                _placed,
                call=call,
                padding=((pt, pb), (pl, pr)),
                rows=(a - lo, b - lo),
                cols=(c - clo, d - clo),
            )
            line.append(
                da.map_blocks(fn, g, band, chunks=chunks, dtype=dtype, meta=_meta(x, dtype))
            )
        grid.append(line)
    return da.block(grid)


def _zeros_like_block(xb: Array, *, hw: tuple[int, int], dtype) -> Array:
    xp = array_api_compat.array_namespace(xb)
    return xp.zeros((*xb.shape[:2], *hw), dtype=dtype)


def _window(size: int, span: tuple[int, int]) -> tuple[slice, int, int]:
    """The part of ``[0, size)`` inside ``span = [s0, s1)``: (slice, zeros before, after)."""
    s0, s1 = span
    return slice(max(s0, 0), min(s1, size)), max(-s0, 0), max(s1 - size, 0)


def _placed(gyb: Array, xb: Array, *, call, padding, rows, cols) -> Array:
    """``call`` on one band, its input gradient cropped to the chunk's ``rows`` / ``cols``
    (band coordinates) and zero-filled where the band does not reach."""
    g = call(gyb, xb, padding=padding)  # (n, C, hi - lo, chi - clo)
    (r, rb, ra), (c, cb, ca) = _window(g.shape[2], rows), _window(g.shape[3], cols)
    g = g[:, :, r, c]
    if rb or ra or cb or ca:
        xp = array_api_compat.array_namespace(g)
        g = xpx.pad(g, ((0, 0), (0, 0), (rb, ra), (cb, ca)), xp=xp)
    return g


def _weight_sum(gy: Array, x: Array, sweeps, call, w_shape: tuple, dtype) -> Array:
    """The weight gradient: the sum over output blocks (gy's chunks) and batch chunks."""
    import dask.array as da

    rows, cols = sweeps
    nb, f = len(x.chunks[0]), w_shape[0]
    parts = []
    for r0, r1 in _offsets(gy.chunks[2]):
        lo, hi, pt, pb = rows.band(r0, r1)
        for c0, c1 in _offsets(gy.chunks[3]):
            clo, chi, pl, pr = cols.band(c0, c1)
            if hi <= lo or chi <= clo:  # padding only: no weight gradient
                continue
            g = gy[:, :, r0:r1, c0:c1].rechunk({2: -1, 3: -1})
            band = x[:, :, lo:hi, clo:chi].rechunk({2: -1, 3: -1})
            fn = functools.partial(call, padding=((pt, pb), (pl, pr)))
            chunks = ((f,) * nb, *((s,) for s in w_shape[1:]))
            part = da.map_blocks(fn, g, band, chunks=chunks, dtype=dtype, meta=_meta(x, dtype))
            parts.append(part)  # (nb * F, Cg, kh, kw), one (F, Cg, kh, kw) per batch chunk
    if not parts:
        return da.zeros(w_shape, dtype=dtype, meta=_meta(x, dtype))
    stacked = da.concatenate(parts, axis=0)  # (P * nb * F, Cg, kh, kw)
    return stacked.reshape((-1, *w_shape)).sum(axis=0)  # -> (P * nb, F, Cg, kh, kw) -> (F, ...)
