"""im2col convolution: unfold the input into columns, then one GEMM per group.

The columns are built from kh·kw strided slices of the input (no fancy indexing)::

    cols[g, (c, i, j), (n, p, q)] = xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]
    y[g] = w[g] (Fg, Cg*kh*kw) @ cols[g] (Cg*kh*kw, N*Ho*Wo)

The column matrix is a scratch buffer reused across calls with the same geometry: each
tap writes only its band (the positions where it meets the input), and the rest — the
zero padding — stays zero from the allocation, so no padded copy of the input is made.

At stride 1 along the rows a correlation can instead run on *column-shifted rows*
(:func:`shifted_rows`): kw shifted copies of the padded input laid out (G, Cg, kw, Hp, N,
Wo), of which kernel row i reads the contiguous rows [i·dh, i·dh + Ho) as a matrix view,
so the correlation is kh GEMMs with K = Cg·kw summed, and the weight gradient kh GEMMs
``gy @ rows_i^T``; the buffer is about kh times smaller than the columns. The plan runs the
input gradient's transposed correlation so where the cost model prices it lower
(:func:`uses_shifted_rows`); the forward and the weight gradient keep the columns.

Backward computes the weight gradient as ``gy @ cols^T`` (or per kernel row, as above).
The input gradient, at stride 1 with a forward padding within the kernel's extent, can
itself be a stride-1 correlation, of gy with the kernel flipped and its channel axes
swapped, padded by the kernel's extent minus the forward padding::

    gx = correlate(gy (N, F, Ho, Wo), flip(w)^T (C, Fg, kh, kw)),
         padding (d·(k-1) - pad_lo, d·(k-1) - pad_hi) per axis

run as one more correlation (no slice additions). The plan takes it where the cost model
prices it below col2im: the column gradient ``w^T @ gy`` folded back onto the input one
block of taps at a time (:func:`.naive.input_grad`: at stride 1 one contiguous addition
per tap over rows of the padded width), never held in full; col2im always runs where the
transposed form does not apply (stride > 1, a forward padding beyond the kernel's extent).

On a CPU the plan asks for batch chunks whose columns fit in the last-level cache
(:func:`samples_per_chunk`) and cuts a large image into bands of output rows
(:func:`rows_per_band`), which the dispatcher runs (:mod:`.chunking`): each band's columns
are written, then read by its GEMM while still in cache. Memory beyond input and output:
the columns of one kernel call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from ..scratch import scratch
from . import naive
from ._layout import (
    ALL,
    COLUMN_CHUNK_ELEMENTS,
    TapBands,
    add_at,
    cache_chunk,
    grad_output_group_major,
    input_group_view,
    output_from_group_major,
    set_at,
    tap_bands,
    transposed_geometry,
    transposed_kernel,
)
from .cost import shipped_calibrations
from .strategy import Call, Counts, Strategy, gemm, traffic

Array = Any


def samples_per_chunk(geom: ConvGeometry, *, cached: bool = True) -> int:
    """Samples per kernel call (:func:`._layout.cache_chunk`) for the columns,
    G·Cg·kh·kw·Ho·Wo elements per sample."""
    per_sample = geom.groups * geom.cg * geom.kh * geom.kw * geom.ho * geom.wo
    return cache_chunk(geom.n, per_sample, cached=cached)


#: Backward bands hold at least this many times the d (kh - 1) input rows that neighbouring
#: bands share (each band's input gradient covers them) ...
BAND_OVERLAPS = 4
#: ... within this many column elements per band (256 MiB of float32).
BAND_MAX_ELEMENTS = 1 << 26


def rows_per_band(geom: ConvGeometry, *, cached: bool = True, backward: bool = False) -> int:
    """Output rows per band: Ho, unless one sample's columns exceed twice
    :data:`COLUMN_CHUNK_ELEMENTS` (a large image), then as many rows as fit it (at least 1);
    backward, raised towards :data:`BAND_OVERLAPS` overlaps. A GPU (``cached`` False) runs
    whole samples."""
    per_row = geom.groups * geom.cg * geom.kh * geom.kw * geom.wo
    if not cached or per_row * geom.ho <= 2 * COLUMN_CHUNK_ELEMENTS:
        return geom.ho
    rows = max(1, COLUMN_CHUNK_ELEMENTS // per_row)
    if backward:
        overlaps = BAND_OVERLAPS * geom.dilation[0] * (geom.kh - 1)
        rows = max(rows, min(overlaps, BAND_MAX_ELEMENTS // per_row))
    return min(rows, geom.ho)


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


def uses_shifted_rows(geom: ConvGeometry, price: Any = None) -> bool:
    """True where a correlation of ``geom`` runs on column-shifted rows
    (:func:`shifted_rows`: kh GEMMs with K = Cg·kw) rather than on the full columns
    (one GEMM with K = Cg·kh·kw): stride 1 along the rows, and cheaper by ``price``
    (counts in elements -> seconds; without it the shipped NumPy calibration)."""
    if geom.stride[0] != 1 or geom.kh == 1:
        return False
    price = _shipped_price if price is None else price
    return price(_shifted_forward_counts(geom)) < price(_forward_counts(geom))


def shifted_rows(x: Array, geom: ConvGeometry, bands: TapBands, *, xp: ModuleType) -> Array:
    """x (N, C, H, W) -> (G, Cg, kw, Hp, N, Wo), a scratch buffer: for each kernel column
    j, the zero-padded input shifted by j·dw columns (strided by the column stride).

    At stride 1 along the rows, kernel row i reads rows [i·dh, i·dh + Ho) of it: one
    (G, Cg·kw, Ho·N·Wo) matrix view per kernel row, no copy (:func:`_row_block`). Only
    the bands that meet the input are written; the padding stays zero (keyed by geometry).
    """
    g = geom
    # (N, C, H, W) -> (N, G, Cg, H, W)
    x5 = xp.reshape(x, (g.n, g.groups, g.cg, g.h, g.w))
    xt = xp.permute_dims(x5, (1, 2, 3, 0, 4))  # (N, G, Cg, H, W) -> (G, Cg, H, N, W)
    shape = (g.groups, g.cg, g.kw, g.hp, g.n, g.wo)
    buf = scratch("im2col.shifted", shape, like=x, xp=xp, key=g)  # (G, Cg, kw, Hp, N, Wo)
    top = g.padding[0][0]
    for j, band in enumerate(bands.cols):
        if band is not None:
            out_cols, in_cols = band
            where = (ALL, ALL, j, slice(top, top + g.h), ALL, out_cols)
            buf = set_at(buf, where, xt[..., in_cols], xp=xp)
    return buf


def _row_block(shifted: Array, i: int, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Kernel row i's operand: (G, Cg, kw, Hp, N, Wo) -> (G, Cg*kw, Ho*N*Wo) (a view
    where the backend allows)."""
    g = geom
    start = i * g.dilation[0]
    rows = shifted[:, :, :, start : start + g.ho, ...]  # (G, Cg, kw, Ho, N, Wo)
    # (G, Cg, kw, Ho, N, Wo) -> (G, Cg*kw, Ho*N*Wo)
    return xp.reshape(rows, (g.groups, g.cg * g.kw, g.ho * g.n * g.wo))


def _correlate_shifted(x: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """:func:`_correlate` on column-shifted rows: the sum over kernel rows i of
    ``w[..., i, :] (G, Fg, Cg*kw) @ rows_i (G, Cg*kw, Ho*N*Wo)``."""
    g = geom
    shifted = shifted_rows(x, g, bands, xp=xp)  # (G, Cg, kw, Hp, N, Wo)
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (g.groups, g.fg, g.cg, g.kh, g.kw))
    yg = None  # (G, Fg, Ho*N*Wo), fresh: the first row's product
    for i in range(g.kh):
        # (G, Fg, Cg, kw) -> (G, Fg, Cg*kw), contiguous
        wi = xp.reshape(wg[:, :, :, i, :], (g.groups, g.fg, g.cg * g.kw), copy=True)
        term = wi @ _row_block(shifted, i, g, xp=xp)
        yg = term if yg is None else add_at(yg, (ALL, ALL, ALL), term, xp=xp)
    # (G, Fg, Ho*N*Wo) -> (G, Fg, Ho, N, Wo)
    y = xp.reshape(yg, (g.groups, g.fg, g.ho, g.n, g.wo))
    y = xp.permute_dims(y, (3, 0, 1, 2, 4))  # (G, Fg, Ho, N, Wo) -> (N, G, Fg, Ho, Wo)
    return xp.reshape(y, g.y_shape, copy=True)  # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)


def _correlate(
    x: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, shifted: bool, xp
) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo) (the
    forward, and the input gradient's transposed correlation), on column-shifted rows
    where ``shifted`` (:func:`_correlate_shifted`), else on the full columns.

    ``w`` is made a contiguous (G, Fg, Cg*kh*kw) copy (w is small): a flipped w (as
    ``convolve2d`` passes) would otherwise be a view with negative strides, which NumPy's
    matmul cannot pass to BLAS.
    """
    if shifted:
        return _correlate_shifted(x, w, geom, bands, xp=xp)
    wm = xp.reshape(w, (geom.groups, geom.fg, geom.cg * geom.kh * geom.kw), copy=True)
    yg = wm @ unfold(x, geom, bands, xp=xp)  # (G, Fg, N*Ho*Wo), fresh
    return output_from_group_major(yg, geom, xp=xp)


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Gradient w.r.t. the weights: ``gy @ cols^T``, or ``(cols @ gy^T)^T`` where the
    kernel's side Cg·kh·kw is the longer (:func:`rows_first`).

    gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw).
    """
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    cols = unfold(x, geom, bands, xp=xp)  # (G, Cg*kh*kw, N*Ho*Wo)
    if rows_first(geom):
        gwt = cols @ xp.matrix_transpose(gyg)  # (G, Cg*kh*kw, P) @ (G, P, Fg)
        gw = xp.matrix_transpose(gwt)  # (G, Cg*kh*kw, Fg) -> (G, Fg, Cg*kh*kw), small
    else:
        gw = gyg @ xp.matrix_transpose(cols)  # (G, Fg, P) @ (G, P, Cg*kh*kw)
    return xp.reshape(gw, geom.w_shape)  # (G, Fg, Cg*kh*kw) -> (F, Cg, kh, kw)


def rows_first(geom: ConvGeometry) -> bool:
    """True where the weight gradient's product puts the columns' rows (Cg·kh·kw) first:
    where they outnumber the filters Fg. OpenBLAS runs these long-K products 10-35 % faster
    with the longer side as the result's rows (docs/performance.md)."""
    return geom.cg * geom.kh * geom.kw > geom.fg


def uses_transposed_input_grad(geom: ConvGeometry, price: Any = None) -> bool:
    """True where the input gradient runs as a correlation of gy (else col2im): where it
    has a :func:`transposed_geometry` and costs less than col2im by ``price`` (counts in
    elements -> seconds; without it the shipped NumPy calibration). The transposed form
    unfolds gy (Fg per tap) where col2im adds the column gradient (Cg per tap) onto the
    input, reading and writing it once per tap."""
    return _input_grad_plan(geom, _shipped_price if price is None else price)[0] is not None


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class Im2colPlan:
    """How im2col runs a call: the samples and output rows per kernel call it prefers;
    whether the input gradient's transposed correlation runs on column-shifted rows
    (``grad_shifted``); backward, the
    gradients it computes (:attr:`.strategy.Call.grads`) and the geometry of the input
    gradient's transposed correlation (None: col2im).

    The tap bands that execution needs are derived once per plan, on first use (pricing
    does not need them).
    """

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    rows: int
    grad_geom: ConvGeometry | None = None
    grads: str = "xw"
    grad_shifted: bool = False

    @cached_property
    def bands(self) -> TapBands:
        """The tap bands of the columns and of col2im."""
        return tap_bands(self.geom)

    @cached_property
    def grad_bands(self) -> TapBands:
        """The tap bands of the transposed correlation's columns."""
        return tap_bands(self.grad_geom)


def _transposed_counts(g: ConvGeometry, grad: ConvGeometry, shifted: bool) -> Counts:
    """The input gradient as a transposed correlation: the kernel's reorder, then the
    correlation's forward (elements)."""
    kernel = traffic(4 * g.f * g.cg * g.kh * g.kw, 3)
    return _correlation_counts(grad, shifted) + kernel


def _input_grad_plan(g: ConvGeometry, price: Any) -> tuple[ConvGeometry | None, bool]:
    """The transposed correlation's geometry and layout where ``price`` (elements ->
    seconds) makes it cheaper than col2im (:func:`.naive.input_grad`), else (None, False)."""
    grad = transposed_geometry(g)
    if grad is None:
        return None, False
    shifted = uses_shifted_rows(grad, price)
    if price(_transposed_counts(g, grad, shifted)) < price(naive.input_grad_counts(g)):
        return grad, shifted
    return None, False


def _shipped_price(counts: Counts) -> float:
    """Seconds of ``counts`` (elements, float32) by the shipped NumPy calibration."""
    return shipped_calibrations()["numpy"].seconds("im2col", counts.in_bytes(4))


def plan(call: Call, rank: int | None = None, price: Any = None) -> Im2colPlan:
    """The plan of ``call``: cache-sized batch chunks and bands of rows on a CPU (backward,
    chunks whose columns fit for both correlations: the input's and, for the input
    gradient, gy's); the layout of each correlation and the input gradient's path priced by
    ``price`` (counts in bytes -> seconds; without it the shipped NumPy calibration)."""
    g, cached = call.geom, call.cached
    backward = call.direction == "backward" and "x" in call.grads  # bands share input rows
    by_elements = _shipped_price if price is None else (lambda c: price(c.in_bytes(call.itemsize)))
    grad, grad_shifted = _input_grad_plan(g, by_elements) if backward else (None, False)
    chunk, rows = (
        samples_per_chunk(g, cached=cached),
        rows_per_band(g, cached=cached, backward=backward),
    )
    if grad is not None:  # the transposed correlation unfolds gy: Fg·kh·kw·H·W per sample
        chunk = min(chunk, samples_per_chunk(grad, cached=cached))
    return Im2colPlan(g, call.direction, call.itemsize, chunk, rows, grad, call.grads, grad_shifted)


def forward(p: Im2colPlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    return _correlate(x, w, p.geom, p.bands, shifted=False, xp=xp)


def backward(p: Im2colPlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``, the gradients of ``sum(gy * y)`` (None where
    the plan leaves one out).

    gx is the transposed correlation of gy where the plan has its geometry, otherwise
    col2im (:func:`.naive.input_grad`).
    """
    if "x" not in p.grads:
        gx = None
    elif p.grad_geom is not None:
        wt = transposed_kernel(w, p.geom, xp=xp)
        gx = _correlate(gy, wt, p.grad_geom, p.grad_bands, shifted=p.grad_shifted, xp=xp)
    else:
        gx = naive.input_grad(gy, w, p.geom, p.bands, xp=xp)
    if "w" not in p.grads:
        return gx, None
    return gx, weight_grad(gy, x, p.geom, p.bands, xp=xp)


def _column_elements(g: ConvGeometry) -> tuple[int, int]:
    """Elements of the columns and of their GEMM result."""
    cols = g.n * g.ho * g.wo
    return g.c * g.kh * g.kw * cols, g.f * cols


def _shifted_elements(g: ConvGeometry) -> int:
    """Elements of the column-shifted rows (:func:`shifted_rows`)."""
    return g.c * g.kw * g.hp * g.n * g.wo


def _correlation_elements(g: ConvGeometry, *, shifted: bool) -> int:
    """Workspace elements of one correlation: the columns and the GEMM result, or the
    shifted rows, the sum and one kernel row's product."""
    columns, result = _column_elements(g)
    return _shifted_elements(g) + 2 * result if shifted else columns + result


def workspace(p: Im2colPlan) -> int:
    """Bytes: the columns G·Cg·kh·kw·N·Ho·Wo and their GEMM result. Backward: gy's
    reordering and the columns, then the input gradient: the transposed correlation's
    workspace (on column-shifted rows: the shifted rows, the sum and one kernel row's
    product), or naive's col2im phase."""
    g = p.geom
    if p.direction == "forward":
        return p.itemsize * _correlation_elements(g, shifted=False)
    gy_elements = g.f * g.n * g.ho * g.wo
    if "w" not in p.grads:
        weight_phase = 0
    else:
        weight_phase = gy_elements + _column_elements(g)[0]
    if "x" not in p.grads:
        input_phase = 0
    elif p.grad_geom is not None:
        input_phase = _correlation_elements(p.grad_geom, shifted=p.grad_shifted)
    else:
        input_phase = naive.input_grad_elements(g)
    return p.itemsize * (weight_phase + input_phase)


#: Elements of a cache line counted at most per element a strided read takes (a line
#: holds 8 float64 or 16 float32).
LINE_ELEMENTS = 8


def _unfold_counts(g: ConvGeometry) -> Counts:
    """The columns: kh·kw band copies into a reused buffer, each element written once and
    read from the input at the column stride, which brings ``min(sw, LINE_ELEMENTS)``
    elements into cache per element taken."""
    taps = g.kh * g.kw
    read = min(g.stride[1], LINE_ELEMENTS)
    return traffic((1 + read) * taps * g.c * g.n * g.ho * g.wo, calls=2 * taps + 2)


def _shift_counts(g: ConvGeometry) -> Counts:
    """The column-shifted rows: kw band copies into a reused buffer."""
    return traffic(2 * g.kw * g.c * g.n * g.h * g.wo, calls=2 * g.kw + 2)


def _forward_counts(g: ConvGeometry) -> Counts:
    """Unfold, one GEMM with K = Cg·kh·kw, reorder."""
    cols = g.n * g.ho * g.wo
    gemm_part = gemm(g.fg, g.cg * g.kh * g.kw, cols, g.groups)
    return _unfold_counts(g) + gemm_part + traffic(2 * g.f * cols, calls=3)


def _shifted_forward_counts(g: ConvGeometry) -> Counts:
    """Shift, kh GEMMs with K = Cg·kw summed (kh - 1 additions), reorder."""
    cols = g.n * g.ho * g.wo
    per_row = gemm(g.fg, g.cg * g.kw, cols, g.groups) + traffic(2 * g.f * g.cg * g.kw, calls=2)
    sums = traffic(3 * g.f * cols, calls=1).scaled(g.kh - 1)
    return _shift_counts(g) + per_row.scaled(g.kh) + sums + traffic(2 * g.f * cols, calls=3)


def _correlation_counts(g: ConvGeometry, shifted: bool) -> Counts:
    """A correlation's forward on column-shifted rows or on the full columns."""
    return _shifted_forward_counts(g) if shifted else _forward_counts(g)


def _weight_counts(g: ConvGeometry) -> Counts:
    """Reorder gy, then the columns and a GEMM with K = N·Ho·Wo."""
    cols = g.n * g.ho * g.wo
    reorder = traffic(2 * g.f * cols, calls=3)
    return reorder + _unfold_counts(g) + gemm(g.fg, cols, g.cg * g.kh * g.kw, g.groups)


def counts(p: Im2colPlan) -> Counts:
    """Forward: :func:`_forward_counts`. Backward: the weight gradient
    (:func:`_weight_counts`); gx as the transposed correlation's forward, or naive's
    col2im."""
    g = p.geom
    if p.direction == "forward":
        return _forward_counts(g).in_bytes(p.itemsize)
    weight = _weight_counts(g) if "w" in p.grads else Counts()
    if "x" not in p.grads:
        grad = Counts()
    elif p.grad_geom is not None:
        grad = _transposed_counts(g, p.grad_geom, p.grad_shifted)
    else:
        grad = naive.input_grad_counts(g)
    return (weight + grad).in_bytes(p.itemsize)


STRATEGY = Strategy("im2col", plan, forward, backward, workspace, counts)
