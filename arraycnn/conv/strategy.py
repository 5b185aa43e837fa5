"""What a convolution strategy is: the :class:`Strategy` value each kernel module exports.

A strategy holds, side by side, what it needs from a namespace, whether its sums are
exact, ``plan(call, ...)`` -- a frozen description of how it runs one call (batch chunk,
row bands, FFT tiles, separable rank) -- the ``forward``/``backward`` that execute that
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
from typing import Any

from ..backend import backend_name
from ..geometry import ConvGeometry

__all__ = ["DIRECTIONS", "Call", "Counts", "Strategy", "fft", "gemm", "spectral", "traffic"]

Array = Any
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class Call:
    """The static description of one convolution call: everything but the values.

    Attributes
    ----------
    geom : ConvGeometry
    direction : {"forward", "backward"}
    backend : str
        :func:`arraycnn.backend.backend_name` of the namespace.
    dtype : str
        The arrays' dtype name (``"float32"``, ...).
    itemsize : int
        Bytes per element.
    accelerator : bool
        True on a GPU device: kernels then run whole batches (no cache-sized pieces).
    require_exact : bool
        Only strategies whose result is a plain sum of products.
    """

    geom: ConvGeometry
    direction: str
    backend: str
    dtype: str
    itemsize: int
    accelerator: bool = False
    require_exact: bool = False

    @property
    def cached(self) -> bool:
        """True on a CPU, where kernels work in cache-sized pieces."""
        return not self.accelerator

    def with_n(self, n: int) -> Call:
        """The same call on a batch of ``n`` samples."""
        return self if n == self.geom.n else replace(self, geom=replace(self.geom, n=n))


@dataclass(frozen=True)
class Counts:
    """Operation counts of one planned call (the cost model's inputs).

    Attributes
    ----------
    gemm_flops : float
        ``2 M K Ncol`` per real matrix product (float32-equivalent).
    gemm_cells : float
        ``2 M Ncol`` per matrix product: the short-K penalty (a GEMM of inner size K runs
        at ``peak K / (K + K_half)``).
    bytes : float
        Bytes read plus written by copies, padding, slicing and elementwise arithmetic.
    fft_flops : float
        ``2.5 L log2 L`` per real 2-D transform of ``L`` points (float32-equivalent).
    calls : float
        Array operations issued (Python and dispatch overhead).
    """

    gemm_flops: float = 0.0
    gemm_cells: float = 0.0
    bytes: float = 0.0
    fft_flops: float = 0.0
    calls: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.gemm_flops + other.gemm_flops,
            self.gemm_cells + other.gemm_cells,
            self.bytes + other.bytes,
            self.fft_flops + other.fft_flops,
            self.calls + other.calls,
        )

    def scaled(self, factor: float) -> Counts:
        """All counts times ``factor``."""
        return Counts(*(a * factor for a in self.as_tuple()))

    def as_tuple(self) -> tuple[float, ...]:
        """The counts in field order."""
        return (self.gemm_flops, self.gemm_cells, self.bytes, self.fft_flops, self.calls)

    def in_bytes(self, itemsize: int) -> Counts:
        """Element counts to bytes, flops to float32-equivalents (``itemsize / 4``)."""
        scale = itemsize / 4.0
        return Counts(
            self.gemm_flops * scale,
            self.gemm_cells * scale,
            self.bytes * itemsize,
            self.fft_flops * scale,
            self.calls,
        )


def gemm(m: int, k: int, ncol: int, batch: int = 1) -> Counts:
    """``batch`` real products (m x k) @ (k x ncol); one call."""
    return Counts(gemm_flops=2.0 * batch * m * k * ncol, gemm_cells=2.0 * batch * m * ncol, calls=1)


#: The FFT strategy's per-frequency channel products are batches of tiny complex matrix
#: products: 8 real flops per complex multiply-add, at about a quarter of a large GEMM's
#: rate (docs/performance.md), so each counts ``SPECTRAL_WEIGHT`` times as GEMM work.
SPECTRAL_WEIGHT = 4.0


def spectral(m: int, k: int, ncol: int, batch: int) -> Counts:
    """``batch`` complex products (m x k) @ (k x ncol), one per frequency; one call."""
    real = gemm(m, k, ncol, batch)  # a complex MAC is 4 real ones
    return Counts(
        gemm_flops=4.0 * SPECTRAL_WEIGHT * real.gemm_flops,
        gemm_cells=4.0 * real.gemm_cells,
        calls=1,
    )


def traffic(elements: float, calls: float = 1) -> Counts:
    """``elements`` elements read or written (bytes once multiplied by the itemsize)."""
    return Counts(bytes=elements, calls=calls)


def fft(transforms: float, lh: int, lw: int) -> Counts:
    """``transforms`` real 2-D FFTs of lh x lw points; one call."""
    size = lh * lw
    return Counts(fft_flops=transforms * 2.5 * size * math.log2(max(size, 2)), calls=1)


def _missing_fft(xp: ModuleType) -> bool:
    return backend_name(xp) not in ("numpy", "cupy") and not hasattr(xp, "fft")


def _missing_svd(xp: ModuleType) -> bool:
    return not hasattr(getattr(xp, "linalg", None), "svd")


#: What a strategy may need from a namespace, and how to tell that it is missing.
REQUIREMENTS: dict[str, Callable[[ModuleType], bool]] = {
    "fft": _missing_fft,
    "linalg.svd": _missing_svd,
}


@dataclass(frozen=True)
class Strategy:
    """One convolution strategy, as the dispatcher sees it.

    Attributes
    ----------
    name : str
        As accepted by ``strategy=``.
    plan : callable
        ``plan(call, rank, price) -> plan``: a frozen description of how the call runs
        (``plan.chunk``: the batch samples the strategy prefers per kernel call; ``rank``:
        w's numerical rank where the strategy uses it, else None; ``price``: the cost
        model, ``Counts -> seconds``, for strategies that choose among layouts).
    forward : callable
        ``forward(plan, x, w, *, xp) -> y``, x (N, C, H, W), w (F, Cg, kh, kw) -> (N, F, Ho, Wo).
    backward : callable
        ``backward(plan, gy, x, w, *, xp) -> (gx, gw)``.
    workspace : callable
        ``workspace(plan) -> bytes`` of temporaries beyond inputs and result (conservative).
    counts : callable
        ``counts(plan) -> Counts`` of the plan (in bytes and float32-equivalent flops).
    needs : tuple of str
        Namespace extensions it needs (keys of :data:`REQUIREMENTS`).
    exact_sums : bool
        True if the result is a plain sum of products of the inputs (exact for
        integer-valued data whose sums fit the mantissa): not FFT, not the SVD factors.
    nan_local : bool
        True if a NaN/Inf only reaches the outputs whose receptive field contains it.
    uses_rank : bool
        True if the plan needs w's numerical rank (a value-dependent fact).
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

    def missing(self, xp: ModuleType) -> list[str]:
        """The extensions this strategy needs that namespace ``xp`` lacks (empty if none)."""
        return [need for need in self.needs if REQUIREMENTS[need](xp)]
