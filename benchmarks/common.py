"""Shared pieces of the asv suite: parameter grids, the ``XPBenchmark`` base, feasibility rules.

Conventions (those of the scipy and scikit-image suites):

- every class lists ``params`` and ``param_names``; asv runs one parameter combination per
  sample, calling ``setup(*params)`` first;
- an impossible combination (backend not installed, no GPU, a run predicted to take more than
  :data:`MAX_SECONDS` per call or to allocate more than :data:`MAX_BYTES`) raises
  ``NotImplementedError`` in ``setup``: asv records it as skipped (n/a);
- inputs are seeded; every timed call ends with :func:`arraycnn.synchronize` on its result,
  so that a GPU backend is timed to completion;
- ``ARRAYCNN_BENCH_QUICK=1`` shrinks the module-level grids (CI's dashboard run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import scipy.fft  # noqa: F401 - imported once here (asv's forkserver), not in every sample

import arraycnn
from arraycnn import bench
from arraycnn.geometry import ConvGeometry, conv_geometry

try:  # optional backend: imported with the suite so that each forked sample does not pay it
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - torch is an optional extra
    pass

#: True when the reduced grids are requested (``ARRAYCNN_BENCH_QUICK=1``).
QUICK = os.environ.get("ARRAYCNN_BENCH_QUICK", "0").strip().lower() not in ("", "0", "false", "no")

#: A call predicted slower than this (seconds) is skipped instead of run.
MAX_SECONDS = 2.0
#: A call whose strategy workspace is predicted larger than this (bytes) is skipped.
MAX_BYTES = bench.MAX_WORKSPACE_BYTES

#: Strategies timed by the conv and filter suites; ``auto`` is the dispatcher.
STRATEGIES = [*arraycnn.STRATEGY_NAMES, "auto"]


def pick(full: list, quick: list) -> list:
    """The full grid, or the reduced one under ``ARRAYCNN_BENCH_QUICK=1``."""
    return quick if QUICK else full


#: Backends as asv parameter values. CuPy is skipped (in setup) where there is no GPU.
BACKENDS = pick(["numpy", "torch", "cupy"], ["numpy", "torch"])


@dataclass(frozen=True)
class Layer:
    """One convolution layer: input shape, filters, square kernel, stride, padding, groups."""

    x_shape: tuple[int, int, int, int]
    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        """Weights (F, C / groups, k, k)."""
        return (self.filters, self.x_shape[1] // self.groups, self.kernel, self.kernel)

    @property
    def kwargs(self) -> dict[str, int]:
        """Geometry keywords of :func:`arraycnn.conv2d`."""
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups}

    def geometry(self) -> ConvGeometry:
        """The layer's :class:`arraycnn.ConvGeometry`."""
        return conv_geometry(self.x_shape, self.w_shape, **self.kwargs)


#: The four reference layers (float32), labelled ``NxCxHxW:Fxkhxkw[/stride][/groups]``;
#: the labels are the asv parameter values. Padding keeps H x W (before stride).
LAYERS: dict[str, Layer] = {
    "64x1x28x28:32x3x3": Layer((64, 1, 28, 28), 32, 3, padding=1),
    "64x32x14x14:64x3x3": Layer((64, 32, 14, 14), 64, 3, padding=1),
    "32x64x56x56:64x3x3": Layer((32, 64, 56, 56), 64, 3, padding=1),
    "8x3x224x224:64x7x7/s2": Layer((8, 3, 224, 224), 64, 7, stride=2, padding=3),
}
#: The depthwise layer (groups = C), timed in float32 and float64.
DEPTHWISE: dict[str, Layer] = {
    "16x64x56x56:64x3x3/g64": Layer((16, 64, 56, 56), 64, 3, padding=1, groups=64),
}
LAYER_NAMES = pick(list(LAYERS), list(LAYERS)[:2])

#: Image filtering grid: square image side, square kernel side, kernel kind.
IMAGE_SIZES = pick([256, 1024, 4096], [256])
KERNEL_SIZES = pick([3, 7, 15, 31, 63], [3, 15])
KERNEL_KINDS = ["gaussian", "random"]


def filter_layer(image: int, kernel: int) -> Layer:
    """A single-image, single-filter ``"same"`` convolution as a layer (N = C = F = 1)."""
    return Layer((1, 1, image, image), 1, kernel, padding=kernel // 2)


def gaussian_kernel(size: int, dtype: Any = np.float32) -> np.ndarray:
    """Normalized isotropic Gaussian (rank 1), shape (size, size): that of ``arraycnn bench``."""
    return bench.gaussian_kernel(size).astype(dtype)


def random_kernel(size: int, seed: int = 1, dtype: Any = np.float32) -> np.ndarray:
    """Seeded full-rank kernel, shape (size, size), normalized to unit sum of squares."""
    k = np.random.default_rng(seed).standard_normal((size, size))
    return (k / np.sqrt((k * k).sum())).astype(dtype)


def kernel_of(kind: str, size: int, dtype: Any = np.float32) -> np.ndarray:
    """``gaussian`` or ``random`` kernel of side ``size``."""
    if kind == "gaussian":
        return gaussian_kernel(size, dtype)
    if kind == "random":
        return random_kernel(size, dtype=dtype)
    raise ValueError(f"kernel kind must be 'gaussian' or 'random', got {kind!r}")


def skip_if_infeasible(
    strategy: str,
    geom: ConvGeometry,
    *,
    itemsize: int = 4,
    rank: int | None = None,
    direction: str = "forward",
) -> None:
    """Raise NotImplementedError (asv: skipped) for a call too slow or too large to time.

    ``strategy`` is the one that runs (for ``auto``, pass what the dispatcher chose). The
    rule is that of ``arraycnn bench`` (:func:`arraycnn.bench.skip_reason`: the
    dispatcher's own time and workspace predictions) with :data:`MAX_SECONDS`.
    """
    reason = bench.skip_reason(
        strategy, geom, rank, MAX_SECONDS, direction=direction, itemsize=itemsize
    )
    if reason:
        raise NotImplementedError(f"{strategy}: {reason}")


def resolve(backend: str) -> ModuleType:
    """The namespace of ``backend``, or NotImplementedError (skip) when it is unusable here.

    torch is limited to one thread.
    """
    try:
        xp = arraycnn.resolve_backend(backend)
    except RuntimeError as exc:  # not installed, or CuPy without a GPU
        raise NotImplementedError(str(exc)) from exc
    if backend == "torch":
        import torch

        torch.set_num_threads(1)
    return xp


def limit_threads() -> None:
    """Pin BLAS/OpenMP pools to one thread where threadpoolctl is available."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return
    threadpool_limits(1)


def seeded(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """Standard-normal host array of ``shape`` and ``dtype`` from a fixed seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class XPBenchmark:
    """Base class: the backend is the first asv parameter.

    Subclasses extend ``params`` / ``param_names`` and call :meth:`setup_backend` from their
    ``setup``; :meth:`to_xp` moves seeded host data to the backend, :meth:`sync` waits for the
    device before the timer stops.
    """

    params: ClassVar[list] = [BACKENDS]
    param_names: ClassVar[list] = ["backend"]
    timeout = 120.0

    xp: ModuleType

    def setup_backend(self, backend: str) -> ModuleType:
        """Resolve the backend (skip if unusable) and pin threads."""
        limit_threads()
        self.xp = resolve(backend)
        return self.xp

    def to_xp(self, host: np.ndarray) -> Any:
        """``host`` on this benchmark's backend (the default device)."""
        return arraycnn.asarray(host, backend=self.xp)

    def seeded(self, shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> Any:
        """Seeded standard-normal array of ``shape`` on the backend."""
        return self.to_xp(seeded(shape, dtype, seed))

    @staticmethod
    def sync(result: Any) -> None:
        """Wait for queued device work of ``result`` (a tuple: its first array)."""
        if isinstance(result, tuple):
            result = result[0]
        arraycnn.synchronize(result)
