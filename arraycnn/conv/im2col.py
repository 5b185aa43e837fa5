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
- otherwise (stride > 1, a forward padding beyond the kernel's extent, more output than
  input channels per group, where gy's columns would outgrow the column gradient, or an
  input more than twice as tall as gy, as a band thinner than the rows it shares with
  the next, where the correlation would mostly multiply padding): the column gradient
  ``w^T @ gy`` is folded back onto the input (col2im), one block of taps at a time
  (:func:`.naive.input_grad`: at stride 1 one contiguous addition per tap over rows of the
  padded width), never held in full.

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

from ..geometry import ConvGeometry, conv_geometry
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


def _correlate(x: Array, w: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo) (the
    forward, and the input gradient's transposed correlation).

    ``w`` is made a contiguous (G, Fg, Cg*kh*kw) copy (w is small): a flipped w (as
    ``convolve2d`` passes) would otherwise be a view with negative strides, which NumPy's
    matmul cannot pass to BLAS.
    """
    wm = xp.reshape(w, (geom.groups, geom.fg, geom.cg * geom.kh * geom.kw), copy=True)
    yg = wm @ unfold(x, geom, bands, xp=xp)  # (G, Fg, N*Ho*Wo), fresh
    return output_from_group_major(yg, geom, xp=xp)


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, bands: TapBands, *, xp) -> Array:
    """Gradient w.r.t. the weights: ``gy @ cols^T``.

    gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw).
    """
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    cols = unfold(x, geom, bands, xp=xp)  # (G, Cg*kh*kw, N*Ho*Wo)
    gw = gyg @ xp.matrix_transpose(cols)  # (G, Fg, P) @ (G, P, Cg*kh*kw)
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
    read and write the input gradient once per tap, the unfold of gy only writes; and
    where the input is at most twice as tall as gy (the correlation computes every input
    row from gy padded by the kernel's extent).
    """
    return geom.fg <= geom.cg and geom.h <= 2 * geom.ho and transposed_geometry(geom) is not None


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
    """How im2col runs a call: the samples and output rows per kernel call it prefers;
    backward, the gradients it computes (:attr:`.strategy.Call.grads`) and the geometry of
    the input gradient's transposed correlation (None: col2im).

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

    @cached_property
    def bands(self) -> TapBands:
        """The tap bands of the columns and of col2im."""
        return tap_bands(self.geom)

    @cached_property
    def grad_bands(self) -> TapBands:
        """The tap bands of the transposed correlation's columns."""
        return tap_bands(self.grad_geom)


def plan(call: Call, rank: int | None = None, price: Any = None) -> Im2colPlan:
    """The plan of ``call``: cache-sized batch chunks and bands of rows on a CPU."""
    g, cached = call.geom, call.cached
    backward = call.direction == "backward" and "x" in call.grads  # bands share input rows
    grad = transposed_geometry(g) if backward and uses_transposed_input_grad(g) else None
    chunk, rows = (
        samples_per_chunk(g, cached=cached),
        rows_per_band(g, cached=cached, backward=backward),
    )
    return Im2colPlan(g, call.direction, call.itemsize, chunk, rows, grad, call.grads)


def forward(p: Im2colPlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    return _correlate(x, w, p.geom, p.bands, xp=xp)


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
        gx = _correlate(gy, wt, p.grad_geom, p.grad_bands, xp=xp)
    else:
        gx = naive.input_grad(gy, w, p.geom, p.bands, xp=xp)
    return gx, weight_grad(gy, x, p.geom, p.bands, xp=xp) if "w" in p.grads else None


def _column_elements(g: ConvGeometry) -> tuple[int, int]:
    """Elements of the columns and of their GEMM result."""
    cols = g.n * g.ho * g.wo
    return g.c * g.kh * g.kw * cols, g.f * cols


def workspace(p: Im2colPlan) -> int:
    """Bytes: the columns G·Cg·kh·kw·N·Ho·Wo and their GEMM result. Backward: gy's
    reordering and the columns, then the input gradient: the transposed correlation's
    columns and result, or naive's col2im phase."""
    g = p.geom
    columns, result = _column_elements(g)
    if p.direction == "forward":
        return p.itemsize * (columns + result)
    weight_phase = g.f * g.n * g.ho * g.wo + columns if "w" in p.grads else 0
    if "x" not in p.grads:
        input_phase = 0
    elif p.grad_geom is not None:
        input_phase = sum(_column_elements(p.grad_geom))
    else:
        input_phase = naive.input_grad_elements(g)
    return p.itemsize * (weight_phase + input_phase)


def _unfold_counts(g: ConvGeometry) -> Counts:
    """The columns: kh·kw band copies into a reused buffer."""
    taps = g.kh * g.kw
    return traffic(2 * taps * g.c * g.n * g.ho * g.wo, calls=2 * taps + 2)


def _forward_counts(g: ConvGeometry) -> Counts:
    """Unfold, one GEMM with K = Cg·kh·kw, reorder."""
    cols = g.n * g.ho * g.wo
    gemm_part = gemm(g.fg, g.cg * g.kh * g.kw, cols, g.groups)
    return _unfold_counts(g) + gemm_part + traffic(2 * g.f * cols, calls=3)


def counts(p: Im2colPlan) -> Counts:
    """Forward: :func:`_forward_counts`. Backward: reorder gy, unfold and a GEMM for gw
    (K = n·Ho·Wo); gx as the transposed correlation's forward, or naive's col2im."""
    g = p.geom
    if p.direction == "forward":
        return _forward_counts(g).in_bytes(p.itemsize)
    cols = g.n * g.ho * g.wo
    weight = traffic(2 * g.f * cols, calls=3) + _unfold_counts(g)
    weight = weight + gemm(g.fg, cols, g.cg * g.kh * g.kw, g.groups)
    weight = weight if "w" in p.grads else Counts()
    if "x" not in p.grads:
        grad = Counts()
    elif p.grad_geom is not None:
        grad = _forward_counts(p.grad_geom) + traffic(4 * g.f * g.cg * g.kh * g.kw, 3)
    else:
        grad = naive.input_grad_counts(g)
    return (weight + grad).in_bytes(p.itemsize)


STRATEGY = Strategy("im2col", plan, forward, backward, workspace, counts)
