"""Separable convolution: SVD rank decomposition of each kernel slice into 1-D passes.

Each slice ``w[f, c]`` (kh, kw) is written as ``sum_r u_r v_r^T`` (singular vectors scaled
by the square root of their singular value). With ``r`` the largest numerical rank over
all slices, the correlation becomes r column passes (along H) then r row passes (along W)::

    t[n, g, f, c, r, p, :] = sum_i u[g, f, c, r, i] * xpad[n, g, c, p*sh + i*dh, :]
    y[n, g, f, p, q]       = sum_{c, r, j} v[g, f, c, r, j] * t[n, g, f, c, r, p, q*sw + j*dw]

This is exact for any kernel (r <= min(kh, kw)); it pays off where r (kh + kw) is well
below kh kw, which the dispatcher checks. Singular values below
``max(kh, kw) * eps(dtype) * s_max`` of their slice are dropped, an error at the level of
the dtype's rounding.

Backward: the input gradient runs the transposed passes (row scatter, then column
scatter); the weight gradient does not factor through the SVD and is the direct tap
contraction of :mod:`.naive`.
Memory beyond input and output: the intermediate t, N·F·Cg·r·Ho·Wp elements.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry
from . import naive
from ._layout import ALL, add_at, crop_padding, pad_input, zeros

Array = Any


def numerical_rank(w: Array, *, xp: ModuleType) -> int:
    """Largest numerical rank over the kernel slices of w (F, Cg, kh, kw). Host decision."""
    s = xp.linalg.svdvals(w)  # (F, Cg, min(kh, kw))
    return _rank_from_singular_values(s, w, xp=xp)


def _rank_from_singular_values(s: Array, w: Array, *, xp: ModuleType) -> int:
    """Count singular values above ``max(kh, kw) * eps * s_max`` per slice; max over slices."""
    tol = max(w.shape[-2:]) * float(xp.finfo(w.dtype).eps)
    kept = s > tol * s[..., :1]
    rank = int(xp.max(xp.sum(xp.astype(kept, xp.int32), axis=-1)))
    return max(rank, 1)


def decompose(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> tuple[Array, Array]:
    """Rank-r factors of w (F, Cg, kh, kw): u (G, Fg, Cg, r, kh) and v (G, Fg, Cg, r, kw)."""
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    u, s, vh = xp.linalg.svd(wg, full_matrices=False)  # (..., kh, k), (..., k), (..., k, kw)
    r = _rank_from_singular_values(s, w, xp=xp)
    root = xp.sqrt(s[..., :r])  # (..., r)
    u = xp.matrix_transpose(u[..., :r] * root[..., None, :])  # (..., kh, r) -> (..., r, kh)
    v = vh[..., :r, :] * root[..., :, None]  # (..., r, kw)
    return u, v


def _padded_5d(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """(N, C, H, W) -> padded (N, G, Cg, Hp, Wp)."""
    xpad = pad_input(x, geom, xp=xp)
    # (N, C, Hp, Wp) -> (N, G, Cg, Hp, Wp)
    return xp.reshape(xpad, (geom.n, geom.groups, geom.cg, geom.hp, geom.wp))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo)."""
    u, v = decompose(w, geom, xp=xp)  # (G, Fg, Cg, r, kh), (G, Fg, Cg, r, kw)
    xpad = _padded_5d(x, geom, xp=xp)  # (N, G, Cg, Hp, Wp)
    cols = None  # column pass result t: (N, G, Fg, Cg, r, Ho, Wp)
    for i in range(geom.kh):
        rows = xpad[ALL, ALL, None, ALL, None, geom.tap_rows(i), ALL]  # (N, G, 1, Cg, 1, Ho, Wp)
        term = rows * u[None, ..., i, None, None]  # x (1, G, Fg, Cg, r, 1, 1)
        if cols is None:
            cols = term
        else:
            cols += term
    acc = None  # row pass before the channel/rank sum: (N, G, Fg, Cg, r, Ho, Wo)
    for j in range(geom.kw):
        term = cols[..., geom.tap_cols(j)] * v[None, ..., j, None, None]
        if acc is None:
            acc = term
        else:
            acc += term
    y = xp.sum(acc, axis=(3, 4))  # (N, G, Fg, Ho, Wo)
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
    return xp.reshape(y, geom.y_shape)


def input_grad(gy: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Transposed passes: gy (N, F, Ho, Wo) -> gx (N, C, H, W)."""
    u, v = decompose(w, geom, xp=xp)  # (G, Fg, Cg, r, kh), (G, Fg, Cg, r, kw)
    r = u.shape[3]
    # (N, F, Ho, Wo) -> (N, G, Fg, 1, 1, Ho, Wo)
    g = xp.reshape(gy, (geom.n, geom.groups, geom.fg, 1, 1, geom.ho, geom.wo))
    # transposed row pass: scatter along W into (N, G, Fg, Cg, r, Ho, Wp)
    t = zeros((geom.n, geom.groups, geom.fg, geom.cg, r, geom.ho, geom.wp), gy, xp=xp)
    for j in range(geom.kw):
        t = add_at(t, (ALL,) * 6 + (geom.tap_cols(j),), g * v[None, ..., j, None, None])
    # transposed column pass: contract over (Fg, r), scatter along H into (N, G, Cg, Hp, Wp)
    gxpad = zeros((geom.n, geom.groups, geom.cg, geom.hp, geom.wp), gy, xp=xp)
    for i in range(geom.kh):
        contrib = xp.sum(t * u[None, ..., i, None, None], axis=(2, 4))  # (N, G, Cg, Ho, Wp)
        gxpad = add_at(gxpad, (ALL,) * 3 + (geom.tap_rows(i), ALL), contrib)
    # (N, G, Cg, Hp, Wp) -> (N, C, Hp, Wp)
    gxpad = xp.reshape(gxpad, (geom.n, geom.c, geom.hp, geom.wp))
    return crop_padding(gxpad, geom)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``."""
    return input_grad(gy, w, geom, xp=xp), naive.weight_grad(gy, x, geom, xp=xp)
