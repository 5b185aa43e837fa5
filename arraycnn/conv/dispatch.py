"""The dispatcher: the only place strategy names are parsed.

``auto`` runs: eligibility (the capability table against the namespace) -> the cost
model of :mod:`.cost` -> the cheapest predicted strategy. Separable is considered only
where its rank makes it clearly cheaper than direct taps: ``r (kh + kw) <= SEPARABLE_GAIN
kh kw``. A forced strategy that the namespace cannot run is an error, never a silent
fallback.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..capabilities import STRATEGY_NAMES, missing_requirements
from ..geometry import ConvGeometry
from . import cost, fft, im2col, naive, separable

Array = Any

#: Strategy modules by name; each has ``forward(x, w, geom, *, xp)`` and
#: ``backward(gy, x, w, geom, *, xp) -> (gx, gw)``.
KERNELS: dict[str, ModuleType] = {
    "naive": naive,
    "separable": separable,
    "im2col": im2col,
    "fft": fft,
}

#: Separable is eligible for ``auto`` only when r (kh + kw) <= SEPARABLE_GAIN * kh * kw.
SEPARABLE_GAIN = 0.5

VALID_STRATEGIES = ("auto", *STRATEGY_NAMES)


def parse_strategy(strategy: Any) -> str:
    """Validate ``strategy=``; return it lower-cased.

    Raises
    ------
    TypeError
        If it is not a string.
    ValueError
        If it is not one of ``auto``, ``naive``, ``separable``, ``im2col``, ``fft``.
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string, got {type(strategy).__name__} {strategy!r}")
    name = strategy.lower()
    if name not in VALID_STRATEGIES:
        valid = ", ".join(repr(s) for s in VALID_STRATEGIES)
        raise ValueError(f"strategy must be one of {valid}; got {strategy!r}")
    return name


def eligible_strategies(xp: ModuleType) -> list[str]:
    """Strategies whose requirements namespace ``xp`` meets, in table order."""
    return [name for name in STRATEGY_NAMES if not missing_requirements(name, xp)]


def worthwhile_separable_rank(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> int | None:
    """The kernel's numerical rank if separable is clearly cheaper than direct taps, else None.

    The SVD is skipped where even rank 1 could not pass the test.
    """
    budget = SEPARABLE_GAIN * geom.kh * geom.kw
    if geom.kh + geom.kw > budget:
        return None
    rank = separable.numerical_rank(w, xp=xp)
    return rank if rank * (geom.kh + geom.kw) <= budget else None


def predicted_costs(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> dict[str, float]:
    """Predicted seconds of each strategy ``auto`` may pick for this call."""
    costs = {}
    for name in eligible_strategies(xp):
        if name == "separable":
            rank = worthwhile_separable_rank(w, geom, xp=xp)
            if rank is None:
                continue
            costs[name] = cost.predicted_seconds(name, geom, rank)
        else:
            costs[name] = cost.predicted_seconds(name, geom)
    return costs


def select_strategy(strategy: Any, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> str:
    """The strategy a call runs: the forced one (checked) or the cheapest predicted."""
    name = parse_strategy(strategy)
    if name != "auto":
        missing = missing_requirements(name, xp)
        if missing:
            raise ValueError(
                f"strategy={name!r} needs {', '.join(missing)}, which namespace "
                f"{xp.__name__} does not provide"
            )
        return name
    costs = predicted_costs(w, geom, xp=xp)
    return min(costs, key=costs.__getitem__)
