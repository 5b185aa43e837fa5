"""Direct convolution: a sum over the kh·kw kernel taps of strided slices.

For each tap (i, j), the input is sliced at the rows and columns that tap meets (basic
slicing only) and contracted over the group's input channels with one GEMM::

    y[g, f, n, p, q] = sum_{i, j} sum_c w[g, f, c, i, j] * xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]

No padded copy of the input is made: a tap only touches its *band*, the output positions
where it falls inside the input (zero padding contributes nothing). The accumulator is a
reused scratch buffer; the result returned is a fresh array.
Memory beyond input and output: one tap slice and one tap product, each at most
(G, max(Cg, Fg), N*Ho*Wo).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from ._layout import (
    TapBand,
    add_at,
    fill_zero,
    grad_output_group_major,
    input_from_group_view,
    input_group_view,
    output_from_group_view,
    tap_bands,
    weight_by_group,
    weight_from_group,
    zeros,
)
from .workspace import scratch

Array = Any


def _band_matrix(a5: Array, band: TapBand, *, at_output: bool, xp: ModuleType) -> Array:
    """Band of a group-major (A, B, N, rows, cols) array as a matrix (A, B, N*h*w)."""
    h, w = band.out_shape()
    part = a5[band.out_index(3) if at_output else band.in_index(3)]  # (A, B, N, h, w)
    # (A, B, N, h, w) -> (A, B, N*h*w)
    return xp.reshape(part, (a5.shape[0], a5.shape[1], a5.shape[2] * h * w))


def grad_output_5d(gy: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """gy (N, F, Ho, Wo) -> contiguous group-major (G, Fg, N, Ho, Wo)."""
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    # (G, Fg, N*Ho*Wo) -> (G, Fg, N, Ho, Wo)
    return xp.reshape(gyg, (geom.groups, geom.fg, geom.n, geom.ho, geom.wo))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo).

    With one input channel per group (single-channel images, depthwise layers) the
    contraction over channels is a broadcast product, not a GEMM with K = 1.
    """
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    wg = weight_by_group(w, geom, xp=xp)  # (G, Fg, Cg, kh, kw)
    shape = (geom.groups, geom.fg, geom.n, geom.ho, geom.wo)
    yg = fill_zero(scratch("naive.y", shape, like=x, xp=xp))  # (G, Fg, N, Ho, Wo)
    for t, band in tap_bands(geom):
        i, j = divmod(t, geom.kw)
        h, w_ = band.out_shape()
        if geom.cg == 1:
            # (G, Fg, 1, 1, 1) * (G, 1, N, h, w) -> (G, Fg, N, h, w)
            term = wg[:, :, :, i, j][..., None, None] * xg[band.in_index(3)]
        else:
            term = wg[..., i, j] @ _band_matrix(xg, band, at_output=False, xp=xp)  # (G, Fg, N*h*w)
            # (G, Fg, N*h*w) -> (G, Fg, N, h, w)
            term = xp.reshape(term, (geom.groups, geom.fg, geom.n, h, w_))
        yg = add_at(yg, band.out_index(3), term)
    return output_from_group_view(yg, geom, xp=xp)


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the weights: gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw)."""
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    gyg = grad_output_5d(gy, geom, xp=xp)  # (G, Fg, N, Ho, Wo)
    per_tap = {
        t: _band_matrix(gyg, band, at_output=True, xp=xp)  # (G, Fg, N*h*w)
        @ xp.matrix_transpose(_band_matrix(xg, band, at_output=False, xp=xp))  # (G, N*h*w, Cg)
        for t, band in tap_bands(geom)
    }
    untouched = zeros((geom.groups, geom.fg, geom.cg), gy, xp=xp)  # taps that only meet padding
    gwg = xp.stack([per_tap.get(t, untouched) for t in range(geom.kh * geom.kw)], axis=-1)
    # (G, Fg, Cg, kh*kw) -> (G, Fg, Cg, kh, kw)
    gwg = xp.reshape(gwg, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    return weight_from_group(gwg, geom, xp=xp)


#: Column-gradient rows computed per GEMM in :func:`input_grad` (taps are grouped so that
#: each GEMM has at least this many rows: thin GEMMs re-read gy once per tap).
MIN_BLOCK_ROWS = 64


def _tap_blocks(geom: ConvGeometry) -> list[list[tuple[int, TapBand]]]:
    """Consecutive taps grouped so each group has >= MIN_BLOCK_ROWS column-gradient rows."""
    per_block = max(1, -(-MIN_BLOCK_ROWS // geom.cg))
    bands = tap_bands(geom)
    return [bands[k : k + per_block] for k in range(0, len(bands), per_block)]


def input_grad(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the input: gy (N, F, Ho, Wo), w (F, Cg, kh, kw) -> (N, C, H, W).

    col2im by blocks of taps: for a block, the rows of the column gradient
    ``w[..., taps, :]^T @ gy`` are computed with one GEMM and each tap's rows are added
    onto the input positions that tap read. The full column gradient is never held.
    """
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh*kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh * geom.kw))
    wt = xp.permute_dims(wg, (0, 3, 2, 1))  # (G, kh*kw, Cg, Fg)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    shape = (geom.groups, geom.cg, geom.n, geom.h, geom.w)
    gxg = fill_zero(scratch("naive.gx", shape, like=gy, xp=xp))  # (G, Cg, N, H, W)
    for block in _tap_blocks(geom):
        first, last = block[0][0], block[-1][0] + 1
        # (G, T, Cg, Fg) -> (G, T*Cg, Fg) for the block's T = last - first taps
        w_block = xp.reshape(
            wt[:, first:last, ...], (geom.groups, (last - first) * geom.cg, geom.fg)
        )
        gcols = w_block @ gyg  # (G, T*Cg, N*Ho*Wo)
        # (G, T*Cg, N*Ho*Wo) -> (G, T, Cg, N, Ho, Wo)
        gcols = xp.reshape(gcols, (geom.groups, last - first, geom.cg, geom.n, geom.ho, geom.wo))
        for t, band in block:
            rows = gcols[:, t - first, ...][band.out_index(3)]  # (G, Cg, N, h, w)
            gxg = add_at(gxg, band.in_index(3), rows)
    return input_from_group_view(gxg, geom, xp=xp)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    return input_grad(gy, w, geom, xp=xp), weight_grad(gy, x, geom, xp=xp)
