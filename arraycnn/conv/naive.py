"""Direct convolution: a sum over the kh·kw kernel taps of strided slices.

For each tap (i, j) the padded input is sliced at the rows and columns that tap meets
(basic slicing only) and contracted over the group's input channels with one small GEMM::

    y[g, f, (n, p, q)] = sum_{i, j} sum_c w[g, f, c, i, j] * xpad[g, c, n, p*sh + i*dh, q*sw + j*dw]

Memory beyond input and output: one tap slice, (G, Cg, N*Ho*Wo).
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
    weight_by_group,
    weight_from_group,
    zeros,
)

Array = Any


def _tap_patch(xg: Array, geom: ConvGeometry, i: int, j: int, *, xp: ModuleType) -> Array:
    """Input positions met by tap (i, j): (G, Cg, N, Hp, Wp) -> (G, Cg, N*Ho*Wo)."""
    patch = xg[tap_index(geom, i, j, lead=3)]  # (G, Cg, N, Ho, Wo)
    # (G, Cg, N, Ho, Wo) -> (G, Cg, N*Ho*Wo)
    return xp.reshape(patch, (geom.groups, geom.cg, geom.n * geom.ho * geom.wo))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo)."""
    xg = input_group_major(x, geom, xp=xp)  # (G, Cg, N, Hp, Wp)
    wg = weight_by_group(w, geom, xp=xp)  # (G, Fg, Cg, kh, kw)
    yg = None
    for i, j in taps(geom):
        term = wg[..., i, j] @ _tap_patch(xg, geom, i, j, xp=xp)  # (G, Fg, N*Ho*Wo)
        if yg is None:
            yg = term
        else:
            yg += term
    return output_from_group_major(yg, geom, xp=xp)


def weight_grad(gy: Array, x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the weights: gy (N, F, Ho, Wo), x (N, C, H, W) -> (F, Cg, kh, kw)."""
    xg = input_group_major(x, geom, xp=xp)  # (G, Cg, N, Hp, Wp)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    per_tap = [
        gyg @ xp.matrix_transpose(_tap_patch(xg, geom, i, j, xp=xp))  # (G, Fg, Cg)
        for i, j in taps(geom)
    ]
    gwg = xp.stack(per_tap, axis=-1)  # (G, Fg, Cg, kh*kw)
    # (G, Fg, Cg, kh*kw) -> (G, Fg, Cg, kh, kw)
    gwg = xp.reshape(gwg, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    return weight_from_group(gwg, geom, xp=xp)


def input_grad(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Gradient w.r.t. the input: gy (N, F, Ho, Wo), w (F, Cg, kh, kw) -> (N, C, H, W)."""
    wg = weight_by_group(w, geom, xp=xp)  # (G, Fg, Cg, kh, kw)
    gyg = grad_output_group_major(gy, geom, xp=xp)  # (G, Fg, N*Ho*Wo)
    gxg = zeros((geom.groups, geom.cg, geom.n, geom.hp, geom.wp), gy, xp=xp)
    for i, j in taps(geom):
        contrib = xp.matrix_transpose(wg[..., i, j]) @ gyg  # (G, Cg, N*Ho*Wo)
        # (G, Cg, N*Ho*Wo) -> (G, Cg, N, Ho, Wo)
        contrib = xp.reshape(contrib, (geom.groups, geom.cg, geom.n, geom.ho, geom.wo))
        gxg = add_at(gxg, tap_index(geom, i, j, lead=3), contrib)
    return input_from_group_major(gxg, geom, xp=xp)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    return input_grad(gy, w, geom, xp=xp), weight_grad(gy, x, geom, xp=xp)
