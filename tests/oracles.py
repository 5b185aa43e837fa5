"""Independent references for 2-D convolution (cross-correlation), forward and backward.

Nothing here imports arraycnn: the padding rules, output sizes and sums are written from
the definition, so that the library is checked against something it does not share code with.

Definition (NCHW input, weights (F, C/G, kh, kw), G groups, Cg = C/G, Fg = F/G)::

    xpad = x zero-padded by (top, bottom) rows and (left, right) columns
    y[n, f, p, q] = b[f] + sum_{c < Cg, i < kh, j < kw}
                    w[f, c, i, j] * xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw],   g = f // Fg
    Ho = floor((H + top + bottom - dh*(kh - 1) - 1) / sh) + 1   (likewise Wo)

Padding forms: int p (p on every side); (ph, pw); ((top, bottom), (left, right));
"valid" (none); "full" (d(k-1) on every side); "same" (TensorFlow: output ceil(i / s),
total padding max((o - 1) s + d(k - 1) + 1 - i, 0), the odd pixel at the end).

Oracles
-------
- :func:`correlate_loops` / :func:`correlate_loops_backward`: explicit Python loops over
  output positions (tiny inputs only); :func:`nonfinite_outputs` /
  :func:`nonfinite_input_grads`: where NaN/Inf may reach, by the same loops.
- :func:`correlate_scipy` / :func:`correlate_scipy_backward`: ``scipy.signal.correlate2d``
  / ``convolve2d`` per (image, filter, channel), padding / dilation / stride applied here.
- :func:`correlate_torch`: ``torch.nn.functional.conv2d`` and autograd (None without torch).
- :func:`error_scales`: the same correlations on absolute values, the rounding-error scale
  ``sum |x| |w|`` of every output (and of every gradient entry) of a plain sum of products.
- :func:`kernel_scales`, :func:`norm_scales`: coarser scales for strategies whose rounding
  is not that of a plain sum (SVD factors, FFT); :data:`ERROR_MODEL` says which applies.

All oracles compute in float64 NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal

__all__ = [
    "ERROR_MODEL",
    "MODELS",
    "Reference",
    "correlate_loops",
    "correlate_loops_backward",
    "correlate_scipy",
    "correlate_scipy_backward",
    "correlate_torch",
    "error_scales",
    "explicit_padding",
    "fits",
    "kernel_scales",
    "nonfinite_input_grads",
    "nonfinite_outputs",
    "norm_scales",
    "out_size",
    "reference",
]


def _two(value: Any) -> tuple[int, int]:
    """An int or a pair of ints as a pair."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def explicit_padding(
    padding: Any,
    input_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: Any = 1,
    dilation: Any = 1,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Any padding form as ``((top, bottom), (left, right))``."""
    stride, dilation = _two(stride), _two(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "full":
            ph, pw = (d * (k - 1) for k, d in zip(kernel_hw, dilation))
            return (ph, ph), (pw, pw)
        if padding == "same":
            return tuple(  # type: ignore[return-value]
                _same_pads(i, k, s, d) for i, k, s, d in zip(input_hw, kernel_hw, stride, dilation)
            )
        raise ValueError(f"oracle: unknown padding {padding!r}")
    if isinstance(padding, (tuple, list)) and isinstance(padding[0], (tuple, list)):
        return (int(padding[0][0]), int(padding[0][1])), (int(padding[1][0]), int(padding[1][1]))
    ph, pw = _two(padding)
    return (ph, ph), (pw, pw)


def out_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Output length of one axis (may be < 1 when the kernel does not fit)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def fits(x_shape, w_shape, *, stride=1, padding=0, dilation=1) -> bool:
    """True if the dilated kernel fits the padded input on both axes."""
    (t, b), (left, r) = explicit_padding(padding, x_shape[2:], w_shape[2:], stride, dilation)
    s, d = _two(stride), _two(dilation)
    return (
        out_size(x_shape[2], w_shape[2], s[0], t, b, d[0]) >= 1
        and out_size(x_shape[3], w_shape[3], s[1], left, r, d[1]) >= 1
    )


@dataclass(frozen=True)
class _Geom:
    """Geometry of one call, computed by the oracle itself."""

    n: int
    c: int
    f: int
    groups: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple[tuple[int, int], tuple[int, int]]
    hp: int
    wp: int
    ho: int
    wo: int

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def fg(self) -> int:
        return self.f // self.groups


def _geom(x_shape, w_shape, stride, padding, dilation, groups) -> _Geom:
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    if cg * groups != c or f % groups:
        raise ValueError("oracle: channels do not match groups")
    sh, sw = _two(stride)
    dh, dw = _two(dilation)
    pads = explicit_padding(padding, (h, w), (kh, kw), (sh, sw), (dh, dw))
    ho = out_size(h, kh, sh, *pads[0], dh)
    wo = out_size(w, kw, sw, *pads[1], dw)
    if ho < 1 or wo < 1:
        raise ValueError("oracle: the dilated kernel does not fit the padded input")
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    return _Geom(n, c, f, groups, kh, kw, sh, sw, dh, dw, pads, hp, wp, ho, wo)


def _pad(x: np.ndarray, pads) -> np.ndarray:
    (t, b), (left, r) = pads
    return np.pad(np.asarray(x, dtype=_exact(x)), ((0, 0), (0, 0), (t, b), (left, r)))


def _crop(xpad: np.ndarray, g: _Geom) -> np.ndarray:
    (t, b), (left, r) = g.pads
    return xpad[:, :, t : g.hp - b, left : g.wp - r]


# --------------------------------------------------------------------------- explicit loops


def _exact(*arrays) -> type:
    """complex128 where any array is complex, else float64: the loops' arithmetic."""
    return np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64


def _magnitudes(a) -> np.ndarray:
    """|a| in float64 (complex magnitudes too)."""
    return np.abs(np.asarray(a, _exact(a))).astype(np.float64)


def correlate_loops(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """The definition, one output value at a time (use on tiny inputs). Complex data
    multiplies without conjugation, as torch's complex conv2d."""
    values = _exact(x, w, b)
    x, w = np.asarray(x, dtype=values), np.asarray(w, dtype=values)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups)
    xpad = _pad(x, g.pads)
    y = np.zeros((g.n, g.f, g.ho, g.wo), dtype=values)
    for n in range(g.n):
        for f in range(g.f):
            c0 = (f // g.fg) * g.cg
            for p in range(g.ho):
                for q in range(g.wo):
                    total = 0.0 if b is None else values(b[f])
                    for c in range(g.cg):
                        for i in range(g.kh):
                            for j in range(g.kw):
                                row, col = p * g.sh + i * g.dh, q * g.sw + j * g.dw
                                total += w[f, c, i, j] * xpad[n, c0 + c, row, col]
                    y[n, f, p, q] = total
    return y


def correlate_loops_backward(
    gy, x, w, *, stride=1, padding=0, dilation=1, groups=1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gx, gw, gb) of ``sum(gy * y)``: each product term of the definition, differentiated.
    Complex data follows torch autograd (``dL/dRe + i dL/dIm`` of a real loss): gx gathers
    ``gy * conj(w)``, gw sums ``conj(x) * gy``."""
    values = _exact(x, w, gy)
    x, w = np.asarray(x, dtype=values), np.asarray(w, dtype=values)
    gy = np.asarray(gy, dtype=values)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups)
    xpad = _pad(x, g.pads)
    gxpad = np.zeros_like(xpad)
    gw = np.zeros_like(w)
    gb = np.zeros(g.f, dtype=values)
    xconj, wconj = np.conj(xpad), np.conj(w)
    for n in range(g.n):
        for f in range(g.f):
            c0 = (f // g.fg) * g.cg
            for p in range(g.ho):
                for q in range(g.wo):
                    up = gy[n, f, p, q]
                    gb[f] += up
                    for c in range(g.cg):
                        for i in range(g.kh):
                            for j in range(g.kw):
                                row, col = p * g.sh + i * g.dh, q * g.sw + j * g.dw
                                gw[f, c, i, j] += up * xconj[n, c0 + c, row, col]
                                gxpad[n, c0 + c, row, col] += up * wconj[f, c, i, j]
    return _crop(gxpad, g), gw, gb


def nonfinite_outputs(x, w, *, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """The receptive-field rule: y[n, f, p, q] is non-finite iff its window (every tap)
    meets a NaN/Inf of x, or w[f] holds one. Boolean (N, F, Ho, Wo)."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups)
    bad = np.pad(~np.isfinite(x), ((0, 0), (0, 0), *g.pads))
    mask = np.zeros((g.n, g.f, g.ho, g.wo), dtype=bool)
    for n in range(g.n):
        for f in range(g.f):
            c0 = (f // g.fg) * g.cg
            for p in range(g.ho):
                for q in range(g.wo):
                    hit = not np.isfinite(w[f]).all()
                    for i in range(g.kh):
                        for j in range(g.kw):
                            row, col = p * g.sh + i * g.dh, q * g.sw + j * g.dw
                            hit |= bool(bad[n, c0 : c0 + g.cg, row, col].any())
                    mask[n, f, p, q] = hit
    return mask


def nonfinite_input_grads(gy, x_shape, w_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """gx[n, c, h, w] is non-finite iff a NaN/Inf of gy reaches (h, w) through some tap
    (finite w). Boolean (N, C, H, W)."""
    gy = np.asarray(gy, dtype=np.float64)
    g = _geom(x_shape, w_shape, stride, padding, dilation, groups)
    mask = np.zeros((g.n, g.c, g.hp, g.wp), dtype=bool)
    for n, f, p, q in zip(*np.nonzero(~np.isfinite(gy))):
        c0 = (f // g.fg) * g.cg
        for i in range(g.kh):
            for j in range(g.kw):
                mask[n, c0 : c0 + g.cg, p * g.sh + i * g.dh, q * g.sw + j * g.dw] = True
    return _crop(mask, g)


# --------------------------------------------------------------------------- scipy.signal


def _dilate(k: np.ndarray, dh: int, dw: int) -> np.ndarray:
    """Zero insertion: (kh, kw) -> (dh (kh-1) + 1, dw (kw-1) + 1)."""
    out = np.zeros((dh * (k.shape[0] - 1) + 1, dw * (k.shape[1] - 1) + 1))
    out[::dh, ::dw] = k
    return out


def _upsample(a: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Zero insertion between the entries of a (Ho, Wo) map."""
    out = np.zeros(((a.shape[0] - 1) * sh + 1, (a.shape[1] - 1) * sw + 1))
    out[::sh, ::sw] = a
    return out


def correlate_scipy(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """``scipy.signal.correlate2d(mode="valid")`` summed over each group's channels."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups)
    xpad = _pad(x, g.pads)
    y = np.zeros((g.n, g.f, g.ho, g.wo))
    for f in range(g.f):
        c0 = (f // g.fg) * g.cg
        kernels = [_dilate(w[f, c], g.dh, g.dw) for c in range(g.cg)]
        for n in range(g.n):
            acc = sum(
                scipy.signal.correlate2d(xpad[n, c0 + c], kernels[c], mode="valid")
                for c in range(g.cg)
            )
            y[n, f] = acc[:: g.sh, :: g.sw][: g.ho, : g.wo]
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def correlate_scipy_backward(
    gy, x, w, *, stride=1, padding=0, dilation=1, groups=1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gx, gw, gb) with scipy.signal.

    ``gx``: full convolution of the stride-upsampled ``gy`` with the dilated kernel, placed
    at the top-left of the padded input and cropped; ``gw``: valid correlation of the padded
    input with the upsampled ``gy``, read at the dilated tap offsets.
    """
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups)
    xpad = _pad(x, g.pads)
    gxpad = np.zeros_like(xpad)
    gw = np.zeros_like(w)
    for n in range(g.n):
        for f in range(g.f):
            c0 = (f // g.fg) * g.cg
            up = _upsample(gy[n, f], g.sh, g.sw)
            for c in range(g.cg):
                full = scipy.signal.convolve2d(up, _dilate(w[f, c], g.dh, g.dw), mode="full")
                gxpad[n, c0 + c, : full.shape[0], : full.shape[1]] += full
                corr = scipy.signal.correlate2d(xpad[n, c0 + c], up, mode="valid")
                gw[f, c] += corr[:: g.dh, :: g.dw][: g.kh, : g.kw]
    return _crop(gxpad, g), gw, gy.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------- torch


def correlate_torch(
    x, w, b=None, gy=None, *, stride=1, padding=0, dilation=1, groups=1
) -> tuple[np.ndarray, ...] | None:
    """``torch.nn.functional.conv2d`` in float64 (explicit padding with F.pad).

    Returns ``(y,)``, or ``(y, gx, gw, gb)`` by autograd when ``gy`` is given; None
    without torch.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # pragma: no cover - torch is optional
        return None
    x = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    w = torch.tensor(np.asarray(w, dtype=np.float64), requires_grad=True)
    if b is None:
        b = np.zeros(w.shape[0])
    b = torch.tensor(np.asarray(b, dtype=np.float64), requires_grad=True)
    (t, bt), (left, r) = explicit_padding(
        padding, tuple(x.shape[2:]), tuple(w.shape[2:]), stride, dilation
    )
    xpad = F.pad(x, (left, r, t, bt))
    y = F.conv2d(xpad, w, b, stride=_two(stride), dilation=_two(dilation), groups=groups)
    if gy is None:
        return (y.detach().numpy(),)
    y.backward(torch.tensor(np.asarray(gy, dtype=np.float64)))
    return tuple(a.detach().numpy() for a in (y, x.grad, w.grad, b.grad))


# --------------------------------------------------------------------------- error scale


#: Error model of each strategy of arraycnn, by name: which scale its rounding error is
#: proportional to, per result (y, gx, gw). Every strategy must appear here (checked by
#: the tests), so a new strategy forces a decision.
#:
#: - ``local``: ``sum |x||w|`` over the output's own window (a plain sum of products).
#: - ``kernel``: ``sum_window |x| * |w[f, c]|_F`` (:func:`kernel_scales`): the SVD factors
#:   of separable are exact only up to ``eps * s_max`` of the kernel slice, so a tap whose
#:   weight is ~0 still carries an error ``eps * |w|_F * |x|``.
#: - ``map``: whole-map 2-norm products (:func:`norm_scales`): an FFT mixes every position.
#: - ``tile``: the transforms' growth times a window widened to the whole tile
#:   (:func:`tile_scales`): Winograd mixes the inputs of a tile.
ERROR_MODEL: dict[str, dict[str, str]] = {
    "naive": {"y": "local", "gx": "local", "gw": "local"},
    "im2col": {"y": "local", "gx": "local", "gw": "local"},
    "separable": {"y": "kernel", "gx": "kernel", "gw": "local"},  # gw: direct taps
    "fft": {"y": "map", "gx": "map", "gw": "map"},
    "winograd": {"y": "tile", "gx": "tile", "gw": "tile"},
}

MODELS = ("local", "kernel", "map", "tile")


@dataclass(frozen=True)
class Reference:
    """Oracle results and their error scales for one call.

    ``scales[model]`` = ``(y_s, gx_s, gw_s, gb_s)`` for ``model`` in :data:`MODELS`, each
    at least the local scale (:func:`error_scales`): ``sum |x||w| (+ |b|)`` per output,
    ``sum |gy||w|`` per input entry, ``sum |gy||x|`` per weight, ``sum |gy|`` per bias.
    """

    y: np.ndarray
    gx: np.ndarray
    gw: np.ndarray
    gb: np.ndarray
    scales: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

    def scales_for(self, models: dict[str, str]) -> tuple[np.ndarray, ...]:
        """``(y_s, gx_s, gw_s, gb_s)`` for a strategy's models ``{"y": .., "gx": .., "gw": ..}``."""
        return (
            self.scales[models["y"]][0],
            self.scales[models["gx"]][1],
            self.scales[models["gw"]][2],
            self.scales["local"][3],
        )


def error_scales(x, w, b=None, gy=None, *, model="local", **geometry) -> tuple[np.ndarray, ...]:
    """The error scales ``(y_s,)`` or ``(y_s, gx_s, gw_s, gb_s)`` of ``model``.

    ``local``: the oracle run on absolute values. ``kernel`` and ``map``: the elementwise
    maximum of the local scale and :func:`kernel_scales` / :func:`norm_scales`.
    """
    ax, aw = _magnitudes(x), _magnitudes(w)
    ab = None if b is None else _magnitudes(b)
    scales = [correlate_scipy(ax, aw, ab, **geometry)]
    if gy is not None:
        gy_abs = _magnitudes(gy)
        scales.extend(correlate_scipy_backward(gy_abs, ax, aw, **geometry))
    if model == "local":
        return tuple(scales)
    if model == "kernel":
        other = kernel_scales(x, w, b, gy, **geometry)
    elif model == "map":
        other = norm_scales(x, w, b, gy, **geometry)
    elif model == "tile":
        other = tile_scales(x, w, b, gy, **geometry)
    else:
        raise ValueError(f"oracle: unknown error model {model!r}")
    return tuple(np.maximum(s, o) for s, o in zip(scales, other))


def kernel_scales(x, w, b=None, gy=None, **geometry) -> tuple[np.ndarray, ...]:
    """Scales of a factorized kernel: every tap weighted by its slice's Frobenius norm.

    ``y[n, f, p, q]``: ``sum_c |w[f, c]|_F sum_{i, j} |xpad[n, c, ...]|`` (+ ``|b[f]|``);
    ``gx``: the same adjoint with ``|gy|``; ``gw``: ``sum |gy||x|``; ``gb``: ``sum |gy|``.
    It bounds the local scale (``|w[f, c, i, j]| <= |w[f, c]|_F``).
    """
    ax, w = _magnitudes(x), _magnitudes(w)
    norms = np.sqrt(np.sum(w**2, axis=(2, 3), keepdims=True))  # (F, Cg, 1, 1)
    flat = np.broadcast_to(norms, w.shape)  # (F, Cg, kh, kw), every tap |w[f, c]|_F
    ab = None if b is None else _magnitudes(b)
    y_s = correlate_scipy(ax, flat, ab, **geometry)
    if gy is None:
        return (y_s,)
    gy_abs = _magnitudes(gy)
    return (y_s, *correlate_scipy_backward(gy_abs, ax, flat, **geometry))


def norm_scales(x, w, b=None, gy=None, **geometry) -> tuple[np.ndarray, ...]:
    """Error scales of a transform-based correlation: products of whole-map 2-norms.

    An FFT mixes every position of a map, so its rounding error at an output is set by the
    whole maps, not by that output's window: where the window sees only padding the exact
    result is 0, yet the FFT leaves noise of order ``eps * |x_map|_2 |w|_2``. Per output map
    ``y[n, f]`` the scale is ``sum_c |x[n, c]|_2 |w[f, c]|_2`` (+ ``|b[f]|``) over the
    group's channels; by Cauchy-Schwarz it bounds every local ``sum |x||w|`` of that map.
    Likewise ``gx[n, c]``: ``sum_f |gy[n, f]|_2 |w[f, c]|_2``; ``gw[f, c]``:
    ``sum_n |gy[n, f]|_2 |x[n, c]|_2``; ``gb``: ``sum |gy|``.
    Returns ``(y_s,)`` or ``(y_s, gx_s, gw_s, gb_s)``, broadcast to the results' shapes.
    """
    x, w = _magnitudes(x), _magnitudes(w)
    g = _geom(
        x.shape,
        w.shape,
        geometry.get("stride", 1),
        geometry.get("padding", 0),
        geometry.get("dilation", 1),
        geometry.get("groups", 1),
    )
    xn = np.sqrt(np.sum(x**2, axis=(2, 3)))  # (N, C)
    wn = np.sqrt(np.sum(w**2, axis=(2, 3)))  # (F, Cg)
    # (N, C) -> (N, G, Cg); (F, Cg) -> (G, Fg, Cg)
    xg = xn.reshape(g.n, g.groups, g.cg)
    wg = wn.reshape(g.groups, g.fg, g.cg)
    y_s = np.einsum("ngc,gfc->ngf", xg, wg).reshape(g.n, g.f)  # (N, F)
    if b is not None:
        y_s = y_s + _magnitudes(b)[None, :]
    y_s = np.broadcast_to(y_s[:, :, None, None], (g.n, g.f, g.ho, g.wo))
    if gy is None:
        return (y_s,)
    gy = _magnitudes(gy)
    gyn = np.sqrt(np.sum(gy**2, axis=(2, 3))).reshape(g.n, g.groups, g.fg)  # (N, G, Fg)
    gx_s = np.einsum("ngf,gfc->ngc", gyn, wg).reshape(g.n, g.c)  # (N, C)
    gw_s = np.einsum("ngf,ngc->gfc", gyn, xg).reshape(g.f, g.cg)  # (F, Cg)
    gx_s = np.broadcast_to(gx_s[:, :, None, None], x.shape)
    gw_s = np.broadcast_to(gw_s[:, :, None, None], w.shape)
    return y_s, gx_s, gw_s, np.abs(gy).sum(axis=(0, 2, 3))


def tile_scales(x, w, b=None, gy=None, **geometry) -> tuple[np.ndarray, ...]:
    """Error scales of Winograd tiles (:func:`arraycnn.conv.winograd.error_growth`).

    A tile's outputs mix every input of the tile, so the window of an output is widened by
    ``m - 1`` on each side (any alignment of the tiles, in batch chunks or row bands), and
    every tap weighted by its slice's largest magnitude, times the transforms' growth:
    ``y[n, f]``: ``growth * sum_c max|w[f, c]| * sum_{widened window} |x[n, c]|``; ``gx``
    the same adjoint with ``|gy|``; ``gw[f, c]``: ``growth' * alpha_h alpha_w * sum_n
    sum |gy[n, f]| max |x[n, c]|`` (each tile's product bounded by its largest input
    times the tile's ``|gy|``); ``gb``: ``sum |gy|``. Stride or dilation other than 1
    or kernels over Winograd's largest (which it does not run) get the local scales.
    """
    from arraycnn.conv.winograd import MAX_KERNEL, error_growth

    ax, aw = _magnitudes(x), _magnitudes(w)
    stride, dilation = geometry.get("stride", 1), geometry.get("dilation", 1)
    groups = geometry.get("groups", 1)
    g = _geom(ax.shape, aw.shape, stride, geometry.get("padding", 0), dilation, groups)
    local = error_scales(x, w, b, gy, model="local", **geometry)
    if (g.sh, g.sw, g.dh, g.dw) != (1, 1, 1, 1) or max(g.kh, g.kw) > MAX_KERNEL:
        return local
    growth = error_growth(g.kh, g.kw)
    wh, ww = growth.widen
    peak = aw.max(axis=(2, 3), keepdims=True)  # (F, Cg, 1, 1)
    wide = np.broadcast_to(peak, (g.f, g.cg, g.kh + 2 * wh, g.kw + 2 * ww))
    (t, bt), (left, r) = g.pads
    pads = ((t + wh, bt + wh), (left + ww, r + ww))
    ab = None if b is None else _magnitudes(b)
    y_s = growth.correlation * correlate_scipy(ax, wide, ab, padding=pads, groups=groups)
    if gy is None:
        return (y_s,)
    gy_abs = _magnitudes(gy)
    gx_s = correlate_scipy_backward(gy_abs, ax, wide, padding=pads, groups=groups)[0]
    alpha = (g.kh + 2 * wh) * (g.kw + 2 * ww)  # at least alpha_h alpha_w
    gy_sum = gy_abs.sum(axis=(2, 3)).reshape(g.n, g.groups, g.fg)  # (N, G, Fg)
    x_peak = ax.max(axis=(2, 3)).reshape(g.n, g.groups, g.cg)  # (N, G, Cg)
    gw_s = np.einsum("ngf,ngc->gfc", gy_sum, x_peak).reshape(g.f, g.cg)
    gw_s = growth.weight_grad * alpha * np.broadcast_to(gw_s[:, :, None, None], aw.shape)
    return y_s, growth.correlation * gx_s, gw_s, local[3]


def reference(x, w, b, gy, **geometry) -> Reference:
    """Forward and backward by scipy.signal with the error scales of every model."""
    y = correlate_scipy(x, w, b, **geometry)
    gx, gw, gb = correlate_scipy_backward(gy, x, w, **geometry)
    scales = {m: error_scales(x, w, b, gy, model=m, **geometry) for m in MODELS}
    return Reference(y, gx, gw, gb, scales)  # type: ignore[arg-type]


def unsupported(name: str, x_shape, w_shape, dtype: str = "float64", **geometry) -> str | None:
    """Why a forced ``strategy=name`` raises for these shapes and geometry (a strategy's
    own limits, as :class:`arraycnn.conv.strategy.Strategy` states them: Winograd runs
    stride 1, dilation 1, kernels up to 7 taps per axis, float32/float64), None if it runs.
    Tests that force every strategy skip those combinations and test the error instead."""
    import arraycnn as ac
    from arraycnn.conv.strategy import Call
    from arraycnn.conv.table import STRATEGIES

    geom = ac.conv_geometry(tuple(x_shape), tuple(w_shape), **geometry)
    # complex data runs as its real embedding (arraycnn/conv/_complex.py)
    dtype = {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)
    size = np.dtype(dtype).itemsize if dtype not in ("bfloat16",) else 2
    return STRATEGIES[name].why_not(Call(geom, "forward", "numpy", dtype, size))


def runnable(names, x_shape, w_shape, dtype: str = "float64", **geometry) -> list[str]:
    """The strategies of ``names`` that run these shapes and geometry when forced
    (:func:`unsupported`); ``"auto"`` always runs."""
    shapes = (x_shape, w_shape, dtype)
    return [n for n in names if n == "auto" or unsupported(n, *shapes, **geometry) is None]
