"""Compiled tile transforms for Winograd on NumPy arrays (numba, optional).

NumPy runs each of Winograd's transforms (:mod:`arraycnn.conv.winograd`) as gathers of the
tiles' rows and columns into scratch slabs and small matrix products over them: four or
five passes over arrays several times the input's size. These loops transform one tile
at a time instead, its intermediate rows in a small buffer, on arrays whose last axis is
the batch times the channels (channels last): every loop runs over that axis,
contiguous, whatever the tile sizes.

Each output is the same sum of products as the matrix product it replaces (every
coefficient taken, zeros included), summed in another order.

Used where numba is installed (``pip install "arraycnn[numba]"``), for float32 and float64
NumPy arrays (:func:`arraycnn.conv.winograd.uses_compiled`); ``ARRAYCNN_NUMBA=0`` turns
them off. numba is imported on the first call that uses them, never by ``import arraycnn``;
the compiled loops are cached on disk (numba's ``cache=True``). docs/performance.md has
the measurements.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["tile_transform", "untile_transform"]

#: Floating-point freedoms the loops allow: fused multiply-add and reordered sums (NaN and
#: infinity keep their meaning; no ``fastmath=True``).
_FASTMATH = {"contract", "reassoc"}
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, boundscheck=False)


@_jit
def _two_terms(dst, first, src0, src1, c0, c1):  # pragma: no cover - compiled
    """``dst[q] (=|+=) c0 · src0[q] + c1 · src1[q]`` (assigned where ``first``; 1-D)."""
    if first:
        for q in range(dst.shape[0]):
            dst[q] = c0 * src0[q] + c1 * src1[q]
    else:
        for q in range(dst.shape[0]):
            dst[q] += c0 * src0[q] + c1 * src1[q]


@_jit
def _one_term(dst, first, src0, c0):  # pragma: no cover - compiled
    """``dst[q] (=|+=) c0 · src0[q]`` (assigned where ``first``; 1-D)."""
    if first:
        for q in range(dst.shape[0]):
            dst[q] = c0 * src0[q]
    else:
        for q in range(dst.shape[0]):
            dst[q] += c0 * src0[q]


@_jit
def _sum_rows(dst, table, base, step, coef):  # pragma: no cover - compiled
    """``dst = sum over i of coef[i] · table[base + i·step]`` (table 2-D, its rows as long
    as ``dst``), two terms per loop."""
    k = coef.shape[0]
    for i in range(0, k - 1, 2):
        first, second = table[base + i * step], table[base + (i + 1) * step]
        _two_terms(dst, i == 0, first, second, coef[i], coef[i + 1])
    if k % 2:
        _one_term(dst, k == 1, table[base + (k - 1) * step], coef[k - 1])


@_jit
def _tile(src, b_h, b_w, step_h, step_w, out):  # pragma: no cover - compiled
    """``out[(a, b), ti, tj] = sum over i, j of b_h[a, i] b_w[b, j]
    src[ti·step_h + i, tj·step_w + j]``: src (Eh, Ew, L), b_h (alpha_h, kh), b_w
    (alpha_w, kw), out (alpha_h alpha_w, Th, Tw, L)."""
    eh, ew, length = src.shape
    ah, aw, kw = b_h.shape[0], b_w.shape[0], b_w.shape[1]
    th, tw = out.shape[1], out.shape[2]
    points = src.reshape(eh * ew, length)  # (Eh, Ew, L) -> (Eh Ew, L)
    rows = np.empty((ah * kw, length), dtype=out.dtype)  # B_h over the tile's rows
    for ti in range(th):
        for tj in range(tw):
            corner = ti * step_h * ew + tj * step_w
            for a in range(ah):
                for j in range(kw):
                    _sum_rows(rows[a * kw + j], points, corner + j, ew, b_h[a])
            for a in range(ah):
                for b in range(aw):
                    _sum_rows(out[a * aw + b, ti, tj], rows, a * kw, 1, b_w[b])


@_jit
def _untile(m, a_h, a_w, out):  # pragma: no cover - compiled
    """``out[ti·mh + a, tj·mw + b] = sum over i, j of a_h[a, i] a_w[b, j] m[(i, j), ti,
    tj]`` where inside ``out``: m (alpha_h alpha_w, Th, Tw, L), a_h (mh, alpha_h), a_w (mw,
    alpha_w), out (Ho, Wo, L) with Ho <= Th mh, Wo <= Tw mw."""
    positions, th, tw, length = m.shape
    mh, mw, aw = a_h.shape[0], a_w.shape[0], a_w.shape[1]
    ho, wo = out.shape[0], out.shape[1]
    points = m.reshape(positions * th * tw, length)  # (A, Th, Tw, L) -> (A Th Tw, L)
    rows = np.empty((mh * aw, length), dtype=out.dtype)  # A_h over the tile's rows
    for ti in range(th):
        for tj in range(tw):
            for a in range(mh):
                for b in range(aw):
                    first = (b * th + ti) * tw + tj  # m[(0, b), ti, tj]; i steps aw Th Tw rows
                    _sum_rows(rows[a * aw + b], points, first, aw * th * tw, a_h[a])
            for a in range(min(mh, ho - ti * mh)):
                for b in range(min(mw, wo - tj * mw)):
                    _sum_rows(out[ti * mh + a, tj * mw + b], rows, a * aw, 1, a_w[b])


def tile_transform(
    src: np.ndarray, b_h: np.ndarray, b_w: np.ndarray, step: tuple[int, int], out: np.ndarray
) -> np.ndarray:
    """``B_h tile B_w^T`` of every tile of ``src`` (Eh, Ew, L), tile (ti, tj) the kh x kw
    block at row ``ti·step[0]``, column ``tj·step[1]``, into ``out`` (alpha_h alpha_w, Th,
    Tw, L), which is returned. b_h (alpha_h, kh) and b_w (alpha_w, kw) have src's dtype;
    all arrays C-contiguous and in native byte order."""
    _tile(src, b_h, b_w, step[0], step[1], out)
    return out


def untile_transform(
    m: np.ndarray, a_h: np.ndarray, a_w: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """``A_h M A_w^T`` of every tile of ``m`` (alpha_h alpha_w, Th, Tw, L), assembled into
    ``out`` (Ho, Wo, L) (the tiles' outputs past Ho, Wo dropped), which is returned."""
    _untile(m, a_h, a_w, out)
    return out
