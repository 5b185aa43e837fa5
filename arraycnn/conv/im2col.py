"""im2col convolution: unfold the input into columns, then one GEMM per group.

The columns are built from kh·kw strided slices of the input (no fancy indexing)::

    cols[g, (c, i, j), (n, p, q)] = xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]
    y[g] = w[g] (Fg, Cg*kh*kw) @ cols[g] (Cg*kh*kw, N*Ho*Wo)

The column matrix is a scratch buffer reused across calls with the same geometry: each
tap writes only its band (the positions where it meets the input), and the rest — the
zero padding — stays zero from the allocation, so no padded copy of the input is made.

Backward reuses the columns for the weight gradient (``gy @ cols^T``). The input
gradient depends on the stride:

- stride 1 and Fg <= Cg: it is itself a stride-1 correlation, of gy with the kernel
  flipped and its channel axes swapped, padded by the kernel's extent minus the forward
  padding::

      gx = correlate(gy (N, F, Ho, Wo), flip(w)^T (C, Fg, kh, kw)),
           padding (d·(k-1) - pad_lo, d·(k-1) - pad_hi) per axis

  and runs as one more unfold + GEMM (no slice additions);
- otherwise (stride > 1, a forward padding beyond the kernel's extent, or more output
  than input channels per group, where gy's columns would outgrow the column gradient):
  the column gradient ``w^T @ gy`` is folded back onto the input with slice additions
  (col2im), one block of taps at a time (:func:`.naive.input_grad`), never held in full.

On a CPU the batch runs in chunks of samples whose columns fit in the last-level cache
(:data:`COLUMN_CHUNK_ELEMENTS`), and the forward of a large image in bands of output rows
(:func:`band_geometry`): each piece's columns are written and then read by its GEMM while
still in cache, and the column buffer stays small.
Memory beyond input and output: the columns of one chunk, G·Cg·kh·kw·n·Ho·Wo elements for
n = :func:`samples_per_chunk` (backward: also those of gy, G·Fg·kh·kw·n·H·W, or col2im's
blocks).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

from ..backend import backend_name, device_of
from ..geometry import ConvGeometry, conv_geometry
from . import naive
from ._layout import (
    ALL,
    add_at,
    fill_zero,
    grad_output_group_major,
    input_from_group_view,
    input_group_view,
    output_from_group_major,
    set_at,
    tap_bands,
    taps,
)
from .workspace import scratch

Array = Any


#: Column-buffer elements per chunk of samples (8 MiB of float32: a quarter of this
#: machine's 32 MiB L3, so the columns are still cached when the GEMM reads them).
COLUMN_CHUNK_ELEMENTS = 1 << 21
#: A batch whose columns have at most this many elements runs whole (they fit in cache).
WHOLE_BATCH_ELEMENTS = 1 << 22


def samples_per_chunk(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Samples per chunk: N if the columns fit :data:`WHOLE_BATCH_ELEMENTS` (or ``cached``
    is False: a GPU, whose GEMMs want size), else as many as fit
    :data:`COLUMN_CHUNK_ELEMENTS` (at least 1)."""
    per_sample = geom.groups * geom.cg * geom.kh * geom.kw * geom.ho * geom.wo
    if not cached or geom.n * per_sample <= WHOLE_BATCH_ELEMENTS:
        return geom.n
    return max(1, min(geom.n, COLUMN_CHUNK_ELEMENTS // max(per_sample, 1)))


def batch_chunks(geom: ConvGeometry, *, cached: bool = True) -> list[tuple[int, int]]:
    """``(start, stop)`` sample ranges of the chunks the batch runs in."""
    step = samples_per_chunk(geom, cached=cached)
    return [(start, min(start + step, geom.n)) for start in range(0, geom.n, step)]


def cache_chunked(x: Array, xp: ModuleType) -> bool:
    """True on CPU devices, where the batch runs in cache-sized chunks (not on a GPU)."""
    return backend_name(xp) != "cupy" and "cuda" not in str(device_of(x))


def unfold(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """im2col: x (N, C, H, W) -> columns (G, Cg*kh*kw, N*Ho*Wo), a scratch buffer."""
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    shape = (geom.groups, geom.cg, geom.kh * geom.kw, geom.n, geom.ho, geom.wo)
    cols = scratch("im2col.cols", shape, like=x, xp=xp, key=geom)  # (G, Cg, kh*kw, N, Ho, Wo)
    for t, band in tap_bands(geom):
        cols = set_at(cols, (ALL, ALL, t, ALL, band.out_rows, band.out_cols), xg[band.in_index(3)])
    # (G, Cg, kh*kw, N, Ho, Wo) -> (G, Cg*kh*kw, N*Ho*Wo)
    return xp.reshape(cols, (geom.groups, geom.cg * geom.kh * geom.kw, geom.n * geom.ho * geom.wo))


def _weight_matrix(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """(F, Cg, kh, kw) -> (G, Fg, Cg*kh*kw)."""
    return xp.reshape(w, (geom.groups, geom.fg, geom.cg * geom.kh * geom.kw))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo)."""
    return _correlate(x, w, geom, xp=xp)


def rows_per_band(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Output rows per forward band: Ho, unless one sample's columns exceed twice
    :data:`COLUMN_CHUNK_ELEMENTS` (a large image), then as many rows as fit it (at least 1).
    A GPU (``cached`` False) runs whole samples."""
    per_row = geom.groups * geom.cg * geom.kh * geom.kw * geom.wo
    if not cached or per_row * geom.ho <= 2 * COLUMN_CHUNK_ELEMENTS:
        return geom.ho
    return max(1, COLUMN_CHUNK_ELEMENTS // per_row)


def band_geometry(geom: ConvGeometry, start: int, stop: int) -> tuple[ConvGeometry, slice] | None:
    """One sample's output rows [start, stop) as a convolution of their input rows.

    Returns the band's geometry (N = 1, its own top and bottom padding, Ho = stop - start)
    and the input rows it reads, or None if those output rows read only padding.
    """
    stride, dilation, top = geom.stride[0], geom.dilation[0], geom.padding[0][0]
    first = start * stride - top  # input row read by the band's first tap of its first row
    end = (stop - 1) * stride - top + dilation * (geom.kh - 1) + 1
    lo, hi = max(first, 0), min(end, geom.h)
    if hi <= lo:
        return None
    band = conv_geometry(
        (1, geom.c, hi - lo, geom.w),
        geom.w_shape,
        stride=geom.stride,
        padding=((lo - first, end - hi), geom.padding[1]),
        dilation=geom.dilation,
        groups=geom.groups,
    )
    return band, slice(lo, hi)


def _correlate(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """The forward's unfold + GEMM by batch chunks or row bands (also runs gx)."""
    wm = _weight_matrix(w, geom, xp=xp)  # (G, Fg, Cg*kh*kw)
    cached = cache_chunked(x, xp)
    chunks = batch_chunks(geom, cached=cached)
    rows = rows_per_band(geom, cached=cached)
    if len(chunks) == 1 and rows == geom.ho:
        yg = wm @ unfold(x, geom, xp=xp)  # (G, Fg, N*Ho*Wo), fresh
        return output_from_group_major(yg, geom, xp=xp)
    y = xp.empty(geom.y_shape, dtype=x.dtype, device=device_of(x))  # every element written
    if rows == geom.ho:
        for start, stop in chunks:
            part = dataclasses.replace(geom, n=stop - start)
            yg = wm @ unfold(x[start:stop, ...], part, xp=xp)  # (G, Fg, n*Ho*Wo)
            chunk = output_from_group_major(yg, part, xp=xp)  # (n, F, Ho, Wo)
            y = set_at(y, (slice(start, stop), ALL, ALL, ALL), chunk)
        return y
    for sample in range(geom.n):
        for start in range(0, geom.ho, rows):
            stop = min(start + rows, geom.ho)
            where = (slice(sample, sample + 1), ALL, slice(start, stop), ALL)
            band = band_geometry(geom, start, stop)
            if band is None:
                y = set_at(y, where, 0)
                continue
            part, in_rows = band
            yg = wm @ unfold(x[sample : sample + 1, :, in_rows, :], part, xp=xp)  # (G, Fg, B*Wo)
            y = set_at(y, where, output_from_group_major(yg, part, xp=xp))
    return y


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the weights: ``gy @ cols^T``, summed over the batch chunks.

    gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw).
    """
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    per_sample = geom.ho * geom.wo
    gw = None
    for start, stop in batch_chunks(geom, cached=cache_chunked(x, xp)):
        part = dataclasses.replace(geom, n=stop - start)
        cols = unfold(x[start:stop, ...], part, xp=xp)  # (G, Cg*kh*kw, n*Ho*Wo)
        term = gyg[..., start * per_sample : stop * per_sample] @ xp.matrix_transpose(cols)
        gw = term if gw is None else gw + term  # (G, Fg, Cg*kh*kw)
    return xp.reshape(gw, geom.w_shape)  # (G, Fg, Cg*kh*kw) -> (F, Cg, kh, kw)


def transposed_geometry(geom: ConvGeometry) -> ConvGeometry | None:
    """Geometry of the input gradient as a stride-1 correlation of gy, or None.

    gy (N, F, Ho, Wo) correlated with the flipped, channel-swapped kernel (C, Fg, kh, kw)
    at padding ``d (k - 1) - pad`` per side gives (N, C, H, W). None where the forward
    stride is not 1 or a forward padding exceeds the kernel's extent ``d (k - 1)`` (the
    transposed padding would be negative); those run col2im.
    """
    if geom.stride != (1, 1):
        return None
    extent = (geom.dilation[0] * (geom.kh - 1), geom.dilation[1] * (geom.kw - 1))
    pads = tuple(
        (extent[axis] - lo, extent[axis] - hi) for axis, (lo, hi) in enumerate(geom.padding)
    )
    if min(min(pair) for pair in pads) < 0:
        return None
    return conv_geometry(
        (geom.n, geom.f, geom.ho, geom.wo),
        (geom.c, geom.fg, geom.kh, geom.kw),
        padding=pads,
        dilation=geom.dilation,
        groups=geom.groups,
    )


def uses_transposed_input_grad(geom: ConvGeometry) -> bool:
    """True where the input gradient runs as a correlation of gy (else col2im).

    That needs :func:`transposed_geometry`, and pays where gy's columns (Fg per tap) are
    no more than the column gradient col2im folds back (Cg per tap): col2im's additions
    read and write the input gradient once per tap, the unfold of gy only writes.
    """
    return geom.fg <= geom.cg and transposed_geometry(geom) is not None


def transposed_kernel(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """w (F, Cg, kh, kw) -> flipped, channel-swapped (C, Fg, kh, kw), group by group."""
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))  # (G, Fg, Cg, kh, kw)
    wt = xp.permute_dims(wg, (0, 2, 1, 3, 4))  # (G, Fg, Cg, kh, kw) -> (G, Cg, Fg, kh, kw)
    wt = xp.flip(wt, axis=(3, 4))  # tap (i, j) -> (kh-1-i, kw-1-j)
    # (G, Cg, Fg, kh, kw) -> (C, Fg, kh, kw)
    return xp.reshape(wt, (geom.c, geom.fg, geom.kh, geom.kw))


def _col2im_rows(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Stride-1 col2im over rows of the padded width: gy (N, F, Ho, Wo) -> (N, C, H, W).

    gy is laid into rows of the padded width Wp (zeros beyond Wo), so the column gradient
    ``w^T @ gy`` of tap (i, j) lands on the flattened padded input at the single offset
    ``i·dh·Wp + j·dw``: one contiguous addition per tap instead of a strided band (the
    zero columns add nothing). Stride 1 makes Hp = Ho + dh (kh - 1), Wp = Wo + dw (kw - 1).
    """
    g = geom
    ntaps, row_span = g.kh * g.kw, g.ho * g.wp
    # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    gy5 = xp.reshape(gy, (g.n, g.groups, g.fg, g.ho, g.wo))
    gy5 = xp.permute_dims(gy5, (1, 2, 0, 3, 4))  # (N, G, Fg, Ho, Wo) -> (G, Fg, N, Ho, Wo)
    frame = scratch("im2col.gy_rows", (g.groups, g.fg, g.n, g.ho, g.wp), like=gy, xp=xp, key=g)
    frame = set_at(frame, (ALL, ALL, ALL, ALL, slice(0, g.wo)), gy5)  # columns >= Wo stay 0
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh*kw)
    wt = xp.reshape(w, (g.groups, g.fg, g.cg, ntaps))
    wt = xp.permute_dims(wt, (0, 3, 2, 1))  # (G, Fg, Cg, kh*kw) -> (G, kh*kw, Cg, Fg)
    wt = xp.reshape(wt, (g.groups, ntaps * g.cg, g.fg))  # -> (G, kh*kw*Cg, Fg)
    # (G, Fg, N, Ho, Wp) -> (G, Fg, N*Ho*Wp)
    gcols = wt @ xp.reshape(frame, (g.groups, g.fg, g.n * row_span))  # (G, T*Cg, N*Ho*Wp)
    # (G, T*Cg, N*Ho*Wp) -> (G, T, Cg, N, Ho*Wp)
    gcols = xp.reshape(gcols, (g.groups, ntaps, g.cg, g.n, row_span))
    flat = g.hp * g.wp
    span = flat + g.dilation[1] * (g.kw - 1)  # the last tap's junk columns run past Hp*Wp
    acc = fill_zero(scratch("im2col.gx_rows", (g.groups, g.cg, g.n, span), like=gy, xp=xp))
    for t, (i, j) in enumerate(taps(g)):
        start = i * g.dilation[0] * g.wp + j * g.dilation[1]
        acc = add_at(acc, (ALL, ALL, ALL, slice(start, start + row_span)), gcols[:, t, ...])
    # (G, Cg, N, Hp*Wp) -> (G, Cg, N, Hp, Wp)
    gxpad = xp.reshape(acc[..., :flat], (g.groups, g.cg, g.n, g.hp, g.wp))
    top, left = g.padding[0][0], g.padding[1][0]
    return input_from_group_view(gxpad[..., top : top + g.h, left : left + g.w], g, xp=xp)


def _col2im(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """col2im of one chunk: over padded-width rows at stride 1, else naive's tap bands."""
    if geom.stride == (1, 1):
        return _col2im_rows(gy, w, geom, xp=xp)
    return naive.input_grad(gy, w, geom, xp=xp)


def input_grad(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the input: gy (N, F, Ho, Wo), w (F, Cg, kh, kw) -> (N, C, H, W).

    Unfold + GEMM on gy where :func:`uses_transposed_input_grad`; otherwise col2im by
    batch chunks (:func:`_col2im` on each, concatenated along N).
    """
    if uses_transposed_input_grad(geom):
        tgeom = transposed_geometry(geom)
        return _correlate(gy, transposed_kernel(w, geom, xp=xp), tgeom, xp=xp)
    chunks = batch_chunks(geom, cached=cache_chunked(gy, xp))
    if len(chunks) == 1:
        return _col2im(gy, w, geom, xp=xp)
    parts = [
        _col2im(gy[start:stop, ...], w, dataclasses.replace(geom, n=stop - start), xp=xp)
        for start, stop in chunks
    ]
    return xp.concat(parts, axis=0)  # chunks of (n, C, H, W) -> (N, C, H, W)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    return input_grad(gy, w, geom, xp=xp), weight_grad(gy, x, geom, xp=xp)
