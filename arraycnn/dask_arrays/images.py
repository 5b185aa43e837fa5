"""``correlate2d`` / ``convolve2d`` of a dask image: lazy, chunk by chunk with ``map_overlap``.

The image (..., H, W) is extended ONCE at the array's edges per ``boundary`` (the
extension of the in-memory functions: "fill" with ``fillvalue``, "wrap", "symm",
"reflect"), so chunk edges never see a boundary rule. Every output chunk is then the
"valid" filter of its extended input chunk and the ``k - 1`` rows / columns after it
(``map_overlap`` with depth ``(0, k - 1)`` per axis, ``boundary="none"``), computed by the
in-memory function on the chunk's own namespace with the strategy asked for. The output
chunks follow the input's; chunks smaller than the halo ``k - 1`` are merged first.

``dask.array.pad`` is not used for wrap / symmetric / reflect: for pads wider than the axis
(a kernel larger than the image) it returns fewer rows than asked (dask 2026.8). The
extension is the in-memory one (:func:`arraycnn.extension.extend_mirrored`: slices, flips
and ``concat``) run on the dask array.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from ..backend import to_numpy
from ..extension import BOUNDARIES, extend_mirrored, extension_pads
from .checks import (
    check_dtype,
    check_known_chunks,
    chunk_namespace,
    local_operand,
)
from .halo import follow_chunks, merge_small

__all__ = ["filter2d"]

Array = Any

def filter2d(
    inmemory: Callable[..., Array],
    in1: Array,
    in2: Array,
    mode: Any,
    boundary: Any,
    fillvalue: Any,
    *,
    strategy: Any,
    convolve: bool,
) -> Array:
    """``inmemory`` (:func:`arraycnn.correlate2d` or :func:`arraycnn.convolve2d`) on a
    dask ``in1`` (..., H, W) with a kernel ``in2`` (kh, kw), lazily.

    Arguments, result dtype and errors are those of ``inmemory`` (validated on a
    kernel-sized sample before the graph is built); the result is a dask array
    (..., Ho, Wo) whose chunks have the namespace of ``in1``'s chunks. A dask ``in2`` is
    computed (a kernel must fit in memory).

    Raises
    ------
    ValueError
        ``in1`` with unknown (NaN) chunk sizes, fewer than two dimensions, an empty axis,
        "valid" with neither input at least as large as the other; and the in-memory
        function's own errors.
    TypeError
        ``in1`` of a non-numeric dtype, ``in2`` of another array type than the chunks;
        and the in-memory function's own errors.
    """
    func = "convolve2d" if convolve else "correlate2d"
    options = {"strategy": strategy}
    check_known_chunks(in1, "in1", func)
    check_dtype(in1, "in1", func)
    kernel = local_operand(in2, in1, "in2", func)
    _check_shape(in1, func)
    xp = chunk_namespace(in1)
    sample = xp.zeros(tuple(kernel.shape) if kernel.ndim == 2 else (1, 1), dtype=in1.dtype)
    dtype = inmemory(sample, kernel, mode, boundary, fillvalue, **options).dtype  # validates
    (h, w), (kh, kw) = in1.shape[-2:], kernel.shape
    block = functools.partial(_filter_block, inmemory=inmemory, kernel=kernel, dtype=dtype)
    if mode == "valid" and not (h >= kh and w >= kw):
        if not (kh >= h and kw >= w):
            raise ValueError(
                f"mode='valid' needs one input at least as large as the other in every "
                f"dimension; got in1 (H, W) = {(h, w)} and in2 = {(kh, kw)}"
            )
        return _swapped_valid(in1, block, (kh - h + 1, kw - w + 1), dtype, strategy)
    pads = extension_pads(mode, (kh, kw), convolve=convolve)
    extended = _extend(in1, pads, BOUNDARIES[boundary], fillvalue, dtype)
    return _overlapped_valid(extended, in1.chunks[-2:], (kh, kw), block, dtype, strategy)


def _check_shape(in1: Array, func: str) -> None:
    """in1 (..., H, W), no empty axis (the in-memory functions' messages)."""
    if in1.ndim < 2:
        raise ValueError(
            f"{func}: in1 must be 2-D (H, W) or a batch (..., H, W), got shape {tuple(in1.shape)}"
        )
    if any(s == 0 for s in in1.shape):
        raise ValueError(f"{func}: in1 must not be empty, got shape {tuple(in1.shape)}")


def _filter_block(
    block: Array, *, inmemory: Callable[..., Array], kernel: Array, dtype: Any, strategy: Any
) -> Array:
    """The in-memory "valid" filter of one extended, overlapped block, in the result dtype."""
    return inmemory(block, kernel, "valid", strategy=strategy).astype(dtype, copy=False)


def _swapped_valid(in1: Array, block, out_hw: tuple[int, int], dtype, strategy) -> Array:
    """ "valid" with the kernel larger than the image: each whole image is the kernel."""
    whole = in1.rechunk({in1.ndim - 2: -1, in1.ndim - 1: -1})
    chunks = (*whole.chunks[:-2], (out_hw[0],), (out_hw[1],))
    meta = chunk_namespace(in1).empty((0,) * in1.ndim, dtype=dtype)
    return whole.map_blocks(
        functools.partial(block, strategy=strategy), chunks=chunks, dtype=dtype, meta=meta
    )


def _fill_number(fillvalue: Any, kind: str) -> float | int | complex:
    """``fillvalue`` (a number or one-element array, validated by the in-memory function)
    as a Python number for a result of dtype kind ``kind``: truncated toward zero for an
    integer result, complex for a complex one."""
    value = fillvalue
    if hasattr(value, "shape"):
        value = to_numpy(value).reshape(()).item()  # (1, ..., 1) -> ()
    if kind == "c":
        return complex(value)
    if kind not in "iu":
        return float(value)
    return int(value) if isinstance(value, numbers.Integral) else math.trunc(float(value))


def _extend(
    x: Array, pads: tuple[tuple[int, int], tuple[int, int]], boundary: str, fillvalue, dtype
) -> Array:
    """``x`` (..., H, W) extended to (..., H + t + b, W + l + r) at the array's edges."""
    import dask.array as da

    if not any(p for side in pads for p in side):
        return x
    if boundary == "fill":
        kind = np.dtype(dtype).kind
        wide = np.dtype(dtype) if kind in "iu" else np.promote_types(dtype, np.float32)
        fill = _fill_number(fillvalue, kind)
        width = ((0, 0),) * (x.ndim - 2) + pads
        return da.pad(x.astype(wide), width, mode="constant", constant_values=fill)
    # wrap / symm / reflect as in memory: slices, flips and concat of the dask array
    return extend_mirrored(x, pads, boundary, xp=array_api_compat.array_namespace(x))


def _overlapped_valid(
    extended: Array, in_chunks: tuple, kernel_hw: tuple[int, int], block, dtype, strategy
) -> Array:
    """The "valid" filter of ``extended`` (..., Hp, Wp) by overlapping blocks.

    The output axis of length ``Hp - kh + 1`` gets chunks ``o`` that follow the input's
    (merged to at least the halo ``kh - 1``); the extended axis is rechunked to
    ``(o_1, ..., o_m + kh - 1)`` so that each output chunk is the valid filter of its
    extended chunk and the first ``kh - 1`` rows of the next one.
    """
    import dask.array as da

    ndim = extended.ndim
    out_chunks, ext_chunks, depth = [], [], {}
    for axis, chunks, k in zip((ndim - 2, ndim - 1), in_chunks, kernel_hw):
        out = merge_small(follow_chunks(chunks, extended.shape[axis] - k + 1), k - 1)
        out_chunks.append(out)
        ext_chunks.append((*out[:-1], out[-1] + k - 1))
        depth[axis] = (0, k - 1)
    extended = extended.rechunk(dict(zip((ndim - 2, ndim - 1), ext_chunks)))
    meta = chunk_namespace(extended).empty((0,) * ndim, dtype=dtype)
    return da.map_overlap(
        functools.partial(block, strategy=strategy),
        extended,
        depth=depth,
        boundary="none",
        trim=False,
        allow_rechunk=False,
        chunks=(*extended.chunks[:-2], *out_chunks),
        dtype=dtype,
        meta=meta,
    )
