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
from ._layout import ALL, crop_padding, pad_input, set_at, zeros

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


def forward_length(size: int, out: int, kernel: int, stride: int, pad_lo: int) -> int:
    """Shortest fast length at which the forward's circular convolution is exact, one axis.

    Parameters
    ----------
    size, out : int
        Input (unpadded) and output length of the axis.
    kernel : int
        Dilated kernel length ``kd``.
    stride, pad_lo : int
        Stride and leading padding of the axis.

    Notes
    -----
    The forward convolves the *unpadded* input circularly, at length ``L``, with the
    flipped kernel whose tap ``t`` sits at ``(p - t) mod L`` (``p = pad_lo``), and keeps
    the outputs ``o = 0, s, ..., M = (out - 1) s``. Output ``o`` receives input ``m`` through
    the residue of ``o - m``; the taps occupy ``u = p - t`` in ``[p - kd + 1, p]`` and the
    true differences ``o - m`` lie in ``[o - size + 1, o]``. No wrapped term reaches a kept
    output when both spans stay below ``L``: ``p + size - 1 < L`` (output 0) and
    ``M - (p - kd + 1) < L`` (output M); ``M < L`` keeps the crop a plain slice at 0 and
    ``kd <= L`` keeps the taps at distinct positions. Every such ``L`` is ``<= Hp``.
    """
    last = (out - 1) * stride
    need = max(size + pad_lo, last + kernel - pad_lo, last + 1, kernel)
    return scipy.fft.next_fast_len(need, real=True)


def forward_shape(geom: ConvGeometry) -> tuple[int, int]:
    """FFT lengths (Lh, Lw) of the untiled forward (see :func:`forward_length`). Host."""
    (top, _), (left, _) = geom.padding
    return (
        forward_length(geom.h, geom.ho, geom.kh_dilated, geom.stride[0], top),
        forward_length(geom.w, geom.wo, geom.kw_dilated, geom.stride[1], left),
    )


def _wrapped(offset: int, taps: int, step: int, length: int) -> list[tuple[slice, slice]]:
    """(target, source) slices putting entry ``r < taps`` at ``(offset + step r) mod length``.

    ``0 <= offset < length`` and ``step (taps - 1) < length``: one piece, or two when the
    entries wrap past the end.
    """
    first = min(taps, -(-(length - offset) // step))  # entries before the wrap, >= 1
    pieces = [(slice(offset, offset + step * (first - 1) + 1, step), slice(0, first))]
    if first < taps:
        start = offset + step * first - length
        stop = start + step * (taps - first - 1) + 1
        pieces.append((slice(start, stop, step), slice(first, taps)))
    return pieces


def _kernel_spectrum(
    w: Array,
    geom: ConvGeometry,
    shape: tuple[int, int],
    offsets: tuple[int, int],
    *,
    xp: ModuleType,
    fft: ModuleType,
) -> Array:
    """rfft of the flipped, dilated kernel placed circularly at ``offsets``.

    Flipped tap ``r`` (original ``kd - 1 - r``) of each axis sits at ``(offset + r) mod L``
    (dilated: every ``d``-th position). (F, Cg, kh, kw) -> (G, Fg, Cg, Lh, Lw//2+1).
    """
    # (F, Cg, kh, kw) -> (G, Fg, Cg, kh, kw)
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))
    wflip = xp.flip(wg, axis=(-2, -1))
    placed = zeros((geom.groups, geom.fg, geom.cg, *shape), w, xp=xp)
    (dh, dw), (lh, lw) = geom.dilation, shape
    for rows, src_rows in _wrapped(offsets[0], geom.kh, dh, lh):
        for cols, src_cols in _wrapped(offsets[1], geom.kw, dw, lw):
            placed = set_at(placed, (ALL, ALL, ALL, rows, cols), wflip[..., src_rows, src_cols])
    return fft.rfftn(placed, s=shape, axes=AXES)


def _product(xf: Array, wf: Array, *, xp: ModuleType) -> Array:
    """Per-frequency channel contraction ``Y[a, g, f] = sum_c X[a, g, c] W[g, f, c]``.

    xf (A, G, Cg, Lh, Lw2), wf (G, Fg, Cg, Lh, Lw2) -> (A, G, Fg, Lh, Lw2). With one input
    or one output channel per group it is a broadcast product in this layout (no
    reordering); otherwise a batched matrix product over frequencies (:func:`_contract`).
    """
    _, g, cg, lh, lw2 = xf.shape
    fg = wf.shape[1]
    if cg == 1:
        # (A, G, 1, Lh, Lw2) * (1, G, Fg, Lh, Lw2) -> (A, G, Fg, Lh, Lw2)
        return xf * xp.reshape(wf, (1, g, fg, lh, lw2))
    if fg == 1:
        # (A, G, Cg, Lh, Lw2) * (1, G, Cg, Lh, Lw2), summed over Cg -> (A, G, 1, Lh, Lw2)
        return xp.sum(xf * xp.reshape(wf, (1, g, cg, lh, lw2)), axis=2, keepdims=True)
    xm = _to_freq_major(xf, xp=xp)  # (G, P, A, Cg)
    wm = xp.permute_dims(wf, (1, 0, 2, 3, 4))  # (Fg, G, Cg, Lh, Lw2)
    # (Fg, G, Cg, Lh, Lw2) -> (G, P, Fg, Cg) -> (G, P, Cg, Fg)
    wm = xp.matrix_transpose(_to_freq_major(wm, xp=xp))
    return _from_freq_major(_contract(xm, wm, xp=xp), lh, lw2, xp=xp)  # (A, G, Fg, Lh, Lw2)


def _overwrite(fft: ModuleType) -> dict[str, bool]:
    """``overwrite_x=True`` for the SciPy-style FFT modules that accept it, else nothing."""
    name = getattr(fft, "__name__", "")
    return {"overwrite_x": True} if name in ("scipy.fft", "cupyx.scipy.fft") else {}


def _inverse(yf: Array, shape: tuple[int, int], rows: slice, cols: slice, *, fft) -> Array:
    """``irfftn(yf, s=shape)[..., rows, cols]`` computing only the kept rows' last pass.

    The inverse over the rows is a complex transform of every column (in place where the
    FFT module allows; ``yf`` is consumed); the real inverse over the columns then runs on
    the kept rows only. (..., Lh, Lw2) -> (..., len(rows), len(cols)).
    """
    z = fft.ifft(yf, axis=-2, **_overwrite(fft))  # (..., Lh, Lw2)
    return fft.irfft(z[..., rows, :], n=shape[1], axis=-1)[..., cols]


def _kept(out: int, stride: int) -> slice:
    """Positions 0, s, ..., (out - 1) s of a circular result that are outputs."""
    return slice(0, (out - 1) * stride + 1, stride)


def forward(x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Cross-correlate x (N, C, H, W) with w (F, Cg, kh, kw) -> (N, F, Ho, Wo).

    A circular convolution of the unpadded input with the flipped kernel placed at
    ``p - kd + 1`` (mod L) per axis, at the lengths of :func:`forward_shape`: the zero
    padding and the conjugate of the kernel spectrum are never formed, and the outputs
    start at position 0.
    """
    fft = fft_module(xp)
    shape = forward_shape(geom)
    # (N, C, H, W) -> (N, G, Cg, H, W)
    x5 = xp.reshape(x, (geom.n, geom.groups, geom.cg, geom.h, geom.w))
    xf = fft.rfftn(x5, s=shape, axes=AXES)  # (N, G, Cg, Lh, Lw2)
    (top, _), (left, _) = geom.padding
    offsets = ((top - geom.kh_dilated + 1) % shape[0], (left - geom.kw_dilated + 1) % shape[1])
    wf = _kernel_spectrum(w, geom, shape, offsets, xp=xp, fft=fft)  # (G, Fg, Cg, Lh, Lw2)
    yf = _product(xf, wf, xp=xp)  # (N, G, Fg, Lh, Lw2)
    del xf, wf
    rows, cols = _kept(geom.ho, geom.stride[0]), _kept(geom.wo, geom.stride[1])
    y = _inverse(yf, shape, rows, cols, fft=fft)  # (N, G, Fg, Ho, Wo)
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
