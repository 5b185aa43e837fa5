"""Compiled loops for naive's depthwise path on NumPy arrays (numba, optional).

NumPy runs a depthwise convolution as one broadcast product and one addition per tap, each
a pass over the whole output (:func:`arraycnn.conv.naive._depthwise_forward`): 18 passes
for a 3 x 3 kernel, bounded by memory traffic. These loops make one pass per block of 3 x 3
taps instead, the block's nine weights in registers, over each channel's plane copied into
a zero frame of the padded width and flattened (long loops that vectorize); a stride other
than 1 splits the image into its phases, each correlated at stride 1. They compute the same
sums as the tap loop (a plain sum of products: exact for integer-valued data, a NaN
reaching only the outputs whose receptive field holds it), in another order.

Used where numba is installed (``pip install "arraycnn[numba]"``), for float32 and float64
NumPy arrays (:func:`arraycnn.conv.naive.uses_compiled`); ``ARRAYCNN_NUMBA=0`` turns them
off. numba is imported on the first depthwise call, never by ``import arraycnn``; the
compiled loops are cached on disk (numba's ``cache=True``), so only the first run on a
machine compiles them. docs/performance.md has the measurements behind each choice.

Letters as in :mod:`arraycnn.geometry`. A block slot past the kernel's edge reads a row of
zeros with weight zero (never the input: 0 · inf would be NaN).
"""

from __future__ import annotations

import numba
import numpy as np

from ..geometry import ConvGeometry
from ..scratch import scratch

__all__ = ["forward", "input_grad", "weight_grad"]

#: Taps per block side: a block's 3 x 3 weights stay in registers across a row.
BLOCK = 3
#: Floating-point freedoms the loops allow: fused multiply-add and reordered sums (NaN and
#: infinity keep their meaning; no ``fastmath=True``).
_FASTMATH = {"contract", "reassoc"}
_jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, boundscheck=False)


@_jit
def _fill_plane(plane, src, top, left, up_h, up_w):  # pragma: no cover - compiled
    """Copy the image ``src`` (H, W) into ``plane`` (Hp, Wp) at row ``top + ih·up_h``,
    column ``left + iw·up_w`` (positions outside the plane are dropped); the rest of the
    plane is left as it was (zeros)."""
    hp, wp = plane.shape
    h, w = src.shape
    first = max(0, -(left // up_w))  # the first column that lands in the plane
    last = min(w, (wp - 1 - left) // up_w + 1)  # one past the last
    for ih in range(h):
        r = top + ih * up_h
        if r < 0 or r >= hp:
            continue
        row, image_row = plane[r], src[ih]
        if up_w == 1:  # indices from 0 (no negative-index wrap): the loop vectorizes
            dst, src_row = row[left + first :], image_row[first:]
            for k in range(last - first):
                dst[k] = src_row[k]
        else:
            for iw in range(first, last):
                row[left + iw * up_w] = image_row[iw]


@_jit
def _copy_rows(dst, src, cols):  # pragma: no cover - compiled
    """The first ``cols`` columns of ``src`` (R, >= cols) into those of ``dst`` (R, >= cols)."""
    for r in range(dst.shape[0]):
        a, b = dst[r], src[r]
        for k in range(cols):
            a[k] = b[k]


@_jit
def _tap(wk, i, j, z):  # pragma: no cover - compiled
    """Tap (i, j) of ``wk`` (kh, kw), or ``z`` (zero) past its edge."""
    return wk[i, j] if i < wk.shape[0] and j < wk.shape[1] else z


@_jit
def _block_taps(wk, i0, j0, z):  # pragma: no cover - compiled
    """The nine taps of the 3 x 3 block at (i0, j0) of ``wk``, row by row (zero past its
    edge)."""
    return (
        _tap(wk, i0, j0, z), _tap(wk, i0, j0 + 1, z), _tap(wk, i0, j0 + 2, z),
        _tap(wk, i0 + 1, j0, z), _tap(wk, i0 + 1, j0 + 1, z), _tap(wk, i0 + 1, j0 + 2, z),
        _tap(wk, i0 + 2, j0, z), _tap(wk, i0 + 2, j0 + 1, z), _tap(wk, i0 + 2, j0 + 2, z),
    )  # fmt: skip


@_jit
def _block_source(src, zeros, start, valid):  # pragma: no cover - compiled
    """``src`` (1-D) from ``start``, or the zero row where the block's row is past the
    kernel's edge."""
    return src[start:] if valid else zeros


@_jit
def _add_block(acc, a0, a1, a2, wk, i0, j0, z, step, dw):  # pragma: no cover - compiled
    """``acc[q] += sum over the block's taps (i0 + a, j0 + b) of wk[i0 + a, j0 + b] ·
    a_a[q·step + b·dw]``, for the block of up to 3 x 3 taps at (i0, j0) of ``wk`` (kh, kw);
    a_a are the block's three rows (1-D). One loop per block width, so that a column past
    the kernel is never read; constant offsets where step = dw = 1 (those loops vectorize)."""
    w00, w01, w02, w10, w11, w12, w20, w21, w22 = _block_taps(wk, i0, j0, z)
    width = min(BLOCK, wk.shape[1] - j0)
    if step == 1 and dw == 1 and width == 3:
        for q in range(acc.shape[0]):
            acc[q] += (
                w00 * a0[q] + w01 * a0[q + 1] + w02 * a0[q + 2]
                + w10 * a1[q] + w11 * a1[q + 1] + w12 * a1[q + 2]
                + w20 * a2[q] + w21 * a2[q + 1] + w22 * a2[q + 2]
            )  # fmt: skip
    elif step == 1 and dw == 1 and width == 2:
        for q in range(acc.shape[0]):
            acc[q] += (
                w00 * a0[q] + w01 * a0[q + 1]
                + w10 * a1[q] + w11 * a1[q + 1]
                + w20 * a2[q] + w21 * a2[q + 1]
            )  # fmt: skip
    elif step == 1 and width == 1:
        for q in range(acc.shape[0]):
            acc[q] += w00 * a0[q] + w10 * a1[q] + w20 * a2[q]
    else:
        for q in range(acc.shape[0]):
            k = q * step
            total = w00 * a0[k] + w10 * a1[k] + w20 * a2[k]
            if width > 1:
                total += w01 * a0[k + dw] + w11 * a1[k + dw] + w21 * a2[k + dw]
            if width > 2:
                total += w02 * a0[k + 2 * dw] + w12 * a1[k + 2 * dw] + w22 * a2[k + 2 * dw]
            acc[q] += total


@_jit
def _correlate_flat(flat, zeros, wk, acc, wp, dh):  # pragma: no cover - compiled
    """Add the stride-1 correlation (column dilation 1) of a plane, flattened with rows of
    ``wp`` (``flat``, one row more than the taps reach), with ``wk`` (kh, kw) onto ``acc``
    (Ho·wp): output (oh, ow) at oh·wp + ow; the last wp - Wo of each row are not outputs.
    Each block of taps is one pass over the whole plane."""
    kh, kw = wk.shape
    z = zeros[0]
    for i0 in range(0, kh, BLOCK):
        for j0 in range(0, kw, BLOCK):
            a0 = flat[i0 * dh * wp + j0 :]
            a1 = _block_source(flat, zeros, (i0 + 1) * dh * wp + j0, i0 + 1 < kh)
            a2 = _block_source(flat, zeros, (i0 + 2) * dh * wp + j0, i0 + 2 < kh)
            _add_block(acc, a0, a1, a2, wk, i0, j0, z, 1, 1)


@_jit
def _correlate_rows(plane, zeros, wk, out, sh, sw, dh, dw):  # pragma: no cover - compiled
    """Add the correlation of ``plane`` (Hp, Wp) with ``wk`` (kh, kw) at stride (sh, sw)
    and dilation (dh, dw) onto ``out`` (Ho, Wo), row by row (any stride and dilation)."""
    kh, kw = wk.shape
    z = zeros[0]
    for oh in range(out.shape[0]):
        for i0 in range(0, kh, BLOCK):
            r = oh * sh + i0 * dh
            for j0 in range(0, kw, BLOCK):
                a0 = plane[r, j0 * dw :]
                a1 = _block_source(plane[r + dh], zeros, j0 * dw, i0 + 1 < kh)
                a2 = _block_source(plane[r + 2 * dh], zeros, j0 * dw, i0 + 2 < kh)
                _add_block(out[oh], a0, a1, a2, wk, i0, j0, z, sw, dw)


@_jit
def _correlate(
    inp, w, out, per_out, shared, top, left, up, stride, dilation, plane, zeros, acc
):  # pragma: no cover
    """``out[n, o]`` = sum over k < per_out of the correlation of input channel
    ``(o·per_out + k) // shared`` (zero-padded by top/left, upsampled by ``up``) with taps
    ``w[o·per_out + k]``: inp (N, Ci, H, W), w (O·per_out, kh, kw), out (N, O, Ho, Wo).
    ``plane`` (:func:`_plane_shape`, zero where the image does not land), ``zeros`` and
    ``acc`` (Ho·Wp) are the caller's buffers (:func:`_buffers`).

    At stride 1 and column dilation 1 the plane is correlated flattened (long loops that
    vectorize; :func:`_correlate_flat`), else row by row."""
    ho, wo = out.shape[2], out.shape[3]
    sh, sw = stride
    dh, dw = dilation
    wp = plane.shape[1]
    flat = plane.reshape(plane.size)  # (Hp + 3·dh + 1, Wp) -> (.,)
    by_plane = sh == 1 and sw == 1 and dw == 1
    rows = acc.reshape(ho, wp)  # (Ho·Wp,) -> (Ho, Wp)
    for n in range(inp.shape[0]):
        for o in range(out.shape[1]):
            if by_plane:
                acc[:] = 0
            else:
                out[n, o] = 0
            for k in range(per_out):
                _fill_plane(plane, inp[n, (o * per_out + k) // shared], top, left, up[0], up[1])
                if by_plane:
                    _correlate_flat(flat, zeros, w[o * per_out + k], acc, wp, dh)
                else:
                    _correlate_rows(plane, zeros, w[o * per_out + k], out[n, o], sh, sw, dh, dw)
            if by_plane:
                _copy_rows(out[n, o], rows, wo)


@_jit
def _fill_phases(planes, src, top, left, stride):  # pragma: no cover - compiled
    """The phases of the zero-padded image ``src`` (H, W) at ``stride``:
    ``planes[a·sw + b, r, c] = src[r·sh + a - top, c·sw + b - left]`` where that is inside
    ``src``, for r below the planes' last row (their overhang); the rest is left as it was
    (zeros). ``top``, ``left`` >= 0. At sw = 2 each row's two column phases are written in
    one loop (a pair of loads per step: 4x faster than one strided loop per phase)."""
    sh, sw = stride
    hq, wq = planes.shape[1] - 1, planes.shape[2]
    h, w = src.shape
    for ih in range(h):
        a, r = (ih + top) % sh, (ih + top) // sh
        if r >= hq:
            continue
        row = src[ih]
        if sw == 2:
            first = left % 2  # the first element of column phase 0
            c0 = (first + left) // 2
            if first == 1 and c0 - 1 < wq:  # element 0 is the only one of its column
                planes[2 * a + 1, r, c0 - 1] = row[0]
            m = max(0, min((w - first) // 2, wq - c0))
            even, odd, pairs = planes[2 * a, r, c0:], planes[2 * a + 1, r, c0:], row[first:]
            for k in range(m):
                even[k] = pairs[2 * k]
                odd[k] = pairs[2 * k + 1]
            if first + 2 * m < w and c0 + m < wq:  # a last element without its pair
                even[m] = pairs[2 * m]
            continue
        for b in range(sw):
            start = max(0, -((b - left) // sw))  # the first column whose source is in src
            stop = min(wq, (w - 1 - b + left) // sw + 1)
            if stop <= start:
                continue
            dst, image_row = planes[a * sw + b, r, start:], row[start * sw + b - left :]
            for k in range(stop - start):
                dst[k] = image_row[k * sw]


@_jit
def _correlate_phases(x, w, out, fg, top, left, stride, planes, zeros, acc):  # pragma: no cover
    """The depthwise forward at a stride other than 1 (dilation 1), as stride-1
    correlations of the image's phases: with i = i'·sh + a and j = j'·sw + b,
    ``y[oh, ow] = sum over (a, b) and (i', j') of w[i, j] · phase_ab[oh + i', ow + j']``,
    ``phase_ab[r, c] = x_padded[r·sh + a, c·sw + b]``. Each phase is correlated flattened
    (:func:`_correlate_flat`) with its taps ``w[a::sh, b::sw]``: x (N, C, H, W), w (F, kh,
    kw), out (N, F, Ho, Wo); ``planes`` (sh·sw, Hq + 1, Wq), ``zeros`` and ``acc`` (Ho·Wq)
    are the caller's buffers (:func:`_buffers`)."""
    kh, kw = w.shape[1], w.shape[2]
    ho, wo = out.shape[2], out.shape[3]
    sh, sw = stride
    hq, wq = planes.shape[1] - 1, planes.shape[2]
    rows = acc.reshape(ho, wq)  # (Ho·Wq,) -> (Ho, Wq)
    for n in range(x.shape[0]):
        for o in range(out.shape[1]):
            acc[:] = 0
            if o % fg == 0:
                _fill_phases(planes, x[n, o // fg], top, left, stride)
            for p in range(sh * sw):
                a, b = p // sw, p % sw
                if a >= kh or b >= kw:  # no tap falls on this phase
                    continue
                flat = planes[p].reshape((hq + 1) * wq)  # (Hq + 1, Wq) -> (.,)
                _correlate_flat(flat, zeros, w[o, a::sh, b::sw], acc, wq, 1)
            _copy_rows(out[n, o], rows, wo)


@_jit
def _dot(a, b, zero):  # pragma: no cover - compiled
    """sum over q < len(a) of a[q]·b[q], summed from ``zero`` (a zero of the arrays' dtype)."""
    total = zero
    for q in range(a.shape[0]):
        total += a[q] * b[q]
    return total


@_jit
def _channel_dots(gy, x, gw, f, fg, top, left, dh, plane, frame, zero):  # pragma: no cover
    """gw[f] (kh, kw, float64) at stride 1 and column dilation 1: per sample, each tap's sum
    is one dot product of gy's frame (rows of the padded width, zero past Wo) with the
    flattened plane at the tap's offset."""
    kh, kw = gw.shape[1], gw.shape[2]
    wp = plane.shape[1]
    flat = plane.reshape(plane.size)  # (Hp + 1, Wp) -> (.,)
    gyf = frame.reshape(frame.size)  # (Ho, Wp) -> (Ho·Wp,)
    gw[f] = 0.0
    for n in range(x.shape[0]):
        _fill_plane(plane, x[n, f // fg], top, left, 1, 1)
        _copy_rows(frame, gy[n, f], gy.shape[3])
        for i in range(kh):
            for j in range(kw):
                gw[f, i, j] += _dot(gyf, flat[i * dh * wp + j :], zero)


@_jit
def _channel_dots_phases(  # pragma: no cover - compiled
    gy, x, gw, f, fg, top, left, stride, planes, frame, zero
):
    """gw[f] (kh, kw, float64) at a stride other than 1 (dilation 1): tap (i'·sh + a,
    j'·sw + b) is the dot product of gy's frame (rows of width Wq, zero past Wo) with the
    flattened phase (a, b) of the image (:func:`_correlate_phases`) at offset i'·Wq + j'."""
    kh, kw = gw.shape[1], gw.shape[2]
    sh, sw = stride
    hq1, wq = planes.shape[1], planes.shape[2]
    gyf = frame.reshape(frame.size)  # (Ho, Wq) -> (Ho·Wq,)
    gw[f] = 0.0
    for n in range(x.shape[0]):
        _copy_rows(frame, gy[n, f], gy.shape[3])
        _fill_phases(planes, x[n, f // fg], top, left, stride)
        for p in range(sh * sw):
            a, b = p // sw, p % sw
            if a >= kh or b >= kw:
                continue
            flat = planes[p].reshape(hq1 * wq)  # (Hq + 1, Wq) -> (.,)
            for i in range(a, kh, sh):
                for j in range(b, kw, sw):
                    gw[f, i, j] += _dot(gyf, flat[(i // sh) * wq + j // sw :], zero)


@_jit
def _channel_sums(gy, x, gw, f, fg, top, left, stride, dilation, plane, sums):  # pragma: no cover
    """gw[f] (kh, kw, float64), row by row (any stride and dilation): per tap one row of
    partial sums over Wo, accumulated over the batch and the output rows, then summed (only
    output positions are ever read)."""
    kh, kw = gw.shape[1], gw.shape[2]
    wo = gy.shape[3]
    sh, sw = stride
    dh, dw = dilation
    sums[...] = 0
    for n in range(x.shape[0]):
        _fill_plane(plane, x[n, f // fg], top, left, 1, 1)
        for t in range(kh * kw):
            i, j = t // kw, t % kw
            s = sums[t]
            for oh in range(gy.shape[2]):
                g = gy[n, f, oh]
                a = plane[oh * sh + i * dh, j * dw :]
                for ow in range(wo):
                    s[ow] += g[ow] * a[ow * sw]
    for t in range(kh * kw):
        total = 0.0
        for ow in range(wo):
            total += sums[t, ow]
        gw[f, t // kw, t % kw] = total


@_jit
def _weight_grad(
    gy, x, gw, fg, top, left, stride, dilation, plane, frame, planes, phase_frame
):  # pragma: no cover
    """gw[f, i, j] = sum over n, oh, ow of gy[n, f, oh, ow] · x_padded[n, f // fg,
    oh·sh + i·dh, ow·sw + j·dw]: gy (N, F, Ho, Wo), x (N, C, H, W), gw (F, kh, kw) float64.

    At stride 1 and column dilation 1, dot products over the flattened planes
    (:func:`_channel_dots`); at other strides with dilation 1, over the image's phases
    (:func:`_channel_dots_phases`). Their frame's zeros past Wo meet inputs, and 0 · inf is
    NaN: a channel whose sums are not all finite is summed again row by row
    (:func:`_channel_sums`, which reads output positions only), as are other dilations.
    ``plane`` (Hp + 1, Wp), ``frame`` (Ho, Wp), ``planes`` (sh·sw or 0, Hq + 1, Wq) and
    ``phase_frame`` (Ho, Wq) are the caller's buffers, zero where nothing is copied
    (:func:`_buffers`)."""
    f_all, kh, kw = gw.shape
    wo = gy.shape[3]
    sh, sw = stride
    dh, dw = dilation
    sums = np.zeros((kh * kw, wo), dtype=x.dtype)
    by_plane = sh == 1 and sw == 1 and dw == 1
    by_phase = not by_plane and dh == 1 and dw == 1
    zero = np.zeros(1, dtype=gy.dtype)[0]
    for f in range(f_all):
        if by_plane:
            _channel_dots(gy, x, gw, f, fg, top, left, dh, plane, frame, zero)
        elif by_phase:
            _channel_dots_phases(gy, x, gw, f, fg, top, left, stride, planes, phase_frame, zero)
        if (by_plane or by_phase) and np.isfinite(gw[f]).all():
            continue
        _channel_sums(gy, x, gw, f, fg, top, left, stride, dilation, plane, sums)


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous in native byte order (numba's loops take no other); no copy if it
    is already."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))


def _taps(w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """w (F, 1, kh, kw) -> (F, kh, kw), contiguous."""
    return _native(w.reshape(g.f, g.kh, g.kw))  # (F, 1, kh, kw) -> (F, kh, kw)


def _buffers(tag: str, shapes: dict[str, tuple[int, ...]], like: np.ndarray, key) -> list:
    """Scratch buffers of ``shapes`` (:func:`arraycnn.scratch.scratch`), zero when created and
    reused by later calls with the same ``key`` (the layout is the same, so the regions the
    loops never write stay zero): a call on a large image does not fault in fresh pages."""
    return [scratch(f"{tag}.{name}", shape, like=like, xp=np, key=key)
            for name, shape in shapes.items()]  # fmt: skip


def _plane_shape(inp_hw, out_hw, k, top_left, up, stride, dilation) -> tuple[int, int]:
    """The zero-padded plane of :func:`_correlate` (Hp + 3·dh + 1, Wp)."""
    (h, w), (ho, wo), (kh, kw), (top, left) = inp_hw, out_hw, k, top_left
    hp = max((ho - 1) * stride[0] + (kh - 1) * dilation[0] + 1, top + (h - 1) * up[0] + 1)
    wp = max((wo - 1) * stride[1] + (kw - 1) * dilation[1] + 1, left + (w - 1) * up[1] + 1)
    return hp + BLOCK * dilation[0] + 1, wp


def _correlate_buffers(tag, g, like, inp_hw, out_hw, top_left, up, stride) -> list:
    """``plane``, ``zeros`` and ``acc`` of :func:`_correlate` (zeros: one element where
    blocks of 3 rows tile the kernel, whose slots then never read it)."""
    rows, wp = _plane_shape(inp_hw, out_hw, (g.kh, g.kw), top_left, up, stride, g.dilation)
    shapes = {"plane": (rows, wp), "zeros": (rows * wp if g.kh % BLOCK else 1,),
              "acc": (out_hw[0] * wp,)}  # fmt: skip
    return _buffers(tag, shapes, like, (g, top_left, up, stride))


def _phase_shape(g: ConvGeometry) -> tuple[int, int]:
    """(Hq, Wq): a phase of the padded image, as :func:`_correlate_phases` reads it."""
    (sh, sw) = g.stride
    return g.ho + -(-g.kh // sh) - 1, g.wo + -(-g.kw // sw) - 1


def forward(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Depthwise forward: x (N, C, H, W), w (F, 1, kh, kw) -> y (N, F, Ho, Wo), groups = C."""
    y = np.empty(g.y_shape, dtype=x.dtype.newbyteorder("="))
    top, left = g.padding[0][0], g.padding[1][0]
    if g.stride != (1, 1) and g.dilation == (1, 1):
        hq, wq = _phase_shape(g)
        shapes = {"planes": (g.stride[0] * g.stride[1], hq + 1, wq),
                  "zeros": ((hq + 1) * wq,), "acc": (g.ho * wq,)}  # fmt: skip
        buffers = _buffers("depthwise.phases", shapes, y, g)
        _correlate_phases(_native(x), _taps(w, g), y, g.fg, top, left, g.stride, *buffers)
        return y
    buffers = _correlate_buffers("depthwise.forward", g, y, (g.h, g.w), (g.ho, g.wo),
                                 (top, left), (1, 1), g.stride)  # fmt: skip
    _correlate(_native(x), _taps(w, g), y, 1, g.fg, top, left, (1, 1), g.stride,
               g.dilation, *buffers)  # fmt: skip
    return y


def input_grad(gy: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Depthwise input gradient: gy (N, F, Ho, Wo), w (F, 1, kh, kw) -> gx (N, C, H, W).

    The transposed correlation: gy upsampled by the stride, padded by ``d·(k - 1) - p``,
    correlated at stride 1 with the flipped taps, each channel summing its Fg outputs."""
    gx = np.empty(g.x_shape, dtype=gy.dtype.newbyteorder("="))
    flipped = _native(_taps(w, g)[:, ::-1, ::-1])  # (F, kh, kw), both axes flipped
    (dh, dw), (sh, sw) = g.dilation, g.stride
    top = dh * (g.kh - 1) - g.padding[0][0]
    left = dw * (g.kw - 1) - g.padding[1][0]
    buffers = _correlate_buffers("depthwise.input_grad", g, gx, (g.ho, g.wo), (g.h, g.w),
                                 (top, left), (sh, sw), (1, 1))  # fmt: skip
    _correlate(_native(gy), flipped, gx, g.fg, 1, top, left, (sh, sw), (1, 1),
               g.dilation, *buffers)  # fmt: skip
    return gx


def weight_grad(gy: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Depthwise weight gradient: gy (N, F, Ho, Wo), x (N, C, H, W) -> gw (F, 1, kh, kw)."""
    gw = np.empty((g.f, g.kh, g.kw), dtype=np.float64)
    top, left = g.padding[0][0], g.padding[1][0]
    (sh, sw), (dh, dw) = g.stride, g.dilation
    hp = max((g.ho - 1) * sh + (g.kh - 1) * dh + 1, top + g.h)
    wp = max((g.wo - 1) * sw + (g.kw - 1) * dw + 1, left + g.w)
    by_phase = (sh, sw) != (1, 1) and (dh, dw) == (1, 1)
    hq, wq = _phase_shape(g)
    shapes = {
        "plane": (hp + 1, wp),
        "frame": (g.ho, wp),
        "planes": (sh * sw if by_phase else 0, hq + 1, wq),
        "phase_frame": (g.ho, wq),
    }
    buffers = _buffers("depthwise.weight_grad", shapes, x, g)
    _weight_grad(_native(gy), _native(x), gw, g.fg, top, left,
                 g.stride, g.dilation, *buffers)  # fmt: skip
    return gw.astype(x.dtype.newbyteorder("=")).reshape(g.w_shape)  # (F, kh, kw) -> (F, 1, kh, kw)
