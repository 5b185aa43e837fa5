"""Winograd convolution F(m x m, r x r): fewer multiplications for small kernels at stride 1.

A Winograd (Toom-Cook) algorithm computes ``m`` outputs of a correlation with an
``r``-tap kernel from a tile of ``alpha = m + r - 1`` inputs with ``alpha`` products
instead of ``m r`` (Lavin & Gray, 2016)::

    y (m) = A^T [ (G g) * (B^T d) ]        g: kernel (r), d: input tile (alpha)

Nested along both axes, each ``m x m`` output tile costs ``alpha_h alpha_w`` products per
channel pair instead of ``m^2 kh kw``, and summed over channels these products are one
GEMM per transformed position (``alpha_h alpha_w`` GEMMs with K = Cg)::

    V[a, c, t] = (B_h^T  x_tile(t, c)  B_w)[a]          input tiles, overlapping by r - 1
    U[a, f, c] = (G_h  w[f, c]  G_w^T)[a]               the kernel
    M[a]       = U[a] (Fg, Cg) @ V[a] (Cg, tiles)       alpha_h alpha_w GEMMs per group
    y tile     = A_h^T  M[:, f, t]  A_w                 (m x m outputs)

F(4x4, 3x3) needs 36 products where direct needs 144 (4x fewer), F(4x4, 5x5) 64 for 400.
The transforms are exact rational matrices built from the interpolation points
:data:`POINTS` (``transforms``); they amplify rounding, more so for larger ``alpha``, so
the plan keeps ``alpha <= MAX_ALPHA`` and half precision is not offered. The result is
not a plain sum of products (not exact on integer-valued data), and a NaN or Inf reaches
every output of the tiles whose inputs hold it (``nan_local`` False, as the FFT).

Layout: the padded input is reordered once to (C, Hp, Wp, N), so that the tiles (strided
slices along H and W) are copies of contiguous runs of N; each transform is a small
matrix product over the tile axis (K = alpha). Backward:

- the input gradient is the same algorithm run on gy with the flipped, channel-swapped
  kernel (a stride-1 correlation whose padding is the kernel's extent minus the forward
  padding; a forward padding beyond the kernel's extent crops the result);
- the weight gradient is F(r x r, m x m): within an ``m x m`` tile of gy, ``gw`` is the
  correlation of the input tile with the gy tile, so ``gw = A'^T [sum over tiles
  (G' gy_tile G'^T) * (B'^T x_tile B')] A'`` with the transforms of F(r, m) -- one GEMM
  per transformed position with K = the number of tiles.

Only stride 1 and dilation 1 (``unsupported``); kernels of 2 to :data:`MAX_KERNEL` taps
along an axis (a 1-tap axis runs untransformed, as m = 1 tiles would gain nothing).

On NumPy (float32, float64, one group) where numba is installed the transforms run
compiled loops instead (:func:`uses_compiled`, :mod:`._numba_winograd`), on a
channels-last layout: the input is copied once to (Hp, Wp, N·C), each transform is one
pass over it tile by tile (its loops over N·C, contiguous), the GEMMs take V as (Th·Tw·N,
C) per position, and the output transform writes a fresh (Ho, Wo, N, F) array whose
(N, F, Ho, Wo) view is the result. They take tiles of at least 4 outputs where those fit
(:func:`compiled_axis_sizes`) and larger pieces of the batch; docs/performance.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from types import ModuleType
from typing import Any, NamedTuple

from ..backend import device_of
from ..geometry import ConvGeometry
from ..scratch import matmul_into, scratch
from . import naive
from ._layout import ALL, set_at, transposed_kernel
from .strategy import Call, Counts, Strategy, gemm, traffic

Array = Any

__all__ = ["MAX_ALPHA", "MAX_KERNEL", "POINTS", "STRATEGY", "error_growth", "transforms"]
__all__ += ["axis_sizes", "compiled_axis_sizes", "kernel_matrix", "unsupported"]

#: Interpolation points, in the order they are taken (the last point is infinity).
#: Small integers and their inverses keep the transforms' entries, and so the rounding
#: they amplify, small (Lavin & Gray's choice).
POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))
#: The largest tile (``alpha = m + r - 1`` points, one of them infinity).
MAX_ALPHA = len(POINTS) + 1
#: Output tile sizes the plan chooses among, per axis.
TILE_SIZES = (2, 4, 6)
#: The largest kernel extent along an axis (an m = 2 tile).
MAX_KERNEL = MAX_ALPHA - 1
#: On a CPU a batch runs in chunks whose largest phase (:func:`_phase_elements`: the
#: forward's correlation, the input gradient's, the weight gradient) holds at most this
#: many elements: each phase streams over its temporaries in a few passes, and pieces of
#: 16 to 32 lecture-layer samples ran fastest (docs/performance.md).
CHUNK_ELEMENTS = 1 << 22
#: The compiled transforms' pieces (:func:`uses_compiled`) are larger: their loops run
#: over the batch times the channels, and each piece's result is reordered into the whole
#: batch's (N, F, Ho, Wo) output, a pass that one piece avoids (its result is a view).
COMPILED_CHUNK_ELEMENTS = 1 << 24
#: Real floating dtypes the transforms run in (half precision loses too many digits).
DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------- transforms


def _polynomial(roots: list[Fraction]) -> list[Fraction]:
    """Coefficients, lowest power first, of the monic polynomial with ``roots``."""
    coefs = [Fraction(1)]
    for root in roots:
        shifted = [Fraction(0), *coefs]  # x * p(x)
        coefs = [s - root * c for s, c in zip(shifted, [*coefs, Fraction(0)])]
    return coefs


@functools.cache
def transforms(m: int, r: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """``(A^T, G, B^T)`` of F(m, r): (m, alpha), (alpha, r), (alpha, alpha) nested tuples.

    With the finite points ``a_k`` (:data:`POINTS`, ``alpha - 1`` of them) and infinity:
    ``A^T[i, k] = a_k^i``; ``G[k, j] = a_k^j / prod_{l != k} (a_k - a_l)``; row k of B^T
    holds the coefficients of ``prod_{l != k} (x - a_l)``; the point at infinity adds the
    last column of A^T (``[0, ..., 1]``), the last row of G (``[0, ..., 1]``) and the last
    row of B^T (the coefficients of ``prod_l (x - a_l)``). Then
    ``y_i = sum_j g_j d_{i+j} = (A^T [(G g) * (B^T d)])_i``. Exact rationals, returned as
    floats.
    """
    alpha = m + r - 1
    if not 1 <= alpha <= MAX_ALPHA or m < 1 or r < 1:
        raise ValueError(f"no Winograd transform for m={m}, r={r} (alpha must be 1..{MAX_ALPHA})")
    points = [Fraction(p) for p in POINTS[: alpha - 1]]
    at = [[p**i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], []
    for k, a in enumerate(points):
        others = points[:k] + points[k + 1 :]
        scale = math.prod((a - b for b in others), start=Fraction(1))
        g.append([a**j / scale for j in range(r)])
        bt.append([*_polynomial(others), Fraction(0)])
    g.append([Fraction(int(j == r - 1)) for j in range(r)])
    bt.append(_polynomial(points))

    def floats(rows: list[list[Fraction]]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in row) for row in rows)

    return floats(at), floats(g), floats(bt)


class ErrorGrowth(NamedTuple):
    """Rounding bound of the Winograd transforms for one kernel size (:func:`error_growth`)."""

    correlation: float
    weight_grad: float
    widen: tuple[int, int]


def _growth_1d(m: int, r: int) -> float:
    """``max_{i,k} |A^T_ik| sum_j |G_kj|  *  max_l sum_k |B^T_kl|`` of F(m, r): with it,
    ``sum_k |A^T_ik| (sum_j |G_kj| |g_j|) (sum_l |B^T_kl| |d_l|) <= growth max|g| sum|d|``."""
    at, g, bt = transforms(m, r)
    g_rows = [sum(abs(v) for v in row) for row in g]
    first = max(abs(a) * s for row in at for a, s in zip(row, g_rows))
    return first * max(sum(abs(row[col]) for row in bt) for col in range(len(bt)))


@functools.cache
def error_growth(kh: int, kw: int) -> ErrorGrowth:
    """How much the transforms may amplify rounding, over every tile size a plan may choose.

    The standard bound of a bilinear algorithm (Higham, *Accuracy and Stability of
    Numerical Algorithms*, ch. 23; Barabasz et al. 2020 for Winograd) puts the error of an
    output at ``eps`` times ``|A^T| [(|G| |w| |G^T|) * (|B^T| |x_tile| |B|)] |A|`` summed
    over channels (plus the channel sum's own rounding). Bounding ``|w|`` by its largest
    tap and the tile by every input a tile holding the output may read -- the output's
    window widened by ``m - 1`` on each side -- gives ``correlation * max|w[f, c]| *
    sum |x|`` over that widened window, per channel; the weight gradient's F(r, m)
    likewise, per product ``|gy| |x|``. Returns the two growth factors (products of the
    per-axis factors, the largest over the tile sizes) and the widening per axis.
    """
    sizes_h, sizes_w = axis_sizes(kh), axis_sizes(kw)
    corr = max(_growth_1d(mh, kh) for mh in sizes_h) * max(_growth_1d(mw, kw) for mw in sizes_w)
    weight = max(_growth_1d(kh, mh) for mh in sizes_h) * max(_growth_1d(kw, mw) for mw in sizes_w)
    return ErrorGrowth(corr, weight, (max(sizes_h) - 1, max(sizes_w) - 1))


def _matrix(rows: tuple[tuple[float, ...], ...], like: Array, *, xp: ModuleType) -> Array:
    """A transform as an array of ``like``'s dtype, on its device."""
    return xp.asarray(rows, dtype=like.dtype, device=device_of(like))


# --------------------------------------------------------------------------- eligibility


def unsupported(call: Call) -> str | None:
    """Why Winograd cannot run ``call`` (None if it can)."""
    g = call.geom
    if g.stride != (1, 1):
        return f"stride {g.stride}: Winograd tiles need stride 1"
    if g.dilation != (1, 1):
        return f"dilation {g.dilation}: Winograd tiles need dilation 1"
    if max(g.kh, g.kw) > MAX_KERNEL:
        return f"kernel {g.kh}x{g.kw}: Winograd takes at most {MAX_KERNEL} taps per axis"
    if max(g.kh, g.kw) == 1:
        return "a 1x1 kernel has no taps to save"
    if call.dtype not in DTYPES:
        return f"dtype {call.dtype}: Winograd runs in {' or '.join(DTYPES)}"
    return None


# --------------------------------------------------------------------------- the algorithm


@dataclass(frozen=True)
class Tiling:
    """Tiles of one correlation: ``m`` outputs per tile along each axis, ``r`` taps, the
    input's padding, the outputs (Ho, Wo) and the tiles per axis (Th, Tw)."""

    m: tuple[int, int]
    r: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    out: tuple[int, int]

    @property
    def alpha(self) -> tuple[int, int]:
        """Points per tile along each axis, ``m + r - 1``."""
        return self.m[0] + self.r[0] - 1, self.m[1] + self.r[1] - 1

    @property
    def tiles(self) -> tuple[int, int]:
        """Tiles per axis, ``ceil(out / m)``."""
        return -(-self.out[0] // self.m[0]), -(-self.out[1] // self.m[1])

    @property
    def extent(self) -> tuple[int, int]:
        """Input rows and columns the tiles read (padded), ``m T + r - 1``."""
        (th, tw), (ah, aw) = self.tiles, self.alpha
        return self.m[0] * th + ah - self.m[0], self.m[1] * tw + aw - self.m[1]


def _tiled_input(x: Array, t: Tiling, *, xp: ModuleType) -> Array:
    """x (N, C, H, W) -> (C, Eh, Ew, N), zero-padded to the tiles' extent (a scratch
    buffer keyed by the tiling: only the interior is written, the padding stays zero)."""
    n, c, h, w = x.shape
    (top, _), (left, _) = t.padding
    eh, ew = t.extent
    xh = scratch("winograd.input", (c, eh, ew, n), like=x, xp=xp, key=t)  # (C, Eh, Ew, N)
    rows, cols = _overlap(top, h, eh), _overlap(left, w, ew)
    inner = xp.permute_dims(x, (1, 2, 3, 0))  # (N, C, H, W) -> (C, H, W, N)
    src = inner[:, rows[1], cols[1], :]
    return set_at(xh, (ALL, rows[0], cols[0], ALL), src, xp=xp)


def _overlap(pad_lo: int, size: int, extent: int) -> tuple[slice, slice]:
    """Where ``size`` input positions, shifted by ``pad_lo`` (negative: cropped), land in
    ``[0, extent)``: (destination, source) slices."""
    start, stop = max(pad_lo, 0), min(pad_lo + size, extent)
    return slice(start, max(stop, start)), slice(start - pad_lo, max(stop, start) - pad_lo)


def _data_transform(xh: Array, t: Tiling, bt_h: Array, bt_w: Array, *, xp: ModuleType) -> Array:
    """Input tiles (C, Eh, Ew, N) -> V (alpha_h alpha_w, C, Th Tw N): B_h^T tile B_w
    (scratch: the caller's products read it before the next call)."""
    (mh, mw), (ah, aw), (th, tw) = t.m, t.alpha, t.tiles
    c, ew, n = xh.shape[0], xh.shape[2], xh.shape[-1]
    # tile rows: (alpha_h, C, Th, Ew, N), row `tap` of tile i is input row m_h i + tap
    rows = scratch("winograd.rows", (ah, c, th, ew, n), like=xh, xp=xp, key=t)
    for tap in range(ah):
        rows = set_at(
            rows, (tap, ALL, ALL, ALL, ALL), xh[:, tap : tap + mh * (th - 1) + 1 : mh, :, :], xp=xp
        )
    # (alpha_h, C, Th, Ew, N) -> (alpha_h, C Th Ew N); B_h^T over the tile rows
    a1 = matmul_into("winograd.a1", bt_h, xp.reshape(rows, (ah, -1)), xp=xp, key=t)
    a1 = xp.reshape(a1, (ah, c * th, ew, n))  # -> (alpha_h, C Th, Ew, N)
    # tile columns: (alpha_h, alpha_w, C Th, Tw, N)
    cols = scratch("winograd.cols", (ah, aw, c * th, tw, n), like=xh, xp=xp, key=t)
    for tap in range(aw):
        cols = set_at(
            cols, (ALL, tap, ALL, ALL, ALL), a1[:, :, tap : tap + mw * (tw - 1) + 1 : mw, :], xp=xp
        )
    # (alpha_h, alpha_w, C Th Tw N); B_w^T over the tile columns, per alpha_h
    v = matmul_into("winograd.v", bt_w, xp.reshape(cols, (ah, aw, -1)), xp=xp, key=t)
    return xp.reshape(v, (ah * aw, c, th * tw * n))  # -> (alpha_h alpha_w, C, Th Tw N)


@functools.cache
def kernel_matrix(m: tuple[int, int], r: tuple[int, int]) -> tuple[tuple[float, ...], ...]:
    """``G_h (x) G_w`` (alpha_h alpha_w, kh kw): row ``(a, b)``, column ``(i, j)`` holds
    ``G_h[a, i] G_w[b, j]``, so that the kernel's transform is one matrix product."""
    g_h, g_w = transforms(m[0], r[0])[1], transforms(m[1], r[1])[1]
    return tuple(
        tuple(gh[i] * gw[j] for i in range(r[0]) for j in range(r[1])) for gh in g_h for gw in g_w
    )


def _kernel_transform(w: Array, t: Tiling, groups: int, *, xp: ModuleType) -> Array:
    """w (F, Cg, kh, kw) -> U (alpha_h alpha_w, G, Fg, Cg) = G_h w G_w^T, as one product
    with :func:`kernel_matrix` (a stack of tiny products would cost more than the GEMMs)."""
    f, cg, kh, kw = w.shape
    flat = xp.reshape(w, (f * cg, kh * kw))  # (F, Cg, kh, kw) -> (F Cg, kh kw)
    u = _matrix(kernel_matrix(t.m, t.r), w, xp=xp) @ xp.matrix_transpose(flat)  # (A, F Cg)
    return xp.reshape(u, (u.shape[0], groups, f // groups, cg))  # -> (A, G, Fg, Cg)


def _output_transform(m_: Array, t: Tiling, at_h: Array, at_w: Array, n: int, *, xp) -> Array:
    """M (alpha_h alpha_w, F, Th Tw N) -> y (N, F, Ho, Wo), a fresh array: A_h^T M A_w,
    tiles assembled."""
    (mh, mw), (ah, aw), (th, tw) = t.m, t.alpha, t.tiles
    f = m_.shape[1]
    z = matmul_into("winograd.z", at_w, xp.reshape(m_, (ah, aw, -1)), xp=xp, key=t)
    y = matmul_into("winograd.y", at_h, xp.reshape(z, (ah, -1)), xp=xp, key=t)  # (mh, mw F P)
    y = xp.reshape(y, (mh, mw, f, th, tw, n))
    # (mh, mw, F, Th, Tw, N) -> (F, Th, mh, Tw, mw, N): copies of contiguous runs of N
    tiles = scratch("winograd.tiles", (f, th, mh, tw, mw, n), like=m_, xp=xp, key=t)
    tiles = set_at(tiles, (ALL,) * 6, xp.permute_dims(y, (2, 3, 0, 4, 1, 5)), xp=xp)
    y = xp.reshape(tiles, (f, th * mh, tw * mw, n))[:, : t.out[0], : t.out[1], :]
    # (F, Ho, Wo, N) -> (N, F, Ho, Wo), a fresh array
    return xp.reshape(xp.permute_dims(y, (3, 0, 1, 2)), (n, f, *t.out), copy=True)


def correlate(x: Array, w: Array, t: Tiling, groups: int, *, xp: ModuleType) -> Array:
    """Stride-1 cross-correlation by Winograd tiles: x (N, C, H, W), w (F, Cg, kh, kw),
    padding ``t.padding`` (negative: cropped) -> (N, F, Ho, Wo), a fresh array."""
    (mh, mw), (kh, kw) = t.m, t.r
    at_h, bt_h = (_matrix(transforms(mh, kh)[i], x, xp=xp) for i in (0, 2))
    at_w, bt_w = (_matrix(transforms(mw, kw)[i], x, xp=xp) for i in (0, 2))
    v = _data_transform(_tiled_input(x, t, xp=xp), t, bt_h, bt_w, xp=xp)  # (A, C, P)
    a_, cg = v.shape[0], w.shape[1]
    v = xp.reshape(v, (a_, groups, cg, -1))  # (A, C, P) -> (A, G, Cg, P)
    u = _kernel_transform(w, t, groups, xp=xp)  # (A, G, Fg, Cg)
    m_ = matmul_into("winograd.products", u, v, xp=xp, key=t)  # (A, G, Fg, P)
    m_ = xp.reshape(m_, (a_, w.shape[0], -1))  # (A, G, Fg, P) -> (A, F, P)
    return _output_transform(m_, t, at_h, at_w, x.shape[0], xp=xp)


def forward_tiling(geom: ConvGeometry, m: tuple[int, int]) -> Tiling:
    """The forward's tiles."""
    return Tiling(m, (geom.kh, geom.kw), geom.padding, (geom.ho, geom.wo))


def input_grad_tiling(geom: ConvGeometry, m: tuple[int, int]) -> Tiling:
    """The input gradient's tiles: gy (N, F, Ho, Wo) correlated with the flipped kernel at
    padding ``k - 1 - pad`` per side (negative: cropped), giving (N, C, H, W)."""
    (top, bottom), (left, right) = geom.padding
    pads = ((geom.kh - 1 - top, geom.kh - 1 - bottom), (geom.kw - 1 - left, geom.kw - 1 - right))
    return Tiling(m, (geom.kh, geom.kw), pads, (geom.h, geom.w))


def _grad_output_tiles(gy: Array, t: Tiling, g_h: Array, g_w: Array, *, xp) -> Array:
    """gy (N, F, Ho, Wo) in non-overlapping m x m tiles -> G'_h gy_tile G'_w^T,
    (alpha_h alpha_w, F, Th Tw N), with the transforms of F(r, m) (scratch)."""
    (mh, mw), (th, tw) = t.m, t.tiles
    ah, aw = g_h.shape[0], g_w.shape[0]
    n, f = gy.shape[:2]
    # (mh, mw, F, Th, Tw, N), zero beyond Ho, Wo (keyed by the tiling)
    tiles = scratch("winograd.gy", (mh, mw, f, th, tw, n), like=gy, xp=xp, key=t)
    inner = xp.permute_dims(gy, (1, 2, 3, 0))  # (N, F, Ho, Wo) -> (F, Ho, Wo, N)
    for i in range(mh):
        for j in range(mw):
            part = inner[:, i::mh, j::mw, :]  # (F, rows, cols, N) of tile offset (i, j)
            where = (i, j, ALL, slice(0, part.shape[1]), slice(0, part.shape[2]), ALL)
            tiles = set_at(tiles, where, part, xp=xp)
    a = matmul_into("winograd.gy_h", g_h, xp.reshape(tiles, (mh, -1)), xp=xp, key=t)
    a = matmul_into("winograd.gy_hw", g_w, xp.reshape(a, (ah, mw, -1)), xp=xp, key=t)
    return xp.reshape(a, (ah * aw, f, th * tw * n))  # (alpha_h, alpha_w, F Th Tw N) ->


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, m: tuple[int, int], *, xp) -> Array:
    """gw (F, Cg, kh, kw) by F(r x r, m x m) tiles of gy (module docstring), fresh."""
    t = forward_tiling(geom, m)
    (kh, kw), groups = t.r, geom.groups
    # F(r, m): r outputs (the taps), an m-tap "kernel" (the gy tile)
    at_h, g_h, bt_h = (_matrix(a, x, xp=xp) for a in transforms(kh, m[0]))
    at_w, g_w, bt_w = (_matrix(a, x, xp=xp) for a in transforms(kw, m[1]))
    v = _data_transform(_tiled_input(x, t, xp=xp), t, bt_h, bt_w, xp=xp)  # (A, C, P)
    u = _grad_output_tiles(gy, t, g_h, g_w, xp=xp)  # (A, F, P)
    a_ = v.shape[0]
    v = xp.reshape(v, (a_, groups, geom.cg, -1))  # (A, C, P) -> (A, G, Cg, P)
    u = xp.reshape(u, (a_, groups, geom.fg, -1))  # (A, F, P) -> (A, G, Fg, P)
    s = u @ xp.matrix_transpose(v)  # (A, G, Fg, Cg): sum over the tiles
    return _weight_taps(s, t, at_h, at_w, geom, xp=xp)


def _weight_taps(s: Array, t: Tiling, at_h: Array, at_w: Array, geom: ConvGeometry, *, xp):
    """The summed products s (A, [G,] Fg, Cg) -> gw (F, Cg, kh, kw), fresh: A'_h s A'_w^T."""
    (ah, aw), (kh, kw) = t.alpha, t.r
    z = at_w @ xp.reshape(s, (ah, aw, -1))  # (ah, kw, F Cg)
    gw = at_h @ xp.reshape(z, (ah, -1))  # (kh, kw F Cg)
    gw = xp.reshape(gw, (kh, kw, geom.f, geom.cg))
    # (kh, kw, F, Cg) -> (F, Cg, kh, kw), a fresh array
    return xp.reshape(xp.permute_dims(gw, (2, 3, 0, 1)), geom.w_shape, copy=True)


# --------------------------------------------------------------------------- compiled

#: The compiled transforms' costs, in GEMM flops at the shipped NumPy rate (9.7 ps each):
#: a multiply-add of one element (57 ps) and a loop's start (7 ns); an element of their
#: channels-last copies costs as many as 10.5 streaming elements. Fitted on 8 layers x their
#: tile sizes x 3 directions (3x3 and 5x5 kernels; docs/performance.md).
COMPILED_FMA_FLOPS = 5.9
COMPILED_LOOP_FLOPS = 700.0
PERMUTED_COPY_TRAFFIC = 10.5


def uses_compiled(call: Call) -> bool:
    """True where Winograd's transforms run compiled loops (:mod:`._numba_winograd`):
    NumPy arrays of float32 or float64, one group, and numba available
    (:func:`.naive.compiled_kernels`)."""
    return (
        call.backend == "numpy"
        and call.dtype in DTYPES
        and call.geom.groups == 1
        and naive.compiled_kernels("winograd") is not None
    )


def _channels_last(tag: str, x: Array, t: Tiling, *, xp: ModuleType) -> Array:
    """x (N, C, H, W) -> (Eh, Ew, N C), zero-padded to the tiles' extent (a scratch buffer
    keyed by the tiling: only the interior is written, the padding stays zero)."""
    n, c, h, w = x.shape
    eh, ew = t.extent
    xh = scratch(tag, (eh, ew, n, c), like=x, xp=xp, key=t)  # (Eh, Ew, N, C)
    (top, _), (left, _) = t.padding
    rows, cols = _overlap(top, h, eh), _overlap(left, w, ew)
    inner = xp.permute_dims(x, (2, 3, 0, 1))  # (N, C, H, W) -> (H, W, N, C)
    xh = set_at(xh, (rows[0], cols[0], ALL, ALL), inner[rows[1], cols[1], :, :], xp=xp)
    return xp.reshape(xh, (eh, ew, n * c))  # (Eh, Ew, N, C) -> (Eh, Ew, N C)


def _compiled_tiles(
    tag: str, src: Array, b_h: Array, b_w: Array, t: Tiling, kernels: ModuleType, *, xp
) -> Array:
    """The compiled transform ``B_h tile B_w^T`` of the tiles of ``src`` (Eh, Ew, L), tile
    (ti, tj) at row ``ti·m_h``, column ``tj·m_w``: (alpha_h alpha_w, Th, Tw, L), scratch."""
    shape = (b_h.shape[0] * b_w.shape[0], *t.tiles, src.shape[2])
    out = scratch(tag, shape, like=src, xp=xp, key=t)  # every element written
    return kernels.tile_transform(src, b_h, b_w, t.m, out)


def _correlate_compiled(x: Array, w: Array, t: Tiling, kernels: ModuleType, *, xp) -> Array:
    """:func:`correlate` with one group, the transforms compiled, channels last: x (N, C,
    H, W), w (F, C, kh, kw) -> (N, F, Ho, Wo), a view of a fresh (Ho, Wo, N, F) array."""
    (mh, mw), (kh, kw) = t.m, t.r
    at_h, bt_h = (_matrix(transforms(mh, kh)[i], x, xp=xp) for i in (0, 2))
    at_w, bt_w = (_matrix(transforms(mw, kw)[i], x, xp=xp) for i in (0, 2))
    n, c, f = x.shape[0], x.shape[1], w.shape[0]
    (th, tw), a_ = t.tiles, t.alpha[0] * t.alpha[1]
    xh = _channels_last("winograd.channels_last", x, t, xp=xp)  # (Eh, Ew, N C)
    v = _compiled_tiles("winograd.v_last", xh, bt_h, bt_w, t, kernels, xp=xp)
    v = xp.reshape(v, (a_, th * tw * n, c))  # (A, Th, Tw, N C) -> (A, Th Tw N, C)
    u = xp.reshape(_kernel_transform(w, t, 1, xp=xp), (a_, f, c))  # (A, 1, F, C) -> (A, F, C)
    m_ = matmul_into("winograd.products_last", v, xp.matrix_transpose(u), xp=xp, key=t)
    out = xp.empty((*t.out, n, f), dtype=x.dtype, device=device_of(x))  # (Ho, Wo, N, F)
    kernels.untile_transform(
        xp.reshape(m_, (a_, th, tw, n * f)),  # (A, Th Tw N, F) -> (A, Th, Tw, N F)
        at_h, at_w,
        xp.reshape(out, (*t.out, n * f)),  # (Ho, Wo, N, F) -> (Ho, Wo, N F), a view
    )  # fmt: skip
    return xp.permute_dims(out, (2, 3, 0, 1))  # (Ho, Wo, N, F) -> (N, F, Ho, Wo)


def _weight_grad_compiled(
    gy: Array, x: Array, geom: ConvGeometry, m: tuple[int, int], kernels: ModuleType, *, xp
) -> Array:
    """:func:`weight_grad` with one group, the transforms compiled, channels last."""
    t = forward_tiling(geom, m)
    (kh, kw), a_ = t.r, t.alpha[0] * t.alpha[1]
    at_h, g_h, bt_h = (_matrix(a, x, xp=xp) for a in transforms(kh, m[0]))
    at_w, g_w, bt_w = (_matrix(a, x, xp=xp) for a in transforms(kw, m[1]))
    xh = _channels_last("winograd.channels_last", x, t, xp=xp)  # (Eh, Ew, N C)
    v = _compiled_tiles("winograd.v_last", xh, bt_h, bt_w, t, kernels, xp=xp)
    # gy in non-overlapping m x m tiles: an m-tap "kernel" per axis, zero past Ho, Wo
    gy_tiles = Tiling(m, (1, 1), ((0, 0), (0, 0)), (geom.ho, geom.wo))
    gyh = _channels_last("winograd.gy_last", gy, gy_tiles, xp=xp)  # (Th mh, Tw mw, N F)
    u = _compiled_tiles("winograd.gy_tiles_last", gyh, g_h, g_w, t, kernels, xp=xp)
    u = xp.reshape(u, (a_, -1, geom.f))  # (A, Th, Tw, N F) -> (A, Th Tw N, F)
    v = xp.reshape(v, (a_, -1, geom.c))  # (A, Th, Tw, N C) -> (A, Th Tw N, C)
    s = xp.matrix_transpose(u) @ v  # (A, F, C): sum over the tiles
    return _weight_taps(s, t, at_h, at_w, geom, xp=xp)


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class WinogradPlan:
    """How Winograd runs a call: ``m`` outputs per tile along each axis (the forward's and
    the input gradient's; the weight gradient's F(r, m) uses the same m), the samples per
    kernel call, backward the gradients it computes, and whether its transforms run
    compiled (:func:`uses_compiled`)."""

    geom: ConvGeometry
    direction: str
    itemsize: int
    chunk: int
    m: tuple[int, int]
    grads: str = "xw"
    compiled: bool = False

    @property
    def rows(self) -> int:
        """Output rows per kernel call: whole samples."""
        return self.geom.ho


def axis_sizes(r: int) -> tuple[int, ...]:
    """Output tile sizes for an r-tap axis (``alpha <= MAX_ALPHA``); 1 for a 1-tap axis."""
    return (1,) if r == 1 else tuple(m for m in TILE_SIZES if m + r - 1 <= MAX_ALPHA)


#: The smallest tiles the compiled transforms take where larger ones fit: m = 2 gives their
#: loops four times the tiles of m = 4 for the same outputs, and measured 1.1-1.9x slower
#: in every direction of 8 layers (docs/performance.md).
COMPILED_MIN_TILE = 4


def compiled_axis_sizes(r: int) -> tuple[int, ...]:
    """:func:`axis_sizes` for the compiled transforms: those of at least
    :data:`COMPILED_MIN_TILE` outputs where there are any."""
    sizes = axis_sizes(r)
    return tuple(m for m in sizes if m >= COMPILED_MIN_TILE) or sizes


#: Array calls (the cost model's ``calls``, a NumPy operation's overhead) of the steps of
#: a transform, counted from the code: a scratch buffer or a write into one costs about
#: two, a product into scratch four, a reshape or a view half of one.
CALLS_TILED_INPUT = 5
CALLS_PER_SLAB = 2.5
CALLS_DATA = 14
CALLS_PRODUCTS = 13
CALLS_OUTPUT = 17
CALLS_WEIGHT_EXTRA = 20


def _data_counts(t: Tiling, n: int, c: int) -> Counts:
    """The tiled input and its transform: the reordered copy, two gathers of
    ``alpha`` slabs and two products with K = alpha (elements)."""
    (ah, aw), (th, tw), (eh, ew) = t.alpha, t.tiles, t.extent
    calls = CALLS_TILED_INPUT + CALLS_DATA + CALLS_PER_SLAB * (ah + aw)
    tiled = traffic(c * eh * ew * n + 2 * n * c * t.out[0] * t.out[1], calls=calls)
    rows = traffic(2 * ah * c * th * ew * n, calls=0) + gemm(ah, ah, c * th * ew * n)
    p = th * tw * n
    cols = traffic(2 * ah * aw * c * p, calls=0) + gemm(aw, aw, c * p, ah)
    return tiled + rows + cols


def _correlation_counts(t: Tiling, n: int, c: int, f: int, groups: int) -> Counts:
    """One correlation: the data transform, the kernel's transform, the GEMMs (K = Cg),
    the output transform and the assembly (elements)."""
    (mh, mw), (ah, aw), (th, tw) = t.m, t.alpha, t.tiles
    p = th * tw * n
    kernel = gemm(ah * aw, t.r[0] * t.r[1], f * c // groups)
    products = gemm(f // groups, c // groups, p, ah * aw * groups)
    out = gemm(mw, aw, f * p, ah) + gemm(mh, ah, mw * f * p)
    assembly = traffic(4 * mh * mw * f * p, calls=CALLS_PRODUCTS + CALLS_OUTPUT)
    return _data_counts(t, n, c) + kernel + products + out + assembly


def _weight_grad_counts(g: ConvGeometry, m: tuple[int, int]) -> Counts:
    """The weight gradient: the data transform, gy's tiles (``m_h m_w`` gathers) and
    their transform, the GEMMs (K = tiles), the small output transform (elements)."""
    t = forward_tiling(g, m)
    (ah, aw), (th, tw) = t.alpha, t.tiles
    p = th * tw * g.n
    calls = CALLS_WEIGHT_EXTRA + CALLS_PER_SLAB * m[0] * m[1]
    gy_tiles = traffic(6 * g.f * p * m[0] * m[1], calls=calls)
    gy_tiles = gy_tiles + gemm(ah, m[0], m[1] * g.f * p) + gemm(aw, m[1], g.f * p, ah)
    products = gemm(g.fg, p, g.cg, ah * aw * g.groups)
    out = traffic(4 * ah * aw * g.f * g.cg, calls=0)
    return _data_counts(t, g.n, g.c) + gy_tiles + products + out


def _permuted_copy(elements: int) -> Counts:
    """A channels-last copy (:func:`_channels_last`) reading and writing ``elements`` in
    all: a permuting copy, priced at :data:`PERMUTED_COPY_TRAFFIC` streaming elements each."""
    return traffic(PERMUTED_COPY_TRAFFIC * elements, calls=CALLS_TILED_INPUT)


def _compiled_pass_counts(tiles: int, length: int, passes: list[tuple[int, int]]) -> Counts:
    """Compiled transforms over ``tiles`` tiles of ``length`` elements per point: each
    pass ``(outputs, terms)`` computes that many outputs of that many terms per tile, two
    terms per loop; priced per multiply-add (:data:`COMPILED_FMA_FLOPS`) and per loop
    (:data:`COMPILED_LOOP_FLOPS`)."""
    terms = sum(outputs * count for outputs, count in passes)
    loops = sum(outputs * -(-count // 2) for outputs, count in passes)
    flops = tiles * (length * terms * COMPILED_FMA_FLOPS + loops * COMPILED_LOOP_FLOPS)
    return Counts(gemm_flops=flops, calls=3)


def _compiled_tile_counts(t: Tiling, length: int, k: tuple[int, int]) -> Counts:
    """The compiled transform of :func:`_compiled_tiles` (kh x kw points per tile): a row
    pass (alpha_h kw outputs of kh terms) and a column pass (alpha_h alpha_w of kw)."""
    (ah, aw), (th, tw) = t.alpha, t.tiles
    return _compiled_pass_counts(th * tw, length, [(ah * k[1], k[0]), (ah * aw, k[1])])


def _compiled_correlation_counts(t: Tiling, n: int, c: int, f: int) -> Counts:
    """:func:`_correlate_compiled`: the channels-last copy, the data transform, the
    kernel's transform, the GEMMs (K = C), the output transform into a fresh array."""
    (mh, mw), (ah, aw), (th, tw), (eh, ew) = t.m, t.alpha, t.tiles, t.extent
    inputs = n * c * (t.out[0] + t.r[0] - 1) * (t.out[1] + t.r[1] - 1)
    copy = _permuted_copy(inputs + eh * ew * n * c)
    data = _compiled_tile_counts(t, n * c, t.alpha)
    kernel = gemm(ah * aw, t.r[0] * t.r[1], f * c)
    products = gemm(f, c, th * tw * n, ah * aw) + traffic(0, calls=CALLS_PRODUCTS)
    out = _compiled_pass_counts(th * tw, n * f, [(mh * aw, ah), (mh * mw, aw)])
    return copy + data + kernel + products + out + traffic(2 * n * f * t.out[0] * t.out[1])


def _compiled_weight_grad_counts(g: ConvGeometry, m: tuple[int, int]) -> Counts:
    """:func:`_weight_grad_compiled`: both channels-last copies and transforms, the GEMMs
    (K = tiles), the small output transform."""
    t = forward_tiling(g, m)
    (ah, aw), (th, tw), (eh, ew) = t.alpha, t.tiles, t.extent
    p = th * tw * g.n
    copies = _permuted_copy(g.n * g.c * g.h * g.w + eh * ew * g.n * g.c)
    copies = copies + _permuted_copy(g.n * g.f * g.ho * g.wo + p * m[0] * m[1] * g.f)
    data = _compiled_tile_counts(t, g.n * g.c, t.alpha)
    gy_tiles = _compiled_tile_counts(t, g.n * g.f, m)
    products = gemm(g.f, p, g.c, ah * aw)
    out = traffic(4 * ah * aw * g.f * g.c, calls=CALLS_WEIGHT_EXTRA)
    return copies + data + gy_tiles + products + out


def _counts_for(
    g: ConvGeometry, direction: str, grads: str, m: tuple[int, int], compiled: bool = False
) -> Counts:
    """Elements and flops of one call at tile sizes ``m``, the transforms compiled or not."""

    def correlation(t: Tiling, c_in: int, c_out: int) -> Counts:
        if compiled:  # one group
            return _compiled_correlation_counts(t, g.n, c_in, c_out)
        return _correlation_counts(t, g.n, c_in, c_out, g.groups)

    if direction == "forward":
        return correlation(forward_tiling(g, m), g.c, g.f)
    total = Counts()
    if "x" in grads:
        kernel = traffic(4 * g.f * g.cg * g.kh * g.kw, calls=3)
        total = total + kernel + correlation(input_grad_tiling(g, m), g.f, g.c)
    if "w" in grads:
        weight = _compiled_weight_grad_counts if compiled else _weight_grad_counts
        total = total + weight(g, m)
    return total


def _data_elements(t: Tiling, n: int, c: int) -> int:
    """Scratch of a data transform: the tiled input, the tile rows and their transform,
    the tile columns and the transformed input V."""
    (ah, aw), (th, tw), (eh, ew) = t.alpha, t.tiles, t.extent
    return c * eh * ew * n + 2 * ah * c * th * ew * n + 2 * ah * aw * c * th * tw * n


def _correlation_elements(t: Tiling, n: int, c: int, f: int, cg: int) -> int:
    """Workspace of :func:`correlate`: the data transform, the kernel's transform, the
    products M, the output transform's two stages and the assembled tiles."""
    (mh, mw), (ah, aw), (th, tw) = t.m, t.alpha, t.tiles
    p = th * tw * n
    kernel = 2 * ah * aw * f * cg + f * cg * ah * t.r[1]
    return _data_elements(t, n, c) + kernel + (ah * aw + ah * mw + 2 * mh * mw) * f * p


def _weight_elements(g: ConvGeometry, m: tuple[int, int]) -> int:
    """Workspace of :func:`weight_grad`: the data transform, gy's tiles and their two
    transform stages, the summed products and the output transform."""
    t = forward_tiling(g, m)
    (ah, aw), (th, tw) = t.alpha, t.tiles
    p = th * tw * g.n
    tiles = (m[0] * m[1] + ah * m[1] + ah * aw) * g.f * p
    return _data_elements(t, g.n, g.c) + tiles + 3 * ah * aw * g.f * g.cg


def _compiled_correlation_elements(t: Tiling, n: int, c: int, f: int) -> int:
    """Workspace of :func:`_correlate_compiled`: the channels-last input, V, the kernel's
    transform and the products M (the output is the result)."""
    (ah, aw), (th, tw), (eh, ew) = t.alpha, t.tiles, t.extent
    p = th * tw * n
    return eh * ew * n * c + ah * aw * (p * c + 2 * f * c + p * f)


def _compiled_weight_elements(g: ConvGeometry, m: tuple[int, int]) -> int:
    """Workspace of :func:`_weight_grad_compiled`: the channels-last input and gy, their
    transforms, the summed products and the output transform."""
    t = forward_tiling(g, m)
    (ah, aw), (th, tw), (eh, ew) = t.alpha, t.tiles, t.extent
    p = th * tw * g.n
    gy = p * m[0] * m[1] * g.f
    return eh * ew * g.n * g.c + gy + ah * aw * p * (g.c + g.f) + 3 * ah * aw * g.f * g.c


def _phase_elements(
    g: ConvGeometry, direction: str, grads: str, m: tuple[int, int], compiled: bool = False
) -> list[int]:
    """Elements of the temporaries of each phase of a call: the forward's correlation, or
    backward the input gradient's correlation and the weight gradient."""

    def correlation(t: Tiling, c_in: int, c_out: int, c_group: int) -> int:
        if compiled:  # one group
            return _compiled_correlation_elements(t, g.n, c_in, c_out)
        return _correlation_elements(t, g.n, c_in, c_out, c_group)

    if direction == "forward":
        return [correlation(forward_tiling(g, m), g.c, g.f, g.cg)]
    phases = []
    if "x" in grads:
        flipped = 2 * g.f * g.cg * g.kh * g.kw
        phases.append(flipped + correlation(input_grad_tiling(g, m), g.f, g.c, g.fg))
    if "w" in grads:
        phases.append(_compiled_weight_elements(g, m) if compiled else _weight_elements(g, m))
    return phases


def plan(call: Call, rank: int | None = None, price: Any = None) -> WinogradPlan:
    """The plan of ``call``: the tile sizes ``price`` (counts in bytes -> seconds; without
    it the smallest tiles' flops) finds cheapest, and cache-sized batch chunks on a CPU."""
    g = call.geom
    compiled = uses_compiled(call)
    sizes = compiled_axis_sizes if compiled else axis_sizes
    choices = [(mh, mw) for mh in sizes(g.kh) for mw in sizes(g.kw)]

    def cost(m: tuple[int, int]) -> float:
        counts = _counts_for(g, call.direction, call.grads, m, compiled)
        counts = counts.in_bytes(call.itemsize)
        return price(counts) if price is not None else counts.gemm_flops

    m = min(choices, key=cost)  # the dispatcher plans only calls Winograd runs
    one = max(_phase_elements(replace(g, n=1), call.direction, call.grads, m, compiled))
    budget = COMPILED_CHUNK_ELEMENTS if compiled else CHUNK_ELEMENTS
    chunk = g.n if not call.cached else max(1, min(g.n, budget // max(one, 1)))
    return WinogradPlan(g, call.direction, call.itemsize, chunk, m, call.grads, compiled)


def forward(p: WinogradPlan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W), w (F, Cg, kh, kw) -> y (N, F, Ho, Wo)."""
    t = forward_tiling(p.geom, p.m)
    kernels = naive.compiled_kernels("winograd") if p.compiled else None
    if kernels is not None:
        return _correlate_compiled(x, w, t, kernels, xp=xp)
    return correlate(x, w, t, p.geom.groups, xp=xp)


def backward(p: WinogradPlan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``, the gradients of ``sum(gy * y)`` (None where
    the plan leaves one out)."""
    g = p.geom
    kernels = naive.compiled_kernels("winograd") if p.compiled else None
    gx = gw = None
    if "x" in p.grads:
        wt = transposed_kernel(w, g, xp=xp)
        t = input_grad_tiling(g, p.m)
        if kernels is not None:
            gx = _correlate_compiled(gy, wt, t, kernels, xp=xp)
        else:
            gx = correlate(gy, wt, t, g.groups, xp=xp)
    if "w" in p.grads:
        if kernels is not None:
            gw = _weight_grad_compiled(gy, x, g, p.m, kernels, xp=xp)
        else:
            gw = weight_grad(gy, x, g, p.m, xp=xp)
    return gx, gw


def workspace(p: WinogradPlan) -> int:
    """Bytes of the call's temporaries: every phase's (:func:`_phase_elements`), since a
    phase's scratch is still held while the next runs."""
    return p.itemsize * sum(_phase_elements(p.geom, p.direction, p.grads, p.m, p.compiled))


def counts(p: WinogradPlan) -> Counts:
    """The plan's counts in bytes (:func:`_counts_for`)."""
    return _counts_for(p.geom, p.direction, p.grads, p.m, p.compiled).in_bytes(p.itemsize)


STRATEGY = Strategy(
    "winograd",
    plan,
    forward,
    backward,
    workspace,
    counts,
    exact_sums=False,
    nan_local=False,
    unsupported=unsupported,
)
