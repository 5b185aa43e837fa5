"""argparse types shared by the tools' command lines: each refuses a bad value with a
message that names it (argparse then exits with status 2, naming the option)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..backend import BACKEND_NAMES

__all__ = [
    "at_least",
    "backend_list",
    "nonnegative_float",
    "positive_float",
    "positive_int",
    "positive_int_list",
]


def positive_int_list(text: str) -> list[int]:
    """Comma-separated positive integers.

    Examples
    --------
    >>> positive_int_list("256,1024")
    [256, 1024]
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    """One positive integer."""
    values = positive_int_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``.

    Examples
    --------
    >>> at_least(0)("3")
    3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def backend_list(text: str) -> list[str]:
    """Comma-separated backend names (:data:`arraycnn.backend.BACKEND_NAMES`).

    Examples
    --------
    >>> backend_list("numpy,torch")
    ['numpy', 'torch']
    """
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKEND_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(map(repr, unknown or [text]))}; "
            f"choose from {', '.join(BACKEND_NAMES)}"
        )
    return names
