"""Separable convolution: SVD rank decomposition of each kernel slice into 1-D passes.

Each slice ``w[f, c]`` (kh, kw) is written as ``sum_r u_r v_r^T`` (singular vectors scaled
by the square root of their singular value). With ``r`` the largest numerical rank over
all slices, the correlation becomes r column passes (along H) then r row passes (along W)::

    t[n, g, f, c, r, p, :] = sum_i u[g, f, c, r, i] * xpad[n, g, c, p*sh + i*dh, :]
    y[n, g, f, p, q]       = sum_{c, r, j} v[g, f, c, r, j] * t[n, g, f, c, r, p, q*sw + j*dw]

This is exact for any kernel (r <= min(kh, kw)); it can pay off only where r (kh + kw) is
below kh kw (fewer taps than the direct kernel), which the dispatcher checks before its cost
model decides. Singular values below
``max(kh, kw) * eps(dtype) * s_max`` of their slice are dropped, an error at the level of
the dtype's rounding. Half precision (float16, bfloat16), which linear algebra modules lack,
has its SVD computed in float32; the passes run in the input dtype.

Backward: the input gradient is, at stride 1 with a padding within the kernel's extent,
the forward's banded passes over gy with the flipped, channel-swapped kernel (the
transposed correlation, :func:`._layout.transposed_geometry`; the flip keeps each slice's
rank), elsewhere the transposed passes (row scatter, then column scatter, unbanded); the
weight gradient does not factor through the SVD and is :mod:`.naive`'s
(:func:`.naive.weight_gradient`).
The forward runs in bands of output rows (:func:`band_rows`) so that each band's t and its
row-pass accumulator stay small (:data:`BAND_BYTES`), each band written into the result
allocated once. Memory beyond input and output: the padded input and one band's
temporaries, about 2 N·F·Cg·r·B·(Wp + Wo) elements for B rows (the transposed passes hold
the full t, N·F·Cg·r·Ho·Wp elements).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..backend import device_of
from ..budget import itemsize
from ..geometry import ConvGeometry
from . import naive
from ._layout import (
    ALL,
    TapBands,
    add_at,
    crop_padding,
    pad_input,
    ranges,
    set_at,
    tap_bands,
    transposed_geometry,
    transposed_kernel,
    zeros,
)
from .strategy import Call, Counts, Strategy, traffic

Array = Any


def _half(w: Array, xp: ModuleType) -> bool:
    """True for half precision (float16, bfloat16), which linear algebra modules lack."""
    return itemsize(w.dtype, xp) < 4


def _svd_input(w: Array, *, xp: ModuleType) -> Array:
    """w, in float32 where it is half precision."""
    return xp.astype(w, xp.float32) if _half(w, xp) else w


def numerical_rank(w: Array, *, xp: ModuleType) -> int:
    """Largest numerical rank over the kernel slices of w (F, Cg, kh, kw): per slice the
    singular values above ``max(kh, kw) * eps * s_max``, at least 1. Reads values (a host
    decision, made once per call by the dispatcher, which hands it to the plan).

    Examples
    --------
    >>> import numpy as np
    >>> numerical_rank(np.outer([1.0, 2, 1], [1.0, 0, -1])[None, None], xp=np)
    1
    """
    s = xp.linalg.svdvals(_svd_input(w, xp=xp))  # (F, Cg, min(kh, kw))
    tol = max(w.shape[-2:]) * float(xp.finfo(w.dtype).eps)
    kept = s > tol * s[..., :1]  # (..., k)
    return max(int(xp.max(xp.count_nonzero(kept, axis=-1))), 1)


def decompose(w: Array, geom: ConvGeometry, rank: int, *, xp: ModuleType) -> tuple[Array, Array]:
    """Rank-r factors of w (F, Cg, kh, kw): u (G, Fg, Cg, r, kh) and v (G, Fg, Cg, r, kw),
    r = ``rank`` (w's :func:`numerical_rank`, decided by the plan)."""
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    # (..., kh, k), (..., k), (..., k, kw), in float32 for half precision
    u, s, vh = xp.linalg.svd(_svd_input(wg, xp=xp), full_matrices=False)
    root = xp.sqrt(s[..., :rank])  # (..., r)
    u = xp.matrix_transpose(u[..., :rank] * root[..., None, :])  # (..., kh, r) -> (..., r, kh)
    v = vh[..., :rank, :] * root[..., :, None]  # (..., r, kw)
    if _half(w, xp):
        u, v = xp.astype(u, w.dtype), xp.astype(v, w.dtype)
    return u, v


def _padded_5d(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """(N, C, H, W) -> padded (N, G, Cg, Hp, Wp)."""
    xpad = pad_input(x, geom, xp=xp)
    # (N, C, Hp, Wp) -> (N, G, Cg, Hp, Wp)
    return xp.reshape(xpad, (geom.n, geom.groups, geom.cg, geom.hp, geom.wp))


#: Bytes the forward aims at per band temporary (the column-pass result, the row-pass
#: accumulator, each tap's product): below glibc's mmap threshold (128 KiB) they come from
#: the heap and are reused band after band, warm in L2 (docs/performance.md).
BAND_BYTES = 112 * 1024


def band_rows(geom: ConvGeometry, rank: int, itemsize: int = 4) -> int:
    """Output rows per band of the forward (the last band may hold fewer).

    A band's column-pass result has ``L = N G Fg Cg r`` lanes of (rows, Wp) elements of
    ``itemsize`` bytes; the widest band keeps it within :data:`BAND_BYTES` (at least one
    row, at most Ho), and the rows are then evened out over the bands that takes:
    ``ceil(Ho / ceil(Ho / widest))``.
    """
    lanes = geom.n * geom.f * geom.cg * rank
    widest = max(1, min(geom.ho, BAND_BYTES // max(1, lanes * geom.wp * itemsize)))
    count = -(-geom.ho // widest)  # ceil(Ho / widest)
    return -(-geom.ho // count)


def _tap_rows_of_band(geom: ConvGeometry, i: int, start: int, stop: int) -> slice:
    """Rows of the padded input that kernel row ``i`` meets for output rows [start, stop)."""
    sh = geom.stride[0]
    first = start * sh + i * geom.dilation[0]
    return slice(first, first + sh * (stop - start - 1) + 1, sh)


def _tap_factors(f: Array) -> list[Array]:
    """The factor of each tap, ready to broadcast.

    (G, Fg, Cg, r, k) -> k arrays (1, G, Fg, Cg, r, 1, 1).
    """
    return [f[None, ..., t, None, None] for t in range(f.shape[-1])]


def _column_pass(
    x7: Array, u_taps: list[Array], geom: ConvGeometry, start: int, stop: int
) -> Array:
    """``t`` of output rows [start, stop) (B of them).

    x7 (N, G, 1, Cg, 1, Hp, Wp) -> (N, G, Fg, Cg, r, B, Wp).
    """

    def term(i: int) -> Array:
        # (N, G, 1, Cg, 1, Hp, Wp) -> (N, G, 1, Cg, 1, B, Wp), x (1, G, Fg, Cg, r, 1, 1)
        return x7[..., _tap_rows_of_band(geom, i, start, stop), :] * u_taps[i]

    cols = term(0)
    for i in range(1, geom.kh):
        cols += term(i)  # one tap's product alive at a time
    return cols


def _row_pass(cols: Array, v_taps: list[Array], geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Row pass and the sum over (Cg, r): (N, G, Fg, Cg, r, B, Wp) -> (N, G, Fg, B, Wo)."""

    def term(j: int) -> Array:
        # (N, G, Fg, Cg, r, B, Wp) -> (N, G, Fg, Cg, r, B, Wo), x (1, G, Fg, Cg, r, 1, 1)
        return cols[..., geom.tap_cols(j)] * v_taps[j]

    acc = term(0)  # (N, G, Fg, Cg, r, B, Wo)
    for j in range(1, geom.kw):
        acc += term(j)
    n, g, fg, cg, r, b, wo = acc.shape
    if cg * r == 1:  # nothing to add up
        # (N, G, Fg, 1, 1, B, Wo) -> (N, G, Fg, B, Wo)
        return xp.reshape(acc, (n, g, fg, b, wo))
    return xp.sum(acc, axis=(3, 4))  # (N, G, Fg, B, Wo)


def _forward(x: Array, w: Array, geom: ConvGeometry, rank: int, rows: int, *, xp) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo).

    Runs in bands of ``rows`` output rows: per band the column pass, the row pass and one
    sum over (Cg, r), written into the result allocated once (a single band is the
    result). ``rank``: w's :func:`numerical_rank`.
    """
    u, v = decompose(w, geom, rank, xp=xp)  # (G, Fg, Cg, r, kh), (G, Fg, Cg, r, kw)
    u_taps, v_taps = _tap_factors(u), _tap_factors(v)
    # (N, G, Cg, Hp, Wp) -> (N, G, 1, Cg, 1, Hp, Wp)
    x7 = _padded_5d(x, geom, xp=xp)[:, :, None, :, None, ...]

    def band(start: int, stop: int) -> Array:  # (N, G, Fg, B, Wo); its temporaries freed
        cols = _column_pass(x7, u_taps, geom, start, stop)  # (N, G, Fg, Cg, r, B, Wp)
        return _row_pass(cols, v_taps, geom, xp=xp)

    if rows >= geom.ho:
        # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
        return xp.reshape(band(0, geom.ho), geom.y_shape)
    y = xp.empty(
        (geom.n, geom.groups, geom.fg, geom.ho, geom.wo), dtype=x.dtype, device=device_of(x)
    )
    for start, stop in ranges(geom.ho, rows):
        # in place where the backend allows; xp given, so at() does not look it up per band
        y = set_at(y, (ALL, ALL, ALL, slice(start, stop), ALL), band(start, stop), xp=xp)
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
    return xp.reshape(y, geom.y_shape)


def input_grad(gy: Array, w: Array, geom: ConvGeometry, rank: int, *, xp: ModuleType) -> Array:
    """Transposed passes: gy (N, F, Ho, Wo) -> gx (N, C, H, W) (``rank`` as in forward)."""
    u, v = decompose(w, geom, rank, xp=xp)  # (G, Fg, Cg, r, kh), (G, Fg, Cg, r, kw)
    r = u.shape[3]
    # (N, F, Ho, Wo) -> (N, G, Fg, 1, 1, Ho, Wo)
    g = xp.reshape(gy, (geom.n, geom.groups, geom.fg, 1, 1, geom.ho, geom.wo))
    # transposed row pass: scatter along W into (N, G, Fg, Cg, r, Ho, Wp)
    t = zeros((geom.n, geom.groups, geom.fg, geom.cg, r, geom.ho, geom.wp), gy, xp=xp)
    for j in range(geom.kw):
        t = add_at(t, (ALL,) * 6 + (geom.tap_cols(j),), g * v[None, ..., j, None, None], xp=xp)
    # transposed column pass: contract over (Fg, r), scatter along H into (N, G, Cg, Hp, Wp)
    gxpad = zeros((geom.n, geom.groups, geom.cg, geom.hp, geom.wp), gy, xp=xp)
    for i in range(geom.kh):
        contrib = xp.sum(t * u[None, ..., i, None, None], axis=(2, 4))  # (N, G, Cg, Ho, Wp)
        gxpad = add_at(gxpad, (ALL,) * 3 + (geom.tap_rows(i), ALL), contrib, xp=xp)
    # (N, G, Cg, Hp, Wp) -> (N, C, Hp, Wp)
    gxpad = xp.reshape(gxpad, (geom.n, geom.c, geom.hp, geom.wp))
    return crop_padding(gxpad, geom)


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class SeparablePlan:
    """How separable runs a call (whole samples): w's numerical rank, the forward's output
    rows per band of its passes (:func:`band_rows`); backward, the gradients it computes
    (:attr:`.strategy.Call.grads`), the tap bands of naive's weight gradient, and the input
    gradient's transposed correlation: its geometry (None: the transposed passes) and rows
    per band."""

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    rank: int
    pass_rows: int
    bands: TapBands | None = None
    grads: str = "xw"
    grad_geom: ConvGeometry | None = None
    grad_rows: int = 0

    @property
    def rows(self) -> int:
        """Output rows per kernel call: whole samples (the passes band their own rows)."""
        return self.geom.ho


def plan(call: Call, rank: int | None = None, price: Any = None) -> SeparablePlan:
    """The plan of ``call`` for a kernel of numerical rank ``rank`` (None: the largest
    possible, ``min(kh, kw)``)."""
    g = call.geom
    r = rank if rank else min(g.kh, g.kw)
    backward = call.direction == "backward"
    bands = tap_bands(g) if backward else None
    pass_rows = band_rows(g, r, call.itemsize)
    grad = transposed_geometry(g) if backward and "x" in call.grads else None
    grad_rows = band_rows(grad, r, call.itemsize) if grad is not None else 0
    fields = (g, call.direction, call.itemsize, g.n, r, pass_rows, bands, call.grads)
    return SeparablePlan(*fields, grad, grad_rows)


def forward(p: SeparablePlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    return _forward(x, w, p.geom, p.rank, p.pass_rows, xp=xp)


def backward(p: SeparablePlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)`` (None where the plan leaves one out): gx the
    forward's passes over gy with the transposed kernel where the plan has its geometry,
    else the transposed passes; gw naive's (it does not factor through the SVD)."""
    gx = None
    if "x" in p.grads and p.grad_geom is not None:
        wt = transposed_kernel(w, p.geom, xp=xp)  # (C, Fg, kh, kw), the same ranks
        gx = _forward(gy, wt, p.grad_geom, p.rank, p.grad_rows, xp=xp)
    elif "x" in p.grads:
        gx = input_grad(gy, w, p.geom, p.rank, xp=xp)
    gw = naive.weight_gradient(gy, x, p.geom, p.bands, xp=xp) if "w" in p.grads else None
    return gx, gw


def _forward_elements(g: ConvGeometry, rank: int, rows: int) -> int:
    """Workspace elements of :func:`_forward` in bands of ``rows`` output rows: the padded
    input and one band's column pass N·F·Cg·r·B·Wp and row-pass accumulator
    N·F·Cg·r·B·Wo, each with its update's temporary."""
    pad = 2 * g.n * g.c * g.hp * g.wp if g.is_padded else 0
    return pad + 2 * g.n * g.f * g.cg * rank * rows * (g.wp + g.wo)


def workspace(p: SeparablePlan) -> int:
    """Bytes. Forward: :func:`_forward_elements`. Backward: the input gradient's (the
    transposed correlation's forward, or the transposed passes' intermediates and padded
    accumulator), then naive's weight gradient."""
    g, s, r = p.geom, p.itemsize, p.rank
    if p.direction == "forward":
        return s * _forward_elements(g, r, p.pass_rows)
    if p.grad_geom is not None:
        transposed = _forward_elements(p.grad_geom, r, p.grad_rows)
    else:
        lanes = g.n * g.f * g.cg * r
        transposed = 2 * lanes * g.ho * g.wp + lanes * g.ho * g.wo
        transposed += g.n * g.c * g.hp * g.wp + g.n * g.c * g.ho * g.wp
    weight = naive.weight_gradient_elements(g)
    return s * max(transposed if "x" in p.grads else 0, weight if "w" in p.grads else 0)


def _pad_counts(g: ConvGeometry) -> Counts:
    """Zero padding copies the input into a (Hp, Wp) frame."""
    return traffic(g.n * g.c * (g.h * g.w + g.hp * g.wp), calls=2) if g.is_padded else Counts()


def _svd_counts(g: ConvGeometry) -> Counts:
    """A small SVD costs about one array call."""
    return Counts(calls=6 + g.f * g.cg)


def _forward_counts(g: ConvGeometry, r: int, rows: int) -> Counts:
    """The forward in bands of ``rows`` output rows (elements): the SVD; kh column taps
    over (Ho, Wp), kw row taps over (Ho, Wo) on the r·F·Cg lanes, elementwise (multiply: 2
    element moves, accumulate: 3); the traffic of the whole output, the array calls per
    band (per tap a multiply and an accumulate, the sum over (Cg, r), the band's copy into
    the result)."""
    lanes = g.n * g.f * g.cg * r
    column = traffic(5 * lanes * g.ho * g.wp, calls=2).scaled(g.kh)
    row = traffic(5 * lanes * g.ho * g.wo, calls=2).scaled(g.kw)
    count = -(-g.ho // rows)
    outputs = g.n * g.f * g.ho * g.wo
    passes = traffic(column.bytes + row.bytes, calls=0)
    per_band = Counts(calls=(2 * g.kh - 1) + (2 * g.kw - 1) + 2)
    if g.cg * r > 1:
        per_band = per_band + Counts(calls=1)
        passes = passes + traffic(lanes * g.ho * g.wo + outputs, calls=0)
    result = traffic(2 * outputs, calls=2) if count > 1 else Counts()
    return _svd_counts(g) + _pad_counts(g) + passes + per_band.scaled(count) + result


def _transposed_passes_counts(g: ConvGeometry, r: int) -> Counts:
    """The input gradient's transposed passes (elements): the SVD, the row scatter, per
    kernel row the column gather, and the padded accumulator."""
    lanes = g.n * g.f * g.cg * r
    row = traffic(5 * lanes * g.ho * g.wo, calls=2).scaled(g.kw)
    scatter_rows = traffic(lanes * g.ho * g.wp) + row
    gather = traffic(3 * lanes * g.ho * g.wp + 4 * g.n * g.c * g.ho * g.wp, calls=3).scaled(g.kh)
    padded = g.n * g.c * g.hp * g.wp
    return _svd_counts(g) + scatter_rows + gather + traffic(3 * padded, 4)


def counts(p: SeparablePlan) -> Counts:
    """Forward: :func:`_forward_counts`. Backward: the input gradient (the transposed
    correlation's forward, or :func:`_transposed_passes_counts`), then naive's weight
    gradient."""
    g, r = p.geom, p.rank
    if p.direction == "forward":
        return _forward_counts(g, r, p.pass_rows).in_bytes(p.itemsize)
    total = Counts()
    if "x" in p.grads and p.grad_geom is not None:
        total = _forward_counts(p.grad_geom, r, p.grad_rows)
    elif "x" in p.grads:
        total = _transposed_passes_counts(g, r)
    if "w" in p.grads:
        total = total + naive.weight_gradient_counts(g)
    return total.in_bytes(p.itemsize)


STRATEGY = Strategy(
    "separable", plan, forward, backward, workspace, counts, ("linalg.svd",), False, uses_rank=True
)
