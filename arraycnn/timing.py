"""The one timing primitive: synchronised calls timed in interleaved rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .backend import synchronize

__all__ = ["interleaved_medians", "time_call"]

K = TypeVar("K")


def time_call(call: Callable[[], Any]) -> float:
    """Seconds of one call, ended by a device sync on its result (a tuple: its first item).

    Examples
    --------
    >>> import numpy as np
    >>> time_call(lambda: np.ones(1000).sum()) >= 0
    True
    """
    start = time.perf_counter()
    out = call()
    synchronize(out[0] if isinstance(out, (tuple, list)) else out)
    return time.perf_counter() - start


def interleaved_medians(
    calls: Mapping[K, Callable[[], Any]],
    rounds: int,
    *,
    min_seconds: float = 0.0,
    max_rounds: int = 60,
    warm: bool = True,
    reduce: Callable[[list[float]], float] = statistics.median,
    on_call: Callable[[K, int, int], Any] | None = None,
) -> dict[K, float]:
    """``reduce`` of each call's seconds over rounds that visit the calls in rotated order.

    With ``warm`` each call gets an untimed run right before its timed one. At least
    ``rounds`` rounds run, more (up to ``max_rounds``) while all rounds so far took less
    than ``min_seconds``. ``on_call(name, done, planned)`` runs before each call, outside
    the timing (a progress report: calls done so far, calls planned at least).

    Examples
    --------
    >>> import numpy as np
    >>> times = interleaved_medians({"sum": lambda: np.ones(100).sum()}, rounds=3)
    >>> sorted(times)
    ['sum']
    """
    names = list(calls)
    samples: dict[K, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    done = 0
    while done < rounds or (done < max_rounds and time.perf_counter() - started < min_seconds):
        shift = done % len(names) if names else 0
        for i, name in enumerate(names[shift:] + names[:shift]):
            if on_call is not None:
                on_call(name, done * len(names) + i, max(rounds, done + 1) * len(names))
            if warm:
                time_call(calls[name])
            samples[name].append(time_call(calls[name]))
        done += 1
    return {name: reduce(values) for name, values in samples.items()}
