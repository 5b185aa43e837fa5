"""Convolution and pooling geometry: one frozen object, one output-size formula, all validation.

Dimension letters used throughout arraycnn::

    N  batch                 C  input channels        F  output channels (filters)
    G  groups                Cg = C / G               Fg = F / G
    H, W    input height/width       Hp, Wp  padded input height/width
    kh, kw  kernel height/width      Ho, Wo  output height/width
    sh, sw  strides                  dh, dw  dilations

All shape arithmetic is host work on Python ints; nothing here touches array data.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "ConvGeometry",
    "Padding",
    "PoolGeometry",
    "conv_geometry",
    "output_size",
    "pair",
    "pool_geometry",
    "resolve_padding",
    "row_band",
]

#: Accepted ``padding`` forms.
Padding = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str

PADDING_STRINGS = ("valid", "same", "full")


def output_size(
    size: int, kernel: int, *, stride: int, pad_lo: int, pad_hi: int, dilation: int
) -> int:
    """The one output-size formula: ``floor((i + p_lo + p_hi - d(k-1) - 1) / s) + 1``.

    Returns a value < 1 when the dilated kernel does not fit the padded input; callers
    validate.

    Examples
    --------
    >>> output_size(6, 3, stride=1, pad_lo=0, pad_hi=0, dilation=1)
    4
    >>> output_size(7, 3, stride=2, pad_lo=1, pad_hi=1, dilation=1)
    4
    """
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def _as_int(value: Any, name: str) -> int:
    """``operator.index(value)`` with a TypeError naming the argument; bools are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Normalize an int or a 2-sequence of ints to ``(a, b)``, each ``>= minimum``.

    Raises
    ------
    TypeError
        If ``value`` is neither an int nor a pair of ints.
    ValueError
        If an entry is below ``minimum``.

    Examples
    --------
    >>> pair(3, "stride"), pair((1, 2), "dilation")
    ((3, 3), (1, 2))
    >>> pair(0, "stride")
    Traceback (most recent call last):
    ...
    ValueError: stride must be positive, got 0
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        a, b = (_as_int(v, name) for v in value)
    else:
        a = b = _as_int(value, name)
    if a < minimum or b < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return a, b


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(size/stride), the odd pixel of padding at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: Padding,
    input_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Turn any accepted ``padding`` form into ``((top, bottom), (left, right))``.

    Forms: int; ``(ph, pw)``; ``((top, bottom), (left, right))``; ``"valid"`` (none);
    ``"same"`` (output ``ceil(i / s)``, extra padding at the end as TensorFlow does);
    ``"full"`` (``d(k-1)`` on each side).

    Examples
    --------
    >>> resolve_padding("same", (6, 6), (4, 4), (1, 1), (1, 1))
    ((1, 2), (1, 2))
    >>> resolve_padding((1, 0), (6, 6), (3, 3), (1, 1), (1, 1))
    ((1, 1), (0, 0))
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            return tuple(  # type: ignore[return-value]
                _same_padding(i, k, s, d)
                for i, k, s, d in zip(input_hw, kernel_hw, stride, dilation)
            )
        if mode == "full":
            ph, pw = (d * (k - 1) for k, d in zip(kernel_hw, dilation))
            return (ph, ph), (pw, pw)
        raise ValueError(
            f"padding must be an int, a pair, ((top, bottom), (left, right)), "
            f"or one of {PADDING_STRINGS}; got {padding!r}"
        )
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        (top, bottom), (left, right) = (pair(p, "padding", minimum=0) for p in padding)
        return (top, bottom), (left, right)
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in padding):
        raise ValueError(f"padding must be ((top, bottom), (left, right)), got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


class _Sweep:
    """What a window sweep over a padded NCHW input shares: the padded sizes and the
    positions each window row/column meets (the dataclasses below hold the fields)."""

    h: int
    w: int
    padding: tuple[tuple[int, int], tuple[int, int]]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    ho: int
    wo: int

    @property
    def hp(self) -> int:
        """Padded input height."""
        return self.h + self.padding[0][0] + self.padding[0][1]

    @property
    def wp(self) -> int:
        """Padded input width."""
        return self.w + self.padding[1][0] + self.padding[1][1]

    def tap_rows(self, i: int) -> slice:
        """Rows of the padded input that window row ``i`` meets, one per output row."""
        start = i * self.dilation[0]
        return slice(start, start + self.stride[0] * (self.ho - 1) + 1, self.stride[0])

    def tap_cols(self, j: int) -> slice:
        """Columns of the padded input that window column ``j`` meets, one per output column."""
        start = j * self.dilation[1]
        return slice(start, start + self.stride[1] * (self.wo - 1) + 1, self.stride[1])


@dataclass(frozen=True)
class ConvGeometry(_Sweep):
    """Validated geometry of one 2-D convolution (NCHW input, (F, C/G, kh, kw) weights).

    Attributes are the letters of the module legend; derived sizes are properties. Made
    by :func:`conv_geometry`.

    Examples
    --------
    >>> g = conv_geometry((2, 4, 9, 9), (6, 2, 3, 3), padding=1, stride=2, groups=2)
    >>> g.y_shape, (g.cg, g.fg), (g.hp, g.wp)
    ((2, 6, 5, 5), (2, 3), (11, 11))
    """

    n: int
    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    groups: int
    ho: int
    wo: int

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.c // self.groups

    @property
    def fg(self) -> int:
        """Output channels per group."""
        return self.f // self.groups

    @property
    def kh_dilated(self) -> int:
        """Height of the dilated kernel, ``dh (kh - 1) + 1``."""
        return self.dilation[0] * (self.kh - 1) + 1

    @property
    def kw_dilated(self) -> int:
        """Width of the dilated kernel, ``dw (kw - 1) + 1``."""
        return self.dilation[1] * (self.kw - 1) + 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        """Input shape ``(N, C, H, W)``."""
        return self.n, self.c, self.h, self.w

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        """Weight shape ``(F, C/G, kh, kw)``."""
        return self.f, self.cg, self.kh, self.kw

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        """Output shape ``(N, F, Ho, Wo)``."""
        return self.n, self.f, self.ho, self.wo

    @property
    def is_padded(self) -> bool:
        """True if any side has padding."""
        return any(p for side in self.padding for p in side)

    def macs(self) -> int:
        """Multiply-accumulates of the direct convolution: ``N F Cg Ho Wo kh kw``."""
        return self.n * self.f * self.cg * self.ho * self.wo * self.kh * self.kw


def row_band(geom: ConvGeometry, start: int, stop: int) -> tuple[ConvGeometry, slice] | None:
    """Output rows [start, stop) of ``geom`` as a convolution of the input rows they read.

    Returns the band's geometry (its own top and bottom padding, ``Ho = stop - start``,
    everything else as ``geom``) and the input rows it reads, or None if those output rows
    read only padding. The band's output is exactly those rows of the whole output; its
    input gradient lands on those input rows (bands overlap where the kernel is taller
    than the stride).

    Examples
    --------
    >>> g = conv_geometry((1, 1, 8, 8), (1, 1, 3, 3), padding=1)
    >>> band, rows = row_band(g, 2, 5)
    >>> band.ho, band.h, band.padding[0], rows
    (3, 5, (0, 0), slice(1, 6, None))
    """
    stride, dilation, top = geom.stride[0], geom.dilation[0], geom.padding[0][0]
    first = start * stride - top  # input row read by the band's first tap of its first row
    end = (stop - 1) * stride - top + dilation * (geom.kh - 1) + 1
    lo, hi = max(first, 0), min(end, geom.h)
    if hi <= lo:
        return None
    padding = ((lo - first, end - hi), geom.padding[1])  # Hp = end - first: Ho = stop - start
    return replace(geom, h=hi - lo, padding=padding, ho=stop - start), slice(lo, hi)


def _shape4(shape: tuple[int, ...], name: str, letters: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{name} must be 4-D ({letters}), got shape {tuple(shape)}")
    dims = tuple(map(int, shape))
    if 0 in dims:
        raise ValueError(f"{name} must not be empty, got shape {tuple(shape)}")
    return dims  # type: ignore[return-value]


def conv_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: Any = 1,
    padding: Padding = 0,
    dilation: Any = 1,
    groups: Any = 1,
) -> ConvGeometry:
    """Validate a convolution's arguments and return its :class:`ConvGeometry`.

    Parameters
    ----------
    x_shape : tuple of int
        Input shape ``(N, C, H, W)``.
    w_shape : tuple of int
        Weight shape ``(F, C / groups, kh, kw)``.
    stride, dilation : int or (int, int)
        Positive.
    padding : int, pair, ((top, bottom), (left, right)), "valid", "same" or "full"
        Non-negative.
    groups : int
        Positive, divides C and F.

    Raises
    ------
    ValueError, TypeError
        Naming the argument and the offending values.

    Examples
    --------
    >>> conv_geometry((1, 3, 32, 32), (8, 3, 5, 5), padding="same").y_shape
    (1, 8, 32, 32)
    >>> conv_geometry((1, 3, 32, 32), (8, 4, 5, 5))
    Traceback (most recent call last):
    ...
    ValueError: channel mismatch: x has C=3 channels but w of shape (8, 4, 5, 5) with ...
    """
    n, c, h, w = _shape4(x_shape, "x", "N, C, H, W")
    f, cg, kh, kw = _shape4(w_shape, "w", "F, C/groups, kh, kw")
    stride2 = pair(stride, "stride")
    dilation2 = pair(dilation, "dilation")
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups}")
    if f % groups:
        raise ValueError(f"w has F={f} filters, which is not divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(
            f"channel mismatch: x has C={c} channels but w of shape {tuple(w_shape)} with "
            f"groups={groups} expects C = {cg} * {groups} = {cg * groups}"
        )
    pads = resolve_padding(padding, (h, w), (kh, kw), stride2, dilation2)
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = stride2, dilation2, pads
    ho = output_size(h, kh, stride=sh, pad_lo=top, pad_hi=bottom, dilation=dh)
    wo = output_size(w, kw, stride=sw, pad_lo=left, pad_hi=right, dilation=dw)
    if ho < 1 or wo < 1:
        khd, kwd = (d * (k - 1) + 1 for k, d in zip((kh, kw), dilation2))
        raise ValueError(
            f"dilated kernel ({khd}, {kwd}) (kernel {(kh, kw)}, dilation {dilation2}) is larger "
            f"than the padded input ({h + sum(pads[0])}, {w + sum(pads[1])}) "
            f"(input {(h, w)}, padding {pads})"
        )
    return ConvGeometry(n, c, h, w, f, kh, kw, stride2, dilation2, pads, groups, ho, wo)


@dataclass(frozen=True)
class PoolGeometry(_Sweep):
    """Validated geometry of one 2-D pooling window sweep over NCHW input.

    Examples
    --------
    >>> g = pool_geometry((1, 3, 7, 7), 2)
    >>> g.y_shape, g.stride
    ((1, 3, 3, 3), (2, 2))
    """

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    ho: int
    wo: int

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        """Output shape ``(N, C, Ho, Wo)``."""
        return self.n, self.c, self.ho, self.wo

    @property
    def dilation(self) -> tuple[int, int]:
        """Pooling windows are not dilated: ``(1, 1)``."""
        return (1, 1)


def pool_geometry(
    x_shape: tuple[int, ...],
    kernel_size: Any,
    *,
    stride: Any = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
) -> PoolGeometry:
    """Validate pooling arguments (torch semantics) and return a :class:`PoolGeometry`.

    ``stride`` defaults to ``kernel_size``. Integer padding must not exceed half the
    window, as in torch. ``"same"`` and ``"valid"`` are accepted too.

    Examples
    --------
    >>> pool_geometry((1, 1, 7, 7), 2, ceil_mode=True).y_shape
    (1, 1, 4, 4)
    >>> pool_geometry((1, 1, 8, 8), 3, stride=1, padding=1).y_shape
    (1, 1, 8, 8)
    """
    n, c, h, w = _shape4(x_shape, "x", "N, C, H, W")
    kernel = pair(kernel_size, "kernel_size")
    stride2 = kernel if stride is None else pair(stride, "stride")
    pads = resolve_padding(padding, (h, w), kernel, stride2, (1, 1))
    if not isinstance(padding, str):
        for k, (lo, hi) in zip(kernel, pads):
            if max(lo, hi) > k // 2:
                raise ValueError(
                    f"padding {padding!r} must be at most half the kernel_size {kernel}"
                )
    sizes = []
    for i, k, s, (lo, hi) in zip((h, w), kernel, stride2, pads):
        if ceil_mode:
            o = math.ceil((i + lo + hi - k) / s) + 1
            if (o - 1) * s >= i + lo:  # the last window must start inside input or left pad
                o -= 1
        else:
            o = output_size(i, k, stride=s, pad_lo=lo, pad_hi=hi, dilation=1)
        sizes.append(o)
    ho, wo = sizes
    if ho < 1 or wo < 1:
        raise ValueError(
            f"kernel_size {kernel} is larger than the padded input "
            f"({h + sum(pads[0])}, {w + sum(pads[1])})"
        )
    if ceil_mode:  # windows may run past the padded input: extend the bottom/right padding
        extra_h = max((ho - 1) * stride2[0] + kernel[0] - (h + sum(pads[0])), 0)
        extra_w = max((wo - 1) * stride2[1] + kernel[1] - (w + sum(pads[1])), 0)
        pads = ((pads[0][0], pads[0][1] + extra_h), (pads[1][0], pads[1][1] + extra_w))
    return PoolGeometry(n, c, h, w, *kernel, stride2, pads, ho, wo)
