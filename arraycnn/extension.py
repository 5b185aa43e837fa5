"""Extending an image beyond its edges: the boundary rules of the filters.

Host arithmetic (which source row or column an extended index reads, the extension a
``mode`` needs) and the extension itself, written against the array namespace ``xp`` with
basic slicing, ``flip`` and ``concat`` only, so that NumPy, CuPy, torch, JAX and dask
arrays (through array-api-compat's dask namespace) all extend the same way.
:func:`arraycnn.filters.correlate2d` / ``convolve2d`` and their dask path
(:mod:`arraycnn.dask_arrays`) share it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["BOUNDARIES", "extend_mirrored", "extension_pads"]

Array = Any
#: Every index of an axis (the column axis of :func:`_axis_slice`).
ALL = slice(None)

#: Accepted ``boundary`` values and the canonical mode each one names.
BOUNDARIES: dict[str, str] = {
    "fill": "fill",
    "pad": "fill",
    "wrap": "wrap",
    "circular": "wrap",
    "symm": "symm",
    "symmetric": "symm",
    "reflect": "reflect",
}


def extension_pads(
    mode: str, kernel_hw: tuple[int, int], *, convolve: bool
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) extension of in1 for ``mode`` and a kernel of
    ``kernel_hw`` (SciPy's centring: "same" puts the odd row after for correlation,
    before for convolution).

    Examples
    --------
    >>> extension_pads("same", (4, 3), convolve=False)
    ((1, 2), (1, 1))
    >>> extension_pads("full", (3, 1), convolve=True)
    ((2, 2), (0, 0))
    """
    pads = []
    for k in kernel_hw:
        if mode == "full":
            pads.append((k - 1, k - 1))
        elif mode == "same":
            lo, hi = (k - 1) // 2, k // 2
            pads.append((hi, lo) if convolve else (lo, hi))
        else:
            pads.append((0, 0))
    return pads[0], pads[1]


def _source_index(i: int, n: int, boundary: str) -> int:
    """Index into an axis of length ``n`` that extended index ``i`` (any int) reads."""
    if boundary == "wrap":
        return i % n
    if boundary == "symm":  # period 2n: 0 .. n-1, n-1 .. 0
        k = i % (2 * n)
        return k if k < n else 2 * n - 1 - k
    if boundary == "reflect":  # period 2n-2: 0 .. n-1, n-2 .. 1
        if n == 1:
            return 0
        k = i % (2 * n - 2)
        return k if k < n else 2 * n - 2 - k
    raise ValueError(f"no index mapping for boundary {boundary!r}")


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Split source indices into maximal runs of step +1 or -1: [(first, last), ...]."""
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(indices):
        stop = start + 1
        if stop < len(indices) and abs(indices[stop] - indices[start]) == 1:
            step = indices[stop] - indices[start]
            while stop < len(indices) and indices[stop] - indices[stop - 1] == step:
                stop += 1
        runs.append((indices[start], indices[stop - 1]))
        start = stop
    return runs


def _axis_slice(axis: int, sl: slice) -> tuple[Any, ...]:
    """Index selecting ``sl`` along ``axis`` (-2 or -1) of a (..., A, B) array."""
    return (..., sl, ALL) if axis == -2 else (..., sl)


def _run_piece(x: Array, first: int, last: int, axis: int, *, xp: ModuleType) -> Array:
    """Source indices first..last (either direction) along ``axis``; basic slicing only."""
    if first <= last:
        return x[_axis_slice(axis, slice(first, last + 1))]
    return xp.flip(x[_axis_slice(axis, slice(last, first + 1))], axis=axis)


def _extend_axis(x: Array, lo: int, hi: int, boundary: str, axis: int, *, xp: ModuleType) -> Array:
    """Extend ``x`` by ``lo``/``hi`` along ``axis`` (-2 or -1) with wrap/symm/reflect."""
    if lo == 0 and hi == 0:
        return x
    n = x.shape[axis]
    before = [_source_index(i, n, boundary) for i in range(-lo, 0)]
    after = [_source_index(i, n, boundary) for i in range(n, n + hi)]
    pieces = [_run_piece(x, a, b, axis, xp=xp) for a, b in _runs(before)]
    pieces.append(x)
    pieces += [_run_piece(x, a, b, axis, xp=xp) for a, b in _runs(after)]
    return xp.concat(pieces, axis=axis)


def extend_mirrored(
    x: Array, pads: tuple[tuple[int, int], tuple[int, int]], boundary: str, *, xp: ModuleType
) -> Array:
    """Extend the last two axes of ``x`` (..., H, W) to (..., H + t + b, W + l + r) by
    ``boundary`` "wrap", "symm" or "reflect" (canonical names); ``pads`` is
    ``((top, bottom), (left, right))`` and may exceed the image (periodic / repeated
    mirror continuation, as SciPy's).

    Examples
    --------
    >>> import numpy as np
    >>> row = np.array([[1, 2, 3]])
    >>> extend_mirrored(row, ((0, 0), (2, 2)), "symm", xp=np).tolist()
    [[2, 1, 1, 2, 3, 3, 2]]
    >>> extend_mirrored(row, ((0, 0), (4, 1)), "reflect", xp=np).tolist()
    [[1, 2, 3, 2, 1, 2, 3, 2]]
    """
    (top, bottom), (left, right) = pads
    x = _extend_axis(x, top, bottom, boundary, -2, xp=xp)  # (..., H, W) -> (..., Hp, W)
    return _extend_axis(x, left, right, boundary, -1, xp=xp)  # -> (..., Hp, Wp)
