"""FFT convolution: products in the frequency domain, contracted over channels.

Forward
-------
Cross-correlation with zero padding ``(p_lo, p_hi)`` is a *circular convolution* of the
unpadded input, at a fast length ``L``, with the flipped (dilated) kernel at the origin:
the outputs are the positions ``kd - 1 - p_lo + (0, s, 2s, ...)`` of the circular result
(with more leading padding than ``kd - 1``, the kernel starts at ``p_lo - kd + 1`` and
the outputs at 0; :func:`_placement`). :func:`forward_length` shows that no wrapped term
reaches them, with ``L <= next_fast_len(Hp)``. The padded input is never formed, nor the
conjugate of the kernel spectrum (:func:`_kernel_spectrum`); the input's zero padding at
the end lives in a scratch buffer (warm memory, no page faults).

Large images are cut into overlap-save tiles (:class:`TilePlan`): tile ``(i, j)`` is the
padded input's ``Th x Tw`` window at ``(i Bh sh, j Bw sw)``, and its ``Bh x Bw`` outputs
are the positions ``kd - 1 + (0, s, ...)`` of its circular product with the flipped
kernel at the origin (no padding inside the tile). All tiles go through one batched
transform, product and inverse; their outputs are assembled into the result.
:func:`tile_plan` picks the tiles with the dispatcher's cost model, or keeps the untiled
path. The channel contraction, per frequency (:func:`_product`)::

    Y[a, g, f, k] = sum_c X[a, g, c, k] * W[g, f, c, k]      (a: image, or image x tile)

Backward
--------
At the lengths of :func:`fast_shape` (the shortest at which no wrapped term reaches a kept
position, :func:`backward_length`; at most ``(Hp, Wp)``): the input gradient is the full
convolution of the stride-upsampled ``gy`` with the dilated kernel, its positions past the
leading padding kept; the weight gradient the correlation of the *unpadded* input with it
(conjugate spectra), read at the lags of the kernel's taps. The kernel's spectrum and the
weight gradient's inverse need the kernel's ``kh`` rows only: a product with a DFT matrix
over the rows, the real transform over the columns of those rows.

Real input stays in its precision (float32 -> complex64 -> float32). Half precision
(float16, bfloat16), which FFT modules mostly lack, is computed in float32 and the results
returned in the input dtype; the plan's workspace counts the float32 copies.
FFT module: scipy.fft (NumPy), cupyx.scipy.fft (CuPy), ``xp.fft`` otherwise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_extra as xpx
import scipy.fft
from array_api_compat import is_numpy_array

from ..backend import backend_name, device_of, fft_module
from ..geometry import ConvGeometry
from ..scratch import scratch
from ..settings import register_cache
from ._layout import ALL, add_at, set_at, zeros
from .strategy import (
    NUMPY_SPECTRAL,
    Call,
    Counts,
    SpectralCosts,
    Strategy,
    spectral,
    spectral_costs,
    traffic,
)
from .strategy import fft as fft_counts

Array = Any
AXES = (-2, -1)


# --------------------------------------------------------------------------- contraction


#: Below this many multiply-adds per frequency, the channel contraction is a broadcast
#: product and sum instead of a batched matrix product (tiny matmuls are slow).
SMALL_CONTRACTION = 16


def _matmul(i: int, k: int, j: int) -> bool:
    """Whether :func:`_contract` runs (I x K) @ (K x J) as a batched matrix product."""
    return i * k * j >= SMALL_CONTRACTION


def _contract(a: Array, b: Array, *, xp: ModuleType) -> Array:
    """Per-frequency matrix product: a (G, P, I, K) @ b (G, P, K, J) -> (G, P, I, J)."""
    i, k = a.shape[-2:]
    j = b.shape[-1]
    if _matmul(i, k, j):
        return a @ b
    if k == 1:
        return a * b  # (G, P, I, 1) * (G, P, 1, J) -> (G, P, I, J)
    # (G, P, I, K, 1) * (G, P, 1, K, J) summed over K -> (G, P, I, J)
    return xp.sum(a[..., None] * b[..., None, :, :], axis=-2)


def _to_freq_major(z: Array, *, xp: ModuleType) -> Array:
    """(A, G, B, Lh, Lw2) -> (G, Lh*Lw2, A, B): frequencies become a batch axis."""
    a, g, b, lh, lw2 = z.shape
    z = xp.permute_dims(z, (1, 3, 4, 0, 2))  # (G, Lh, Lw2, A, B)
    # (G, Lh, Lw2, A, B) -> (G, Lh*Lw2, A, B)
    return xp.reshape(z, (g, lh * lw2, a, b))


def _from_freq_major(z: Array, lh: int, lw2: int, *, xp: ModuleType) -> Array:
    """(G, Lh*Lw2, A, B) -> (A, G, B, Lh, Lw2), a view."""
    g, _, a, b = z.shape
    # (G, Lh*Lw2, A, B) -> (G, Lh, Lw2, A, B)
    z = xp.reshape(z, (g, lh, lw2, a, b))
    return xp.permute_dims(z, (3, 0, 4, 1, 2))  # (A, G, B, Lh, Lw2)


def _spectrum_from_freq_major(tag: str, z: Array, lh: int, lw2: int, *, xp: ModuleType) -> Array:
    """(G, Lh*Lw2, A, B) -> (A, G, B, Lh, Lw2) copied in that order into the scratch buffer
    ``tag``: the inverse transforms then read contiguous planes. (Over the permuted view
    they read each line across the whole product, which made them 2-5x slower; the copy
    costs one pass over the product.) The result is scratch: it must not escape."""
    view = _from_freq_major(z, lh, lw2, xp=xp)  # (A, G, B, Lh, Lw2)
    return set_at(scratch(tag, view.shape, like=view, xp=xp), (ALL,) * 5, view, xp=xp)


#: Bytes of output per piece of a NumPy transform written into scratch (:func:`_transform_into`).
TRANSFORM_PIECE_BYTES = 2097152


def _transform_into(
    tag: str, transform: Callable[..., Array], a: Array, *, xp: ModuleType, **kwargs: Any
) -> Array:
    """``transform(a, **kwargs)`` (an FFT module's transform over trailing axes); for a NumPy
    ``a``, computed in pieces of its leading axis of at most :data:`TRANSFORM_PIECE_BYTES` of
    output each, written into the scratch buffer ``tag``.

    scipy.fft writes its results into fresh arrays only. Freed, a large one goes back to the
    OS and the next call faults its pages in again: on the lecture layer's backward (64 x 16
    x 14 x 14, 32 filters 5 x 5) 2776 page faults, a third of its time (docs/performance.md).
    Pieces this small are reused by the allocator, and the buffer stays warm. Elsewhere (a
    device; the array API's ``xp.fft``) one call. The result is scratch: it must not escape.
    """
    n = a.shape[0]
    if not is_numpy_array(a) or n < 2:
        return transform(a, **kwargs)
    first = transform(a[:1], **kwargs)
    rows = max(1, TRANSFORM_PIECE_BYTES // first.nbytes)
    rest = (ALL,) * (first.ndim - 1)
    out = scratch(tag, (n, *first.shape[1:]), like=first, xp=xp)
    out = set_at(out, (slice(0, 1), *rest), first, xp=xp)
    for lo in range(1, n, rows):
        piece = transform(a[lo : lo + rows], **kwargs)
        out = set_at(out, (slice(lo, lo + rows), *rest), piece, xp=xp)
    return out


# --------------------------------------------------------------------------- forward pieces


def forward_length(size: int, out: int, kernel: int, stride: int, pad_lo: int) -> int:
    """Shortest fast length at which the forward's circular convolution is exact, for an
    axis of ``size`` inputs (unpadded), ``out`` outputs and a dilated kernel of ``kernel``.

    Notes
    -----
    The forward convolves the *unpadded* input circularly, at length ``L``, with the
    flipped kernel and keeps the outputs ``o = c + (0, s, ..., M)``, ``M = (out - 1) s``
    (``p = pad_lo``, :func:`_placement`): for ``p <= kd - 1`` the flipped kernel's taps sit
    at ``r`` in ``[0, kd)`` and ``c = kd - 1 - p``; otherwise at ``p - kd + 1 + r`` and
    ``c = 0``. Output ``o`` gets input ``m`` through the taps at ``o - m (mod L)``; a
    wrapped term is one with ``m + r = o + L``, i.e. ``o + L <= size - 1 + kd - 1`` (first
    case) or ``o + L <= size - 1 + p`` (second), both excluded by ``L >= size + p``. The
    kept outputs must be positions below ``L``: ``M + kd - p <= L`` (first case) and
    ``M < L``; ``kd <= L`` keeps the taps at distinct positions. Every such ``L`` is
    ``<= Hp``.
    """
    last = (out - 1) * stride
    need = max(size + pad_lo, last + kernel - pad_lo, last + 1, kernel)
    return scipy.fft.next_fast_len(need, real=True)


def forward_shape(geom: ConvGeometry) -> tuple[int, int]:
    """FFT lengths (Lh, Lw) of the untiled forward (see :func:`forward_length`)."""
    (top, _), (left, _) = geom.padding
    return (
        forward_length(geom.h, geom.ho, geom.kh_dilated, geom.stride[0], top),
        forward_length(geom.w, geom.wo, geom.kw_dilated, geom.stride[1], left),
    )


def _lead_zeros(a: Array, count: int, axis: int, *, xp: ModuleType) -> Array:
    """``a`` with ``count`` zeros prepended along ``axis`` (a negative axis); ``a`` if 0."""
    if count == 0:
        return a
    shape = list(a.shape)
    shape[axis] = count
    return xp.concat([zeros(tuple(shape), a, xp=xp), a], axis=axis)


#: The kernel's transform over its rows is a product with a cached DFT matrix for at most
#: this many rows (``kh`` complex multiply-adds per bin against an FFT's ``~log2 Lh`` and a
#: padded copy; the crossover is in docs/performance.md).
DFT_MAX_ROWS = 16


def _dft_matrix(
    xp: ModuleType, real: Any, dtype: Any, device: Any, placement: tuple[int, int, int, int]
) -> Array:
    """``D[u, r] = exp(-2 pi i u (start + step r) / length)``: (length, taps), ``dtype``.

    ``placement = (length, start, step, taps)``. The exponents are reduced modulo
    ``length`` in integers before the angles are formed in the real dtype ``real``, so the
    entries are as exact as that dtype allows.
    """
    length, start, step, taps = placement
    u = xp.arange(length, device=device)  # (L,)
    r = xp.arange(taps, device=device) * step + start  # (taps,)
    m = (u[:, None] * r[None, :]) % length  # (L, 1) * (1, taps) -> (L, taps)
    angle = xp.astype(m, real) * (-2.0 * math.pi / length)
    return xp.astype(xp.cos(angle), dtype) + xp.astype(xp.sin(angle), dtype) * 1j


#: Cached DFT matrices (a few KiB each), per namespace, dtype, device and placement.
_cached_dft_matrix = functools.lru_cache(maxsize=64)(_dft_matrix)
register_cache(_cached_dft_matrix.cache_clear)


def _row_dft(w: Array, rows: Array, placement: tuple[int, int, int, int], *, xp) -> Array:
    """The DFT matrix of :func:`_dft_matrix` for the kernel ``w`` and its row spectrum
    ``rows``: cached, except on JAX (under ``jit`` the arrays would be tracers)."""
    make = _dft_matrix if backend_name(xp) == "jax" else _cached_dft_matrix
    return make(xp, w.dtype, rows.dtype, device_of(w), placement)


def _spread(a: Array, steps: tuple[int, int], *, xp: ModuleType) -> Array:
    """Insert ``step - 1`` zeros between the entries of the last two axes:
    (..., p, q) -> (..., (p-1) s0 + 1, (q-1) s1 + 1); ``a`` itself for steps (1, 1)."""
    if steps == (1, 1):
        return a
    p, q = a.shape[-2:]
    out = zeros((*a.shape[:-2], (p - 1) * steps[0] + 1, (q - 1) * steps[1] + 1), a, xp=xp)
    return _set_strided(out, a, steps)


def _rows_product(matrix: Array, a: Array, *, xp: ModuleType) -> Array:
    """``matrix @ a`` over the rows axis of ``a``, as one matrix product (a batch of
    kernel-sized products costs a call's overhead each): matrix (M, R), a (A, B, C, R, K) ->
    (A, B, C, M, K), a view of the product (M, A*B*C*K)."""
    lead, (r, k) = tuple(a.shape[:-2]), a.shape[-2:]
    flat = xp.reshape(xp.permute_dims(a, (3, 0, 1, 2, 4)), (r, -1))  # (R, A*B*C*K)
    out = xp.reshape(matrix @ flat, (matrix.shape[0], *lead, k))  # (M, A, B, C, K)
    return xp.permute_dims(out, (1, 2, 3, 0, 4))  # (A, B, C, M, K)


def _kernel_spectrum(
    w: Array, geom: ConvGeometry, shape: tuple, starts: tuple, *, xp, fft, flipped: bool = True
):
    """rfft of the flipped (or, ``flipped=False``, the original) dilated kernel starting at
    position ``starts`` of each axis.

    Flipped tap ``r`` (original ``k - 1 - r``) of each axis sits at ``start + d r`` (no
    wrap: ``start + kd <= L``). The real transform over the columns runs on the kernel's
    ``kh`` rows only, zero-padded by the FFT module (``n=``); the transform over the rows is
    a product with a DFT matrix for at most :data:`DFT_MAX_ROWS` rows, else an FFT of the
    spread, zero-padded rows (in place). No element-wise update on this path without
    dilation: each array-api-extra call costs microseconds of Python.
    (F, Cg, kh, kw) -> (G, Fg, Cg, Lh, Lw//2+1).
    """
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    (dh, dw), (lh, lw) = geom.dilation, shape
    wflip = xp.flip(wg, axis=(-2, -1)) if flipped else wg
    wflip = _spread(wflip, (1, dw), xp=xp)  # (G, Fg, Cg, kh, kwd)
    wflip = _lead_zeros(wflip, starts[1], -1, xp=xp)  # (G, Fg, Cg, kh, start + kwd)
    rows = fft.rfft(wflip, n=lw, axis=-1)  # (G, Fg, Cg, kh, Lw2)
    if geom.kh <= DFT_MAX_ROWS:
        dft = _row_dft(w, rows, (lh, starts[0], dh, geom.kh), xp=xp)  # (Lh, kh)
        return _rows_product(dft, rows, xp=xp)  # (G, Fg, Cg, Lh, Lw2)
    rows = _spread(rows, (dh, 1), xp=xp)  # (G, Fg, Cg, khd, Lw2)
    rows = _lead_zeros(rows, starts[0], -2, xp=xp)  # (G, Fg, Cg, start + khd, Lw2)
    return fft.fft(rows, n=lh, axis=-2, **_overwrite(fft))  # (G, Fg, Cg, Lh, Lw2)


def _padded_input(x5: Array, shape: tuple[int, int], *, xp: ModuleType) -> Array:
    """x5 (..., H, W) zero-padded at the end to (..., Lh, Lw) in a scratch buffer.

    The buffer is keyed by ``(H, W)``: only that corner is ever written, so the padding
    stays zero across calls, and the FFT reads warm memory instead of a fresh padded copy
    of its own (fresh pages are expensive). ``x5`` itself when no padding is needed.
    """
    h, w = x5.shape[-2:]
    if (h, w) == shape:
        return x5
    lead = tuple(x5.shape[:-2])
    buf = scratch("fft.input", (*lead, *shape), like=x5, xp=xp, key=(h, w))  # (..., Lh, Lw)
    return set_at(buf, (..., slice(0, h), slice(0, w)), x5, xp=xp)


def _placement(size: int, kernel: int, pad_lo: int) -> tuple[int, int]:
    """``(start, first)``: where the flipped kernel starts and where the outputs start in
    the circular result of one axis (see :func:`forward_length`).

    The kernel at the origin puts output 0 at ``kd - 1 - p``; with more leading padding
    than ``kd - 1`` the kernel starts at ``p - kd + 1`` instead and output 0 at 0.
    """
    return max(0, pad_lo - kernel + 1), max(0, kernel - 1 - pad_lo)


#: The forward's channel contraction is a batched matrix product over frequencies only for
#: per-frequency matrices of at least MATMUL_ROWS rows (images times tiles), MATMUL_DEPTH
#: input and MATMUL_COLS output channels per group; otherwise a broadcast multiply-add per
#: input channel in the transforms' own layout (docs/performance.md).
MATMUL_ROWS = 8
MATMUL_DEPTH = 12
MATMUL_COLS = 8


def _use_matmul(rows: int, cg: int, fg: int) -> bool:
    """Whether the forward's product of ``rows`` x ``cg`` by ``cg`` x ``fg`` per frequency
    is a batched matrix product (host arithmetic)."""
    return rows >= MATMUL_ROWS and cg >= MATMUL_DEPTH and fg >= MATMUL_COLS


def _product(xf: Array, wf: Array, *, xp: ModuleType) -> Array:
    """Per-frequency channel contraction ``Y[a, g, f] = sum_c X[a, g, c] W[g, f, c]``.

    xf (A, G, Cg, Lh, Lw2), wf (G, Fg, Cg, Lh, Lw2) -> (A, G, Fg, Lh, Lw2). In this layout
    (no reordering) a broadcast product per input channel, accumulated in place; for
    large enough matrices (:func:`_use_matmul`) a batched matrix product over frequencies
    (:func:`_contract`) in frequency-major order.
    """
    a, g, cg, lh, lw2 = xf.shape
    fg = wf.shape[1]
    if _use_matmul(a, cg, fg):
        xm = _to_freq_major(xf, xp=xp)  # (G, P, A, Cg)
        wm = xp.permute_dims(wf, (1, 0, 2, 3, 4))  # (Fg, G, Cg, Lh, Lw2)
        # (Fg, G, Cg, Lh, Lw2) -> (G, P, Fg, Cg) -> (G, P, Cg, Fg)
        wm = xp.matrix_transpose(_to_freq_major(wm, xp=xp))
        ym = _contract(xm, wm, xp=xp)  # (G, P, A, Fg)
        return _spectrum_from_freq_major("fft.product", ym, lh, lw2, xp=xp)  # (A, G, Fg, Lh, Lw2)

    if cg == 1 and fg == 1:  # in place into the input spectrum (the forward's own)
        # (G, 1, 1, Lh, Lw2) -> (1, G, 1, Lh, Lw2)
        return xpx.at(xf, (ALL,) * 5).multiply(xp.reshape(wf, (1, g, 1, lh, lw2)), xp=xp)
    if cg == 1 and a == 1:  # in place into the kernel spectrum (the forward's own)
        # (1, G, 1, Lh, Lw2) -> (G, 1, 1, Lh, Lw2)
        wf = xpx.at(wf, (ALL,) * 5).multiply(xp.reshape(xf, (g, 1, 1, lh, lw2)), xp=xp)
        # (G, Fg, 1, Lh, Lw2) -> (1, G, Fg, Lh, Lw2)
        return xp.reshape(wf, (1, g, fg, lh, lw2))

    def term(c: int) -> Array:
        # (A, G, 1, Lh, Lw2) * (1, G, Fg, Lh, Lw2) -> (A, G, Fg, Lh, Lw2)
        return xf[:, :, c : c + 1, ...] * xp.reshape(wf[:, :, c, ...], (1, g, fg, lh, lw2))

    y = term(0)
    for c in range(1, cg):
        y = add_at(y, (ALL,) * 5, term(c))  # one term alive at a time
    return y


def _overwrite(fft: ModuleType) -> dict[str, bool]:
    """``overwrite_x=True`` for the SciPy-style FFT modules that accept it, else nothing."""
    name = getattr(fft, "__name__", "")
    return {"overwrite_x": True} if name in ("scipy.fft", "cupyx.scipy.fft") else {}


def _inverse(yf: Array, shape: tuple[int, int], rows: slice, cols: slice, *, fft) -> Array:
    """``irfftn(yf, s=shape)[..., rows, cols]`` computing only the kept rows' last pass.

    The inverse over the rows is a complex transform of every column (in place where the
    FFT module allows; ``yf`` is consumed); the real inverse over the columns then runs on
    the kept rows only. (..., Lh, Lw2) -> (..., len(rows), len(cols)).
    """
    z = fft.ifft(yf, axis=-2, **_overwrite(fft))  # (..., Lh, Lw2)
    return fft.irfft(z[..., rows, :], n=shape[1], axis=-1)[..., cols]


def _kept(first: int, out: int, stride: int) -> slice:
    """Positions ``first + (0, s, ..., (out - 1) s)`` of a circular result: the outputs."""
    return slice(first, first + (out - 1) * stride + 1, stride)


# --------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class AxisTiles:
    """Overlap-save tiling of one axis.

    Tile ``i`` is the padded input's positions ``i * block * stride + [0, length)`` (zeros
    beyond the input) and yields the ``block`` outputs ``i * block + [0, block)``;
    ``count * block >= out``.
    """

    length: int
    block: int
    count: int


@dataclass(frozen=True)
class TilePlan:
    """Tiles of both axes; their FFT shape is ``(rows.length, cols.length)``."""

    rows: AxisTiles
    cols: AxisTiles

    @property
    def shape(self) -> tuple[int, int]:
        """FFT lengths (Th, Tw) of one tile."""
        return self.rows.length, self.cols.length

    @property
    def tiles(self) -> int:
        """Tiles per image."""
        return self.rows.count * self.cols.count


def axis_tiles(out: int, kernel: int, stride: int, length: int) -> AxisTiles:
    """The tiling of an axis of ``out`` outputs by tiles of at most ``length`` (host).

    Blocks are balanced (``ceil(out / count)`` outputs each) and each tile's length is the
    fast length of what its block needs, ``(block - 1) stride + kd``.
    """
    widest = (length - kernel) // stride + 1
    count = -(-out // widest)
    block = -(-out // count)
    return AxisTiles(
        scipy.fft.next_fast_len((block - 1) * stride + kernel, real=True), block, count
    )


def _windows(
    axis: AxisTiles, size: int, stride: int, pad_lo: int
) -> list[tuple[slice, slice] | None]:
    """Per tile: (positions in the tile, positions in the unpadded input) it copies, or None."""
    windows = []
    for i in range(axis.count):
        start = i * axis.block * stride - pad_lo  # input position of the tile's position 0
        lo, hi = max(0, start), min(size, start + axis.length)
        windows.append((slice(lo - start, hi - start), slice(lo, hi)) if lo < hi else None)
    return windows


def _tile_batch(x: Array, geom: ConvGeometry, plan: TilePlan, *, xp: ModuleType) -> Array:
    """The input's tiles as one batch: (N, C, H, W) -> (N*nth*ntw, G, Cg, Th, Tw).

    A scratch buffer keyed by the geometry and plan: the copied windows are the same at
    every call, so the positions outside the input (the padding) stay zero.
    """
    rows, cols = plan.rows, plan.cols
    shape = (geom.n, rows.count, cols.count, geom.c, rows.length, cols.length)
    tiles = scratch("fft.tiles", shape, like=x, xp=xp, key=(geom, plan))  # (N, nth, ntw, C, Th, Tw)
    (top, _), (left, _) = geom.padding
    col_windows = _windows(cols, geom.w, geom.stride[1], left)
    for i, row_window in enumerate(_windows(rows, geom.h, geom.stride[0], top)):
        for j, col_window in enumerate(col_windows):
            if row_window is None or col_window is None:
                continue
            (dst_r, src_r), (dst_c, src_c) = row_window, col_window
            tiles = set_at(tiles, (ALL, i, j, ALL, dst_r, dst_c), x[ALL, ALL, src_r, src_c])
    # (N, nth, ntw, C, Th, Tw) -> (N*nth*ntw, G, Cg, Th, Tw)
    return xp.reshape(tiles, (geom.n * plan.tiles, geom.groups, geom.cg, *plan.shape))


def _forward_tiled(x: Array, w: Array, geom: ConvGeometry, plan: TilePlan, *, xp) -> Array:
    """Overlap-save: all tiles in one batched transform, product and inverse."""
    fft = fft_module(xp)
    rows, cols = plan.rows, plan.cols
    shape = plan.shape
    xf = fft.rfftn(_tile_batch(x, geom, plan, xp=xp), s=shape, axes=AXES)  # (A, G, Cg, Th, Tw2)
    wf = _kernel_spectrum(w, geom, shape, (0, 0), xp=xp, fft=fft)  # (G, Fg, Cg, Th, Tw2)
    yf = _product(xf, wf, xp=xp)  # (A, G, Fg, Th, Tw2)
    del xf, wf
    (khd, kwd), (sh, sw) = (geom.kh_dilated, geom.kw_dilated), geom.stride
    keep_r, keep_c = _kept(khd - 1, rows.block, sh), _kept(kwd - 1, cols.block, sw)
    y = _inverse(yf, shape, keep_r, keep_c, fft=fft)  # (A, G, Fg, Bh, Bw)
    # (A, G, Fg, Bh, Bw) -> (N, nth, ntw, F, Bh, Bw)
    y = xp.reshape(y, (geom.n, rows.count, cols.count, geom.f, rows.block, cols.block))
    y = xp.permute_dims(y, (0, 3, 1, 4, 2, 5))  # (N, F, nth, Bh, ntw, Bw)
    # (N, F, nth, Bh, ntw, Bw) -> (N, F, nth*Bh, ntw*Bw)
    y = xp.reshape(y, (geom.n, geom.f, rows.count * rows.block, cols.count * cols.block))
    return xp.astype(y[..., : geom.ho, : geom.wo], x.dtype, copy=False)


# --------------------------------------------------------------------------- tile plan


@dataclass(frozen=True)
class ForwardWork:
    """What one forward call does (host arithmetic), for the tile rule and the cost model.

    ``plan``: the tiles (None untiled); ``shape``: the FFT lengths; ``transforms``:
    ``(count, share)`` per batch of 2-D transforms (the input's, the kernel's, the
    inverse), each doing ``share`` of a full real transform (the kernel's real pass covers
    its kh rows only, the inverse's the kept rows only); ``rows``: rows of the channel
    product (images times tiles), ``matmul``: whether it is a batched matrix product;
    ``copied``: elements copied (the zero-padded input or the tiles, the placed kernel
    spectrum, the assembled tiles); ``windows``: tile windows, one array operation each.
    """

    plan: TilePlan | None
    shape: tuple[int, int]
    transforms: tuple[tuple[int, float], ...]
    rows: int
    matmul: bool
    copied: int
    windows: int


def _work(geom: ConvGeometry, plan: TilePlan | None) -> ForwardWork:
    """The :class:`ForwardWork` of the untiled path (``plan=None``) or of ``plan``."""
    if plan is None:
        shape, rows, kept = forward_shape(geom), geom.n, geom.ho
        assembled = windows = 0
    else:
        shape, rows, kept = plan.shape, geom.n * plan.tiles, plan.rows.block
        assembled = geom.n * geom.f * plan.tiles * plan.rows.block * plan.cols.block
        windows = plan.tiles
    lh = shape[0]
    bins = shape[0] * (shape[1] // 2 + 1)
    # the zero-padded input (the FFT's copy, or the tiles), the placed kernel spectrum
    copied = rows * geom.c * shape[0] * shape[1] + 2 * geom.f * geom.cg * bins + assembled
    transforms = (
        (rows * geom.c, 1.0),
        (geom.f * geom.cg, 0.5 + 0.5 * min(geom.kh, lh) / lh),
        (rows * geom.f, 0.5 + 0.5 * min(kept, lh) / lh),
    )
    matmul = _use_matmul(rows, geom.cg, geom.fg)
    return ForwardWork(plan, shape, transforms, rows, matmul, copied, windows)


def forward_counts(
    geom: ConvGeometry, work: ForwardWork, costs: SpectralCosts = NUMPY_SPECTRAL
) -> Counts:
    """Operation counts (elements) of a forward doing ``work`` (``costs``: the backend's
    :class:`~.strategy.SpectralCosts`).

    Transforms: the input's, the kernel's (its real pass on kh rows only) and the inverse
    (the real pass on the kept rows only). Product: a batched complex GEMM per frequency,
    or a broadcast multiply-add per input channel (elementwise traffic). Copies: the
    zero-padded input or the tile windows, the placed kernel spectrum, the assembled tiles.
    """
    lh, lw = work.shape
    bins = lh * (lw // 2 + 1)
    a = work.rows
    total = Counts()
    for count, share in work.transforms:
        total = total + fft_counts(count, lh, lw, costs).scaled(share)
    if work.matmul:
        total = total + spectral(a, geom.cg, geom.fg, geom.groups * bins, costs)
        # frequency-major copies of both operands and the product's reordering
        total = total + traffic(4 * (a * geom.c + geom.f * geom.cg + a * geom.f) * bins, 8)
    else:
        # complex elements per output: the first term written; per further channel its
        # term written, then read with the sum and the sum written back
        per_output = 1 + 4 * (geom.cg - 1)
        total = total + traffic(2 * per_output * a * geom.f * bins, calls=2 * geom.cg)
    kernel = traffic(geom.f * geom.cg * (geom.kh * geom.kw + geom.kh * lw), calls=8)
    copies = traffic(2 * work.copied, calls=work.windows + 6)  # read and write
    return total + kernel + copies


#: Tiling is used when its predicted time is below this fraction of the untiled one.
TILE_GAIN = 0.95


def _smooth_lengths(limit: int) -> tuple[int, ...]:
    """The 5-smooth numbers up to ``limit`` (the fast real FFT lengths), ascending."""
    found = []
    p2 = 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                found.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return tuple(sorted(found))


def _axis_options(out: int, kernel: int, stride: int, limit: int) -> list[AxisTiles]:
    """Tilings of an axis by fast lengths in ``[2 kd, limit]``, one per tile count."""
    options: dict[int, AxisTiles] = {}
    for length in _smooth_lengths(limit):
        if length >= 2 * kernel:
            axis = axis_tiles(out, kernel, stride, length)
            options.setdefault(axis.count, axis)
    if not options:  # the kernel is too large to tile: one tile of the whole axis
        axis = axis_tiles(out, kernel, stride, (out - 1) * stride + kernel)
        options[axis.count] = axis
    return list(options.values())


def _closest(options: list[AxisTiles], length: int) -> AxisTiles:
    """The option whose tile length is closest to ``length``."""
    return min(options, key=lambda axis: abs(axis.length - length))


def tile_plan(
    geom: ConvGeometry, price: Callable[[Counts], float], costs: SpectralCosts = NUMPY_SPECTRAL
) -> TilePlan | None:
    """The overlap-save tiles of the forward, or None when the untiled path is predicted
    faster by ``price`` (the cost model: counts in elements -> seconds; ``costs`` as in
    :func:`forward_counts`). Each axis offers
    one tiling per tile count (:func:`_axis_options`); the pair of least predicted time is
    found by coordinate descent, and used where it beats the untiled path by
    :data:`TILE_GAIN`."""
    untiled = forward_shape(geom)
    (sh, sw), (khd, kwd) = geom.stride, (geom.kh_dilated, geom.kw_dilated)
    rows = _axis_options(geom.ho, khd, sh, untiled[0])
    cols = _axis_options(geom.wo, kwd, sw, untiled[1])

    def cost(plan: TilePlan | None) -> float:
        return price(forward_counts(geom, _work(geom, plan), costs))

    # seed: near-square tiles; then coordinate descent, rows given columns and back
    best = min((TilePlan(r, _closest(cols, r.length)) for r in rows), key=cost)
    for _ in range(2):
        best = min((TilePlan(r, best.cols) for r in rows), key=cost)
        best = min((TilePlan(best.rows, c) for c in cols), key=cost)
    if best.tiles == 1 or cost(best) >= TILE_GAIN * cost(None):
        return None
    return best


# --------------------------------------------------------------------------- forward


def _forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo), untiled: a
    circular convolution of the unpadded input with the flipped kernel placed at
    ``p - kd + 1`` (mod L) per axis, at the lengths of :func:`forward_shape`."""
    fft = fft_module(xp)
    shape = forward_shape(geom)
    # (N, C, H, W) -> (N, G, Cg, H, W)
    x5 = xp.reshape(x, (geom.n, geom.groups, geom.cg, geom.h, geom.w))
    xpad = _padded_input(x5, shape, xp=xp)
    xf = _transform_into("fft.x_spectrum", fft.rfftn, xpad, xp=xp, axes=AXES)  # (N, G, Cg, Lh, Lw2)
    (top, _), (left, _) = geom.padding
    start_r, first_r = _placement(geom.h, geom.kh_dilated, top)
    start_c, first_c = _placement(geom.w, geom.kw_dilated, left)
    # (F, Cg, kh, kw) -> (G, Fg, Cg, Lh, Lw2)
    wf = _kernel_spectrum(w, geom, shape, (start_r, start_c), xp=xp, fft=fft)
    yf = _product(xf, wf, xp=xp)  # (N, G, Fg, Lh, Lw2)
    del xf, wf
    rows, cols = _kept(first_r, geom.ho, geom.stride[0]), _kept(first_c, geom.wo, geom.stride[1])
    y = _inverse(yf, shape, rows, cols, fft=fft)  # (N, G, Fg, Ho, Wo)
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
    return xp.astype(xp.reshape(y, geom.y_shape), x.dtype, copy=False)


# --------------------------------------------------------------------------- backward


def backward_length(size: int, pad_lo: int, out: int, kernel: int, stride: int) -> int:
    """Shortest fast length at which the backward's circular products are exact, for an
    axis of ``size`` inputs (unpadded), leading padding ``pad_lo``, ``out`` outputs and a
    dilated kernel of ``kernel``.

    Notes
    -----
    With ``V = (out - 1) stride + 1`` (the upsampled gy's length): the input gradient is the
    full convolution of gy (support ``[0, V - 1]``) with the kernel, of support ``[0, V +
    kd - 2]``, of which the positions ``[p, p + size)`` are kept; the weight gradient is the
    correlation of the *unpadded* input (support ``[0, size - 1]``) with gy, of support
    ``[-(V - 1), size - 1]``, of which the lags ``[-p, kd - 1 - p]`` are kept (read modulo
    ``L``). Neither kept range receives a wrapped term, and the first lies below ``L``, when
    ``L >= size + p`` and ``L >= V + kd - 1 - p``; both are at most ``Hp``.

    Examples
    --------
    >>> backward_length(14, 2, 14, 5, 1)  # the lecture layer: 16 where Hp is 18
    16
    """
    upsampled = (out - 1) * stride + 1
    need = max(size + pad_lo, upsampled + kernel - 1 - pad_lo, 1)
    return scipy.fft.next_fast_len(need, real=True)


def fast_shape(geom: ConvGeometry) -> tuple[int, int]:
    """FFT lengths (Lh, Lw) of the backward (:func:`backward_length` per axis)."""
    (top, _), (left, _) = geom.padding
    return (
        backward_length(geom.h, top, geom.ho, geom.kh_dilated, geom.stride[0]),
        backward_length(geom.w, left, geom.wo, geom.kw_dilated, geom.stride[1]),
    )


def _set_strided(target: Array, values: Array, step: tuple[int, int]) -> Array:
    """``target[..., ::step[0], ::step[1]] = values`` through array-api-extra."""
    return xpx.at(target, (..., slice(None, None, step[0]), slice(None, None, step[1]))).set(values)


def _input_spectrum(x: Array, geom: ConvGeometry, shape: tuple[int, int], *, xp, fft) -> Array:
    """rfft of the unpadded input at the origin: (N, C, H, W) -> (N, G, Cg, Lh, Lw//2+1)."""
    # (N, C, H, W) -> (N, G, Cg, H, W)
    x5 = xp.reshape(x, (geom.n, geom.groups, geom.cg, geom.h, geom.w))
    return _transform_into("fft.x_spectrum", fft.rfftn, x5, xp=xp, s=shape, axes=AXES)


def _weight_spectrum(w: Array, geom: ConvGeometry, shape: tuple[int, int], *, xp, fft) -> Array:
    """rfft of the dilated kernel at the origin (:func:`_kernel_spectrum`, not flipped):
    (F, Cg, kh, kw) -> (G, P, Fg, Cg), frequency-major."""
    wf = _kernel_spectrum(w, geom, shape, (0, 0), xp=xp, fft=fft, flipped=False)
    wf = xp.permute_dims(wf, (1, 0, 2, 3, 4))  # (G, Fg, Cg, Lh, Lw2) -> (Fg, G, Cg, Lh, Lw2)
    return _to_freq_major(wf, xp=xp)  # (G, P, Fg, Cg)


def _lags(count: int, step: int, pad_lo: int, length: int) -> list[int]:
    """Positions ``(r step - pad_lo) mod length`` of the weight gradient's taps ``r`` in the
    circular correlation of the unpadded input with gy (:func:`backward_length`)."""
    return [(r * step - pad_lo) % length for r in range(count)]


def _column_inverse(w: Array, z: Array, placement: tuple[int, int, int, int], *, xp) -> Array:
    """The real inverse DFT of length ``L`` at the positions ``start + step q`` of
    ``placement = (L, start, step, taps)``, over a half spectrum of ``L // 2 + 1`` bins, as
    a matrix: ``x[q] = Re(sum_v E[q, v] X[v])`` with ``E[q, v] = exp(2 pi i v (start + step
    q) / L) / L``, doubled for the bins that stand for a conjugate pair (all but 0 and L/2).
    The conjugate of the cached DFT matrix (:func:`_row_dft`, ``w`` and ``z`` giving the real
    and complex dtypes) on its first rows: (taps, L // 2 + 1)."""
    length = placement[0]
    bins = length // 2 + 1
    weights = [(1.0 if v == 0 or 2 * v == length else 2.0) / length for v in range(bins)]
    scale = xp.asarray(weights, dtype=w.dtype, device=device_of(z))  # (Lw2,)
    dft = _row_dft(w, z, placement, xp=xp)[:bins, :]  # (L, taps) -> (Lw2, taps)
    return xp.matrix_transpose(xp.conj(dft)) * scale  # (taps, Lw2)


def _weight_grad_taps(
    gwf: Array, w: Array, geom: ConvGeometry, shape: tuple[int, int], *, xp, fft
) -> Array:
    """The kernel's taps of the circular correlation whose spectrum is ``gwf`` (G, P, Fg,
    Cg), in the real dtype of ``w``: (G, P, Fg, Cg) -> (G, Fg, Cg, kh, kw).

    Only ``kh`` rows and ``kw`` columns of the inverse are needed: over the rows a product
    with the conjugate DFT matrix for at most :data:`DFT_MAX_ROWS` rows (else an inverse FFT
    of every row, of which they are taken), over the columns a product with the real
    inverse's matrix at the taps' lags (:func:`_column_inverse`)."""
    (lh, lw), g = shape, geom
    lw2 = lw // 2 + 1
    (top, _), (left, _) = g.padding
    dh, dw = g.dilation
    # (G, P, Fg, Cg) -> (G, Lh, Lw2*Fg*Cg)
    z = xp.reshape(gwf, (g.groups, lh, lw2 * g.fg * g.cg))
    if g.kh <= DFT_MAX_ROWS:
        dft = _row_dft(w, z, (lh, (-top) % lh, dh, g.kh), xp=xp)  # (Lh, kh), complex
        inverse = xp.matrix_transpose(xp.conj(dft)) * (1.0 / lh)  # (kh, Lh): scaled, small
        rows = inverse @ z  # (kh, Lh) @ (G, Lh, Lw2*Fg*Cg) -> (G, kh, Lw2*Fg*Cg)
    else:
        full = fft.ifft(z, axis=-2)  # (G, Lh, Lw2*Fg*Cg)
        picks = xp.asarray(_lags(g.kh, dh, top, lh), device=device_of(gwf))
        rows = xp.take(full, picks, axis=1)  # (G, kh, Lw2*Fg*Cg)
    # (G, kh, Lw2*Fg*Cg) -> (G*kh, Lw2, Fg*Cg)
    rows = xp.reshape(rows, (g.groups * g.kh, lw2, g.fg * g.cg))
    cols = _column_inverse(w, gwf, (lw, (-left) % lw, dw, g.kw), xp=xp)  # (kw, Lw2)
    taps = xp.real(cols @ rows)  # (kw, Lw2) @ (G*kh, Lw2, Fg*Cg) -> (G*kh, kw, Fg*Cg)
    # (G*kh, kw, Fg*Cg) -> (G, kh, kw, Fg, Cg)
    taps = xp.reshape(taps, (g.groups, g.kh, g.kw, g.fg, g.cg))
    return xp.permute_dims(taps, (0, 3, 4, 1, 2))  # (G, Fg, Cg, kh, kw)


def _upsample_grad(gy: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """gy (N, F, Ho, Wo) -> (N, G, Fg, Hv, Wv) with stride-1 zeros between rows/columns."""
    # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    g = xp.reshape(gy, (geom.n, geom.groups, geom.fg, geom.ho, geom.wo))
    sh, sw = geom.stride
    if sh == sw == 1:
        return g
    hv, wv = (geom.ho - 1) * sh + 1, (geom.wo - 1) * sw + 1
    up = zeros((geom.n, geom.groups, geom.fg, hv, wv), g, xp=xp)
    return _set_strided(up, g, (sh, sw))


def _backward(gy: Array, x: Array, w: Array, geom: ConvGeometry, grads: str, *, xp):
    """Gradients ``(gx, gw)`` of ``sum(gy * y)`` (those ``grads`` names, others None):
    ``gx`` the full convolution of the upsampled ``gy`` with the dilated kernel (its rows and
    columns past the leading padding kept), ``gw`` the correlation of the unpadded input with
    the upsampled ``gy`` (its lags of the kernel's taps kept); both at the lengths of
    :func:`fast_shape`."""
    fft = fft_module(xp)
    shape = fast_shape(geom)
    lh, lw2 = shape[0], shape[1] // 2 + 1
    gy5 = _upsample_grad(gy, geom, xp=xp)  # (N, G, Fg, Hv, Wv)
    gyf = _transform_into("fft.gy_spectrum", fft.rfftn, gy5, xp=xp, s=shape, axes=AXES)
    gyf = _to_freq_major(gyf, xp=xp)  # (G, P, N, Fg)
    gx = None
    if "x" in grads:  # GX[n, g, c] = sum_f GY[n, g, f] * Wf[g, f, c]
        wf = _weight_spectrum(w, geom, shape, xp=xp, fft=fft)  # (G, P, Fg, Cg)
        gxm = _contract(gyf, wf, xp=xp)  # (G, P, N, Cg)
        # (G, P, N, Cg) -> (N, G, Cg, Lh, Lw2)
        gxf = _spectrum_from_freq_major("fft.gx_spectrum", gxm, lh, lw2, xp=xp)
        del wf, gxm
        (top, _), (left, _) = geom.padding
        rows, cols = slice(top, top + geom.h), slice(left, left + geom.w)
        gxd = _inverse(gxf, shape, rows, cols, fft=fft)  # (N, G, Cg, H, W)
        # (N, G, Cg, H, W) -> (N, C, H, W)
        gx = xp.astype(xp.reshape(gxd, geom.x_shape), x.dtype, copy=False)
    if "w" not in grads:
        return gx, None
    # weight gradient: GW[g, f, c] = sum_n conj(GY[n, g, f]) * X[n, g, c]
    xf = _to_freq_major(_input_spectrum(x, geom, shape, xp=xp, fft=fft), xp=xp)  # (G, P, N, Cg)
    gwf = _contract(xp.matrix_transpose(xp.conj(gyf)), xf, xp=xp)  # (G, P, Fg, Cg)
    gw = _weight_grad_taps(gwf, w, geom, shape, xp=xp, fft=fft)  # (G, Fg, Cg, kh, kw)
    # (G, Fg, Cg, kh, kw) -> (F, Cg, kh, kw)
    return gx, xp.astype(xp.reshape(gw, geom.w_shape), w.dtype, copy=False)


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class FFTPlan:
    """How the FFT runs a call: the forward's overlap-save tiles (None: untiled);
    ``itemsize`` that of the computation, ``upcast`` True where half-precision arrays are
    computed in float32; backward, the gradients it computes (:attr:`.strategy.Call.grads`);
    ``costs``: how its products and planes are counted on the call's backend
    (:func:`.strategy.spectral_costs`)."""

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    tiles: TilePlan | None
    upcast: bool = False
    grads: str = "xw"
    costs: SpectralCosts = NUMPY_SPECTRAL

    @property
    def rows(self) -> int:
        """Output rows per kernel call: whole samples (tiles are the kernel's own)."""
        return self.geom.ho


#: The narrowest floating type the transforms run in (bytes): half precision runs in float32.
COMPUTE_ITEMSIZE = 4


def plan(call: Call, rank: int | None = None, price: Any = None) -> FFTPlan:
    """The plan of ``call``; ``price`` (counts in bytes -> seconds) chooses the forward's
    tiles (without it the forward is untiled)."""
    g = call.geom
    size = max(call.itemsize, COMPUTE_ITEMSIZE)
    costs = spectral_costs(call.backend)
    tiles = None
    if call.direction == "forward" and price is not None:
        tiles = tile_plan(g, lambda c: price(c.in_bytes(size)), costs)
    upcast = call.itemsize < COMPUTE_ITEMSIZE
    return FFTPlan(g, call.direction, size, g.n, tiles, upcast, call.grads, costs)


def _float32(*arrays: Array, xp: ModuleType) -> tuple[Array, ...]:
    """The arrays in float32 (half precision is computed in float32)."""
    return tuple(xp.astype(a, xp.float32) for a in arrays)


def forward(p: FFTPlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo), on
    the plan's overlap-save tiles (:func:`_forward_tiled`) or untiled."""
    if p.upcast:
        return xp.astype(forward(_without_upcast(p), *_float32(x, w, xp=xp), xp=xp), x.dtype)
    if p.tiles is not None:
        return _forward_tiled(x, w, p.geom, p.tiles, xp=xp)
    return _forward(x, w, p.geom, xp=xp)


def backward(p: FFTPlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``, the gradients of ``sum(gy * y)`` (None where
    the plan leaves one out)."""
    if p.upcast:
        grads = _backward(*_float32(gy, x, w, xp=xp), p.geom, p.grads, xp=xp)
        return tuple(None if g is None else xp.astype(g, a.dtype) for g, a in zip(grads, (x, w)))
    return _backward(gy, x, w, p.geom, p.grads, xp=xp)


def _without_upcast(p: FFTPlan) -> FFTPlan:
    return FFTPlan(p.geom, p.direction, p.itemsize, p.chunk, p.tiles, grads=p.grads, costs=p.costs)


def _upcast_elements(p: FFTPlan) -> int:
    """Elements of the float32 copies of a half-precision call's arrays and results."""
    if not p.upcast:
        return 0
    g = p.geom
    x, w, y = g.n * g.c * g.h * g.w, g.f * g.cg * g.kh * g.kw, g.n * g.f * g.ho * g.wo
    return x + w + y if p.direction == "forward" else 2 * (x + w) + y


#: Elements NumPy's buffered ufunc loops (broadcasting) allocate per operand.
UFUNC_BUFFER = 8192


def _forward_elements(g: ConvGeometry, work: ForwardWork) -> int:
    """Real elements (a complex one counts 2) of the forward's largest phase, beside the
    scratch input (the tiles or the zero-padded input): the input transform; the kernel
    (its placed rows, their spectrum); the channel product (both spectra, the product and
    the per-channel term with a broadcast's buffers, or the frequency-major copies); the
    inverse (the product, its column inverse, the kept rows and their real inverse); tiled,
    that real inverse and the assembled output."""
    lh, lw = work.shape
    bins = lh * (lw // 2 + 1)
    rows, tiles = work.rows, work.plan
    kept = g.ho if tiles is None else tiles.rows.block
    padded = tiles is None and (lh, lw) != (g.h, g.w)
    scratch_input = rows * g.c * lh * lw if tiles is not None or padded else 0
    x_spec, w_spec, y_spec = 2 * rows * g.c * bins, 2 * g.f * g.cg * bins, 2 * rows * g.f * bins
    kernel = g.f * g.cg * (g.kh * lw + 2 * g.kh * (lw // 2 + 1)) + w_spec
    operands = x_spec + w_spec if work.matmul else (y_spec if g.cg > 1 else 0) + 4 * UFUNC_BUFFER
    inverse = rows * g.f * kept * lw
    kept_rows = 2 * rows * g.f * kept * (lw // 2 + 1)
    assembled = g.n * g.f * tiles.tiles * tiles.rows.block * tiles.cols.block if tiles else 0
    return scratch_input + max(
        x_spec + kernel,
        x_spec + w_spec + y_spec + operands,
        2 * y_spec + kept_rows + inverse,
        inverse + assembled,
    )


def workspace(p: FFTPlan) -> int:
    """Bytes. Forward: :func:`_forward_elements`. Backward: complex spectra at the fast
    lengths, each with its copy (gy; for gx: w, gx; for gw: x, gw), their real inverses
    and the stride-upsampled gy."""
    g, s = p.geom, p.itemsize
    if p.direction == "forward":
        return s * (_forward_elements(g, _work(g, p.tiles)) + _upcast_elements(p))
    lh, lw = fast_shape(g)
    bins = lh * (lw // 2 + 1)
    hv, wv = (g.ho - 1) * g.stride[0] + 1, (g.wo - 1) * g.stride[1] + 1
    spectra = 3 * g.n * g.f + 2 * len(p.grads) * (g.f * g.cg + g.n * g.c)
    real = g.n * g.f * hv * wv
    real += (g.n * g.c if "x" in p.grads else 0) * lh * lw
    real += (g.f * g.cg if "w" in p.grads else 0) * lh * lw
    return 2 * s * spectra * bins + s * (real + _upcast_elements(p))


def counts(p: FFTPlan) -> Counts:
    """Forward: :func:`forward_counts`. Backward: the transform of gy, the upsampled gy;
    per gradient two transforms (gx: w forward, gx inverse; gw: x forward, gw inverse; the
    kernel-sized ones on the kernel's rows), a per-frequency product and the layout copies."""
    g = p.geom
    casts = traffic(2 * _upcast_elements(p), calls=5) if p.upcast else Counts()
    if p.direction == "forward":
        return (forward_counts(g, _work(g, p.tiles), p.costs) + casts).in_bytes(p.itemsize)
    lh, lw = fast_shape(g)
    bins = lh * (lw // 2 + 1)
    nc, fc, nf = g.n * g.c, g.f * g.cg, g.n * g.f
    phases = len(p.grads)
    kernel_share = 0.5 + 0.5 * min(g.kh, lh) / lh  # a real pass on kh rows; the rows by DFT
    c = p.costs
    total = fft_counts(nf, lh, lw, c) + Counts(calls=2 + phases)
    if "w" in p.grads:  # the input's spectrum; gw's inverse on the kernel's rows
        total = total + fft_counts(nc, lh, lw, c) + fft_counts(fc, lh, lw, c).scaled(kernel_share)
    if "x" in p.grads:  # the kernel's spectrum; gx's inverse, its last pass on the kept rows
        total = total + fft_counts(fc, lh, lw, c).scaled(kernel_share)
        total = total + fft_counts(nc, lh, lw, c).scaled(0.5 + 0.5 * min(g.h, lh) / lh)
        total = total + spectral(
            g.n, g.fg, g.cg, g.groups * bins, c, matmul=_matmul(g.n, g.fg, g.cg)
        )
        total = total + traffic(2 * g.n * g.c * g.h * g.w)
    if "w" in p.grads:
        total = total + spectral(
            g.fg, g.n, g.cg, g.groups * bins, c, matmul=_matmul(g.fg, g.n, g.cg)
        )
    total = total + traffic(2 * (4 * nf + 3 * phases * (fc + nc)) * bins, calls=5 + 10 * phases)
    if g.stride != (1, 1):
        total = total + traffic(2 * nf * g.ho * g.wo * g.stride[0] * g.stride[1], calls=2)
    total = total + casts
    return total.in_bytes(p.itemsize)


STRATEGY = Strategy("fft", plan, forward, backward, workspace, counts, ("fft",), False, False)
