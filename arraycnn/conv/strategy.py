"""What a convolution strategy is: the :class:`Strategy` value each kernel module exports.

A strategy holds, side by side, what it needs from a namespace, whether its sums are
exact, ``plan(call, ...)`` -- a frozen description of how it runs one call (the piece it
prefers, FFT tiles, separable rank) -- the ``forward``/``backward`` that execute that
plan, and the ``workspace(plan)`` and ``counts(plan)`` that price the *same* plan. The
dispatcher's table (:data:`arraycnn.conv.dispatch.STRATEGIES`) is built from these values.

Operation counts (:class:`Counts`) are host arithmetic on Python numbers; the cost model
(:mod:`.cost`) turns them into seconds. Letters as in :mod:`arraycnn.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, NamedTuple

from ..backend import backend_name
from ..geometry import ConvGeometry

__all__ = ["Call", "Counts", "SpectralCosts", "Strategy", "fft", "gemm", "spectral"]
__all__ += ["spectral_costs", "traffic"]

Array = Any


@dataclass(frozen=True)
class Call:
    """The static description of one convolution call: everything but the values.

    ``direction``: "forward" or "backward"; ``backend``: the namespace's
    :func:`~arraycnn.backend.backend_name`; ``dtype``: the arrays' dtype name, ``itemsize``
    its bytes; ``accelerator``: a GPU device (kernels then run whole batches, not
    cache-sized pieces); ``require_exact``: only strategies whose result is a plain sum of
    products; ``grads``: the gradients a backward computes, "xw", "x" or "w" (the input's,
    the weights'; the bias gradient is no convolution).
    """

    geom: ConvGeometry
    direction: str
    backend: str
    dtype: str
    itemsize: int
    accelerator: bool = False
    require_exact: bool = False
    grads: str = "xw"

    @property
    def cached(self) -> bool:
        """True on a CPU, where kernels work in cache-sized pieces."""
        return not self.accelerator

    def with_n(self, n: int) -> Call:
        """The same call on a batch of ``n`` samples."""
        return self if n == self.geom.n else replace(self, geom=replace(self.geom, n=n))


class Counts(NamedTuple):
    """Operation counts of one planned call (the cost model's inputs).

    ``gemm_flops``: ``2 M K Ncol`` per real matrix product; ``gemm_cells``: ``2 M Ncol``
    per product, the short-K penalty (a GEMM of inner size K runs at ``peak K / (K +
    K_half)``); ``bytes``: read plus written by copies, padding, slicing and elementwise
    arithmetic; ``fft_flops``: ``2.5 L log2 L`` per real 2-D transform of ``L`` points;
    ``calls``: array operations issued (Python and dispatch overhead). Flops in
    float32-equivalents once :meth:`in_bytes` has converted element counts. A named tuple:
    planning adds hundreds of them (the FFT's tile search), so they must be cheap.
    """

    gemm_flops: float = 0.0
    gemm_cells: float = 0.0
    bytes: float = 0.0
    fft_flops: float = 0.0
    calls: float = 0.0

    def __add__(self, other: Counts) -> Counts:  # type: ignore[override]
        return Counts(
            self.gemm_flops + other.gemm_flops,
            self.gemm_cells + other.gemm_cells,
            self.bytes + other.bytes,
            self.fft_flops + other.fft_flops,
            self.calls + other.calls,
        )

    def scaled(self, factor: float) -> Counts:
        """All counts times ``factor``."""
        return Counts(
            self.gemm_flops * factor,
            self.gemm_cells * factor,
            self.bytes * factor,
            self.fft_flops * factor,
            self.calls * factor,
        )

    def as_tuple(self) -> tuple[float, ...]:
        """The counts in field order."""
        return tuple(self)

    def in_bytes(self, itemsize: int) -> Counts:
        """Element counts to bytes, flops to float32-equivalents (``itemsize / 4``)."""
        flops = itemsize / 4.0
        return Counts(
            self.gemm_flops * flops,
            self.gemm_cells * flops,
            self.bytes * itemsize,
            self.fft_flops * flops,
            self.calls,
        )


def gemm(m: int, k: int, ncol: int, batch: int = 1) -> Counts:
    """``batch`` real products (m x k) @ (k x ncol); one call."""
    return Counts(gemm_flops=2.0 * batch * m * k * ncol, gemm_cells=2.0 * batch * m * ncol, calls=1)


@dataclass(frozen=True)
class SpectralCosts:
    """How the FFT strategy's work beyond plain flops is counted on a backend.

    ``weight``: each real flop of the per-frequency complex products (8 per complex
    multiply-add) as that many GEMM flops, where they run as batched matrix products;
    ``matrix_flops``: GEMM flops more per matrix of such a batch; ``plane_flops``: FFT flops
    more per transformed plane.
    """

    weight: float
    matrix_flops: float
    plane_flops: float


#: NumPy's kernels, measured (docs/performance.md): batched complex products run at about
#: half a large GEMM's rate per real flop from 16 x 16 x 16 on, and cost about 160 ns more
#: per matrix (what makes a batch of tiny products slow); scipy.fft's pocketfft spends about
#: 0.15 µs per plane beyond its flops (a third or more of a small plane's time).
NUMPY_SPECTRAL = SpectralCosts(weight=1.9, matrix_flops=16000.0, plane_flops=2300.0)
#: Other namespaces: the counts their calibrations were fitted with (a quarter of the GEMM
#: rate, nothing per matrix or plane).
FITTED_SPECTRAL = SpectralCosts(weight=4.0, matrix_flops=0.0, plane_flops=0.0)
#: Contractions too small for a matrix product run as a broadcast product and sum: their
#: flops count this many times as GEMM work, on every backend.
BROADCAST_SPECTRAL_WEIGHT = 4.0


def spectral_costs(backend: str) -> SpectralCosts:
    """:data:`NUMPY_SPECTRAL` for NumPy, :data:`FITTED_SPECTRAL` for the others."""
    return NUMPY_SPECTRAL if backend == "numpy" else FITTED_SPECTRAL


def spectral(
    m: int, k: int, ncol: int, batch: int, costs: SpectralCosts, *, matmul: bool = True
) -> Counts:
    """``batch`` complex products (m x k) @ (k x ncol), one per frequency, in one call:
    GEMM work weighted by ``costs``, with its flops per matrix, where they are a batched
    matrix product (``matmul``), else as a broadcast product and sum."""
    real = gemm(m, k, ncol, batch)  # a complex MAC is 4 real ones
    if not matmul:
        flops = 4.0 * BROADCAST_SPECTRAL_WEIGHT * real.gemm_flops
    else:
        flops = 4.0 * costs.weight * real.gemm_flops + costs.matrix_flops * batch
    return Counts(flops, 4.0 * real.gemm_cells, calls=1)


def traffic(elements: float, calls: float = 1) -> Counts:
    """``elements`` elements read or written (bytes once multiplied by the itemsize)."""
    return Counts(bytes=elements, calls=calls)


def fft(transforms: float, lh: int, lw: int, costs: SpectralCosts) -> Counts:
    """``transforms`` real 2-D FFTs of lh x lw points, each ``costs.plane_flops`` more;
    one call."""
    size = lh * lw
    flops = transforms * (2.5 * size * math.log2(max(size, 2)) + costs.plane_flops)
    return Counts(fft_flops=flops, calls=1)


def _missing_fft(xp: ModuleType) -> bool:
    return backend_name(xp) not in ("numpy", "cupy") and not hasattr(xp, "fft")


def _missing_svd(xp: ModuleType) -> bool:
    return not hasattr(getattr(xp, "linalg", None), "svd")


#: What a strategy may need from a namespace, and how to tell that it is missing.
REQUIREMENTS = {"fft": _missing_fft, "linalg.svd": _missing_svd}


@dataclass(frozen=True)
class Strategy:
    """One convolution strategy, as the dispatcher sees it.

    - ``name``: as accepted by ``strategy=``;
    - ``plan(call, rank, price) -> plan``: a frozen description of how the call runs;
      ``plan.chunk`` and ``plan.rows`` are the samples and output rows the strategy prefers
      per kernel call (run by :mod:`arraycnn.conv.chunking`; Ho: whole samples), ``rank``
      w's numerical rank where the strategy uses it (else None), ``price`` the cost model
      (``Counts -> seconds``) for strategies that choose among layouts;
    - ``forward(plan, x, w, *, xp) -> y`` and ``backward(plan, gy, x, w, *, xp) -> (gx,
      gw)`` execute the plan: x (N, C, H, W), w (F, Cg, kh, kw), y (N, F, Ho, Wo); a
      gradient the call's ``grads`` leaves out is None, and not computed;
    - ``workspace(plan)``: bytes of temporaries beyond inputs and result (conservative);
      ``counts(plan)``: its :class:`Counts` (bytes and float32-equivalent flops);
    - ``needs``: namespace extensions (keys of :data:`REQUIREMENTS`); ``exact_sums``: the
      result is a plain sum of products (exact for integer-valued data whose sums fit the
      mantissa; not FFT, not the SVD factors); ``nan_local``: a NaN/Inf reaches only the
      outputs whose receptive field holds it; ``uses_rank``: the plan needs w's rank;
      ``unsupported(call) -> str | None``: why the strategy cannot run a call (a geometry
      or dtype it does not take), None where it can (every call, if not given).
    """

    name: str
    plan: Callable[..., Any]
    forward: Callable[..., Array]
    backward: Callable[..., tuple[Array, Array]]
    workspace: Callable[[Any], int]
    counts: Callable[[Any], Counts]
    needs: tuple[str, ...] = ()
    exact_sums: bool = True
    nan_local: bool = True
    uses_rank: bool = False
    unsupported: Callable[[Call], str | None] | None = None

    def why_not(self, call: Call) -> str | None:
        """Why this strategy cannot run ``call`` (None if it can)."""
        return None if self.unsupported is None else self.unsupported(call)

    def missing(self, xp: ModuleType) -> list[str]:
        """The extensions this strategy needs that namespace ``xp`` lacks (empty if none)."""
        return [need for need in self.needs if REQUIREMENTS[need](xp)]
