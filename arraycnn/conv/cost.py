"""Cost model v1: operation counts per strategy times per-operation time constants.

The counts follow each strategy's code (see the strategy modules); the constants are
**first estimates** for NumPy float32 on one core of this project's reference machine
(AMD EPYC Zen 4, numpy matmul about 97 GFLOP/s single-threaded). A later calibration step
fits them per backend. All of this is host arithmetic on Python numbers.

Model pieces
------------
- GEMM ``M x K x Ncol``: ``2 M K Ncol / (GEMM_FLOPS * K / (K + GEMM_HALF_K))``, a GEMM with
  a short inner dimension K runs far below peak (outer products are memory bound).
- Element traffic (slice copies, additions, elementwise products): ``elements / MEM_ELEMS``.
- FFT of length ``L`` (real, 2-D): ``2.5 L log2 L / FFT_FLOPS`` per transform.
- Every array operation: ``CALL_OVERHEAD`` seconds.
"""

from __future__ import annotations

import math

from ..geometry import ConvGeometry

#: Peak GEMM rate, flop/s (first estimate: numpy float32, one thread).
GEMM_FLOPS = 60e9
#: Inner dimension at which a GEMM reaches half its peak rate.
GEMM_HALF_K = 24.0
#: Elements moved per second by copies and elementwise arithmetic.
MEM_ELEMS = 0.8e9
#: Flop/s of a batched real 2-D FFT (2.5 L log2 L flops per transform).
FFT_FLOPS = 6e9
#: Seconds of Python/dispatch overhead per array operation.
CALL_OVERHEAD = 4e-6


def gemm_seconds(m: int, k: int, ncol: int, batch: int = 1) -> float:
    """Time of ``batch`` GEMMs (m x k) @ (k x ncol)."""
    rate = GEMM_FLOPS * k / (k + GEMM_HALF_K)
    return batch * 2.0 * m * k * ncol / rate + batch * CALL_OVERHEAD


def traffic_seconds(elements: float, ops: int = 1) -> float:
    """Time to move or touch ``elements`` elements in ``ops`` array operations."""
    return elements / MEM_ELEMS + ops * CALL_OVERHEAD


def fft_seconds(transforms: int, lh: int, lw: int) -> float:
    """Time of ``transforms`` real 2-D FFTs of size lh x lw."""
    size = lh * lw
    return transforms * 2.5 * size * math.log2(max(size, 2)) / FFT_FLOPS + CALL_OVERHEAD


def naive_seconds(geom: ConvGeometry) -> float:
    """kh·kw taps, each: one slice copy, one GEMM with K = Cg, one accumulation."""
    cols = geom.n * geom.ho * geom.wo
    per_tap = (
        traffic_seconds(geom.c * cols)
        + gemm_seconds(geom.fg, geom.cg, cols, geom.groups)
        + traffic_seconds(geom.f * cols)
    )
    return geom.kh * geom.kw * per_tap


def im2col_seconds(geom: ConvGeometry) -> float:
    """Unfold (kh·kw slice copies into the columns) then one GEMM with K = Cg·kh·kw."""
    cols = geom.n * geom.ho * geom.wo
    k = geom.cg * geom.kh * geom.kw
    unfold = traffic_seconds(2 * geom.c * geom.kh * geom.kw * cols, ops=geom.kh * geom.kw)
    return unfold + gemm_seconds(geom.fg, k, cols, geom.groups)


def fft_seconds_conv(geom: ConvGeometry) -> float:
    """Transforms of N·C inputs, F·Cg kernels and N·F outputs, plus the spectral product."""
    from .fft import fast_shape

    lh, lw = fast_shape(geom)
    spectrum = lh * (lw // 2 + 1)
    transforms = fft_seconds(geom.n * geom.c + geom.f * geom.cg + geom.n * geom.f, lh, lw)
    # complex GEMM per frequency: (N x Cg) @ (Cg x Fg), 4 real multiply-adds per term
    product = 4 * gemm_seconds(geom.n, geom.cg, geom.fg, geom.groups * spectrum)
    layout = traffic_seconds(4 * (geom.n * geom.c + geom.f * geom.cg + geom.n * geom.f) * spectrum)
    return transforms + product + layout


def separable_seconds(geom: ConvGeometry, rank: int) -> float:
    """r column passes over (Ho, Wp) and r row passes over (Ho, Wo), elementwise."""
    lanes = geom.n * geom.f * geom.cg * rank
    column = traffic_seconds(3 * lanes * geom.ho * geom.wp * geom.kh, ops=2 * geom.kh)
    row = traffic_seconds(3 * lanes * geom.ho * geom.wo * geom.kw, ops=2 * geom.kw)
    return column + row


def predicted_seconds(name: str, geom: ConvGeometry, rank: int | None = None) -> float:
    """Predicted forward time of strategy ``name`` (``rank`` needed for separable)."""
    if name == "naive":
        return naive_seconds(geom)
    if name == "im2col":
        return im2col_seconds(geom)
    if name == "fft":
        return fft_seconds_conv(geom)
    if name == "separable":
        return separable_seconds(geom, rank if rank is not None else min(geom.kh, geom.kw))
    raise ValueError(f"unknown strategy {name!r}")
