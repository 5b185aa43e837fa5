"""Shared pieces of the asv suite: parameter grids, the ``XPBenchmark`` base, feasibility rules.

Conventions (those of the scipy and scikit-image suites):

- every class lists ``params`` and ``param_names``; asv runs one parameter combination per
  sample, calling ``setup(*params)`` first;
- an impossible combination (backend not installed, no GPU, a run predicted to take more than
  :data:`MAX_SECONDS` per call or to allocate more than
  :data:`arraycnn.tools.measuring.MAX_WORKSPACE_BYTES`) raises ``NotImplementedError`` in
  ``setup``: asv records it as skipped (n/a);
- the cases (layers, filtering grids) and their seeded inputs come from the registry
  :mod:`arraycnn.tools.cases`, shared with ``arraycnn bench`` and ``arraycnn tune``; every
  timed call ends with :func:`arraycnn.synchronize` on its result, so that a GPU backend is
  timed to completion;
- ``ARRAYCNN_BENCH_QUICK=1`` shrinks the module-level grids (CI's dashboard run).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import scipy.fft  # noqa: F401 - imported once here (asv's forkserver), not in every sample

import arraycnn
from arraycnn.geometry import ConvGeometry
from arraycnn.tools import cases, measuring

try:  # optional backend: imported with the suite so that each forked sample does not pay it
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - torch is an optional extra
    pass

#: True when the reduced grids are requested (``ARRAYCNN_BENCH_QUICK=1``).
QUICK = os.environ.get("ARRAYCNN_BENCH_QUICK", "0").strip().lower() not in ("", "0", "false", "no")

#: A call predicted slower than this (seconds) is skipped instead of run.
MAX_SECONDS = 2.0

#: Strategies timed by the conv and filter suites; ``auto`` is the dispatcher.
STRATEGIES = [*arraycnn.STRATEGY_NAMES, "auto"]


def pick(full: list, quick: list) -> list:
    """The full grid, or the reduced one under ``ARRAYCNN_BENCH_QUICK=1``."""
    return quick if QUICK else full


#: Backends as asv parameter values. CuPy is skipped (in setup) where there is no GPU.
BACKENDS = pick(["numpy", "torch", "cupy"], ["numpy", "torch"])

#: The four reference layers (float32) by label, the asv parameter values.
LAYERS: dict[str, cases.Case] = {k: c for k, c in cases.LAYERS.items() if c.groups == 1}
#: The depthwise layer (groups = C), timed in float32 and float64.
DEPTHWISE: dict[str, cases.Case] = {k: c for k, c in cases.LAYERS.items() if c.groups > 1}
LAYER_NAMES = pick(list(LAYERS), list(LAYERS)[:2])

#: Image filtering grid: square image side, square kernel side, kernel kind.
_GRID = cases.FILTERS_ASV_QUICK if QUICK else cases.FILTERS
IMAGE_SIZES = list(_GRID.images)
KERNEL_SIZES = list(_GRID.kernels)
KERNEL_KINDS = list(cases.FILTER_KINDS)


def skip_if_infeasible(
    strategy: str,
    x: Any,
    w: Any,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    direction: str = "forward",
) -> None:
    """Raise NotImplementedError (asv: skipped) for a call too slow or too large to time.

    The rule is that of ``arraycnn bench`` (:func:`arraycnn.tools.measuring.skip_reason`:
    the dispatcher's own time and workspace predictions, for ``auto`` those of its choice)
    with :data:`MAX_SECONDS`.
    """
    reason = measuring.skip_reason(
        strategy, w, geom, xp=xp, max_seconds=MAX_SECONDS, direction=direction, x=x
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

    @staticmethod
    def sync(result: Any) -> None:
        """Wait for queued device work of ``result`` (a tuple: its first array)."""
        if isinstance(result, tuple):
            result = result[0]
        arraycnn.synchronize(result)
