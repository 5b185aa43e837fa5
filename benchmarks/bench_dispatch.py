"""The dispatcher's quality: regret = time(auto) / min over strategies, and its choice.

All strategies of a case are measured interleaved in one process, in ``setup_cache``, by
:func:`arraycnn.tools.measuring.measure_case` (the code behind ``arraycnn bench``, timed
with :func:`arraycnn.timing.interleaved_medians`: round-robin rounds in a rotated order,
each contender warmed right before its timed call, median of each), so that machine noise
hits every contender alike; the tracks then read the cached figures. A strategy predicted
too slow or too large for the case is left out of the minimum
(:func:`arraycnn.tools.measuring.skip_reason`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import arraycnn
from arraycnn.tools import cases
from arraycnn.tools.measuring import measure_case

from .common import BACKENDS, LAYER_NAMES, MAX_SECONDS, QUICK, limit_threads, resolve

STRATEGY_NAMES = list(arraycnn.STRATEGY_NAMES)
#: Round-robin repeats per strategy (the median is kept).
REPEATS = 3 if QUICK else 7
#: Filtering cases of the regret track.
FILTER_CASES = cases.REGRET_FILTERS_QUICK if QUICK else tuple(cases.REGRET_FILTERS.cases())

#: asv parameter value -> (case, direction): the layers forward and backward, then filtering.
CASES: dict[str, tuple[cases.Case, str]] = {
    **{
        f"{name}/{direction}": (cases.LAYERS[name], direction)
        for name in LAYER_NAMES
        for direction in ("forward", "backward")
    },
    **{case.label: (case, "forward") for case in FILTER_CASES},
}


class Dispatch:
    """``auto`` against the measured best strategy, per backend and case."""

    params: ClassVar[list] = [BACKENDS, list(CASES)]
    param_names: ClassVar[list] = ["backend", "case"]
    timeout = 600.0

    def setup_cache(self) -> dict[str, dict[str, Any]]:
        limit_threads()
        results: dict[str, dict[str, Any]] = {}
        for backend in BACKENDS:
            try:
                xp = resolve(backend)
            except NotImplementedError:
                continue
            for label, (case, direction) in CASES.items():
                result = measure_case(
                    case,
                    {backend: xp},
                    repeats=REPEATS,
                    max_seconds=MAX_SECONDS,
                    peers=False,
                    direction=direction,
                )
                results[f"{backend}/{label}"] = {
                    "regret": result.regret(backend),
                    "choice": result.choice[backend],
                    "best": result.best(backend) or result.choice[backend],
                }
        return results

    setup_cache.timeout = 900.0  # type: ignore[attr-defined]

    def setup(self, cache: dict[str, dict[str, Any]], backend: str, case: str) -> None:
        key = f"{backend}/{case}"
        if key not in cache:
            raise NotImplementedError(f"backend {backend!r} is not usable here")
        self.result = cache[key]

    def track_regret(self, *_: Any) -> float:
        """time(auto) / min over strategies (1.0: auto picked the fastest)."""
        return float(self.result["regret"])

    track_regret.unit = "ratio"  # type: ignore[attr-defined]
    track_regret.pretty_name = "auto's regret: time(auto) / fastest strategy"  # type: ignore[attr-defined]

    def track_choice(self, *_: Any) -> int:
        """Index of auto's choice in (naive, separable, im2col, fft, winograd)."""
        return STRATEGY_NAMES.index(self.result["choice"])

    track_choice.unit = "index in (naive, separable, im2col, fft, winograd)"  # type: ignore[attr-defined]
    track_choice.pretty_name = "auto's choice (0 naive, 1 separable, 2 im2col, 3 fft)"  # type: ignore[attr-defined]

    def track_best(self, *_: Any) -> int:
        """Index of the measured fastest strategy in (naive, separable, im2col, fft, winograd)."""
        return STRATEGY_NAMES.index(self.result["best"])

    track_best.unit = "index in (naive, separable, im2col, fft, winograd)"  # type: ignore[attr-defined]
    track_best.pretty_name = "measured fastest (0 naive, 1 separable, 2 im2col, 3 fft)"  # type: ignore[attr-defined]
