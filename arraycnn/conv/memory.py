"""Workspace prediction and the workspace budget of the convolution dispatcher.

Every strategy needs temporary arrays beyond its inputs and its result (the im2col
columns, the FFT spectra, ...). :func:`workspace_bytes` predicts their size from the
geometry alone -- host arithmetic, before anything is allocated -- so that the dispatcher
can skip a strategy, or run it on batch chunks, instead of running out of memory.

The predictions are deliberately conservative (they add up temporaries that may not
coexist) and follow the strategy modules: see the docstring of each ``_bytes_*`` helper.

The budget
----------
:func:`workspace_limit` gives the bytes one call may use for workspace, in this order:

1. the value set with :func:`set_workspace_limit` (``None`` resets);
2. the environment variable ``ARRAYCNN_WORKSPACE_LIMIT`` (bytes, or with a suffix
   ``K``, ``M``, ``G``, ``T``: powers of 1024, e.g. ``512M``);
3. :data:`DEFAULT_FRACTION` of the memory available on the array's device: ``MemAvailable``
   of ``/proc/meminfo`` for host memory, the free device memory for CuPy / torch CUDA;
   :data:`FALLBACK_BYTES` where that cannot be read.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from types import ModuleType
from typing import Any

from ..geometry import ConvGeometry

__all__ = [
    "DEFAULT_FRACTION",
    "ENV_WORKSPACE_LIMIT",
    "FALLBACK_BYTES",
    "WorkspaceError",
    "available_memory",
    "chunk_size",
    "format_bytes",
    "set_workspace_limit",
    "workspace_bytes",
    "workspace_limit",
]

#: Environment variable overriding the default budget.
ENV_WORKSPACE_LIMIT = "ARRAYCNN_WORKSPACE_LIMIT"
#: Fraction of the available memory one convolution call may use as workspace.
DEFAULT_FRACTION = 0.5
#: Available memory assumed where it cannot be read (2 GiB).
FALLBACK_BYTES = 2 * 1024**3
#: Added to every prediction: small arrays (kernel factors, per-tap results), Python objects.
SMALL_ARRAYS_BYTES = 64 * 1024
#: Elements NumPy's buffered ufunc loops (broadcasting) allocate per operand.
UFUNC_BUFFER = 8192
#: Seconds a reading of the available memory is reused (reading /proc costs ~20 µs).
_MEMINFO_TTL = 1.0

_limit_override: int | None = None
_meminfo_cache: tuple[float, int] | None = None


class WorkspaceError(MemoryError, ValueError):
    """A forced strategy needs more workspace than the budget, even on one sample.

    Subclasses both :class:`MemoryError` and :class:`ValueError`.
    """


def _naive_input_phase(g: ConvGeometry) -> int:
    """Elements of naive's input gradient: reordered gy, the accumulator, two blocks of
    column-gradient rows (the next block is computed while the last is held) and gx.

    Over rows of the padded width (:func:`arraycnn.conv.naive.uses_rows`): gy's frame
    (F·N·Ho·Wp), the flat padded accumulator (C·N·(Hp·Wp + dw (kw-1))) and blocks of
    N·Ho·Wp columns; otherwise gy
    reordered, the (G, Cg, N, H, W) accumulator and blocks of N·Ho·Wo columns.
    """
    from .cost import taps_per_block
    from .naive import uses_rows

    inputs = g.n * g.c * g.h * g.w
    if uses_rows(g):
        rows = g.n * g.ho * g.wp
        span = g.n * g.c * (g.hp * g.wp + g.dilation[1] * (g.kw - 1))
        return g.f * rows + span + 2 * taps_per_block(g) * g.c * rows + inputs
    cols = g.n * g.ho * g.wo
    return g.f * cols + inputs + 2 * taps_per_block(g) * g.c * cols + inputs


def _naive_weight_phase(g: ConvGeometry) -> int:
    """Elements of naive's weight gradient: reordered gy, one tap's gy and x bands, the taps."""
    cols = g.n * g.ho * g.wo
    return 2 * g.f * cols + g.c * cols + 2 * g.kh * g.kw * g.f * g.cg


def _bytes_naive(g: ConvGeometry, direction: str, s: int) -> int:
    """The (G, Fg, N, Ho, Wo) accumulator, one tap's input band and its product.

    Backward: the larger of the input-gradient and weight-gradient phases (they run one
    after the other).
    """
    cols = g.n * g.ho * g.wo
    if direction == "forward":
        return s * (g.c * cols + 2 * g.f * cols)
    return s * max(_naive_input_phase(g), _naive_weight_phase(g))


def _bytes_im2col(g: ConvGeometry, direction: str, s: int) -> int:
    """The columns G·Cg·kh·kw·N·Ho·Wo and the GEMM result (F·N·Ho·Wo).

    Backward: reordered gy and the columns, then the input gradient: the transposed
    correlation's columns and result where im2col runs it so (Fg·kh·kw·N·H·W and
    C·N·H·W); else naive's blocked input-gradient phase (col2im). On a CPU the batch
    runs in cache-sized chunks (:func:`arraycnn.conv.im2col.samples_per_chunk`) and needs
    less; the bound is the whole batch's, which a GPU needs.
    """
    from .im2col import uses_transposed_input_grad

    cols = g.n * g.ho * g.wo
    columns = g.c * g.kh * g.kw * cols
    if direction == "forward":
        return s * (columns + g.f * cols)
    inputs = g.n * g.h * g.w
    if uses_transposed_input_grad(g):
        input_phase = g.f * g.kh * g.kw * inputs + g.c * inputs
    else:
        input_phase = _naive_input_phase(g)
    return s * (g.f * cols + columns + input_phase)


def _fft_forward_elements(g: ConvGeometry) -> int:
    """Real elements (a complex one counts 2) of the FFT forward's largest phase.

    Follows :func:`arraycnn.conv.fft.forward_work`, with ``A`` rows (images, times tiles
    when tiled), ``B`` spectrum bins and ``(Lh, Lw)`` the FFT shape:

    1. input transform: the tile batch (tiled) or the zero-padded input (untiled, where
       the FFT shape exceeds (H, W)) -- scratch buffers kept between calls, counted beside
       every phase -- and the input spectrum (A·C);
    2. kernel: its column-placed rows, their spectrum and the placed spectrum (F·Cg);
    3. channel product: input and kernel spectra, the product (A·F) and either the
       per-channel term with the buffers of a broadcast operation (NumPy buffers up to
       :data:`UFUNC_BUFFER` elements of two operands) or the frequency-major copies of
       both operands;
    4. inverse: the product, its column inverse (counted as a new array: only SciPy's FFT
       overwrites it), a contiguous copy of its kept rows and their real inverse;
    5. tiled: that real inverse and the assembled output.
    """
    from .fft import forward_work

    work = forward_work(g)
    lh, lw = work.shape
    bins = lh * (lw // 2 + 1)
    rows = work.rows
    plan = work.plan
    kept = g.ho if plan is None else plan.rows.block
    padded = plan is None and (lh, lw) != (g.h, g.w)
    scratch_input = rows * g.c * lh * lw if plan is not None or padded else 0
    x_spec, w_spec, y_spec = 2 * rows * g.c * bins, 2 * g.f * g.cg * bins, 2 * rows * g.f * bins
    kernel = g.f * g.cg * (g.kh * lw + 2 * g.kh * (lw // 2 + 1)) + w_spec
    buffers = 2 * 2 * UFUNC_BUFFER
    operands = x_spec + w_spec if work.matmul else (y_spec if g.cg > 1 else 0) + buffers
    kept_rows = 2 * rows * g.f * kept * (lw // 2 + 1)
    inverse = rows * g.f * kept * lw
    assembled = 0 if plan is None else g.n * g.f * plan.tiles * plan.rows.block * plan.cols.block
    return scratch_input + max(
        x_spec,
        x_spec + kernel,
        x_spec + w_spec + y_spec + operands,
        2 * y_spec + kept_rows + inverse,
        inverse + assembled,
    )


def _bytes_fft(g: ConvGeometry, direction: str, s: int) -> int:
    """Forward: :func:`_fft_forward_elements` (s bytes each).

    Backward: complex spectra (2 s bytes per bin) at the fast lengths, each counted with
    its copy: the spectra of gy, w, gx, x, gw, their real inverse transforms and the
    stride-upsampled ``gy``.
    """
    from .fft import fast_shape

    if direction == "forward":
        return s * _fft_forward_elements(g)
    lh, lw = fast_shape(g)
    bins = lh * (lw // 2 + 1)
    complex_bytes = 2 * s
    pad = g.n * g.c * g.hp * g.wp if g.is_padded else 0
    hv = (g.ho - 1) * g.stride[0] + 1
    wv = (g.wo - 1) * g.stride[1] + 1
    spectra = 3 * g.n * g.f + 2 * g.f * g.cg + 2 * g.n * g.c + 2 * g.n * g.c + 2 * g.f * g.cg
    real = g.n * g.c * lh * lw + g.f * g.cg * lh * lw + g.n * g.f * hv * wv + pad
    return complex_bytes * spectra * bins + s * real


def _bytes_separable(g: ConvGeometry, direction: str, s: int, rank: int) -> int:
    """Forward: the padded input and one band's temporaries (``rank`` = the kernel's
    numerical rank, B the rows of a band, :func:`arraycnn.conv.separable.band_rows`): the
    column-pass intermediate N·F·Cg·r·B·Wp and the row-pass accumulator N·F·Cg·r·B·Wo, each
    with the temporary of its update (the sum over (Cg, r) fits in what the pass freed). The
    result, allocated once, is the output.

    Backward: the transposed intermediates, the padded input-gradient accumulator and, after
    them, the direct weight gradient of :mod:`.naive`.
    """
    from .separable import band_rows

    lanes = g.n * g.f * g.cg * rank
    pad = 2 * g.n * g.c * g.hp * g.wp if g.is_padded else 0
    if direction == "forward":
        rows = band_rows(g, rank, s)
        return s * (pad + 2 * lanes * rows * g.wp + 2 * lanes * rows * g.wo)
    transposed = 2 * lanes * g.ho * g.wp + lanes * g.ho * g.wo
    transposed += g.n * g.c * g.hp * g.wp + g.n * g.c * g.ho * g.wp
    return s * max(transposed, _naive_weight_phase(g))


def workspace_bytes(
    name: str, geom: ConvGeometry, *, itemsize: int, direction: str = "forward", rank: int = 0
) -> int:
    """Predicted workspace bytes of one call of strategy ``name`` (host arithmetic).

    Parameters
    ----------
    name : {"naive", "separable", "im2col", "fft"}
    geom : ConvGeometry
    itemsize : int
        Bytes per real element (4 for float32).
    direction : {"forward", "backward"}
    rank : int
        Separable only: the kernel's numerical rank (default ``min(kh, kw)``).
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if name == "naive":
        arrays = _bytes_naive(geom, direction, itemsize)
    elif name == "im2col":
        arrays = _bytes_im2col(geom, direction, itemsize)
    elif name == "fft":
        arrays = _bytes_fft(geom, direction, itemsize)
    elif name == "separable":
        r = rank if rank > 0 else min(geom.kh, geom.kw)
        arrays = _bytes_separable(geom, direction, itemsize, r)
    else:
        raise ValueError(f"unknown strategy {name!r}")
    return arrays + SMALL_ARRAYS_BYTES


def chunk_size(
    name: str,
    geom: ConvGeometry,
    budget: int,
    *,
    itemsize: int,
    direction: str = "forward",
    rank: int = 0,
) -> int:
    """Largest batch size ``n <= N`` whose workspace fits ``budget`` (0 if not even one).

    Workspace grows with N, so this is a bisection over N (host arithmetic).
    """

    def fits(n: int) -> bool:
        g = dataclasses.replace(geom, n=n)
        return workspace_bytes(name, g, itemsize=itemsize, direction=direction, rank=rank) <= budget

    if fits(geom.n):
        return geom.n
    lo, hi = 0, geom.n  # fits(lo) or lo == 0; not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(value: Any, name: str = ENV_WORKSPACE_LIMIT) -> int:
    """A byte count from an int or a string like ``"1500000"``, ``"512M"``, ``"2G"``, ``"1.5GiB"``.

    Raises
    ------
    ValueError
        If it is not a positive number of bytes.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes, got bool {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
        if not match:
            raise ValueError(
                f"{name} must be a number of bytes, optionally with a K/M/G/T suffix "
                f"(e.g. 512M), got {value!r}"
            )
        number = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    else:
        raise TypeError(f"{name} must be a number of bytes, got {type(value).__name__}")
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
    return int(number)


def set_workspace_limit(limit: int | str | None) -> None:
    """Set the workspace budget of every convolution call, in bytes (``None``: default).

    Overrides ``ARRAYCNN_WORKSPACE_LIMIT``. Strings with a K/M/G/T suffix are accepted.
    """
    global _limit_override
    _limit_override = None if limit is None else parse_bytes(limit, "limit")


def _host_available() -> int:
    """``MemAvailable`` of /proc/meminfo in bytes (cached for a second), else the fallback."""
    global _meminfo_cache
    now = time.monotonic()
    if _meminfo_cache is not None and now - _meminfo_cache[0] < _MEMINFO_TTL:
        return _meminfo_cache[1]
    available = FALLBACK_BYTES
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # reported in kB
                    break
    except (OSError, ValueError, IndexError):
        available = FALLBACK_BYTES
    _meminfo_cache = (now, available)
    return available


def available_memory(xp: ModuleType | None = None, device: Any = None) -> int:
    """Bytes currently available on ``device`` of namespace ``xp`` (host memory by default)."""
    from ..backend import backend_name

    name = backend_name(xp) if xp is not None else "numpy"
    try:
        if name == "cupy":  # pragma: no cover - needs a GPU
            import cupy

            return int(cupy.cuda.Device().mem_info[0])
        if name == "torch" and getattr(device, "type", "cpu") == "cuda":  # pragma: no cover
            import torch

            return int(torch.cuda.mem_get_info(device)[0])
    except Exception:  # pragma: no cover - driver trouble: be conservative
        return FALLBACK_BYTES
    return _host_available()


def workspace_limit(xp: ModuleType | None = None, device: Any = None) -> int:
    """The workspace budget in bytes for a call on ``device`` of ``xp`` (see module doc)."""
    if _limit_override is not None:
        return _limit_override
    env = os.environ.get(ENV_WORKSPACE_LIMIT, "").strip()
    if env:
        return parse_bytes(env)
    return int(DEFAULT_FRACTION * available_memory(xp, device))


def format_bytes(n: float) -> str:
    """Human-readable bytes: ``format_bytes(3 * 2**30) == '3.00 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
