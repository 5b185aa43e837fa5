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

import dataclasses
from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from ._layout import (
    ALL,
    TapBand,
    add_at,
    cache_chunked,
    fill_zero,
    grad_output_group_major,
    input_from_group_view,
    input_group_view,
    output_from_group_view,
    ranges,
    set_at,
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


def samples_per_chunk(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Samples per chunk of the batch: N where the accumulator and one tap's slice
    ((F + C)·Ho·Wo per sample) fit im2col's whole-batch size, else as many as fit its
    chunk size (at least 1); N on a GPU (``cached`` False). See
    :data:`arraycnn.conv.im2col.COLUMN_CHUNK_ELEMENTS`."""
    from . import im2col

    per_sample = (geom.f + geom.c) * geom.ho * geom.wo
    if not cached or geom.n * per_sample <= im2col.WHOLE_BATCH_ELEMENTS:
        return geom.n
    return max(1, min(geom.n, im2col.COLUMN_CHUNK_ELEMENTS // max(per_sample, 1)))


def batch_chunks(geom: ConvGeometry, *, cached: bool = True) -> list[tuple[int, int]]:
    """``(start, stop)`` sample ranges the batch runs in (:func:`samples_per_chunk`)."""
    return ranges(geom.n, samples_per_chunk(geom, cached=cached))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo).

    With one input channel per group (single-channel images, depthwise layers) the
    contraction over channels is a broadcast product, not a GEMM with K = 1. On a CPU a
    large batch runs in chunks whose accumulator stays in cache (:func:`batch_chunks`).
    """
    chunks = batch_chunks(geom, cached=cache_chunked(x, xp))
    if len(chunks) == 1:
        return _forward(x, w, geom, xp=xp)
    parts = [_forward(x[a:b, ...], w, dataclasses.replace(geom, n=b - a), xp=xp) for a, b in chunks]
    return xp.concat(parts, axis=0)  # chunks of (n, F, Ho, Wo) -> (N, F, Ho, Wo)


def _forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """:func:`forward` on one chunk of samples."""
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    wg = weight_by_group(w, geom, xp=xp)  # (G, Fg, Cg, kh, kw)
    shape = (geom.groups, geom.fg, geom.n, geom.ho, geom.wo)
    yg = fill_zero(scratch("naive.y", shape, like=x, xp=xp), xp=xp)  # (G, Fg, N, Ho, Wo)
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
        yg = add_at(yg, band.out_index(3), term, xp=xp)
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


def _tap_blocks(geom: ConvGeometry) -> list[tuple[tuple[int, TapBand], ...]]:
    """Consecutive taps grouped so each group has >= MIN_BLOCK_ROWS column-gradient rows."""
    per_block = max(1, -(-MIN_BLOCK_ROWS // geom.cg))
    bands = tap_bands(geom)
    return [bands[k : k + per_block] for k in range(0, len(bands), per_block)]


def _tap_weights(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """w (F, Cg, kh, kw) -> (G, kh*kw, Cg, Fg): per tap, the transposed channel matrix."""
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh*kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh * geom.kw))
    return xp.permute_dims(wg, (0, 3, 2, 1))  # (G, Fg, Cg, kh*kw) -> (G, kh*kw, Cg, Fg)


def _block_weights(wt: Array, first: int, last: int, geom: ConvGeometry, *, xp) -> Array:
    """Taps [first, last) of wt (G, kh*kw, Cg, Fg) as one GEMM operand (G, T*Cg, Fg)."""
    # (G, T, Cg, Fg) -> (G, T*Cg, Fg) for the block's T = last - first taps
    return xp.reshape(wt[:, first:last, ...], (geom.groups, (last - first) * geom.cg, geom.fg))


def _input_grad_bands(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """col2im by tap bands (any stride): each tap's rows added onto the inputs it read."""
    wt = _tap_weights(w, geom, xp=xp)  # (G, kh*kw, Cg, Fg)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    shape = (geom.groups, geom.cg, geom.n, geom.h, geom.w)
    gxg = fill_zero(scratch("naive.gx", shape, like=gy, xp=xp), xp=xp)  # (G, Cg, N, H, W)
    for block in _tap_blocks(geom):
        first, last = block[0][0], block[-1][0] + 1
        gcols = _block_weights(wt, first, last, geom, xp=xp) @ gyg  # (G, T*Cg, N*Ho*Wo)
        # (G, T*Cg, N*Ho*Wo) -> (G, T, Cg, N, Ho, Wo)
        gcols = xp.reshape(gcols, (geom.groups, last - first, geom.cg, geom.n, geom.ho, geom.wo))
        for t, band in block:
            rows = gcols[:, t - first, ...][band.out_index(3)]  # (G, Cg, N, h, w)
            gxg = add_at(gxg, band.in_index(3), rows, xp=xp)
    return input_from_group_view(gxg, geom, xp=xp)


def _input_grad_rows(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Stride-1 col2im over rows of the padded width.

    gy is laid into rows of the padded width Wp (zeros beyond Wo), so the column-gradient
    rows of tap (i, j) land on the flattened padded input at the single offset
    ``i·dh·Wp + j·dw``: one contiguous addition per tap instead of a strided band (the
    zero columns add nothing). Stride 1 makes Hp = Ho + dh (kh - 1), Wp = Wo + dw (kw - 1).
    """
    g = geom
    row_span = g.ho * g.wp
    # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    gy5 = xp.reshape(gy, (g.n, g.groups, g.fg, g.ho, g.wo))
    gy5 = xp.permute_dims(gy5, (1, 2, 0, 3, 4))  # (N, G, Fg, Ho, Wo) -> (G, Fg, N, Ho, Wo)
    frame = scratch("naive.gy_rows", (g.groups, g.fg, g.n, g.ho, g.wp), like=gy, xp=xp, key=g)
    frame = set_at(frame, (ALL, ALL, ALL, ALL, slice(0, g.wo)), gy5, xp=xp)  # columns >= Wo stay 0
    # (G, Fg, N, Ho, Wp) -> (G, Fg, N*Ho*Wp)
    frame = xp.reshape(frame, (g.groups, g.fg, g.n * row_span))
    wt = _tap_weights(w, g, xp=xp)  # (G, kh*kw, Cg, Fg)
    flat = g.hp * g.wp
    span = flat + g.dilation[1] * (g.kw - 1)  # the last tap's zero columns run past Hp*Wp
    acc = fill_zero(scratch("naive.gx_rows", (g.groups, g.cg, g.n, span), like=gy, xp=xp), xp=xp)
    for block in _tap_blocks(g):
        first, last = block[0][0], block[-1][0] + 1
        gcols = _block_weights(wt, first, last, g, xp=xp) @ frame  # (G, T*Cg, N*Ho*Wp)
        # (G, T*Cg, N*Ho*Wp) -> (G, T, Cg, N, Ho*Wp)
        gcols = xp.reshape(gcols, (g.groups, last - first, g.cg, g.n, row_span))
        for t in range(first, last):
            i, j = divmod(t, g.kw)
            start = i * g.dilation[0] * g.wp + j * g.dilation[1]
            where = (ALL, ALL, ALL, slice(start, start + row_span))
            acc = add_at(acc, where, gcols[:, t - first, ...], xp=xp)
    # (G, Cg, N, Hp*Wp) -> (G, Cg, N, Hp, Wp)
    gxpad = xp.reshape(acc[..., :flat], (g.groups, g.cg, g.n, g.hp, g.wp))
    top, left = g.padding[0][0], g.padding[1][0]
    return input_from_group_view(gxpad[..., top : top + g.h, left : left + g.w], g, xp=xp)


#: Narrowest output rows for which the input gradient adds padded-width rows: below it the
#: frame copy and the Wp/Wo extra GEMM columns cost more than the bands' short additions
#: (measured here: 64x32x14x14 3x3 5.8 ms by bands against 10.4 by rows; 8x3x224x224 46
#: against 30).
ROWS_MIN_WIDTH = 32


def uses_rows(geom: ConvGeometry) -> bool:
    """True where :func:`input_grad` adds padded-width rows (stride 1, Wo >= ROWS_MIN_WIDTH)."""
    return geom.stride == (1, 1) and geom.wo >= ROWS_MIN_WIDTH


def input_grad(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the input: gy (N, F, Ho, Wo), w (F, Cg, kh, kw) -> (N, C, H, W).

    col2im by blocks of taps: for a block, the rows of the column gradient
    ``w[..., taps, :]^T @ gy`` are computed with one GEMM and each tap's rows are added
    onto the input positions that tap read -- over rows of the padded width where
    :func:`uses_rows` (:func:`_input_grad_rows`, one contiguous addition per tap),
    otherwise band by band.
    The full column gradient is never held.
    """
    if uses_rows(geom):
        return _input_grad_rows(gy, w, geom, xp=xp)
    return _input_grad_bands(gy, w, geom, xp=xp)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``, by batch chunks on a CPU
    (:func:`batch_chunks`: gx concatenated along N, gw summed)."""
    chunks = batch_chunks(geom, cached=cache_chunked(x, xp))
    if len(chunks) == 1:
        return input_grad(gy, w, geom, xp=xp), weight_grad(gy, x, geom, xp=xp)
    gx_parts, gw = [], None
    for a, b in chunks:
        part = dataclasses.replace(geom, n=b - a)
        gx_parts.append(input_grad(gy[a:b, ...], w, part, xp=xp))
        term = weight_grad(gy[a:b, ...], x[a:b, ...], part, xp=xp)
        gw = term if gw is None else gw + term
    return xp.concat(gx_parts, axis=0), gw  # chunks of (n, C, H, W) -> (N, C, H, W)
