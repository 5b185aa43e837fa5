"""FFT convolution: products in the frequency domain, contracted over channels.

Cross-correlation is computed as a *circular* correlation ``irfft(X * conj(W))`` at a fast
length ``L >= Hp`` (resp. ``Wp``). For every output position ``p`` that is kept,
``p + d(k-1) <= Hp - 1 < L``, so no term wraps around: the result is the linear
correlation, cropped at the origin and subsampled by the stride. The same length serves
the backward pass (the input gradient is a full convolution of length ``<= Hp``, the
weight gradient a correlation over ``<= Hp`` positions), so one transform of the input
is reused for all three products.

Channel contraction happens in the frequency domain as one batched matrix product per
frequency::

    Y[n, g, f, k] = sum_c X[n, g, c, k] * conj(Wf[g, f, c, k])

Real input stays in its precision (float32 -> complex64 -> float32).
FFT module: scipy.fft (NumPy), cupyx.scipy.fft (CuPy), ``xp.fft`` otherwise.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_extra as xpx
import scipy.fft

from ..backend import fft_module
from ..geometry import ConvGeometry
from ._layout import ALL, crop_padding, pad_input, zeros

Array = Any
AXES = (-2, -1)


def fast_shape(geom: ConvGeometry) -> tuple[int, int]:
    """FFT lengths (Lh, Lw): the next 5-smooth sizes >= (Hp, Wp). Host arithmetic."""
    return (
        scipy.fft.next_fast_len(geom.hp, real=True),
        scipy.fft.next_fast_len(geom.wp, real=True),
    )


def _dilate(wg: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Insert dh-1 / dw-1 zeros between taps: (..., kh, kw) -> (..., khd, kwd)."""
    dh, dw = geom.dilation
    if dh == dw == 1:
        return wg
    out = zeros((*wg.shape[:-2], geom.kh_dilated, geom.kw_dilated), wg, xp=xp)
    return _set_strided(out, wg, (dh, dw))


def _set_strided(target: Array, values: Array, step: tuple[int, int]) -> Array:
    """``target[..., ::step[0], ::step[1]] = values`` through array-api-extra."""
    return xpx.at(target, (..., slice(None, None, step[0]), slice(None, None, step[1]))).set(values)


#: Below this many multiply-adds per frequency, the channel contraction is a broadcast
#: product and sum instead of a batched matrix product (tiny matmuls are slow).
SMALL_CONTRACTION = 16


def _contract(a: Array, b: Array, *, xp: ModuleType) -> Array:
    """Per-frequency matrix product: a (G, P, I, K) @ b (G, P, K, J) -> (G, P, I, J)."""
    i, k = a.shape[-2:]
    j = b.shape[-1]
    if i * k * j >= SMALL_CONTRACTION:
        return a @ b
    if k == 1:
        return a * b  # (G, P, I, 1) * (G, P, 1, J) -> (G, P, I, J)
    # (G, P, I, K, 1) * (G, P, 1, K, J) summed over K -> (G, P, I, J)
    return xp.sum(a[..., None] * b[..., None, :, :], axis=-2)


def _to_freq_major(z: Array, *, xp: ModuleType) -> Array:
    """(A, G, B, Lh, Lw2) -> (G, Lh*Lw2, A, B): frequencies become a batch axis."""
    a, g, b, lh, lw2 = z.shape
    z = xp.permute_dims(z, (1, 3, 4, 0, 2))  # (G, Lh, Lw2, A, B)
    # (G, Lh, Lw2, A, B) -> (G, Lh*Lw2, A, B)
    return xp.reshape(z, (g, lh * lw2, a, b))


def _from_freq_major(z: Array, lh: int, lw2: int, *, xp: ModuleType) -> Array:
    """(G, Lh*Lw2, A, B) -> (A, G, B, Lh, Lw2)."""
    g, _, a, b = z.shape
    # (G, Lh*Lw2, A, B) -> (G, Lh, Lw2, A, B)
    z = xp.reshape(z, (g, lh, lw2, a, b))
    return xp.permute_dims(z, (3, 0, 4, 1, 2))  # (A, G, B, Lh, Lw2)


def _input_spectrum(x: Array, geom: ConvGeometry, shape: tuple[int, int], *, xp, fft) -> Array:
    """rfft of the padded input: (N, C, H, W) -> (N, G, Cg, Lh, Lw//2+1)."""
    xpad = pad_input(x, geom, xp=xp)
    # (N, C, Hp, Wp) -> (N, G, Cg, Hp, Wp)
    xpad = xp.reshape(xpad, (geom.n, geom.groups, geom.cg, geom.hp, geom.wp))
    return fft.rfftn(xpad, s=shape, axes=AXES)


def _weight_spectrum(w: Array, geom: ConvGeometry, shape: tuple[int, int], *, xp, fft) -> Array:
    """rfft of the dilated kernel: (F, Cg, kh, kw) -> (Fg, G, Cg, Lh, Lw//2+1)."""
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    wg = xp.permute_dims(wg, (1, 0, 2, 3, 4))  # (Fg, G, Cg, kh, kw)
    return fft.rfftn(_dilate(wg, geom, xp=xp), s=shape, axes=AXES)


def _upsample_grad(gy: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """gy (N, F, Ho, Wo) -> (N, G, Fg, Hv, Wv) with stride-1 zeros between rows/columns."""
    # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    g = xp.reshape(gy, (geom.n, geom.groups, geom.fg, geom.ho, geom.wo))
    sh, sw = geom.stride
    if sh == sw == 1:
        return g
    hv, wv = (geom.ho - 1) * sh + 1, (geom.wo - 1) * sw + 1
    up = zeros((geom.n, geom.groups, geom.fg, hv, wv), g, xp=xp)
    return _set_strided(up, g, (sh, sw))


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo)."""
    fft = fft_module(xp)
    shape = fast_shape(geom)
    lh, lw2 = shape[0], shape[1] // 2 + 1
    xf = _to_freq_major(_input_spectrum(x, geom, shape, xp=xp, fft=fft), xp=xp)  # (G, P, N, Cg)
    wf = _weight_spectrum(w, geom, shape, xp=xp, fft=fft)  # (Fg, G, Cg, Lh, Lw2)
    # (Fg, G, Cg, Lh, Lw2) -> (G, P, Fg, Cg) -> (G, P, Cg, Fg)
    wf = xp.matrix_transpose(_to_freq_major(xp.conj(wf), xp=xp))
    yf = _from_freq_major(_contract(xf, wf, xp=xp), lh, lw2, xp=xp)  # (N, G, Fg, Lh, Lw2)
    y = fft.irfftn(yf, s=shape, axes=AXES)  # (N, G, Fg, Lh, Lw)
    sh, sw = geom.stride
    y = y[ALL, ALL, ALL, : (geom.ho - 1) * sh + 1 : sh, : (geom.wo - 1) * sw + 1 : sw]
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
    return xp.astype(xp.reshape(y, geom.y_shape), x.dtype, copy=False)


def backward(
    gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Gradients ``(gx, gw)`` of ``sum(gy * forward(x, w))``.

    ``gx`` is the full convolution of the upsampled ``gy`` with the dilated kernel,
    ``gw`` the correlation of the input with the upsampled ``gy``; both at the forward's
    FFT lengths.
    """
    fft = fft_module(xp)
    shape = fast_shape(geom)
    lh, lw2 = shape[0], shape[1] // 2 + 1
    gyf = fft.rfftn(_upsample_grad(gy, geom, xp=xp), s=shape, axes=AXES)  # (N, G, Fg, Lh, Lw2)
    gyf = _to_freq_major(gyf, xp=xp)  # (G, P, N, Fg)
    # input gradient: GX[n, g, c] = sum_f GY[n, g, f] * Wf[g, f, c]
    wf = _to_freq_major(_weight_spectrum(w, geom, shape, xp=xp, fft=fft), xp=xp)  # (G, P, Fg, Cg)
    gxf = _from_freq_major(_contract(gyf, wf, xp=xp), lh, lw2, xp=xp)  # (N, G, Cg, Lh, Lw2)
    del wf
    gxp = fft.irfftn(gxf, s=shape, axes=AXES)[..., : geom.hp, : geom.wp]  # (N, G, Cg, Hp, Wp)
    # (N, G, Cg, Hp, Wp) -> (N, C, Hp, Wp)
    gxp = xp.reshape(gxp, (geom.n, geom.c, geom.hp, geom.wp))
    gx = xp.astype(crop_padding(gxp, geom), x.dtype, copy=False)
    # weight gradient: GW[g, f, c] = sum_n conj(GY[n, g, f]) * X[n, g, c]
    xf = _to_freq_major(_input_spectrum(x, geom, shape, xp=xp, fft=fft), xp=xp)  # (G, P, N, Cg)
    gwf = _contract(xp.matrix_transpose(xp.conj(gyf)), xf, xp=xp)  # (G, P, Fg, Cg)
    # (G, P, Fg, Cg) -> (Fg, G, Cg, Lh, Lw2)
    gwf = _from_freq_major(gwf, lh, lw2, xp=xp)
    gwd = fft.irfftn(gwf, s=shape, axes=AXES)  # (Fg, G, Cg, Lh, Lw)
    dh, dw = geom.dilation
    gwd = gwd[..., : geom.kh_dilated : dh, : geom.kw_dilated : dw]  # (Fg, G, Cg, kh, kw)
    # (Fg, G, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    gw = xp.permute_dims(gwd, (1, 0, 2, 3, 4))
    # (G, Fg, Cg, kh, kw) -> (F, Cg, kh, kw)
    return gx, xp.astype(xp.reshape(gw, geom.w_shape), w.dtype, copy=False)
