"""Cost model v2: operation counts per strategy times calibrated per-backend constants.

All of this is host arithmetic on Python numbers; nothing touches array data.

The counts
----------
:func:`op_counts` turns a geometry into seven counts that follow each strategy's code
(forward and backward; see the ``_counts_*`` helpers):

``gemm_flops``
    ``2 M K Ncol`` per real matrix product.
``gemm_cells``
    ``2 M Ncol`` per matrix product: the short-K penalty. With it, a GEMM of inner size K
    costs ``2 M Ncol (K + K_half) / peak``, i.e. it runs at ``peak K / (K + K_half)``:
    outer products (small K) are memory bound, long inner products reach peak.
``bytes``
    Bytes read plus written by copies, padding, slicing and elementwise arithmetic.
``fft_flops``
    ``2.5 L log2 L`` per real 2-D transform of ``L = Lh Lw`` points.
``spectral_flops``
    Real flops of the FFT strategy's per-frequency channel products: a batch of one tiny
    complex matrix product per frequency, far below GEMM speed (8 flops per complex MAC).
``calls``
    Array operations issued (Python/dispatch overhead), plus one per small SVD.
``spectral_cells``
    ``8 M Ncol`` per per-frequency product: their short-K penalty, as ``gemm_cells``.

Flop counts are float32-equivalent: they are scaled by ``itemsize / 4`` (a float64 GEMM
does half the flops per cycle of a float32 one on SIMD hardware).

The constants
-------------
A :class:`Calibration` holds seconds per unit of each of the seven counts plus one
multiplicative factor per strategy and direction (what the counts miss about an
implementation; keys ``"naive"`` for the forward, ``"naive:backward"`` for the backward,
which falls back to the forward's factor when absent). The factor leaves the GEMM terms
alone -- the BLAS runs a matrix product alike whichever strategy called it::

    gemm_flops * sec_per_gemm_flop + gemm_cells * sec_per_gemm_cell
      + scale[strategy(:backward)] * (bytes * sec_per_byte + fft_flops * sec_per_fft_flop
                       + spectral_flops * sec_per_spectral_flop + calls * sec_per_call
                       + spectral_cells * sec_per_spectral_cell)

Calibrations fitted before 2026-12-02 (``scales_gemm=True``) applied the factor to the
GEMM terms too, and are read that way: a factor fitted on small layers then priced a
large layer's GEMMs differently per strategy (torch: naive's 0.83 against im2col's 1.2
made 9 short GEMMs look 30 % cheaper than one long one, which they are not).

:func:`calibration_for` returns the user's calibration from ``arraycnn tune`` (JSON in the
cache directory, see :func:`cache_dir`) when present, else the shipped defaults
:data:`SHIPPED` fitted on the project's reference machine (the block says where and when;
refit it with ``OMP_NUM_THREADS=1 arraycnn tune --backend numpy --backend torch
--update-shipped`` on an idle machine), else :data:`FIRST_ESTIMATES`. The counts follow
the strategy kernels as of the commit that last touched this file; when a kernel changes
shape (new temporaries, new GEMM layout), update its ``_counts_*`` helper and refit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..geometry import ConvGeometry
from .im2col import pieces, transposed_geometry, uses_transposed_input_grad
from .naive import uses_rows

__all__ = [
    "COUNT_NAMES",
    "FIRST_ESTIMATES",
    "SHIPPED",
    "Calibration",
    "OpCounts",
    "calibration_for",
    "calibration_path",
    "load_user_calibrations",
    "op_counts",
    "predicted_seconds",
    "save_user_calibration",
]

STRATEGIES = ("naive", "separable", "im2col", "fft")
DIRECTIONS = ("forward", "backward")
COUNT_NAMES = (
    "gemm_flops",
    "gemm_cells",
    "bytes",
    "fft_flops",
    "spectral_flops",
    "calls",
    "spectral_cells",
)
#: The counts a strategy's factor does not scale (``gemm_flops``, ``gemm_cells``): the BLAS
#: runs a product alike whichever strategy calls it.
GEMM_TERMS = slice(0, 2)
CALIBRATION_FILE = "calibration.json"
CALIBRATION_FORMAT = 1


@dataclass(frozen=True)
class OpCounts:
    """Operation counts of one call (see the module docstring)."""

    gemm_flops: float = 0.0
    gemm_cells: float = 0.0
    bytes: float = 0.0
    fft_flops: float = 0.0
    spectral_flops: float = 0.0
    calls: float = 0.0
    spectral_cells: float = 0.0

    def __add__(self, other: OpCounts) -> OpCounts:
        return OpCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def scaled(self, factor: float) -> OpCounts:
        """All counts times ``factor``."""
        return OpCounts(*(a * factor for a in self.as_tuple()))

    def as_tuple(self) -> tuple[float, ...]:
        """Counts in the order of :data:`COUNT_NAMES`."""
        return (
            self.gemm_flops,
            self.gemm_cells,
            self.bytes,
            self.fft_flops,
            self.spectral_flops,
            self.calls,
            self.spectral_cells,
        )


def scale_key(name: str, direction: str) -> str:
    """Key of a strategy's factor in :attr:`Calibration.scale`: ``name`` or ``name:backward``."""
    return name if direction == "forward" else f"{name}:{direction}"


@dataclass(frozen=True)
class Calibration:
    """Seconds per counted unit, per-strategy factors and where the numbers came from."""

    sec_per_gemm_flop: float
    sec_per_gemm_cell: float
    sec_per_byte: float
    sec_per_fft_flop: float
    sec_per_spectral_flop: float
    sec_per_call: float
    #: 0 in calibrations fitted before the count existed (their predictions are unchanged)
    sec_per_spectral_cell: float = 0.0
    scale: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STRATEGIES, 1.0))
    source: str = ""
    #: True in calibrations fitted before 2026-12-02: the factor scaled the GEMM terms too
    scales_gemm: bool = True

    def coefficients(self) -> tuple[float, ...]:
        """Seconds per unit in the order of :data:`COUNT_NAMES`."""
        return (
            self.sec_per_gemm_flop,
            self.sec_per_gemm_cell,
            self.sec_per_byte,
            self.sec_per_fft_flop,
            self.sec_per_spectral_flop,
            self.sec_per_call,
            self.sec_per_spectral_cell,
        )

    def factor(self, name: str, direction: str = "forward") -> float:
        """The scale of strategy ``name`` in ``direction`` (backward falls back to forward)."""
        forward = self.scale.get(name, 1.0)
        if direction == "backward":
            return self.scale.get(scale_key(name, direction), forward)
        return forward

    def seconds(self, name: str, counts: OpCounts, direction: str = "forward") -> float:
        """Predicted seconds of ``counts`` executed by strategy ``name`` in ``direction``."""
        terms = [c * n for c, n in zip(self.coefficients(), counts.as_tuple())]
        factor = self.factor(name, direction)
        if self.scales_gemm:
            return factor * sum(terms)
        gemm = sum(terms[GEMM_TERMS])
        return gemm + factor * (sum(terms) - gemm)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse of :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_json`; raises ValueError on a malformed entry."""
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            cal = cls(**values)
            numbers = [*cal.coefficients(), *cal.scale.values()]
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed calibration entry: {exc}") from None
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in numbers):
            raise ValueError("malformed calibration entry: constants must be finite and >= 0")
        if not isinstance(cal.scales_gemm, bool):
            raise ValueError(
                f"malformed calibration entry: scales_gemm must be true or false, "
                f"got {cal.scales_gemm!r}"
            )
        return cal

    def describe(self) -> str:
        """One line: rates in familiar units."""

        def rate(sec: float, unit: float) -> str:
            return f"{1 / sec / unit:.3g}" if sec > 0 else "inf"

        def half(cell: float, flop: float) -> float:
            return cell / flop if flop else 0.0

        half_k = half(self.sec_per_gemm_cell, self.sec_per_gemm_flop)
        half_ks = half(self.sec_per_spectral_cell, self.sec_per_spectral_flop)
        return (
            f"GEMM {rate(self.sec_per_gemm_flop, 1e9)} GFLOP/s (half rate at K={half_k:.3g}), "
            f"memory {rate(self.sec_per_byte, 1e9)} GB/s, FFT {rate(self.sec_per_fft_flop, 1e9)} "
            f"GFLOP/s, spectral products {rate(self.sec_per_spectral_flop, 1e9)} GFLOP/s "
            f"(half rate at K={half_ks:.3g}), "
            f"{self.sec_per_call * 1e6:.3g} µs per call; scale "
            + ", ".join(f"{k}={v:.3g}" for k, v in self.scale.items())
        )


#: Dispatcher v1's first estimates (numpy float32, one thread): peak GEMM 60 GFLOP/s, half
#: rate at K = 24, 0.8e9 float32 elements/s of traffic, FFT 6 GFLOP/s, 4 µs per call;
#: v1 priced the spectral products as GEMMs (here: the GEMM peak rate).
FIRST_ESTIMATES = Calibration(
    sec_per_gemm_flop=1 / 60e9,
    sec_per_gemm_cell=24.0 / 60e9,
    sec_per_byte=1 / 3.2e9,
    sec_per_fft_flop=1 / 6e9,
    sec_per_spectral_flop=1 / 60e9,
    sec_per_call=4e-6,
    sec_per_spectral_cell=8.0 / 60e9,
    source="first estimates (dispatcher v1), not fitted",
)

# BEGIN SHIPPED CALIBRATION (generated by `arraycnn tune --update-shipped`; do not edit by hand)
SHIPPED: dict[str, Calibration] = {
    "numpy": Calibration(
        sec_per_gemm_flop=9.65919e-12,
        sec_per_gemm_cell=1.62012e-10,
        sec_per_byte=2.16557e-11,
        sec_per_fft_flop=5.07963e-11,
        sec_per_spectral_flop=3.92105e-11,
        sec_per_call=1.72422e-06,
        sec_per_spectral_cell=1.91295e-10,
        scales_gemm=True,
        scale={
            "naive": 0.9076,
            "naive:backward": 1.122,
            "separable": 0.6421,
            "separable:backward": 0.8336,
            "im2col": 1.049,
            "im2col:backward": 1.089,
            "fft": 1.306,
            "fft:backward": 1.226,
        },
        source=(
            "fitted by `arraycnn tune` on vm (AMD EPYC, 2 cores) at 2026-12-01 "
            "22:03 UTC, 170 timings, OMP_NUM_THREADS=1; load average 0.7; idle "
            "machine, with the spectral products' short-K count (spectral_cells); "
            "its factors scale every term (scales_gemm): kept over the 2026-12-02 "
            "refit, which picked im2col for 1024^2 3x3 rank-1 filtering (1.33x the "
            "separable passes)"
        ),
    ),
    "torch": Calibration(
        sec_per_gemm_flop=1.14863e-11,
        sec_per_gemm_cell=2.18959e-10,
        sec_per_byte=1.90274e-11,
        sec_per_fft_flop=7.02361e-11,
        sec_per_spectral_flop=3.75761e-11,
        sec_per_call=3.64968e-06,
        sec_per_spectral_cell=3.15141e-10,
        scales_gemm=False,
        scale={
            "fft": 1.127,
            "fft:backward": 1.036,
            "im2col": 1.228,
            "im2col:backward": 1.235,
            "naive": 0.7915,
            "naive:backward": 0.9758,
            "separable": 0.7182,
            "separable:backward": 1.023,
        },
        source=(
            "fitted by `arraycnn tune` on vm (AMD EPYC, 2 cores) at 2026-12-02 "
            "00:00 UTC, 176 timings, OMP_NUM_THREADS=1; load average 0.8; idle "
            "machine; strategy factors off the GEMM terms, 32x64x56x56 among the "
            "cases"
        ),
    ),
}
# END SHIPPED CALIBRATION


# --------------------------------------------------------------------------- counts


def _gemm(m: int, k: int, ncol: int, batch: int = 1) -> OpCounts:
    """``batch`` real products (m x k) @ (k x ncol); one call."""
    return OpCounts(
        gemm_flops=2.0 * batch * m * k * ncol, gemm_cells=2.0 * batch * m * ncol, calls=1
    )


def _spectral(m: int, k: int, ncol: int, batch: int) -> OpCounts:
    """``batch`` small complex products (m x k) @ (k x ncol), one per frequency; one call.

    As for :func:`_gemm`, the cells (``8 m ncol`` per product) carry the short-K penalty:
    the per-frequency products of a layer (K = 32-64 channels) run at about twice the rate
    of those with a handful of channels.
    """
    return OpCounts(
        spectral_flops=8.0 * batch * m * k * ncol, spectral_cells=8.0 * batch * m * ncol, calls=1
    )


def _traffic(elements: float, calls: float = 1) -> OpCounts:
    """``elements`` elements read or written (multiplied by the itemsize later)."""
    return OpCounts(bytes=elements, calls=calls)


def _fft(transforms: int, lh: int, lw: int) -> OpCounts:
    """``transforms`` real 2-D FFTs of lh x lw points; one call."""
    size = lh * lw
    return OpCounts(fft_flops=transforms * 2.5 * size * math.log2(max(size, 2)), calls=1)


def _pad(g: ConvGeometry) -> OpCounts:
    """Zero padding copies the input into a (Hp, Wp) frame."""
    if not g.is_padded:
        return OpCounts()
    return _traffic(g.n * g.c * (g.h * g.w + g.hp * g.wp), calls=2)


#: Column-gradient rows per GEMM in naive's input gradient (its ``MIN_BLOCK_ROWS``).
BLOCK_ROWS = 64


def taps_per_block(g: ConvGeometry) -> int:
    """Taps whose column-gradient rows naive's input gradient computes in one GEMM."""
    return min(g.kh * g.kw, max(1, -(-BLOCK_ROWS // g.cg)))


def _naive_input_grad(g: ConvGeometry) -> OpCounts:
    """Reorder gy; per block of taps: one GEMM (T·Cg x Fg x columns); per tap: add its rows
    onto the input; zero the accumulator, reorder it into gx.

    Where :func:`arraycnn.conv.naive.uses_rows`, the columns are the padded-width rows
    N·Ho·Wp (gy copied into its frame, one contiguous addition per tap over C·N·Ho·Wp);
    otherwise N·Ho·Wo, added band by band.
    """
    taps = g.kh * g.kw
    per_block = taps_per_block(g)
    blocks = -(-taps // per_block)
    inputs = g.n * g.c * g.h * g.w
    if uses_rows(g):
        rows = g.n * g.ho * g.wp
        sums = g.n * g.c * g.hp * g.wp
        return (
            _traffic(2 * g.f * g.n * g.ho * g.wo, calls=3)
            + _traffic(sums, calls=1)
            + _gemm(per_block * g.cg, g.fg, rows, g.groups).scaled(blocks)
            + _traffic(3 * g.c * rows, calls=1).scaled(taps)
            + _traffic(2 * inputs, calls=3)
        )
    cols = g.n * g.ho * g.wo
    return (
        _traffic(2 * g.f * cols, calls=3)
        + _traffic(inputs, calls=1)
        + _gemm(per_block * g.cg, g.fg, cols, g.groups).scaled(blocks)
        + _traffic(3 * g.c * cols, calls=3).scaled(taps)
        + _traffic(2 * inputs, calls=2)
    )


def _naive_weight_grad(g: ConvGeometry) -> OpCounts:
    """Reorder gy; per tap: copy the gy and x bands, GEMM with K = N·Ho·Wo; stack the taps."""
    cols = g.n * g.ho * g.wo
    taps = g.kh * g.kw
    per_tap = _traffic(2 * (g.f + g.c) * cols, calls=4) + _gemm(g.fg, cols, g.cg, g.groups)
    return (
        _traffic(2 * g.f * cols, calls=3) + per_tap.scaled(taps) + _traffic(2 * taps * g.f * g.cg)
    )


def _counts_naive(g: ConvGeometry, direction: str) -> OpCounts:
    """Zero the accumulator; per tap: band copy (C·cols) and GEMM with K = Cg -- or, with one
    channel per group, a broadcast product -- then accumulate (F·cols); reorder the output.

    Backward: :func:`_naive_input_grad` + :func:`_naive_weight_grad`. Each batch chunk
    (:func:`arraycnn.conv.naive.batch_chunks`) pays the array calls again, plus the
    concatenation of the chunks' results.
    """
    from .naive import batch_chunks

    chunks = len(batch_chunks(g))
    if direction == "backward":
        base = _naive_input_grad(g) + _naive_weight_grad(g)
        joined = g.n * g.c * g.h * g.w
    else:
        cols = g.n * g.ho * g.wo
        if g.cg == 1:
            product = _traffic(g.f * cols + g.c * cols, calls=2)
        else:
            product = _traffic(2 * g.c * cols, calls=2) + _gemm(g.fg, g.cg, cols, g.groups)
        per_tap = product + _traffic(3 * g.f * cols, calls=3)
        base = (
            _traffic(g.f * cols, calls=2)
            + per_tap.scaled(g.kh * g.kw)
            + _traffic(2 * g.f * cols, calls=3)
        )
        joined = g.f * cols
    if chunks == 1:
        return base
    return base + OpCounts(calls=base.calls * (chunks - 1)) + _traffic(2 * joined, calls=1)


def _unfold(g: ConvGeometry) -> OpCounts:
    """im2col's columns: kh·kw band copies into a reused buffer."""
    cols = g.n * g.ho * g.wo
    taps = g.kh * g.kw
    return _traffic(2 * taps * g.c * cols, calls=2 * taps + 2)


def _im2col_forward(g: ConvGeometry) -> OpCounts:
    """Unfold, one GEMM with K = Cg·kh·kw, reorder the output; per batch chunk or row band
    (each piece pays its own array calls)."""
    cols = g.n * g.ho * g.wo
    k = g.cg * g.kh * g.kw
    counts = _unfold(g) + _gemm(g.fg, k, cols, g.groups) + _traffic(2 * g.f * cols, calls=3)
    return counts + OpCounts(calls=(3 + 2 * g.kh * g.kw) * (len(pieces(g)) - 1))


def _counts_im2col(g: ConvGeometry, direction: str) -> OpCounts:
    """Forward: :func:`_im2col_forward`.

    Backward: reorder gy; per batch chunk, unfold and a GEMM for gw (K = n·Ho·Wo); the input
    gradient as the forward of the transposed correlation where im2col runs it so, else
    naive's blocked col2im (:func:`_naive_input_grad`).
    """
    if direction == "forward":
        return _im2col_forward(g)
    chunks = len(pieces(g))
    cols = g.n * g.ho * g.wo
    k = g.cg * g.kh * g.kw
    weight = _traffic(2 * g.f * cols, calls=3) + _unfold(g) + _gemm(g.fg, cols, k, g.groups)
    weight = weight + OpCounts(calls=(4 + 2 * g.kh * g.kw) * (chunks - 1))
    if uses_transposed_input_grad(g):
        tgeom = transposed_geometry(g)
        return weight + _im2col_forward(tgeom) + _traffic(4 * g.f * g.cg * g.kh * g.kw, calls=3)
    return weight + _naive_input_grad(g) + OpCounts(calls=4 * (chunks - 1))


def _fft_forward(g: ConvGeometry) -> OpCounts:
    """The FFT forward as :func:`arraycnn.conv.fft.forward_work` describes it.

    Transforms: the input's (A·C, A rows: images, times tiles when tiled), the kernel's
    (F·Cg, its real pass on kh rows only) and the inverse (A·F, the real pass on the kept
    rows only), at the plan's FFT shape. Product: a batched complex GEMM per frequency, or
    a broadcast multiply-add per input channel (elementwise traffic). Copies: the
    zero-padded input (the FFT's own copy, or the tile windows, one call each), the placed
    kernel spectrum and the assembled output of the tiles.
    """
    from .fft import forward_work

    work = forward_work(g)
    lh, lw = work.shape
    bins = lh * (lw // 2 + 1)
    a = work.rows
    transforms = OpCounts()
    for count, share in work.transforms:
        transforms = transforms + _fft(count, lh, lw).scaled(share)
    if work.matmul:
        product = _spectral(a, g.cg, g.fg, g.groups * bins)
        # frequency-major copies of both operands and the product's reordering
        product = product + _traffic(2 * 2 * (a * g.c + g.f * g.cg + a * g.f) * bins, calls=8)
    else:
        # complex elements moved per output: the first term written; per further channel
        # its term written, then read with the sum and the sum written back
        per_output = 1 + 4 * (g.cg - 1)
        product = _traffic(2 * per_output * a * g.f * bins, calls=2 * g.cg)
    kernel = _traffic(g.f * g.cg * (g.kh * g.kw + g.kh * lw), calls=8)
    copies = _traffic(2 * work.copied, calls=work.windows + 6)  # read and write
    return transforms + product + kernel + copies


def _counts_fft(g: ConvGeometry, direction: str) -> OpCounts:
    """Forward: :func:`_fft_forward`.

    Backward: transforms of gy, w, x (forward) and gx, gw (inverse), two products.
    """
    from .fft import fast_shape

    if direction == "forward":
        return _fft_forward(g)
    lh, lw = fast_shape(g)
    bins = lh * (lw // 2 + 1)
    nc, fc, nf = g.n * g.c, g.f * g.cg, g.n * g.f
    transforms = _fft(nf, lh, lw) + _fft(fc, lh, lw) + _fft(nc, lh, lw)
    transforms = transforms + _fft(nc, lh, lw) + _fft(fc, lh, lw)
    products = _spectral(g.n, g.fg, g.cg, g.groups * bins)
    products = products + _spectral(g.fg, g.n, g.cg, g.groups * bins)
    layout = _traffic(2 * (4 * nf + 3 * fc + 6 * nc + 3 * fc) * bins, calls=25)
    upsample = OpCounts()
    if g.stride != (1, 1):
        upsample = _traffic(2 * nf * g.ho * g.wo * g.stride[0] * g.stride[1], calls=2)
    return _pad(g) + transforms + products + layout + upsample + _traffic(2 * g.n * g.c * g.h * g.w)


def _counts_separable(g: ConvGeometry, direction: str, rank: int, itemsize: int = 4) -> OpCounts:
    """SVD of the F·Cg kernel slices; kh column taps over (Ho, Wp), kw row taps over
    (Ho, Wo) on the r·F·Cg lanes, elementwise (multiply: 2 element moves, accumulate: 3).

    The forward runs in bands of output rows (:func:`arraycnn.conv.separable.bands`, sized
    by the itemsize): the traffic is that of the whole
    output, the array calls are paid per band -- per tap a multiply and an accumulate, the
    sum over (Cg, r) where Cg·r > 1 (one read of the lanes, one write of the band) and the
    band's copy into the result (counted as two calls: ``array_api_extra.at`` costs about
    that; a single band is the result).

    Backward: the transposed passes, then the direct weight gradient of naive.
    """
    from .separable import band_rows

    lanes = g.n * g.f * g.cg * rank
    svd = OpCounts(calls=6 + g.f * g.cg)  # a small SVD costs about one array call
    column = _traffic(5 * lanes * g.ho * g.wp, calls=2).scaled(g.kh)
    row = _traffic(5 * lanes * g.ho * g.wo, calls=2).scaled(g.kw)
    if direction == "forward":
        count = -(-g.ho // band_rows(g, rank, itemsize))  # bands
        outputs = g.n * g.f * g.ho * g.wo
        passes = _traffic(column.bytes + row.bytes, calls=0)  # the taps' traffic, whole output
        # per band: the first tap of each pass a multiply, the others multiply + accumulate
        per_band = OpCounts(calls=(2 * g.kh - 1) + (2 * g.kw - 1) + 2)
        if g.cg * rank > 1:
            per_band = per_band + OpCounts(calls=1)
            passes = passes + _traffic(lanes * g.ho * g.wo + outputs, calls=0)
        # several bands: the result allocated once, each band copied in
        result = _traffic(2 * outputs, calls=2) if count > 1 else OpCounts()
        return svd + _pad(g) + passes + per_band.scaled(count) + result
    scatter_rows = _traffic(lanes * g.ho * g.wp) + row
    gather_cols = _traffic(3 * lanes * g.ho * g.wp + 4 * g.n * g.c * g.ho * g.wp, calls=3).scaled(
        g.kh
    )
    padded = g.n * g.c * g.hp * g.wp
    return svd + scatter_rows + gather_cols + _traffic(3 * padded, calls=4) + _naive_weight_grad(g)


def op_counts(
    name: str,
    geom: ConvGeometry,
    *,
    direction: str = "forward",
    itemsize: int = 4,
    rank: int | None = None,
) -> OpCounts:
    """Operation counts of one call of strategy ``name`` (bytes and flops scaled to itemsize).

    Raises
    ------
    ValueError
        For an unknown strategy or direction.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if name == "naive":
        counts = _counts_naive(geom, direction)
    elif name == "im2col":
        counts = _counts_im2col(geom, direction)
    elif name == "fft":
        counts = _counts_fft(geom, direction)
    elif name == "separable":
        r = rank if rank is not None else min(geom.kh, geom.kw)
        counts = _counts_separable(geom, direction, r, itemsize)
    else:
        raise ValueError(f"unknown strategy {name!r}")
    flop_scale = itemsize / 4.0
    return OpCounts(
        gemm_flops=counts.gemm_flops * flop_scale,
        gemm_cells=counts.gemm_cells * flop_scale,
        bytes=counts.bytes * itemsize,
        fft_flops=counts.fft_flops * flop_scale,
        spectral_flops=counts.spectral_flops * flop_scale,
        calls=counts.calls,
        spectral_cells=counts.spectral_cells * flop_scale,
    )


# --------------------------------------------------------------------------- calibration


def _cache_dir_str() -> str:
    env = os.environ
    return _cache_dir_from(
        env.get("ARRAYCNN_CACHE_DIR"), env.get("XDG_CACHE_HOME"), env.get("HOME")
    )


@functools.lru_cache(maxsize=16)
def _cache_dir_from(explicit: str | None, xdg: str | None, home: str | None) -> str:
    """The cache directory for these environment values (memoised: every auto call asks)."""
    if explicit and explicit.strip():
        return os.path.expanduser(explicit.strip())
    xdg = (xdg or "").strip()
    base = os.path.expanduser(xdg) if xdg else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "arraycnn")


def cache_dir() -> Path:
    """The user cache directory: ``$ARRAYCNN_CACHE_DIR``, ``$XDG_CACHE_HOME/arraycnn`` or
    ``~/.cache/arraycnn`` (read at every call, so the environment can change it)."""
    return Path(_cache_dir_str())


def calibration_path() -> Path:
    """Path of the user's calibration file (it may not exist)."""
    return cache_dir() / CALIBRATION_FILE


_loaded: dict[str, tuple[float, dict[str, Calibration]]] = {}


def load_user_calibrations() -> dict[str, Calibration]:
    """Calibrations by backend from the user's file ({} if absent; warns if corrupt).

    The parsed file is reused while its modification time is unchanged.
    """
    key = os.path.join(_cache_dir_str(), CALIBRATION_FILE)  # fast path: no Path objects
    try:
        mtime = os.stat(key).st_mtime
    except OSError:
        return {}
    if key in _loaded and _loaded[key][0] == mtime:
        return _loaded[key][1]
    path = Path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(
                f"unknown format {data.get('format') if isinstance(data, dict) else data!r}"
            )
        result = {b: Calibration.from_json(v) for b, v in data["backends"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(
            f"arraycnn: ignoring the corrupt calibration file {path} ({exc}); "
            "using the shipped constants (rerun `arraycnn tune` to refit)",
            RuntimeWarning,
            stacklevel=3,
        )
        result = {}
    _loaded[key] = (mtime, result)
    return result


def save_user_calibration(
    backend: str, calibration: Calibration, *, extra: dict[str, Any] | None = None
) -> Path:
    """Store ``calibration`` for ``backend`` in the user's file (atomic replace); its path.

    ``extra`` (e.g. the fit's regret) is stored alongside and ignored when loading.
    """
    from .autotune import atomic_write_json

    path = calibration_path()
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
        backends = dict(current["backends"]) if current.get("format") == CALIBRATION_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        backends = {}
    backends[backend] = {**calibration.to_json(), **(extra or {})}
    atomic_write_json(path, {"format": CALIBRATION_FORMAT, "backends": backends})
    _loaded.pop(str(path), None)
    return path


def calibration_for(backend: str) -> tuple[Calibration, str]:
    """The calibration the dispatcher uses for ``backend`` and where it came from.

    Returns
    -------
    (Calibration, str)
        The second item is ``"user"`` (the file of ``arraycnn tune``), ``"shipped"`` or
        ``"first-estimates"`` (a backend without shipped constants uses NumPy's).
    """
    user = load_user_calibrations()
    if backend in user:
        return user[backend], "user"
    if backend in SHIPPED:
        return SHIPPED[backend], "shipped"
    if "numpy" in SHIPPED:
        return SHIPPED["numpy"], "shipped"
    return FIRST_ESTIMATES, "first-estimates"


def predicted_seconds(
    name: str,
    geom: ConvGeometry,
    rank: int | None = None,
    *,
    direction: str = "forward",
    itemsize: int = 4,
    calibration: Calibration | None = None,
) -> float:
    """Predicted time of one call of strategy ``name`` (``rank``: separable's kernel rank).

    ``calibration`` defaults to NumPy's (:func:`calibration_for`).
    """
    cal = calibration if calibration is not None else calibration_for("numpy")[0]
    counts = op_counts(name, geom, direction=direction, itemsize=itemsize, rank=rank)
    return cal.seconds(name, counts, direction)
