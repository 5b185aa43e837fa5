"""The one registry of reference cases, shared by ``arraycnn bench``, ``arraycnn tune`` and
the asv suite (``benchmarks/``): the reference layers, the filtering grids, tune's fitting
cases and its seeded held-out generator, and the seeded host inputs of any case.

A :class:`Case` is one convolution: input (N, C, H, W), weights (F, C / groups, kh, kw),
stride, padding, groups, dtype and the *kind* of its weights:

- ``"layer"``: seeded standard-normal weights (a network layer, full rank);
- ``"rank1"``: outer products of seeded normal vectors (separable's favourite);
- ``"gaussian"``: a normalised Gaussian (rank 1), and ``"random"``: a seeded full-rank
  kernel with unit sum of squares -- the two kinds of the filtering grid (N = C = F = 1,
  output the size of the input).

Labels are what the bench CLI (``--layers``) and the asv parameters use:
``NxCxHxW:Fxkhxkw`` plus ``/s<stride>``, ``/g<groups>``, ``/p<padding>`` (when it is not
``k // 2``), ``/rank1`` and ``/<dtype>`` (when not float32); filtering cases are
``img<side>:k<side>:<kind>``.

Inputs are generated on the host with NumPy's seeded generator (benchmark-only host work):
x from seed 0, w from seed 1, the backward's gy from seed 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import ConvGeometry, conv_geometry

__all__ = [
    "FILTERS",
    "FILTERS_ASV_QUICK",
    "FILTERS_QUICK",
    "FILTER_KINDS",
    "KINDS",
    "LAYERS",
    "QUICK_LAYERS",
    "REGRET_FILTERS",
    "REGRET_FILTERS_QUICK",
    "TUNE_CASES",
    "Case",
    "FilterGrid",
    "filter_case",
    "gaussian_kernel",
    "holdout_cases",
    "host_arrays",
    "layer",
    "random_kernel",
    "seeded",
    "tune_cases",
]

KINDS = ("layer", "rank1", "gaussian", "random")
FILTER_KINDS = ("gaussian", "random")


@dataclass(frozen=True)
class Case:
    """One convolution to time (square images and kernels).

    Attributes
    ----------
    x_shape : (N, C, H, W)
    w_shape : (F, C / groups, kh, kw)
    stride, padding, groups : int
        Geometry keywords of :func:`arraycnn.conv2d`.
    kind : {"layer", "rank1", "gaussian", "random"}
        How the weights are drawn (module docstring).
    dtype : {"float32", "float64"}
    """

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kind: str = "layer"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    @property
    def label(self) -> str:
        """``img256:k3:gaussian`` for a filtering case, else ``64x1x28x28:32x3x3[/...]``."""
        if self.is_filter:
            return f"img{self.image}:k{self.kernel}:{self.kind}"
        n, c, h, w = self.x_shape
        f, _, kh, kw = self.w_shape
        text = f"{n}x{c}x{h}x{w}:{f}x{kh}x{kw}"
        text += f"/s{self.stride}" if self.stride != 1 else ""
        text += f"/g{self.groups}" if self.groups != 1 else ""
        text += f"/p{self.padding}" if self.padding != kh // 2 else ""
        text += "/rank1" if self.kind == "rank1" else ""
        return text + (f"/{self.dtype}" if self.dtype != "float32" else "")

    @property
    def is_filter(self) -> bool:
        """True for a case of the filtering grid (one image, one kernel, 'same' output)."""
        return self.kind in FILTER_KINDS

    @property
    def kwargs(self) -> dict[str, int]:
        """Geometry keywords of :func:`arraycnn.conv2d`."""
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups}

    def geometry(self) -> ConvGeometry:
        """The case's :class:`arraycnn.ConvGeometry`."""
        return conv_geometry(self.x_shape, self.w_shape, **self.kwargs)

    @property
    def image(self) -> int:
        """Image side H."""
        return self.x_shape[2]

    @property
    def kernel(self) -> int:
        """Kernel side kh."""
        return self.w_shape[2]


def layer(
    n: int,
    c: int,
    h: int,
    f: int,
    k: int,
    *,
    stride: int = 1,
    padding: int | None = None,
    groups: int = 1,
    kind: str = "layer",
    dtype: str = "float32",
) -> Case:
    """Input (n, c, h, h), f filters of k x k; padding ``k // 2`` unless given."""
    pad = k // 2 if padding is None else padding
    return Case((n, c, h, h), (f, c // groups, k, k), stride, pad, groups, kind, dtype)


def filter_case(image: int, kernel: int, kind: str) -> Case:
    """One image (image x image) correlated with one kernel, output the input's size.

    Examples
    --------
    >>> filter_case(256, 15, "gaussian").label
    'img256:k15:gaussian'
    """
    if kind not in FILTER_KINDS:
        raise ValueError(f"kernel kind must be 'gaussian' or 'random', got {kind!r}")
    return layer(1, 1, image, 1, kernel, kind=kind)


# --------------------------------------------------------------------------- registry

#: The reference conv layers (float32), by label, in the bench's order; the last one is
#: depthwise (groups = C). Padding keeps H x W before the stride.
LAYERS: dict[str, Case] = {
    case.label: case
    for case in (
        layer(64, 1, 28, 32, 3),
        layer(64, 32, 14, 64, 3),
        layer(32, 64, 56, 64, 3),
        layer(8, 3, 224, 64, 7, stride=2),
        layer(16, 64, 56, 64, 3, groups=64),
    )
}
#: The layers of ``arraycnn bench --quick``.
QUICK_LAYERS = ("64x1x28x28:32x3x3", "64x32x14x14:64x3x3")


@dataclass(frozen=True)
class FilterGrid:
    """Image sides x kernel sides x kernel kinds (cases whose kernel fits the image)."""

    images: tuple[int, ...]
    kernels: tuple[int, ...]
    kinds: tuple[str, ...] = FILTER_KINDS

    def cases(self) -> list[Case]:
        """Image-major, then kernel, then kind."""
        return [
            filter_case(image, kernel, kind)
            for image in self.images
            for kernel in self.kernels
            if kernel <= image
            for kind in self.kinds
        ]


#: The filtering grid (``arraycnn bench``, the asv suite).
FILTERS = FilterGrid((256, 1024, 4096), (3, 7, 15, 31, 63))
#: ``arraycnn bench --quick``.
FILTERS_QUICK = FilterGrid((64, 256), (3, 7, 15))
#: The asv suite under ``ARRAYCNN_BENCH_QUICK=1`` (the CI dashboard).
FILTERS_ASV_QUICK = FilterGrid((256,), (3, 15))
#: Filtering cases of the asv suite's tracked regret (``bench_dispatch``), and quick ones.
REGRET_FILTERS = FilterGrid((256, 1024), (3, 7, 15, 31))
REGRET_FILTERS_QUICK = (
    filter_case(256, 3, "random"),
    filter_case(256, 15, "gaussian"),
    filter_case(256, 15, "random"),
)

#: ``arraycnn tune``'s designed set, quick part: call overhead (tiny), long-K GEMMs (many
#: channels), short-K GEMMs (C = 1), memory-bound depthwise, rank-1 kernels (separable),
#: stride, float64.
_TUNE_QUICK = (
    layer(1, 1, 16, 1, 3),
    layer(8, 16, 16, 16, 3),
    layer(4, 32, 16, 32, 3),
    layer(16, 1, 28, 8, 5),
    layer(2, 16, 32, 16, 3, groups=16),
    layer(1, 2, 64, 2, 11, kind="rank1"),
    layer(1, 4, 48, 4, 7, kind="rank1"),
    layer(4, 8, 32, 8, 5, stride=2),
    layer(8, 16, 16, 16, 3, dtype="float64"),
)
#: The rest of the full set: large kernels (FFT), unpadded layers, images the size of the
#: filtering grid (filtered in bands), batches run in cache-sized chunks, reference layers.
_TUNE_MORE = (
    layer(32, 32, 24, 32, 3),
    layer(1, 1, 128, 1, 21),
    layer(8, 64, 8, 128, 3),
    layer(2, 8, 64, 8, 9, kind="rank1"),
    layer(64, 1, 28, 32, 5, padding=0),
    layer(64, 32, 12, 64, 5, padding=0),
    layer(1, 1, 96, 1, 15, dtype="float64"),
    layer(4, 32, 32, 32, 3, groups=32),
    layer(2, 4, 40, 4, 9),
    layer(1, 1, 256, 1, 3, kind="rank1"),
    layer(1, 1, 256, 1, 7),
    layer(1, 1, 512, 1, 3, kind="rank1"),
    layer(1, 1, 1024, 1, 3, kind="rank1"),
    layer(1, 1, 1024, 1, 7, kind="rank1"),
    layer(1, 1, 2048, 1, 3),
    LAYERS["64x32x14x14:64x3x3"],
    layer(16, 64, 28, 64, 3),
    LAYERS["32x64x56x56:64x3x3"],
)
#: A few tiny cases: they check the command, they fit nothing useful.
_TUNE_TINY = (layer(1, 1, 8, 1, 3), layer(2, 2, 8, 2, 5, kind="rank1"))
#: ``arraycnn tune``'s case sets by name (``--cases``).
TUNE_CASES: dict[str, tuple[Case, ...]] = {
    "full": _TUNE_QUICK + _TUNE_MORE,
    "quick": _TUNE_QUICK,
    "tiny": _TUNE_TINY,
}


def tune_cases(name: str) -> tuple[Case, ...]:
    """The tune case set called ``name`` (a key of :data:`TUNE_CASES`)."""
    if name not in TUNE_CASES:
        raise ValueError(f"tune case set must be one of {tuple(TUNE_CASES)}, got {name!r}")
    return TUNE_CASES[name]


#: Held-out cases: work cap (multiply-accumulates), normal and tiny.
HOLDOUT_MAX_MACS = 3e7
HOLDOUT_MAX_MACS_TINY = 2e5


def holdout_cases(count: int, seed: int, *, tiny: bool = False) -> list[Case]:
    """``count`` seeded random geometries unlike the designed set, each at most
    :data:`HOLDOUT_MAX_MACS` multiply-accumulates (``tiny``: small images, a smaller cap).

    Examples
    --------
    >>> holdout_cases(3, seed=1) == holdout_cases(3, seed=1)
    True
    """
    rng = np.random.default_rng(seed)
    cap = HOLDOUT_MAX_MACS_TINY if tiny else HOLDOUT_MAX_MACS
    cases: list[Case] = []
    while len(cases) < count:
        c = int(rng.choice([1, 3, 8, 16, 32]))
        f = int(rng.choice([1, 4, 8, 16, 32]))
        k = int(rng.choice([1, 3, 5, 7, 9, 11, 15]))
        h = int(rng.choice([8, 12] if tiny else [8, 16, 28, 32, 48, 64]))
        groups = c if (c == f and c > 1 and rng.random() < 0.3) else 1
        case = layer(
            int(rng.choice([1, 2, 4, 8, 16])),
            c,
            h,
            f,
            k,
            stride=int(rng.choice([1, 1, 1, 2])),
            padding=k // 2 if rng.random() < 0.5 else 0,
            groups=groups,
            dtype="float64" if rng.random() < 0.2 else "float32",
            kind="rank1" if k >= 5 and rng.random() < 0.3 else "layer",
        )
        if k <= h and case.geometry().macs() <= cap:
            cases.append(case)
    return cases


# --------------------------------------------------------------------------- inputs


def seeded(shape: Iterable[int], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """Standard-normal host array of ``shape`` and ``dtype`` from a fixed seed."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def gaussian_kernel(size: int, dtype: Any = np.float32) -> np.ndarray:
    """Normalised isotropic Gaussian (rank 1), sigma = size / 6, shape (size, size).

    Examples
    --------
    >>> round(float(gaussian_kernel(5).sum()), 6)
    1.0
    """
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / max(size / 6.0, 0.5)) ** 2)
    g /= g.sum()
    return np.outer(g, g).astype(dtype)


def random_kernel(size: int, seed: int = 1, dtype: Any = np.float32) -> np.ndarray:
    """Seeded full-rank kernel, shape (size, size), with unit sum of squares."""
    return _random_weights((1, 1, size, size), seed)[0, 0].astype(dtype)


def _random_weights(w_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded normal weights (float64) scaled to a unit sum of squares per filter."""
    w = np.random.default_rng(seed).standard_normal(w_shape)
    return w / np.sqrt((w * w).sum() / w_shape[0])


def _weights(case: Case) -> np.ndarray:
    """The case's weights (F, Cg, kh, kw) in float64 (module docstring: the kinds)."""
    f, cg, kh, kw = case.w_shape
    if case.kind == "gaussian":
        return np.broadcast_to(gaussian_kernel(kh, np.float64), case.w_shape)
    if case.kind == "random":
        return _random_weights(case.w_shape, seed=1)
    rng = np.random.default_rng(1)
    if case.kind == "rank1":
        return rng.standard_normal((f, cg, kh, 1)) * rng.standard_normal((f, cg, 1, kw))
    return rng.standard_normal(case.w_shape)


def host_arrays(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded host inputs of ``case`` in its dtype: x (N, C, H, W), w (F, Cg, kh, kw) and
    the backward's gy (N, F, Ho, Wo).

    Examples
    --------
    >>> x, w, gy = host_arrays(LAYERS["64x1x28x28:32x3x3"])
    >>> x.shape, w.shape, gy.shape, str(w.dtype)
    ((64, 1, 28, 28), (32, 1, 3, 3), (64, 32, 28, 28), 'float32')
    """
    x = seeded(case.x_shape, case.dtype, seed=0)
    w = np.ascontiguousarray(_weights(case), dtype=case.dtype)
    gy = seeded(case.geometry().y_shape, case.dtype, seed=2)
    return x, w, gy
