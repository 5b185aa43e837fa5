"""im2col convolution: unfold the input into columns, then one GEMM per group.

The columns are built from kh·kw strided slices of the padded input (no fancy indexing)::

    cols[g, (c, i, j), (n, p, q)] = xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]
    y[g] = w[g] (Fg, Cg*kh*kw) @ cols[g] (Cg*kh*kw, N*Ho*Wo)

Backward reuses the columns for the weight gradient (``gy @ cols^T``) and folds the
column gradient ``w^T @ gy`` back onto the input with kh·kw slice additions (col2im).
Memory beyond input and output: the columns, G·Cg·kh·kw·N·Ho·Wo elements.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from ._layout import (
    add_at,
    grad_output_group_major,
    input_from_group_major,
    input_group_major,
    output_from_group_major,
    tap_index,
    taps,
    zeros,
)

Array = Any


def unfold(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """im2col: x (N, C, H, W) -> columns (G, Cg*kh*kw, N*Ho*Wo)."""
    xg = input_group_major(x, geom, xp=xp)  # (G, Cg, N, Hp, Wp)
    cols = xp.stack([xg[tap_index(geom, i, j, lead=3)] for i, j in taps(geom)], axis=2)
    # (G, Cg, kh*kw, N, Ho, Wo) -> (G, Cg*kh*kw, N*Ho*Wo)
    return xp.reshape(cols, (geom.groups, geom.cg * geom.kh * geom.kw, geom.n * geom.ho * geom.wo))


def fold(gcols: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """col2im, the adjoint of :func:`unfold`: (G, Cg*kh*kw, N*Ho*Wo) -> (N, C, H, W)."""
    # (G, Cg*kh*kw, N*Ho*Wo) -> (G, Cg, kh*kw, N, Ho, Wo)
    gcols = xp.reshape(gcols, (geom.groups, geom.cg, geom.kh * geom.kw, geom.n, geom.ho, geom.wo))
    gxg = zeros((geom.groups, geom.cg, geom.n, geom.hp, geom.wp), gcols, xp=xp)
    for t, (i, j) in enumerate(taps(geom)):
        gxg = add_at(gxg, tap_index(geom, i, j, lead=3), gcols[:, :, t, ...])
    return input_from_group_major(gxg, geom, xp=xp)


def _weight_matrix(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """(F, Cg, kh, kw) -> (G, Fg, Cg*kh*kw)."""
    return xp.reshape(w, (geom.groups, geom.fg, geom.cg * geom.kh * geom.kw))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo)."""
    yg = _weight_matrix(w, geom, xp=xp) @ unfold(x, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    return output_from_group_major(yg, geom, xp=xp)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    cols = unfold(x, geom, xp=xp)  # (G, Cg*kh*kw, N*Ho*Wo)
    gw = xp.reshape(gyg @ xp.matrix_transpose(cols), geom.w_shape)  # (F, Cg, kh, kw)
    del cols
    gcols = xp.matrix_transpose(_weight_matrix(w, geom, xp=xp)) @ gyg  # (G, Cg*kh*kw, N*Ho*Wo)
    return fold(gcols, geom, xp=xp), gw
