"""The dispatcher's quality: regret = time(auto) / min over strategies, and its choice.

All strategies of a case are measured interleaved (round-robin repeats, median of each) in
one process, in ``setup_cache``, so that machine noise hits every contender alike; the
tracks then read the cached figures. A strategy predicted too slow or too large for the
case (see :mod:`benchmarks.common`) is left out of the minimum.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

import arraycnn
from arraycnn.conv.separable import numerical_rank

from .common import (
    BACKENDS,
    KERNEL_KINDS,
    LAYER_NAMES,
    LAYERS,
    QUICK,
    Layer,
    filter_layer,
    kernel_of,
    limit_threads,
    resolve,
    seeded,
    skip_if_infeasible,
)

STRATEGY_NAMES = list(arraycnn.STRATEGY_NAMES)
#: Round-robin repeats per strategy (the median is kept).
REPEATS = 3 if QUICK else 7
#: Filtering cases: (image side, kernel side, kernel kind).
FILTER_CASES = (
    [(256, 3, "random"), (256, 15, "gaussian"), (256, 15, "random")]
    if QUICK
    else [(s, k, kind) for s in (256, 1024) for k in (3, 7, 15, 31) for kind in KERNEL_KINDS]
)


def case_label(image: int, kernel: int, kind: str) -> str:
    """asv parameter value of a filtering case, e.g. ``img256:k15:gaussian``."""
    return f"img{image}:k{kernel}:{kind}"


CASES: dict[str, tuple[Layer, str | None]] = {
    **{name: (LAYERS[name], None) for name in LAYER_NAMES},
    **{case_label(*c): (filter_layer(c[0], c[1]), c[2]) for c in FILTER_CASES},
}


def _case_arrays(layer: Layer, kind: str | None, xp: Any) -> tuple[Any, Any]:
    """Seeded x and w of a case on namespace ``xp`` (float32)."""
    x = arraycnn.asarray(seeded(layer.x_shape, np.float32, seed=0), backend=xp)
    if kind is None:
        w_host = seeded(layer.w_shape, np.float32, seed=1)
    else:
        w_host = kernel_of(kind, layer.kernel)[None, None, ...]  # (k, k) -> (1, 1, k, k)
    return x, arraycnn.asarray(w_host, backend=xp)


def _feasible(name: str, layer: Layer, w: Any, xp: Any) -> bool:
    rank = numerical_rank(w, xp=xp) if name == "separable" else None
    try:
        skip_if_infeasible(name, layer.geometry(), itemsize=4, rank=rank)
    except NotImplementedError:
        return False
    return True


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, measured round-robin (one warm-up round first)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            arraycnn.synchronize(call())
            if round_:  # round 0 is the warm-up
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def measure_case(layer: Layer, kind: str | None, xp: Any, repeats: int) -> dict[str, Any]:
    """Times of every feasible strategy and of auto on one case; auto's choice; regret."""
    x, w = _case_arrays(layer, kind, xp)
    kwargs = layer.kwargs
    choice = arraycnn.choose_strategy(x, w, **kwargs)
    names = [s for s in STRATEGY_NAMES if _feasible(s, layer, w, xp)]
    calls = {s: (lambda s=s: arraycnn.conv2d(x, w, **kwargs, strategy=s)) for s in names}
    calls["auto"] = lambda: arraycnn.conv2d(x, w, **kwargs)
    times = interleaved_medians(calls, repeats)
    best = min(names, key=times.__getitem__) if names else choice
    fastest = min(times[best], times["auto"])
    return {
        "times": times,
        "choice": choice,
        "best": best,
        "regret": times["auto"] / fastest,
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
            for case, (layer, kind) in CASES.items():
                results[f"{backend}/{case}"] = measure_case(layer, kind, xp, REPEATS)
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

    def track_choice(self, *_: Any) -> int:
        """Index of auto's choice in (naive, separable, im2col, fft)."""
        return STRATEGY_NAMES.index(self.result["choice"])

    track_choice.unit = "index in (naive, separable, im2col, fft)"  # type: ignore[attr-defined]

    def track_best(self, *_: Any) -> int:
        """Index of the measured fastest strategy in (naive, separable, im2col, fft)."""
        return STRATEGY_NAMES.index(self.result["best"])

    track_best.unit = "index in (naive, separable, im2col, fft)"  # type: ignore[attr-defined]
