"""Hypothesis strategies for convolution geometries and seeded data.

A geometry is a :class:`Case`: shapes plus the keyword arguments of ``conv2d`` (stride,
padding in any accepted form, dilation, groups). Ranges follow the test plan: N 1-3,
groups 1-3, C and F 1-4 times groups, H and W 1-24, kernels 1-7 on each axis (even,
odd, kh != kw), stride and dilation 1-3 per axis (int or pair), every padding form.

:func:`fitting_cases` only builds geometries where the dilated kernel fits the padded
input (the input size is drawn after the kernel and padding, from the sizes that fit);
:func:`any_cases` draws sizes freely, so some do not fit (the tests assert those raise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from oracles import explicit_padding, out_size
from oracles import fits as oracle_fits

MAX_SIZE = 24
MAX_KERNEL = 7
MAX_STEP = 3


@dataclass(frozen=True)
class Case:
    """One convolution call: shapes and ``conv2d`` keyword arguments."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    kwargs: dict[str, Any] = field(hash=False)
    seed: int = 0

    @property
    def fits(self) -> bool:
        """True if the dilated kernel fits the padded input."""
        return oracle_fits(self.x_shape, self.w_shape, **_geometry_only(self.kwargs))

    def data(self, dtype: Any = np.float64, bias: bool = True):
        """Seeded float64 NumPy ``(x, w, b, gy)`` rounded to ``dtype`` (b None if not bias)."""
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(self.x_shape).astype(dtype).astype(np.float64)
        w = rng.standard_normal(self.w_shape).astype(dtype).astype(np.float64)
        b = rng.standard_normal(self.w_shape[0]).astype(dtype).astype(np.float64)
        gy = rng.standard_normal(self.y_shape).astype(dtype).astype(np.float64)
        return x, w, (b if bias else None), gy

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        """Output shape by the oracle's own formula (only meaningful when it fits)."""
        kw = self.kwargs
        (t, bo), (left, r) = explicit_padding(
            kw["padding"], self.x_shape[2:], self.w_shape[2:], kw["stride"], kw["dilation"]
        )
        s, d = _pair(kw["stride"]), _pair(kw["dilation"])
        ho = out_size(self.x_shape[2], self.w_shape[2], s[0], t, bo, d[0])
        wo = out_size(self.x_shape[3], self.w_shape[3], s[1], left, r, d[1])
        return self.x_shape[0], self.w_shape[0], ho, wo

    def __repr__(self) -> str:
        return f"Case(x={self.x_shape}, w={self.w_shape}, {self.kwargs}, seed={self.seed})"


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry_only(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("stride", "padding", "dilation")}


def steps() -> st.SearchStrategy:
    """Stride or dilation: an int or a pair, 1-3."""
    one = st.integers(1, MAX_STEP)
    return st.one_of(one, st.tuples(one, one))


def paddings(max_pad: int = 4) -> st.SearchStrategy:
    """Every padding form: int, (ph, pw), ((t, b), (l, r)), "valid", "same", "full"."""
    p = st.integers(0, max_pad)
    return st.one_of(
        p,
        st.tuples(p, p),
        st.tuples(st.tuples(p, p), st.tuples(p, p)),
        st.sampled_from(["valid", "same", "full"]),
    )


def _min_fitting_size(padding: Any, axis: int, kernel: int, dilation: int) -> int:
    """Smallest input size along ``axis`` for which the dilated kernel fits the padding."""
    if padding in ("same", "full"):
        return 1  # both pad enough for the dilated kernel to fit any input
    pads = explicit_padding(padding, (1, 1), (1, 1))[axis]  # "valid": (0, 0)
    return max(1, dilation * (kernel - 1) + 1 - sum(pads))


@st.composite
def _cases(draw, *, fitting: bool, max_size: int, max_kernel: int, max_batch: int) -> Case:
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 4))
    fg = draw(st.integers(1, 4))
    n = draw(st.integers(1, max_batch))
    kh = draw(st.integers(1, max_kernel))
    kw = draw(st.integers(1, max_kernel))
    stride = draw(steps())
    dilation = draw(steps())
    padding = draw(paddings())
    sizes = []
    for axis, (k, d) in enumerate(zip((kh, kw), _pair(dilation))):
        if fitting:
            low = _min_fitting_size(padding, axis, k, d)
            if low > max_size:  # shrink the dilation's effect by drawing a smaller kernel
                k = 1
                low = 1
            sizes.append((draw(st.integers(low, max_size)), k))
        else:
            sizes.append((draw(st.integers(1, max_size)), k))
    (h, kh), (w, kw) = sizes
    seed = draw(st.integers(0, 2**32 - 1))
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return Case((n, cg * groups, h, w), (fg * groups, cg, kh, kw), kwargs, seed)


def fitting_cases(
    *, max_size: int = MAX_SIZE, max_kernel: int = MAX_KERNEL, max_batch: int = 3
) -> st.SearchStrategy[Case]:
    """Geometries where the dilated kernel fits the padded input."""
    return _cases(fitting=True, max_size=max_size, max_kernel=max_kernel, max_batch=max_batch)


def any_cases(*, max_size: int = MAX_SIZE, max_kernel: int = MAX_KERNEL) -> st.SearchStrategy:
    """Geometries with freely drawn sizes; some do not fit."""
    return _cases(fitting=False, max_size=max_size, max_kernel=max_kernel, max_batch=3)


def tiny_cases() -> st.SearchStrategy[Case]:
    """Small fitting geometries for the explicit-loop oracle."""
    return fitting_cases(max_size=7, max_kernel=3, max_batch=2)


def seeded_cases(count: int, seed: int = 2024) -> list[Case]:
    """A fixed list of fitting geometries drawn with NumPy (for reports and benchmarks)."""
    rng = np.random.default_rng(seed)
    forms = ["int", "pair", "sides", "valid", "same", "full"]
    cases = []
    while len(cases) < count:
        groups = int(rng.integers(1, 4))
        cg, fg, n = (int(v) for v in rng.integers(1, 5, size=3))
        n = min(n, 3)
        kh, kw = (int(v) for v in rng.integers(1, MAX_KERNEL + 1, size=2))
        stride = tuple(int(v) for v in rng.integers(1, MAX_STEP + 1, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, MAX_STEP + 1, size=2))
        form = forms[int(rng.integers(len(forms)))]
        p = [int(v) for v in rng.integers(0, 5, size=4)]
        padding = {
            "int": p[0],
            "pair": (p[0], p[1]),
            "sides": ((p[0], p[1]), (p[2], p[3])),
        }.get(form, form)
        h, w = (int(v) for v in rng.integers(1, MAX_SIZE + 1, size=2))
        case = Case(
            (n, cg * groups, h, w),
            (fg * groups, cg, kh, kw),
            {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
            seed=int(rng.integers(2**32)),
        )
        if case.fits:
            cases.append(case)
    return cases
