"""Layout helpers shared by the strategy kernels: padding, group-major views, tap indices.

Letters as in :mod:`arraycnn.geometry`. Strategies work in a *group-major* layout where
the batch and spatial positions form the columns of one GEMM per group::

    input  (N, C, H, W)      -> padded, group-major  (G, Cg, N, Hp, Wp)
    weight (F, Cg, kh, kw)   -> by group             (G, Fg, Cg, kh, kw)
    output (G, Fg, N*Ho*Wo)  <- per-group GEMM result
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_extra as xpx

from ..backend import backend_name, device_of
from ..geometry import ConvGeometry, conv_geometry

Array = Any
ALL = slice(None)

#: On a CPU, kernels write their big temporaries (im2col's columns, naive's accumulator) in
#: pieces of at most this many elements (8 MiB of float32, a quarter of the reference
#: machine's L3), so that the GEMM reads them while still in cache.
COLUMN_CHUNK_ELEMENTS = 1 << 21
#: A batch whose temporaries have at most this many elements runs whole.
WHOLE_BATCH_ELEMENTS = 1 << 22


def cache_chunk(n: int, per_sample: int, *, cached: bool) -> int:
    """Samples per kernel call whose temporaries of ``per_sample`` elements each stay in
    cache: N if they fit :data:`WHOLE_BATCH_ELEMENTS` (or ``cached`` is False: a GPU, whose
    GEMMs want size), else as many as fit :data:`COLUMN_CHUNK_ELEMENTS` (at least 1)."""
    if not cached or n * per_sample <= WHOLE_BATCH_ELEMENTS:
        return n
    return max(1, min(n, COLUMN_CHUNK_ELEMENTS // max(per_sample, 1)))


#: Up to this many padded elements, :func:`pad_input` on NumPy/CuPy fills zeros and copies
#: the interior once (NumPy's ``pad`` has a larger fixed cost); above it, ``pad`` writes each
#: element once where zeros-then-copy writes the interior twice (docs/performance.md).
SMALL_PAD_ELEMENTS = 2**18
#: Backends whose ``pad`` is NumPy's Python implementation (torch's is a fast kernel).
NUMPY_STYLE_PAD = ("numpy", "cupy")


def pad_input(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Zero-pad ``x`` (N, C, H, W) to (N, C, Hp, Wp); no copy when there is no padding."""
    if not geom.is_padded:
        return x
    (top, bottom), (left, right) = geom.padding
    small = geom.n * geom.c * geom.hp * geom.wp <= SMALL_PAD_ELEMENTS
    if not small or backend_name(xp) not in NUMPY_STYLE_PAD:
        return xpx.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), xp=xp)
    xpad = zeros((geom.n, geom.c, geom.hp, geom.wp), x, xp=xp)  # (N, C, Hp, Wp)
    return set_at(xpad, (ALL, ALL, slice(top, top + geom.h), slice(left, left + geom.w)), x, xp=xp)


def crop_padding(xpad: Array, geom: ConvGeometry) -> Array:
    """Inverse of :func:`pad_input` for gradients: (..., Hp, Wp) -> (..., H, W)."""
    top, left = geom.padding[0][0], geom.padding[1][0]
    return xpad[..., top : top + geom.h, left : left + geom.w]


def output_from_group_major(yg: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Per-group GEMM result to NCHW: (G, Fg, N*Ho*Wo) -> (N, F, Ho, Wo)."""
    # (G, Fg, N*Ho*Wo) -> (G, Fg, N, Ho, Wo)
    y = xp.reshape(yg, (geom.groups, geom.fg, geom.n, geom.ho, geom.wo))
    # (G, Fg, N, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    y = xp.permute_dims(y, (2, 0, 1, 3, 4))
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo)
    return xp.reshape(y, geom.y_shape)


def grad_output_group_major(gy: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Inverse of :func:`output_from_group_major`: (N, F, Ho, Wo) -> (G, Fg, N*Ho*Wo)."""
    # (N, F, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    g = xp.reshape(gy, (geom.n, geom.groups, geom.fg, geom.ho, geom.wo))
    # (N, G, Fg, Ho, Wo) -> (G, Fg, N, Ho, Wo)
    g = xp.permute_dims(g, (1, 2, 0, 3, 4))
    # (G, Fg, N, Ho, Wo) -> (G, Fg, N*Ho*Wo)
    return xp.reshape(g, (geom.groups, geom.fg, geom.n * geom.ho * geom.wo))


def transposed_kernel(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """w (F, Cg, kh, kw) -> flipped, channel-swapped (C, Fg, kh, kw), group by group: the
    kernel of the input gradient as a stride-1 correlation of gy (im2col, Winograd)."""
    wg = xp.reshape(w, (geom.groups, geom.fg, geom.cg, geom.kh, geom.kw))  # (G, Fg, Cg, kh, kw)
    wt = xp.permute_dims(wg, (0, 2, 1, 3, 4))  # (G, Fg, Cg, kh, kw) -> (G, Cg, Fg, kh, kw)
    wt = xp.flip(wt, axis=(3, 4))  # tap (i, j) -> (kh-1-i, kw-1-j)
    # (G, Cg, Fg, kh, kw) -> (C, Fg, kh, kw); a view where the backend allows (callers copy)
    return xp.reshape(wt, (geom.c, geom.fg, geom.kh, geom.kw))


def transposed_geometry(geom: ConvGeometry) -> ConvGeometry | None:
    """Geometry of the input gradient as a stride-1 correlation of gy, or None.

    gy (N, F, Ho, Wo) correlated with the flipped, channel-swapped kernel (C, Fg, kh, kw)
    at padding ``d (k - 1) - pad`` per side gives (N, C, H, W). None where the forward
    stride is not 1 or a forward padding exceeds the kernel's extent ``d (k - 1)`` (the
    transposed padding would be negative): there im2col runs col2im, and separable its
    transposed passes.
    """
    if geom.stride != (1, 1):
        return None
    extent = (geom.dilation[0] * (geom.kh - 1), geom.dilation[1] * (geom.kw - 1))
    pads = tuple(
        (extent[axis] - lo, extent[axis] - hi) for axis, (lo, hi) in enumerate(geom.padding)
    )
    if min(min(pair) for pair in pads) < 0:
        return None
    return conv_geometry(
        (geom.n, geom.f, geom.ho, geom.wo),
        (geom.c, geom.fg, geom.kh, geom.kw),
        padding=pads,
        dilation=geom.dilation,
        groups=geom.groups,
    )


def zeros(shape: tuple[int, ...], like: Array, *, xp: ModuleType, dtype: Any = None) -> Array:
    """Zeros of ``shape`` with the dtype (or ``dtype``) and device of ``like``."""
    return xp.zeros(shape, dtype=like.dtype if dtype is None else dtype, device=device_of(like))


def empty(shape: tuple[int, ...], like: Array, *, xp: ModuleType) -> Array:
    """An uninitialised array of ``shape`` with the dtype and device of ``like``."""
    return xp.empty(shape, dtype=like.dtype, device=device_of(like))


def add_at(
    target: Array, index: tuple[slice, ...], values: Array, *, xp: ModuleType | None = None
) -> Array:
    """``target[index] += values`` through array-api-extra (in place where the backend allows).

    Pass ``xp`` in loops: array-api-extra then skips its namespace lookup.
    """
    return xpx.at(target, index).add(values, xp=xp)


def input_group_view(x: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Unpadded input in group-major order (a view where the backend allows one).

    (N, C, H, W) -> (G, Cg, N, H, W).
    """
    # (N, C, H, W) -> (N, G, Cg, H, W)
    x5 = xp.reshape(x, (geom.n, geom.groups, geom.cg, geom.h, geom.w))
    # (N, G, Cg, H, W) -> (G, Cg, N, H, W)
    return xp.permute_dims(x5, (1, 2, 0, 3, 4))


def input_from_group_view(gxg: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """A fresh (N, C, H, W) array from a group-major (G, Cg, N, H, W) one."""
    # (G, Cg, N, H, W) -> (N, G, Cg, H, W)
    gx = xp.permute_dims(gxg, (2, 0, 1, 3, 4))
    # (N, G, Cg, H, W) -> (N, C, H, W); a copy, so scratch never escapes
    return xp.reshape(gx, geom.x_shape, copy=True)


def output_from_group_view(yg: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """A fresh (N, F, Ho, Wo) array from a group-major (G, Fg, N, Ho, Wo) one."""
    # (G, Fg, N, Ho, Wo) -> (N, G, Fg, Ho, Wo)
    y = xp.permute_dims(yg, (2, 0, 1, 3, 4))
    # (N, G, Fg, Ho, Wo) -> (N, F, Ho, Wo); a copy, so scratch never escapes
    return xp.reshape(y, geom.y_shape, copy=True)


def _axis_band(
    size: int, out: int, stride: int, dilation: int, pad_lo: int, tap: int
) -> tuple[slice, slice] | None:
    """Output positions p with 0 <= p*s + tap*d - pad_lo < size, and the inputs they read."""
    offset = tap * dilation - pad_lo  # input index read by output position 0
    lo = max(0, -(offset // stride))  # ceil(-offset / stride), at least 0
    hi = min(out - 1, (size - 1 - offset) // stride)
    if hi < lo:
        return None
    return slice(lo, hi + 1), slice(lo * stride + offset, hi * stride + offset + 1, stride)


@dataclass(frozen=True, eq=False)
class TapBands:
    """Where the kernel taps meet the *unpadded* input, axis by axis.

    ``rows[i]`` is ``(out_rows, in_rows)`` for kernel row ``i``: the output rows where it
    falls inside the input (elsewhere it falls on zero padding and contributes nothing) and
    the input rows they read, strided by the stride; None where it meets only padding.
    ``cols`` likewise. Iterating gives ``(t, out_rows, out_cols, in_rows, in_cols)`` for
    every tap ``t = i*kw + j`` that meets the input, in order.
    """

    rows: tuple[tuple[slice, slice] | None, ...]
    cols: tuple[tuple[slice, slice] | None, ...]

    def __iter__(self) -> Iterator[tuple[int, slice, slice, slice, slice]]:
        kw = len(self.cols)
        for i, r in enumerate(self.rows):
            if r is None:
                continue
            for j, c in enumerate(self.cols):
                if c is not None:
                    yield i * kw + j, r[0], c[0], r[1], c[1]


def tap_bands(geom: ConvGeometry) -> TapBands:
    """The :class:`TapBands` of ``geom``: host arithmetic, kept by the plans."""
    (sh, sw), (dh, dw), ((top, _), (left, _)) = geom.stride, geom.dilation, geom.padding
    rows = tuple(_axis_band(geom.h, geom.ho, sh, dh, top, i) for i in range(geom.kh))
    cols = tuple(_axis_band(geom.w, geom.wo, sw, dw, left, j) for j in range(geom.kw))
    return TapBands(rows, cols)


def ranges(total: int, step: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``step`` covering ``[0, total)``, in order."""
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def fill_zero(buf: Array, *, xp: ModuleType | None = None) -> Array:
    """Set every element of ``buf`` to zero (in place where the backend allows)."""
    return xpx.at(buf, (ALL,) * buf.ndim).set(0, xp=xp)


def set_at(
    target: Array, index: tuple[slice, ...], values: Array, *, xp: ModuleType | None = None
) -> Array:
    """``target[index] = values`` through array-api-extra (in place where allowed; ``xp``
    as in :func:`add_at`)."""
    return xpx.at(target, index).set(values, xp=xp)
