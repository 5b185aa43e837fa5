"""The cost model: a strategy plan's operation counts times five per-backend constants.

Like SciPy's ``choose_conv_method``, ``strategy="auto"`` chooses with a small model and
offers measurement for the rest (``autotune=True``, SciPy's ``measure=True``). The model is
roofline-style: a plan's :class:`~arraycnn.conv.strategy.Counts` (from the strategy's own
``counts(plan)``) are priced as ::

    seconds = gemm_flops * sec_per_gemm_flop + gemm_cells * sec_per_gemm_cell
              + factor[strategy] * (bytes * sec_per_byte + fft_flops * sec_per_fft_flop
                                    + calls * sec_per_call)

Five constants per backend -- the GEMM rate, its short-K penalty, memory bandwidth, the
FFT rate and the per-array-call overhead -- and one factor per strategy on the work that is
not GEMM (the BLAS runs a product alike whichever strategy calls it). On the reference
layers and filters its picks cost at most ~1.15x the fastest strategy and ~1.03x in the
geometric mean (docs/performance.md); where that matters, autotune.

Calibrations ship as JSON package data (``calibration.json`` beside this module);
``arraycnn tune`` fits them on the user's machine and stores them in the user cache
(``calibration.json`` in :func:`arraycnn.settings.cache_dir`), which wins over the shipped
one; ``arraycnn tune --update-shipped`` rewrites the package data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..cachefile import merge_entry, read_section
from ..settings import cache_dir, cache_dir_name, register_cache
from .strategy import Counts

__all__ = [
    "CONSTANTS",
    "Calibration",
    "calibration_for",
    "calibration_path",
    "load_user_calibrations",
    "save_user_calibration",
    "shipped_calibrations",
]

#: The per-backend constants, in the order of the priced counts.
CONSTANTS = (
    "sec_per_gemm_flop",
    "sec_per_gemm_cell",
    "sec_per_byte",
    "sec_per_fft_flop",
    "sec_per_call",
)
CALIBRATION_FILE = "calibration.json"
CALIBRATION_FORMAT = 2


@dataclass(frozen=True)
class Calibration:
    """Seconds per counted unit, a factor per strategy, and where the numbers came from."""

    sec_per_gemm_flop: float
    sec_per_gemm_cell: float
    sec_per_byte: float
    sec_per_fft_flop: float
    sec_per_call: float
    factor: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def seconds(self, strategy: str, counts: Counts) -> float:
        """Predicted seconds of ``counts`` executed by ``strategy``."""
        gemm = (
            counts.gemm_flops * self.sec_per_gemm_flop + counts.gemm_cells * self.sec_per_gemm_cell
        )
        rest = (
            counts.bytes * self.sec_per_byte
            + counts.fft_flops * self.sec_per_fft_flop
            + counts.calls * self.sec_per_call
        )
        return gemm + self.factor.get(strategy, 1.0) * rest

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse of :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        """Rebuild from :meth:`to_json`; raises ValueError on a malformed entry."""
        try:
            cal = cls(
                **{name: data[name] for name in CONSTANTS},
                factor=dict(data.get("factor", {})),
                source=str(data.get("source", "")),
            )
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed calibration entry: {exc!r}") from None
        numbers = [*(getattr(cal, name) for name in CONSTANTS), *cal.factor.values()]
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in numbers
        ):
            raise ValueError("malformed calibration entry: constants must be finite and >= 0")
        return cal

    def describe(self) -> str:
        """One line: the rates in familiar units."""

        def rate(sec: float) -> str:
            return f"{1e-9 / sec:.3g}" if sec > 0 else "inf"

        half_k = self.sec_per_gemm_cell / self.sec_per_gemm_flop if self.sec_per_gemm_flop else 0
        factors = ", ".join(f"{k}={v:.3g}" for k, v in sorted(self.factor.items()))
        return (
            f"GEMM {rate(self.sec_per_gemm_flop)} GFLOP/s (half rate at K={half_k:.3g}), "
            f"memory {rate(self.sec_per_byte)} GB/s, FFT {rate(self.sec_per_fft_flop)} GFLOP/s, "
            f"{self.sec_per_call * 1e6:.3g} µs per call; factors {factors}"
        )


def _parse(backends: dict[str, Any]) -> dict[str, Calibration]:
    """Calibrations by backend from a calibration file's ``backends`` object."""
    return {str(name): Calibration.from_json(entry) for name, entry in backends.items()}


def shipped_calibrations() -> dict[str, Calibration]:
    """The calibrations shipped with the package (``calibration.json``), by backend."""
    if "shipped" not in _loaded:
        text = resources.files(__package__).joinpath(CALIBRATION_FILE).read_text("utf-8")
        _loaded["shipped"] = (0.0, _parse(json.loads(text)["backends"]))
    return _loaded["shipped"][1]


def calibration_path() -> Path:
    """Path of the user's calibration file (it may not exist)."""
    return cache_dir() / CALIBRATION_FILE


#: Parsed calibration files: path (or "shipped") -> (modification time, calibrations).
_loaded: dict[str, tuple[float, dict[str, Calibration]]] = {}
register_cache(_loaded.clear)


def load_user_calibrations() -> dict[str, Calibration]:
    """Calibrations by backend from the user's file ({} if absent; warns if corrupt).

    The parsed file is reused while its modification time is unchanged.
    """
    key = os.path.join(cache_dir_name(), CALIBRATION_FILE)
    try:
        mtime = os.stat(key).st_mtime
    except OSError:
        return {}
    if key in _loaded and _loaded[key][0] == mtime:
        return _loaded[key][1]
    path = Path(key)
    try:
        result = _parse(read_section(path, CALIBRATION_FORMAT, "backends", "calibration"))
    except (OSError, ValueError) as exc:
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
    """Store ``calibration`` for ``backend`` in the user's file (merged under its lock,
    replaced atomically: :func:`arraycnn.cachefile.merge_entry`); its path.

    ``extra`` (e.g. the fit's regret) is stored alongside and ignored when loading.
    """
    path = calibration_path()
    entry = {**calibration.to_json(), **(extra or {})}
    merge_entry(path, CALIBRATION_FORMAT, "backends", backend, entry)
    _loaded.pop(str(path), None)
    return path


def calibration_for(backend: str) -> tuple[Calibration, str]:
    """The calibration the dispatcher uses for ``backend`` and where it came from.

    Returns
    -------
    (Calibration, str)
        The second item is ``"user"`` (the file of ``arraycnn tune``), ``"shipped"``, or
        ``"shipped (numpy)"`` for a backend without shipped constants of its own.
    """
    user = load_user_calibrations()
    if backend in user:
        return user[backend], "user"
    shipped = shipped_calibrations()
    if backend in shipped:
        return shipped[backend], "shipped"
    return shipped["numpy"], "shipped (numpy)"
