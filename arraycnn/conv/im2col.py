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
  the column gradient ``w^T @ gy`` is folded back onto the input (col2im), one block of
  taps at a time (:func:`.naive.input_grad`: at stride 1 one contiguous addition per tap
  over rows of the padded width), never held in full.

On a CPU the plan asks for batch chunks whose columns fit in the last-level cache
(:func:`samples_per_chunk`, run by the dispatcher) and cuts a large image into bands of
output rows (:func:`row_pieces`): each piece's columns are written, then read by its GEMM
while still in cache. Memory beyond input and output: one piece's columns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from types import ModuleType
from typing import Any

from ..backend import device_of
from ..geometry import ConvGeometry, conv_geometry, row_band
from ..scratch import scratch
from . import naive
from ._layout import (
    ALL,
    COLUMN_CHUNK_ELEMENTS,
    TapBands,
    cache_chunk,
    grad_output_group_major,
    input_group_view,
    output_from_group_major,
    ranges,
    set_at,
    tap_bands,
)
from .strategy import Call, Counts, Strategy, gemm, traffic

Array = Any


def samples_per_chunk(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Samples per kernel call (:func:`._layout.cache_chunk`) for the columns,
    G·Cg·kh·kw·Ho·Wo elements per sample."""
    per_sample = geom.groups * geom.cg * geom.kh * geom.kw * geom.ho * geom.wo
    return cache_chunk(geom.n, per_sample, cached=cached)


def rows_per_band(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Output rows per band: Ho, unless one sample's columns exceed twice
    :data:`COLUMN_CHUNK_ELEMENTS` (a large image), then as many rows as fit it (at least 1).
    A GPU (``cached`` False) runs whole samples."""
    per_row = geom.groups * geom.cg * geom.kh * geom.kw * geom.wo
    if not cached or per_row * geom.ho <= 2 * COLUMN_CHUNK_ELEMENTS:
        return geom.ho
    return max(1, COLUMN_CHUNK_ELEMENTS // per_row)


@dataclass(frozen=True)
class Piece:
    """Output rows run as one unfold + GEMM: its own geometry (None where its rows read
    only padding), the input rows it reads and its tap bands."""

    out_rows: slice
    in_rows: slice
    geom: ConvGeometry | None
    bands: TapBands | None = None


def row_pieces(geom: ConvGeometry, rows: int) -> tuple[Piece, ...]:
    """The whole call as one piece, or its bands of ``rows`` output rows
    (:func:`arraycnn.geometry.row_band`) when one sample's columns are large
    (:func:`rows_per_band`)."""
    if rows >= geom.ho:
        return (Piece(slice(0, geom.ho), slice(0, geom.h), geom, tap_bands(geom)),)
    result, known = [], {}  # interior bands share one geometry: their taps are found once
    for start, stop in ranges(geom.ho, rows):
        band = row_band(geom, start, stop)
        part, in_rows = band if band is not None else (None, slice(0, 0))
        if part is not None and part not in known:
            known[part] = tap_bands(part)
        result.append(Piece(slice(start, stop), in_rows, part, known.get(part)))
    return tuple(result)


def unfold(x: Array, geom: ConvGeometry, bands: TapBands, *, xp: ModuleType) -> Array:
    """im2col: x (N, C, H, W) -> columns (G, Cg*kh*kw, N*Ho*Wo), a scratch buffer."""
    xg = input_group_view(x, geom, xp=xp)  # (G, Cg, N, H, W)
    shape = (geom.groups, geom.cg, geom.kh * geom.kw, geom.n, geom.ho, geom.wo)
    cols = scratch("im2col.cols", shape, like=x, xp=xp, key=geom)  # (G, Cg, kh*kw, N, Ho, Wo)
    for t, out_rows, out_cols, in_rows, in_cols in bands:
        cols = set_at(
            cols, (ALL, ALL, t, ALL, out_rows, out_cols), xg[..., in_rows, in_cols], xp=xp
        )
    # (G, Cg, kh*kw, N, Ho, Wo) -> (G, Cg*kh*kw, N*Ho*Wo)
    return xp.reshape(cols, (geom.groups, geom.cg * geom.kh * geom.kw, geom.n * geom.ho * geom.wo))


def _correlate(x: Array, w: Array, geom: ConvGeometry, parts: tuple[Piece, ...], *, xp) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo), piece by
    piece (the forward, and the input gradient's transposed correlation).

    ``w`` is made a contiguous (G, Fg, Cg*kh*kw) copy (w is small): a flipped w (as
    ``convolve2d`` passes) would otherwise be a view with negative strides, which NumPy's
    matmul cannot pass to BLAS.
    """
    wm = xp.reshape(w, (geom.groups, geom.fg, geom.cg * geom.kh * geom.kw), copy=True)
    if len(parts) == 1:
        yg = wm @ unfold(x, geom, parts[0].bands, xp=xp)  # (G, Fg, N*Ho*Wo), fresh
        return output_from_group_major(yg, geom, xp=xp)
    y = xp.empty(geom.y_shape, dtype=x.dtype, device=device_of(x))  # every element written
    for piece in parts:
        where = (ALL, ALL, piece.out_rows, ALL)
        if piece.geom is None:
            y = set_at(y, where, 0, xp=xp)
            continue
        cols = unfold(x[:, :, piece.in_rows, :], piece.geom, piece.bands, xp=xp)  # (G, K, P)
        y = set_at(y, where, output_from_group_major(wm @ cols, piece.geom, xp=xp), xp=xp)
    return y


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, parts: tuple[Piece, ...], *, xp) -> Array:
    """Gradient w.r.t. the weights: ``gy @ cols^T``, summed over the pieces.

    gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw).
    """
    gw = None
    for piece in parts:
        if piece.geom is None:  # rows that read only padding contribute nothing
            continue
        gyp = grad_output_group_major(gy[:, :, piece.out_rows, :], piece.geom, xp=xp)
        cols = unfold(x[:, :, piece.in_rows, :], piece.geom, piece.bands, xp=xp)  # (G, K, P)
        term = gyp @ xp.matrix_transpose(cols)  # (G, Fg, P) @ (G, P, Cg*kh*kw)
        gw = term if gw is None else gw + term  # (G, Fg, Cg*kh*kw)
    if gw is None:  # every output row read only padding
        return xp.zeros(geom.w_shape, dtype=x.dtype, device=device_of(x))
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
    # (G, Cg, Fg, kh, kw) -> (C, Fg, kh, kw); made contiguous by _correlate
    return xp.reshape(wt, (geom.c, geom.fg, geom.kh, geom.kw))


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class Im2colPlan:
    """How im2col runs a call: samples per kernel call and output rows per band of the
    forward; backward, the input gradient's transposed correlation (its geometry and rows
    per band) or, without one, col2im.

    The pieces and tap bands that execution needs are derived once per plan, on first use
    (pricing needs only the row counts, and a large image has hundreds of bands).
    """

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    rows: int  # output rows per band of the forward (Ho: whole samples)
    grad_geom: ConvGeometry | None = None
    grad_rows: int = 0  # the same for the transposed correlation (0: col2im)

    @cached_property
    def pieces(self) -> tuple[Piece, ...]:
        """The forward's pieces (:func:`row_pieces`)."""
        return row_pieces(self.geom, self.rows)

    @cached_property
    def grad_pieces(self) -> tuple[Piece, ...]:
        """The transposed correlation's pieces (empty: col2im)."""
        return row_pieces(self.grad_geom, self.grad_rows) if self.grad_geom is not None else ()

    @cached_property
    def bands(self) -> TapBands:
        """The tap bands of col2im."""
        return tap_bands(self.geom)


def plan(call: Call, rank: int | None = None, price: Any = None, *, rows: int = 0) -> Im2colPlan:
    """The plan of ``call``: cache-sized batch chunks and row bands on a CPU (``rows``:
    output rows per band instead of :func:`rows_per_band`'s). A band of a larger call
    (``call.banded``) cuts its input gradient's transposed correlation into pieces of at
    most its own output rows, so that its workspace shrinks with the band."""
    g, cached = call.geom, call.cached
    p = Im2colPlan(
        g,
        call.direction,
        call.itemsize,
        samples_per_chunk(g, cached=cached),
        min(g.ho, rows or rows_per_band(g, cached=cached)),
    )
    if call.direction == "forward" or not uses_transposed_input_grad(g):
        return p
    t = transposed_geometry(g)
    grad_rows = min(t.ho, rows or rows_per_band(t, cached=cached))
    if call.banded:
        grad_rows = min(grad_rows, g.ho)
    return replace(p, grad_geom=t, grad_rows=grad_rows)


def forward(p: Im2colPlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    return _correlate(x, w, p.geom, p.pieces, xp=xp)


def backward(p: Im2colPlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``, the gradients of ``sum(gy * y)``.

    gx is the transposed correlation of gy where the plan has its pieces, otherwise
    col2im (:func:`.naive.input_grad`).
    """
    g = p.geom
    if p.grad_geom is not None:
        wt = transposed_kernel(w, g, xp=xp)
        gx = _correlate(gy, wt, p.grad_geom, p.grad_pieces, xp=xp)
    else:
        gx = naive.input_grad(gy, w, g, p.bands, xp=xp)
    return gx, weight_grad(gy, x, g, p.pieces, xp=xp)


def _column_elements(g: ConvGeometry, rows: int) -> tuple[int, int]:
    """Elements of one piece's columns and of its GEMM result."""
    cols = g.n * min(rows, g.ho) * g.wo
    return g.c * g.kh * g.kw * cols, g.f * cols


def workspace(p: Im2colPlan) -> int:
    """Bytes: one piece's columns G·Cg·kh·kw·N·B·Wo and its GEMM result. Backward: gy's
    reordering and the columns, then the input gradient: the transposed correlation's
    columns and result, or naive's col2im phase."""
    g = p.geom
    columns, result = _column_elements(g, p.rows)
    if p.direction == "forward":
        return p.itemsize * (columns + result)
    if p.grad_geom is not None:
        tcols, tresult = _column_elements(p.grad_geom, p.grad_rows)
        input_phase = tcols + tresult
    else:
        input_phase = naive.input_grad_elements(g)
    return p.itemsize * (g.f * g.n * g.ho * g.wo + columns + input_phase)


def _pieces_count(g: ConvGeometry, rows: int) -> int:
    return -(-g.ho // rows)  # ceil(Ho / rows)


def _unfold_counts(g: ConvGeometry) -> Counts:
    """The columns: kh·kw band copies into a reused buffer."""
    taps = g.kh * g.kw
    return traffic(2 * taps * g.c * g.n * g.ho * g.wo, calls=2 * taps + 2)


def _forward_counts(g: ConvGeometry, rows: int) -> Counts:
    """Unfold, one GEMM with K = Cg·kh·kw, reorder; each piece pays its own array calls."""
    cols = g.n * g.ho * g.wo
    total = (
        _unfold_counts(g)
        + gemm(g.fg, g.cg * g.kh * g.kw, cols, g.groups)
        + traffic(2 * g.f * cols, calls=3)
    )
    return total + Counts(calls=(3 + 2 * g.kh * g.kw) * (_pieces_count(g, rows) - 1))


def counts(p: Im2colPlan) -> Counts:
    """Forward: :func:`_forward_counts`. Backward: reorder gy, unfold and a GEMM for gw
    (K = n·Ho·Wo); gx as the transposed correlation's forward, or naive's col2im."""
    g = p.geom
    if p.direction == "forward":
        return _forward_counts(g, p.rows).in_bytes(p.itemsize)
    cols = g.n * g.ho * g.wo
    weight = (
        traffic(2 * g.f * cols, calls=3)
        + _unfold_counts(g)
        + gemm(g.fg, cols, g.cg * g.kh * g.kw, g.groups)
        + Counts(calls=(4 + 2 * g.kh * g.kw) * (_pieces_count(g, p.rows) - 1))
    )
    if p.grad_geom is not None:
        grad = _forward_counts(p.grad_geom, p.grad_rows)
        grad = grad + traffic(4 * g.f * g.cg * g.kh * g.kw, 3)
    else:
        grad = naive.input_grad_counts(g)
    return (weight + grad).in_bytes(p.itemsize)


STRATEGY = Strategy("im2col", plan, forward, backward, workspace, counts)
