"""The table of convolution strategies: one :class:`~.strategy.Strategy` per kernel module."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import fft, im2col, naive, separable, winograd
from .strategy import Strategy

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "eligible_strategies", "parse_strategy"]

#: The strategies, in the order of ``STRATEGY_NAMES``.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (naive.STRATEGY, separable.STRATEGY, im2col.STRATEGY, fft.STRATEGY, winograd.STRATEGY)
}
#: Valid values of ``strategy=`` other than ``"auto"``, in a fixed order.
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
VALID_STRATEGIES = ("auto", *STRATEGY_NAMES)


def parse_strategy(strategy: Any) -> str:
    """Validate ``strategy=``; return it lower-cased.

    Raises
    ------
    TypeError
        If it is not a string.
    ValueError
        If it is not one of ``auto``, ``naive``, ``separable``, ``im2col``, ``fft``,
        ``winograd``.
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string, got {type(strategy).__name__} {strategy!r}")
    name = strategy.lower()
    if name not in VALID_STRATEGIES:
        valid = ", ".join(repr(s) for s in VALID_STRATEGIES)
        raise ValueError(f"strategy must be one of {valid}; got {strategy!r}")
    return name


def parse_direction(direction: Any) -> str:
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    return direction


def eligible_strategies(xp: ModuleType) -> list[str]:
    """Strategies whose requirements namespace ``xp`` meets, in table order."""
    return [name for name, s in STRATEGIES.items() if not s.missing(xp)]
