"""Direct convolution: a sum over the kh·kw kernel taps of strided slices.

For each tap (i, j), the input is sliced at the rows and columns that tap meets (basic
slicing only) and contracted over the group's input channels with one GEMM::

    y[g, f, n, p, q] = sum_{i, j} sum_c w[g, f, c, i, j] * xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]

No padded copy of the input is made: a tap only touches its *band*, the output positions
where it falls inside the input (zero padding contributes nothing). The accumulator is a
reused scratch buffer; the result returned is a fresh array.
Memory beyond input and output: one tap slice and one tap product, each at most
(G, max(Cg, Fg), N*Ho*Wo).

Depthwise layers (one input channel per group, few outputs per group, stride 1:
:func:`uses_depthwise`) skip the group-major reorder and the GEMMs: the input is laid into
zero-padded rows of the padded width Wp, so tap (i, j) reads one contiguous run of the
flattened frame at the offset ``i·dh·Wp + j·dw``, and each tap is a broadcast
multiply-add by a per-channel weight (:func:`_depthwise_forward`); the input gradient
adds gy's rows onto such a frame the same way, and the weight gradient is one
:func:`vecdot` per tap.

On NumPy, where numba is installed, depthwise layers of any stride run compiled loops
instead (:func:`uses_compiled`, :mod:`._numba_depthwise`): one pass per block of 3 x 3 taps
where the array operations make two per tap.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from ..scratch import scratch
from ..settings import register_cache
from ._layout import (
    ALL,
    TapBands,
    add_at,
    cache_chunk,
    fill_zero,
    grad_output_group_major,
    input_from_group_view,
    input_group_view,
    output_from_group_view,
    set_at,
    tap_bands,
    zeros,
)
from .strategy import Call, Counts, Strategy, gemm, traffic

Array = Any


def _matrix(part: Array, *, xp: ModuleType) -> Array:
    """A band of a group-major array as a matrix: (A, B, N, h, w) -> (A, B, N*h*w)."""
    a, b, n, h, w = part.shape
    return xp.reshape(part, (a, b, n * h * w))


def samples_per_chunk(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Samples per kernel call (:func:`._layout.cache_chunk`) for the accumulator and one
    tap's slice, (F + C)·Ho·Wo elements per sample; on the depthwise path
    (:func:`uses_depthwise`) the input frame, the accumulator and one tap's product,
    (C·(Hp + 1) + 2·F·Ho)·Wp."""
    if uses_depthwise(geom):
        per_sample = (geom.c * (geom.hp + 1) + 2 * geom.f * geom.ho) * geom.wp
        return cache_chunk(geom.n, per_sample, cached=cached)
    return cache_chunk(geom.n, (geom.f + geom.c) * geom.ho * geom.wo, cached=cached)


def _forward(x: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo).

    With one input channel per group (single-channel images, depthwise layers) the
    contraction over channels is a broadcast product, not a GEMM with K = 1.
    """
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    shape = (geom.groups, geom.fg, geom.n, geom.ho, geom.wo)
    yg = fill_zero(scratch("naive.y", shape, like=x, xp=xp), xp=xp)  # (G, Fg, N, Ho, Wo)
    for t, out_rows, out_cols, in_rows, in_cols in bands:
        i, j = divmod(t, geom.kw)
        xin = xg[..., in_rows, in_cols]  # (G, Cg, N, h, w)
        if geom.cg == 1:
            term = wg[:, :, :, i, j][..., None, None] * xin  # (G, Fg, 1, 1, 1) * (G, 1, N, h, w)
        else:
            term = wg[..., i, j] @ _matrix(xin, xp=xp)  # (G, Fg, Cg) @ (G, Cg, N*h*w)
            # (G, Fg, N*h*w) -> (G, Fg, N, h, w)
            term = xp.reshape(term, (geom.groups, geom.fg, *xin.shape[2:]))
        yg = add_at(yg, (ALL, ALL, ALL, out_rows, out_cols), term, xp=xp)
    return output_from_group_view(yg, geom, xp=xp)


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Gradient w.r.t. the weights: gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw)."""
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo), contiguous
    # (G, Fg, N*Ho*Wo) -> (G, Fg, N, Ho, Wo)
    gyg = xp.reshape(gyg, (geom.groups, geom.fg, geom.n, geom.ho, geom.wo))
    per_tap = {
        t: _matrix(gyg[..., out_rows, out_cols], xp=xp)  # (G, Fg, N*h*w)
        @ xp.matrix_transpose(_matrix(xg[..., in_rows, in_cols], xp=xp))  # (G, N*h*w, Cg)
        for t, out_rows, out_cols, in_rows, in_cols in bands
    }
    untouched = zeros((geom.groups, geom.fg, geom.cg), gy, xp=xp)  # taps that only meet padding
    gwg = xp.stack([per_tap.get(t, untouched) for t in range(geom.kh * geom.kw)], axis=-1)
    return xp.reshape(gwg, geom.w_shape)  # (G, Fg, Cg, kh*kw) -> (F, Cg, kh, kw)


#: Column-gradient rows computed per GEMM in :func:`input_grad` (taps are grouped so that
#: each GEMM has at least this many rows: thin GEMMs re-read gy once per tap).
MIN_BLOCK_ROWS = 64


def _tap_blocks(geom: ConvGeometry, bands: TapBands) -> list[list[tuple[Any, ...]]]:
    """The taps of ``bands`` grouped, consecutively, so that each group has at least
    MIN_BLOCK_ROWS column-gradient rows."""
    per_block = max(1, -(-MIN_BLOCK_ROWS // geom.cg))
    taps = list(bands)
    return [taps[k : k + per_block] for k in range(0, len(taps), per_block)]


def _tap_weights(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """w (F, Cg, kh, kw) -> (G, kh*kw, Cg, Fg): per tap, the transposed channel matrix."""
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh*kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh * geom.kw))
    return xp.permute_dims(wg, (0, 3, 2, 1))  # (G, Fg, Cg, kh*kw) -> (G, kh*kw, Cg, Fg)


def _block_weights(wt: Array, first: int, last: int, geom: ConvGeometry, *, xp) -> Array:
    """Taps [first, last) of wt (G, kh*kw, Cg, Fg) as one GEMM operand (G, T*Cg, Fg)."""
    # (G, T, Cg, Fg) -> (G, T*Cg, Fg) for the block's T = last - first taps
    return xp.reshape(wt[:, first:last, ...], (geom.groups, (last - first) * geom.cg, geom.fg))


def _column_grads(weights: Array, grads: Array, geom: ConvGeometry) -> Array:
    """``weights`` (G, T*Cg, Fg) @ ``grads`` (G, Fg, M) -> (G, T*Cg, M); with one output
    channel per group (Fg = 1) a broadcast product: a matrix product with K = 1 does not
    reach BLAS on NumPy and runs several times slower (docs/performance.md)."""
    return weights @ grads if geom.fg > 1 else weights * grads


def _input_grad_bands(gy: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """col2im by tap bands (any stride): each tap's rows added onto the inputs it read."""
    wt = _tap_weights(w, geom, xp=xp)  # (G, kh*kw, Cg, Fg)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    shape = (geom.groups, geom.cg, geom.n, geom.h, geom.w)
    gxg = fill_zero(scratch("naive.gx", shape, like=gy, xp=xp), xp=xp)  # (G, Cg, N, H, W)
    for block in _tap_blocks(geom, bands):
        first, last = block[0][0], block[-1][0] + 1
        gcols = _column_grads(_block_weights(wt, first, last, geom, xp=xp), gyg, geom)
        # gcols: (G, T*Cg, N*Ho*Wo)
        # (G, T*Cg, N*Ho*Wo) -> (G, T, Cg, N, Ho, Wo)
        gcols = xp.reshape(gcols, (geom.groups, last - first, geom.cg, geom.n, geom.ho, geom.wo))
        for t, out_rows, out_cols, in_rows, in_cols in block:
            rows = gcols[:, t - first, :, :, out_rows, out_cols]  # (G, Cg, N, h, w)
            gxg = add_at(gxg, (ALL, ALL, ALL, in_rows, in_cols), rows, xp=xp)
    return input_from_group_view(gxg, geom, xp=xp)


def _input_grad_rows(gy: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
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
    for block in _tap_blocks(g, bands):
        first, last = block[0][0], block[-1][0] + 1
        gcols = _column_grads(_block_weights(wt, first, last, g, xp=xp), frame, g)
        # gcols: (G, T*Cg, N*Ho*Wp)
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
#: frame copy and the extra GEMM columns cost more than the bands' short additions
#: (docs/performance.md).
ROWS_MIN_WIDTH = 32


def uses_rows(geom: ConvGeometry) -> bool:
    """True where :func:`input_grad` adds padded-width rows (stride 1, Wo >= ROWS_MIN_WIDTH)."""
    return geom.stride == (1, 1) and geom.wo >= ROWS_MIN_WIDTH


def input_grad(gy: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Gradient w.r.t. the input: gy (N, F, Ho, Wo), w (F, Cg, kh, kw) -> (N, C, H, W).

    col2im by blocks of taps: for a block, the rows of the column gradient
    ``w[..., taps, :]^T @ gy`` are computed with one GEMM and each tap's rows are added
    onto the input positions that tap read -- over rows of the padded width where
    :func:`uses_rows` (:func:`_input_grad_rows`, one contiguous addition per tap),
    otherwise band by band.
    The full column gradient is never held.
    """
    if uses_rows(geom):
        return _input_grad_rows(gy, w, geom, bands, xp=xp)
    return _input_grad_bands(gy, w, geom, bands, xp=xp)


# --------------------------------------------------------------------------- depthwise

#: Most output channels per group (channel multiplier) the depthwise path takes: its input
#: gradient makes one elementwise pass per output channel and tap, where the blocked GEMM
#: of :func:`input_grad` reads gy once per block of taps.
DEPTHWISE_MAX_MULTIPLIER = 4


def uses_depthwise(geom: ConvGeometry) -> bool:
    """True where naive runs the depthwise path: Cg = 1, Fg <= DEPTHWISE_MAX_MULTIPLIER,
    stride 1 (a tap is then one contiguous run of the padded-width frame)."""
    return geom.cg == 1 and geom.fg <= DEPTHWISE_MAX_MULTIPLIER and geom.stride == (1, 1)


def _frame_rows(g: ConvGeometry) -> int:
    """Rows of the padded-width frames: Hp, and one more for the last taps' run past the
    bottom right corner (they read at most dw·(kw - 1) < Wp elements beyond Hp·Wp)."""
    return g.hp + 1


def _tap_start(g: ConvGeometry, t: int) -> int:
    """Offset of tap t = i·kw + j in a flattened padded-width frame: i·dh·Wp + j·dw."""
    i, j = divmod(t, g.kw)
    return i * g.dilation[0] * g.wp + j * g.dilation[1]


def _depthwise_input_frame(x: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """x (N, C, H, W) zero-padded into a scratch frame, flattened: (N, G, 1, (Hp+1)*Wp).

    Only the interior is written; the padding stays zero from the allocation (the frame
    is keyed by the geometry)."""
    shape = (g.n, g.c, _frame_rows(g), g.wp)
    frame = scratch("naive.dw_x", shape, like=x, xp=xp, key=g)  # (N, C, Hp+1, Wp)
    top, left = g.padding[0][0], g.padding[1][0]
    frame = set_at(frame, (ALL, ALL, slice(top, top + g.h), slice(left, left + g.w)), x, xp=xp)
    # (N, C, Hp+1, Wp) -> (N, G, 1, (Hp+1)*Wp), C = G
    return xp.reshape(frame, (g.n, g.groups, 1, _frame_rows(g) * g.wp))


def _depthwise_grad_frame(gy: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """gy (N, F, Ho, Wo) in rows of the padded width (zeros beyond Wo), flattened:
    (N, G, Fg, Ho*Wp), a scratch buffer keyed by the geometry."""
    shape = (g.n, g.groups, g.fg, g.ho, g.wp)
    frame = scratch("naive.dw_gy", shape, like=gy, xp=xp, key=g)  # (N, G, Fg, Ho, Wp)
    gy5 = xp.reshape(gy, (g.n, g.groups, g.fg, g.ho, g.wo))  # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    frame = set_at(frame, (ALL, ALL, ALL, ALL, slice(0, g.wo)), gy5, xp=xp)
    # (N, G, Fg, Ho, Wp) -> (N, G, Fg, Ho*Wp)
    return xp.reshape(frame, (g.n, g.groups, g.fg, g.ho * g.wp))


def _depthwise_taps(w: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """w (F, 1, kh, kw) -> (G, Fg, kh*kw): per channel, its outputs' taps."""
    return xp.reshape(w, (g.groups, g.fg, g.kh * g.kw))


def _depthwise_forward(x: Array, w: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """Depthwise forward (:func:`uses_depthwise`): x (N, C, H, W), w (F, 1, kh, kw) ->
    (N, F, Ho, Wo), one broadcast multiply-add per tap over the padded-width rows."""
    frame = _depthwise_input_frame(x, g, xp=xp)  # (N, G, 1, (Hp+1)*Wp)
    wt = _depthwise_taps(w, g, xp=xp)  # (G, Fg, kh*kw)
    span = g.ho * g.wp
    acc = None  # (N, G, Fg, Ho*Wp), fresh: the first tap's product
    for t in range(g.kh * g.kw):
        start = _tap_start(g, t)
        # (G, Fg, 1) * (N, G, 1, Ho*Wp) -> (N, G, Fg, Ho*Wp)
        term = wt[:, :, t : t + 1] * frame[..., start : start + span]
        acc = term if acc is None else add_at(acc, (ALL,) * 4, term, xp=xp)
    # (N, G, Fg, Ho*Wp) -> (N, F, Ho, Wp)
    y = xp.reshape(acc, (g.n, g.f, g.ho, g.wp))
    return y if g.wp == g.wo else xp.asarray(y[..., : g.wo], copy=True)


def _depthwise_input_grad(gy: Array, w: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """Depthwise input gradient: gy (N, F, Ho, Wo), w (F, 1, kh, kw) -> (N, C, H, W).

    Each tap adds ``w[:, tap] * gy`` (summed over a channel's Fg outputs), laid in rows of
    the padded width, onto the flattened padded input at the tap's offset; the padding is
    cropped at the end."""
    gyf = _depthwise_grad_frame(gy, g, xp=xp)  # (N, G, Fg, Ho*Wp)
    wt = _depthwise_taps(w, g, xp=xp)  # (G, Fg, kh*kw)
    span = g.ho * g.wp
    shape = (g.n, g.groups, _frame_rows(g) * g.wp)
    acc = fill_zero(scratch("naive.dw_gx", shape, like=gy, xp=xp), xp=xp)  # (N, G, (Hp+1)*Wp)
    for t in range(g.kh * g.kw):
        where = (ALL, ALL, slice(_tap_start(g, t), _tap_start(g, t) + span))
        for k in range(g.fg):
            # (G, 1) * (N, G, Ho*Wp) -> (N, G, Ho*Wp)
            acc = add_at(acc, where, wt[:, k, t : t + 1] * gyf[:, :, k, :], xp=xp)
    # (N, G, (Hp+1)*Wp) -> (N, C, Hp+1, Wp), C = G
    gxpad = xp.reshape(acc, (g.n, g.c, _frame_rows(g), g.wp))
    top, left = g.padding[0][0], g.padding[1][0]
    return xp.asarray(gxpad[..., top : top + g.h, left : left + g.w], copy=True)


def _depthwise_weight_grad(gy: Array, x: Array, g: ConvGeometry, *, xp: ModuleType) -> Array:
    """Depthwise weight gradient: gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, 1, kh, kw).

    Per tap, one :func:`vecdot` of gy's padded-width rows (zeros beyond Wo) with the
    input frame's run at the tap's offset, summed over the batch."""
    gyf = _depthwise_grad_frame(gy, g, xp=xp)  # (N, G, Fg, Ho*Wp)
    frame = _depthwise_input_frame(x, g, xp=xp)  # (N, G, 1, (Hp+1)*Wp)
    span = g.ho * g.wp
    per_tap = []
    for t in range(g.kh * g.kw):
        start = _tap_start(g, t)
        # (N, G, Fg, Ho*Wp) . (N, G, 1, Ho*Wp) -> (N, G, Fg) -> (G, Fg)
        per_tap.append(xp.sum(xp.vecdot(gyf, frame[..., start : start + span]), axis=0))
    gwg = xp.stack(per_tap, axis=-1)  # (G, Fg, kh*kw)
    return xp.reshape(gwg, g.w_shape)  # (G, Fg, kh*kw) -> (F, 1, kh, kw)


def depthwise_elements(g: ConvGeometry, direction: str) -> int:
    """Workspace elements of the depthwise path: the input frame and the tap products;
    backward also gy's frame, and the input gradient's frame or one tap's dot products."""
    frame = g.n * g.c * _frame_rows(g) * g.wp
    rows = g.n * g.f * g.ho * g.wp
    if direction == "forward":
        return frame + 2 * rows + g.n * g.f * g.ho * g.wo
    return frame + rows + max(2 * frame + g.n * g.c * g.h * g.w, g.n * g.f * g.kh * g.kw)


def depthwise_counts(g: ConvGeometry, direction: str, grads: str = "xw") -> Counts:
    """Elementwise counts of the depthwise path (no GEMM): per tap a broadcast product and
    an addition over the padded-width rows; the frames' copies; backward, per tap and output
    channel of a group the input gradient's product and addition, and the weight gradient's
    dot products (read twice)."""
    taps = g.kh * g.kw
    frame = g.n * g.c * _frame_rows(g) * g.wp
    rows = g.n * g.f * g.ho * g.wp
    inputs = g.n * g.c * g.h * g.w
    fill = traffic(inputs + frame, calls=2)
    if direction == "forward":
        per_tap = traffic(5 * rows, calls=3)
        return fill + per_tap.scaled(taps) + traffic(2 * g.n * g.f * g.ho * g.wo, calls=2)
    total = traffic(2 * g.n * g.f * g.ho * g.wo + rows, calls=3)
    if "x" in grads:
        per_tap = traffic(5 * g.n * g.c * g.ho * g.wp, calls=3).scaled(g.fg)
        total = total + traffic(3 * frame, calls=4) + per_tap.scaled(taps)
    if "w" in grads:
        total = total + fill + traffic(2 * rows + g.f * g.n, calls=3).scaled(taps)
    return total


# --------------------------------------------------------------------------- compiled

#: ``ARRAYCNN_NUMBA=0`` keeps depthwise layers on NumPy's array operations where numba is
#: installed (read on first use; :func:`arraycnn.clear_caches` reads it again).
ENV_NUMBA = "ARRAYCNN_NUMBA"
#: dtypes the compiled loops take (others run the array operations).
COMPILED_DTYPES = ("float32", "float64")
#: The compiled loops' costs, in GEMM flops at the shipped NumPy rate (9.7 ps each), fitted
#: on 12 depthwise layers x 3 directions (3x3 to 11x11, strides 1 and 2; within -35 % and
#: +25 % of the measured times, docs/performance.md): a tap's multiply-add at one position
#: of a pass (16 ps) ...
COMPILED_TAP_FLOPS = 1.7
#: ... a block's pass over one position, the accumulator read and written (197 ps) ...
COMPILED_PASS_FLOPS = 20.0
#: ... an element copied into a frame or out of the accumulator (186 ps, counted twice) ...
COMPILED_COPY_FLOPS = 19.0
#: ... the weight gradient's multiply-add in a tap's dot product (60 ps) and its copies
#: (165 ps): the fit's 84 and 235 ps over 1.4, the speed-up its loops gained when their
#: two dot products came to share one (measured side by side, 1.3-1.5x) ...
COMPILED_DOT_FLOPS = 6.2
COMPILED_DOT_COPY_FLOPS = 17.0
#: ... and a tap's multiply-add row by row (column dilation: short rows that do not
#: vectorize, about 0.8 ns).
COMPILED_ROW_FLOPS = 80.0

_compiled: dict[str, ModuleType | None] = {}
register_cache(_compiled.clear)


def compiled_switched_off() -> bool:
    """True where ``ARRAYCNN_NUMBA`` is 0 (or false, no, off)."""
    return os.environ.get(ENV_NUMBA, "").strip().lower() in ("0", "false", "no", "off")


def _import_compiled(name: str) -> ModuleType:
    """The compiled module ``name``: "depthwise" (:mod:`._numba_depthwise`) or "winograd"
    (:mod:`._numba_winograd`, Winograd's tile transforms)."""
    if name == "depthwise":
        from . import _numba_depthwise as module
    elif name == "winograd":
        from . import _numba_winograd as module
    else:
        raise ValueError(f"no compiled module {name!r}")
    return module


def _load_compiled(name: str) -> ModuleType | None:
    """The compiled module ``name`` (:func:`_import_compiled`), or None: numba not
    installed, ``ARRAYCNN_NUMBA=0``, or numba installed but failing to import (reported
    as a RuntimeWarning)."""
    if compiled_switched_off():
        return None
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        return _import_compiled(name)
    except Exception as exc:  # an installed numba that cannot load (e.g. NumPy too new)
        warnings.warn(
            f"arraycnn: numba is installed but does not load ({exc!r}); its compiled "
            f"loops are off, depthwise layers and Winograd's transforms run on NumPy's "
            f"array operations (set {ENV_NUMBA}=0 to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def compiled_kernels(name: str = "depthwise") -> ModuleType | None:
    """The compiled loops ``name`` (:func:`_import_compiled`; by default the depthwise
    ones) where they can run, else None; decided once per process (until
    :func:`arraycnn.clear_caches`)."""
    if name not in _compiled:
        _compiled[name] = _load_compiled(name)
    return _compiled[name]


def uses_compiled(geom: ConvGeometry, backend: str, dtype: str) -> bool:
    """True where naive runs the compiled depthwise loops: NumPy arrays of float32 or
    float64, one input channel per group, Fg <= DEPTHWISE_MAX_MULTIPLIER (any stride,
    dilation and padding), and numba available (:func:`compiled_kernels`)."""
    return (
        backend == "numpy"
        and dtype in COMPILED_DTYPES
        and geom.cg == 1
        and geom.fg <= DEPTHWISE_MAX_MULTIPLIER
        and compiled_kernels() is not None
    )


def _passes(kh: int, kw: int) -> int:
    """Blocks of up to 3 x 3 taps: one pass each."""
    return -(-kh // 3) * -(-kw // 3)


def _correlation_costs(
    g: ConvGeometry, planes: int, out_hw: tuple[int, int], in_hw: tuple[int, int],
    stride: tuple[int, int],
) -> float:  # fmt: skip
    """GEMM-flop equivalents of one compiled correlation of ``g``'s kernel: ``planes``
    input planes of ``in_hw`` copied into frames, each correlated into an output plane of
    ``out_hw`` at ``stride`` -- flattened (stride 1, column dilation 1), over the image's
    phases (another stride, dilation 1) or row by row."""
    ho, wo = out_hw
    taps = g.kh * g.kw
    copies = 2 * planes * (in_hw[0] * in_hw[1] + ho * wo)
    if stride == (1, 1) and g.dilation[1] == 1:
        positions = planes * ho * (wo + g.dilation[1] * (g.kw - 1))
        passes = _passes(g.kh, g.kw)
    elif g.dilation == (1, 1):
        sh, sw = stride
        positions = planes * ho * (wo + -(-g.kw // sw) - 1)
        phases = [(len(range(a, g.kh, sh)), len(range(b, g.kw, sw))) for a in range(sh)
                  for b in range(sw)]  # fmt: skip
        passes = sum(_passes(h, w) for h, w in phases if h and w)
    else:
        return taps * planes * ho * wo * COMPILED_ROW_FLOPS + copies * COMPILED_COPY_FLOPS
    return (
        taps * positions * COMPILED_TAP_FLOPS
        + passes * positions * COMPILED_PASS_FLOPS
        + copies * COMPILED_COPY_FLOPS
    )


def _weight_grad_costs(g: ConvGeometry) -> float:
    """GEMM-flop equivalents of the compiled weight gradient: a dot product per tap over
    gy's frame in rows of the padded width (stride 1, column dilation 1) or of the phases'
    width (another stride, dilation 1), else row by row."""
    planes = g.n * g.f
    copies = 2 * planes * (g.h * g.w + g.ho * g.wo)
    taps = g.kh * g.kw
    if g.stride == (1, 1) and g.dilation[1] == 1:
        width = g.wp
    elif g.dilation == (1, 1):
        width = g.wo + -(-g.kw // g.stride[1]) - 1
    else:
        return taps * planes * g.ho * g.wo * COMPILED_ROW_FLOPS + copies * COMPILED_COPY_FLOPS
    return taps * planes * g.ho * width * COMPILED_DOT_FLOPS + copies * COMPILED_DOT_COPY_FLOPS


def compiled_counts(g: ConvGeometry, direction: str, grads: str = "xw") -> Counts:
    """Counts of the compiled loops (elements, not bytes): their measured costs as GEMM
    flops (:data:`COMPILED_TAP_FLOPS` and the constants after it), three calls each."""
    if direction == "forward":
        flops = _correlation_costs(g, g.n * g.f, (g.ho, g.wo), (g.h, g.w), g.stride)
        return Counts(gemm_flops=flops, calls=3)
    flops = 0.0
    if "x" in grads:  # the transposed correlation: stride 1 over gy upsampled by the stride
        upsampled = (g.ho * g.stride[0], g.wo * g.stride[1])
        flops += _correlation_costs(g, g.n * g.f, (g.h, g.w), upsampled, (1, 1))
    if "w" in grads:
        flops += _weight_grad_costs(g)
    return Counts(gemm_flops=flops, calls=3 * len(grads))


def compiled_elements(g: ConvGeometry, direction: str) -> int:
    """Workspace elements of the compiled loops, a few planes whatever the batch (an upper
    bound): the zero frames (or the image's phases), a zero row as large and the
    accumulator; backward also gy's frame and a row of partial sums per tap."""
    frame = (max(g.hp, g.h * g.stride[0] + g.dilation[0] * g.kh) + 4 * g.dilation[0]) * max(
        g.wp, g.w * g.stride[1] + g.dilation[1] * g.kw
    )
    planes = 3 * frame
    if direction == "forward":
        return planes
    return planes + (g.kh * g.kw + 1) * g.ho * g.wp


def _compiled_forward(x: Array, w: Array, g: ConvGeometry) -> Array:
    """The compiled depthwise forward (:func:`uses_compiled`)."""
    return compiled_kernels().forward(x, w, g)


def _compiled_input_grad(gy: Array, w: Array, g: ConvGeometry) -> Array:
    """The compiled depthwise input gradient (:func:`uses_compiled`)."""
    return compiled_kernels().input_grad(gy, w, g)


def _compiled_weight_grad(gy: Array, x: Array, g: ConvGeometry) -> Array:
    """The compiled depthwise weight gradient (:func:`uses_compiled`)."""
    return compiled_kernels().weight_grad(gy, x, g)


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class NaivePlan:
    """How naive runs a call: the samples per kernel call it prefers and its tap bands;
    backward, the gradients it computes (:attr:`.strategy.Call.grads`)."""

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    bands: TapBands
    grads: str = "xw"
    compiled: bool = False

    @property
    def rows(self) -> int:
        """Output rows per kernel call: whole samples."""
        return self.geom.ho


def plan(call: Call, rank: int | None = None, price: Any = None) -> NaivePlan:
    """The plan of ``call``: the whole batch, or cache-sized chunks of it on a CPU; the
    compiled loops (:func:`uses_compiled`) take the whole batch (their temporaries are a
    few planes)."""
    g = call.geom
    if uses_compiled(g, call.backend, call.dtype):
        return NaivePlan(g, call.direction, call.itemsize, g.n, (), call.grads, compiled=True)
    chunk = samples_per_chunk(g, cached=call.cached)
    return NaivePlan(g, call.direction, call.itemsize, chunk, tap_bands(g), call.grads)


def forward(p: NaivePlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    if p.compiled:
        return _compiled_forward(x, w, p.geom)
    if uses_depthwise(p.geom):
        return _depthwise_forward(x, w, p.geom, xp=xp)
    return _forward(x, w, p.geom, p.bands, xp=xp)


def backward(p: NaivePlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``, the gradients of ``sum(gy * y)`` (None where
    the plan leaves one out)."""
    g = p.geom
    if p.compiled:
        gx = _compiled_input_grad(gy, w, g) if "x" in p.grads else None
        return gx, _compiled_weight_grad(gy, x, g) if "w" in p.grads else None
    if uses_depthwise(g):
        gx = _depthwise_input_grad(gy, w, g, xp=xp) if "x" in p.grads else None
    else:
        gx = input_grad(gy, w, g, p.bands, xp=xp) if "x" in p.grads else None
    return gx, weight_gradient(gy, x, g, p.bands, xp=xp) if "w" in p.grads else None


def weight_gradient(gy: Array, x: Array, g: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """naive's weight gradient (also separable's): gy (N, F, Ho, Wo), x (N, C, H, W) ->
    (F, Cg, kh, kw), on the depthwise path where it applies (:func:`uses_depthwise`)."""
    if uses_depthwise(g):
        return _depthwise_weight_grad(gy, x, g, xp=xp)
    return weight_grad(gy, x, g, bands, xp=xp)


def weight_gradient_elements(g: ConvGeometry) -> int:
    """Workspace elements of :func:`weight_gradient`."""
    return depthwise_elements(g, "backward") if uses_depthwise(g) else weight_grad_elements(g)


def weight_gradient_counts(g: ConvGeometry) -> Counts:
    """Counts of :func:`weight_gradient` (elements, not bytes)."""
    return depthwise_counts(g, "backward", "w") if uses_depthwise(g) else weight_grad_counts(g)


def taps_per_block(g: ConvGeometry) -> int:
    """Taps whose column-gradient rows :func:`input_grad` computes in one GEMM."""
    return min(g.kh * g.kw, max(1, -(-MIN_BLOCK_ROWS // g.cg)))


def input_grad_elements(g: ConvGeometry) -> int:
    """Workspace elements of :func:`input_grad`: reordered gy, the accumulator, two blocks
    of column-gradient rows (the next computed while the last is held) and gx.

    Over padded-width rows (:func:`uses_rows`): gy's frame (F·N·Ho·Wp), the flat padded
    accumulator and blocks of N·Ho·Wp columns; otherwise blocks of N·Ho·Wo columns.
    """
    inputs = g.n * g.c * g.h * g.w
    if uses_rows(g):
        rows = g.n * g.ho * g.wp
        span = g.n * g.c * (g.hp * g.wp + g.dilation[1] * (g.kw - 1))
        return g.f * rows + span + 2 * taps_per_block(g) * g.c * rows + inputs
    cols = g.n * g.ho * g.wo
    return g.f * cols + inputs + 2 * taps_per_block(g) * g.c * cols + inputs


def weight_grad_elements(g: ConvGeometry) -> int:
    """Workspace elements of :func:`weight_grad`: reordered gy, one tap's bands, the taps."""
    cols = g.n * g.ho * g.wo
    return 2 * g.f * cols + g.c * cols + 2 * g.kh * g.kw * g.f * g.cg


def workspace(p: NaivePlan) -> int:
    """Bytes: the (G, Fg, N, Ho, Wo) accumulator, one tap's input band and its product;
    backward the larger of its phases (they run one after the other)."""
    g = p.geom
    if p.compiled:
        return p.itemsize * compiled_elements(g, p.direction)
    if uses_depthwise(g):
        return p.itemsize * depthwise_elements(g, p.direction)
    cols = g.n * g.ho * g.wo
    if p.direction == "forward":
        return p.itemsize * (g.c * cols + 2 * g.f * cols)
    phases = {"x": input_grad_elements, "w": weight_grad_elements}
    return p.itemsize * max(phases[name](g) for name in p.grads)


def input_grad_counts(g: ConvGeometry) -> Counts:
    """Reorder gy; per block of taps one GEMM (T·Cg x Fg x columns); per tap add its rows
    onto the input; zero the accumulator, reorder it into gx (elements, not bytes)."""
    taps = g.kh * g.kw
    per_block = taps_per_block(g)
    blocks = -(-taps // per_block)
    inputs = g.n * g.c * g.h * g.w
    if uses_rows(g):
        rows = g.n * g.ho * g.wp
        return (
            traffic(2 * g.f * g.n * g.ho * g.wo, calls=3)
            + traffic(g.n * g.c * g.hp * g.wp)
            + gemm(per_block * g.cg, g.fg, rows, g.groups).scaled(blocks)
            + traffic(3 * g.c * rows).scaled(taps)
            + traffic(2 * inputs, calls=3)
        )
    cols = g.n * g.ho * g.wo
    return (
        traffic(2 * g.f * cols, calls=3)
        + traffic(inputs)
        + gemm(per_block * g.cg, g.fg, cols, g.groups).scaled(blocks)
        + traffic(3 * g.c * cols, calls=3).scaled(taps)
        + traffic(2 * inputs, calls=2)
    )


def weight_grad_counts(g: ConvGeometry) -> Counts:
    """Reorder gy; per tap copy the gy and x bands, GEMM with K = N·Ho·Wo; stack the taps."""
    cols = g.n * g.ho * g.wo
    taps = g.kh * g.kw
    per_tap = traffic(2 * (g.f + g.c) * cols, calls=4) + gemm(g.fg, cols, g.cg, g.groups)
    return traffic(2 * g.f * cols, calls=3) + per_tap.scaled(taps) + traffic(2 * taps * g.f * g.cg)


def counts(p: NaivePlan) -> Counts:
    """Forward: zero the accumulator; per tap a band copy and a GEMM with K = Cg (with one
    channel per group a broadcast product), then accumulate; reorder the output."""
    g = p.geom
    if p.compiled:
        return compiled_counts(g, p.direction, p.grads).in_bytes(p.itemsize)
    if uses_depthwise(g):
        return depthwise_counts(g, p.direction, p.grads).in_bytes(p.itemsize)
    if p.direction == "backward":
        phases = {"x": input_grad_counts, "w": weight_grad_counts}
        return sum((phases[name](g) for name in p.grads), Counts()).in_bytes(p.itemsize)
    cols = g.n * g.ho * g.wo
    if g.cg == 1:
        product = traffic(g.f * cols + g.c * cols, calls=2)
    else:
        product = traffic(2 * g.c * cols, calls=2) + gemm(g.fg, g.cg, cols, g.groups)
    per_tap = product + traffic(3 * g.f * cols, calls=3)
    total = traffic(g.f * cols, calls=2) + per_tap.scaled(g.kh * g.kw) + traffic(2 * g.f * cols, 3)
    return total.in_bytes(p.itemsize)


STRATEGY = Strategy("naive", plan, forward, backward, workspace, counts)
