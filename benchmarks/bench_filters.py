"""Image filtering: one image, one kernel, output the size of the input ("same").

Uses :func:`arraycnn.filters.correlate2d` (scipy.signal semantics) when that module exists
and takes ``strategy=``; otherwise :func:`arraycnn.conv2d` with N = C = F = 1 and
``padding="same"`` -- the same arithmetic.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import arraycnn
from arraycnn.tools.cases import filter_case, host_arrays

from .common import (
    BACKENDS,
    IMAGE_SIZES,
    KERNEL_KINDS,
    KERNEL_SIZES,
    STRATEGIES,
    XPBenchmark,
    skip_if_infeasible,
)


def _library_correlate2d() -> Callable[..., Any] | None:
    """``arraycnn.filters.correlate2d`` if present and strategy-aware, else None."""
    try:
        from arraycnn.filters import correlate2d
    except ImportError:
        return None
    try:
        accepts = "strategy" in inspect.signature(correlate2d).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        accepts = False
    return correlate2d if accepts else None


CORRELATE2D = _library_correlate2d()
#: Which entry point the filter rows time (shown in the benchmark's docstring on the page).
ENTRY_POINT = "arraycnn.filters.correlate2d" if CORRELATE2D else "arraycnn.conv2d (N=C=F=1)"


class Filter2D(XPBenchmark):
    """Filter an image (float32) with a Gaussian (rank 1) or random kernel, per strategy."""

    params: ClassVar[list] = [BACKENDS, STRATEGIES, IMAGE_SIZES, KERNEL_SIZES, KERNEL_KINDS]
    param_names: ClassVar[list] = ["backend", "strategy", "image", "kernel", "kind"]

    def setup(self, backend: str, strategy: str, image: int, kernel: int, kind: str) -> None:
        case = filter_case(image, kernel, kind)
        xp = self.setup_backend(backend)
        x, w, _ = (self.to_xp(a) for a in host_arrays(case))  # (1, 1, H, W), (1, 1, k, k)
        skip_if_infeasible(strategy, x, w, case.geometry(), xp=xp)
        if CORRELATE2D is not None:
            image2d, kernel2d = x[0, 0, ...], w[0, 0, ...]  # (1, 1, H, W) -> (H, W)
            self.call = lambda: CORRELATE2D(image2d, kernel2d, mode="same", strategy=strategy)
        else:
            self.call = lambda: arraycnn.conv2d(x, w, padding="same", strategy=strategy)
        self.sync(self.call())  # warm-up (FFT plans, fresh pages)

    def time_filter(self, *_: Any) -> None:
        """Seconds per correlate2d call on one image (mode 'same')."""
        self.sync(self.call())


Filter2D.__doc__ = f"{Filter2D.__doc__}\n\n    Entry point: {ENTRY_POINT}."
