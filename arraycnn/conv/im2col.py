"""im2col convolution: unfold the input into columns, then one GEMM per group.

The columns are built from kh·kw strided slices of the input (no fancy indexing)::

    cols[g, (c, i, j), (n, p, q)] = xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]
    y[g] = w[g] (Fg, Cg*kh*kw) @ cols[g] (Cg*kh*kw, N*Ho*Wo)

The column matrix is a scratch buffer reused across calls with the same geometry: each
tap writes only its band (the positions where it meets the input), and the rest — the
zero padding — stays zero from the allocation, so no padded copy of the input is made.

Backward reuses the columns for the weight gradient (``gy @ cols^T``) and folds the
column gradient ``w^T @ gy`` back onto the input with slice additions (col2im), one
tap's block of rows at a time (:func:`.naive.input_grad`), so the full column gradient
is never materialised.
Memory beyond input and output: the columns, G·Cg·kh·kw·N·Ho·Wo elements.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from . import naive
from ._layout import (
    ALL,
    grad_output_group_major,
    input_group_view,
    output_from_group_major,
    set_at,
    tap_bands,
)
from .workspace import scratch

Array = Any


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
    yg = _weight_matrix(w, geom, xp=xp) @ unfold(x, geom, xp=xp)  # (G, Fg, N*Ho*Wo), fresh
    return output_from_group_major(yg, geom, xp=xp)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    cols = unfold(x, geom, xp=xp)  # (G, Cg*kh*kw, N*Ho*Wo)
    gw = xp.reshape(gyg @ xp.matrix_transpose(cols), geom.w_shape)  # (G, Fg, Cg*kh*kw) -> w shape
    return naive.input_grad(gy, w, geom, xp=xp), gw
