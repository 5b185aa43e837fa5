"""conv2d forward and backward: every strategy and ``auto`` on the reference layers.

Forward and backward run the four reference layers and the depthwise one in float32 and
float64 (``DTYPES``; float32 only under ``ARRAYCNN_BENCH_QUICK=1``). The workspace rows
are float32.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from typing import ClassVar

import arraycnn
from arraycnn.tools.cases import Case, host_arrays

from .common import (
    BACKENDS,
    DEPTHWISE,
    LAYER_NAMES,
    LAYERS,
    QUICK,
    STRATEGIES,
    XPBenchmark,
    skip_if_infeasible,
)

#: Element types of the forward / backward rows (parameter ``dtype``).
DTYPES = ["float32"] if QUICK else ["float32", "float64"]


class _ConvCase(XPBenchmark):
    """Seeded x, w, gy of one layer on one backend; ``kwargs`` for conv2d."""

    layers: dict[str, Case] = LAYERS
    direction = "forward"  # the pass whose predicted cost decides feasibility

    def setup_case(self, backend: str, strategy: str, layer: str, dtype: str) -> None:
        case = dataclasses.replace(self.layers[layer], dtype=dtype)
        xp = self.setup_backend(backend)
        self.x, self.w, self.gy = (self.to_xp(a) for a in host_arrays(case))
        geom = case.geometry()
        skip_if_infeasible(strategy, self.x, self.w, geom, xp=xp, direction=self.direction)
        self.kwargs = {**case.kwargs, "strategy": strategy}
        # warm-up: first-call costs (FFT plans, fresh pages, loading compiled loops) stay out
        # of the samples, for the pass that is timed
        self.sync(arraycnn.conv2d(self.x, self.w, **self.kwargs))
        if self.direction == "backward":
            self.sync(arraycnn.conv2d_backward(self.gy, self.x, self.w, **self.kwargs))


class ConvForward(_ConvCase):
    """``conv2d`` of the four reference layers, per strategy, float32 and float64."""

    params: ClassVar[list] = [BACKENDS, STRATEGIES, LAYER_NAMES, DTYPES]
    param_names: ClassVar[list] = ["backend", "strategy", "layer", "dtype"]

    def setup(self, backend: str, strategy: str, layer: str, dtype: str) -> None:
        self.setup_case(backend, strategy, layer, dtype)

    def time_forward(self, *_: str) -> None:
        """Seconds per conv2d call (the output synchronised)."""
        self.sync(arraycnn.conv2d(self.x, self.w, **self.kwargs))


class ConvBackward(_ConvCase):
    """``conv2d_backward`` (gx, gw, gb) of the reference layers, per strategy and dtype."""

    direction = "backward"
    params: ClassVar[list] = ConvForward.params
    param_names: ClassVar[list] = ConvForward.param_names

    def setup(self, backend: str, strategy: str, layer: str, dtype: str) -> None:
        self.setup_case(backend, strategy, layer, dtype)

    def time_backward(self, *_: str) -> None:
        """Seconds per conv2d_backward call (gx, gw and gb, synchronised)."""
        self.sync(arraycnn.conv2d_backward(self.gy, self.x, self.w, **self.kwargs))


class DepthwiseForward(_ConvCase):
    """``conv2d`` of the depthwise layer (groups = C), float32 and float64."""

    layers = DEPTHWISE
    params: ClassVar[list] = [BACKENDS, STRATEGIES, list(DEPTHWISE), DTYPES]
    param_names: ClassVar[list] = ["backend", "strategy", "layer", "dtype"]

    def setup(self, backend: str, strategy: str, layer: str, dtype: str) -> None:
        self.setup_case(backend, strategy, layer, dtype)

    def time_forward(self, *_: str) -> None:
        """Seconds per conv2d call of the depthwise layer."""
        self.sync(arraycnn.conv2d(self.x, self.w, **self.kwargs))


class DepthwiseBackward(_ConvCase):
    """``conv2d_backward`` of the depthwise layer, float32 and float64."""

    layers = DEPTHWISE
    direction = "backward"
    params: ClassVar[list] = DepthwiseForward.params
    param_names: ClassVar[list] = DepthwiseForward.param_names

    def setup(self, backend: str, strategy: str, layer: str, dtype: str) -> None:
        self.setup_case(backend, strategy, layer, dtype)

    def time_backward(self, *_: str) -> None:
        """Seconds per conv2d_backward call of the depthwise layer."""
        self.sync(arraycnn.conv2d_backward(self.gy, self.x, self.w, **self.kwargs))


#: Strategies whose workspace (unfolded columns, spectra) dominates memory.
WORKSPACE_STRATEGIES = ["im2col", "fft"]
WORKSPACE_BACKENDS = ["numpy"] if QUICK else BACKENDS


class ConvWorkspace(_ConvCase):
    """Peak resident memory of a forward / backward pass of im2col and FFT.

    asv's ``peakmem`` is the process's maximum RSS, baseline included (the interpreter and
    imported libraries): compare rows with each other, not with zero.
    """

    params: ClassVar[list] = [WORKSPACE_BACKENDS, WORKSPACE_STRATEGIES, LAYER_NAMES]
    param_names: ClassVar[list] = ["backend", "strategy", "layer"]
    direction = "backward"

    def setup(self, backend: str, strategy: str, layer: str) -> None:
        self.setup_case(backend, strategy, layer, "float32")

    def peakmem_forward(self, *_: str) -> None:
        """Peak resident memory of the process during one conv2d call."""
        self.sync(arraycnn.conv2d(self.x, self.w, **self.kwargs))

    def peakmem_backward(self, *_: str) -> None:
        """Peak resident memory of the process during one conv2d_backward call."""
        self.sync(arraycnn.conv2d_backward(self.gy, self.x, self.w, **self.kwargs))


class ConvWorkspaceTraced(_ConvCase):
    """Peak bytes NumPy allocates during one forward pass (tracemalloc), baseline excluded."""

    params: ClassVar[list] = [["numpy"], WORKSPACE_STRATEGIES, LAYER_NAMES]
    param_names: ClassVar[list] = ["backend", "strategy", "layer"]

    def setup(self, backend: str, strategy: str, layer: str) -> None:
        self.setup_case(backend, strategy, layer, "float32")

    def track_forward_peak(self, *_: str) -> float:
        """Peak of the Python-traced allocations of one conv2d call, in MiB."""
        tracemalloc.start()
        try:
            self.sync(arraycnn.conv2d(self.x, self.w, **self.kwargs))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak / 2**20

    track_forward_peak.unit = "MiB"  # type: ignore[attr-defined]
    track_forward_peak.pretty_name = "conv2d forward: traced peak allocation"  # type: ignore[attr-defined]
