"""Where the shards of a ``workers > 1`` call run: threads of this process
(:class:`~arraycnn.nn.parallel.Shards`) or worker processes
(:class:`~arraycnn.nn.processes.ProcessShards`), chosen by ``parallel``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..backend import backend_name
from .parallel import Shards
from .processes import ProcessShards

__all__ = ["PARALLEL", "check_parallel", "sharded"]

#: How the shards of ``workers > 1`` run: on threads of this process, or on worker processes.
PARALLEL = ("threads", "processes")


def check_parallel(parallel: Any, model: Any) -> str:
    """``parallel`` checked: one of :data:`PARALLEL`; ``"processes"`` only on NumPy.

    Raises
    ------
    TypeError
        If ``parallel`` is not a str.
    ValueError
        If it is not one of :data:`PARALLEL`, or ``"processes"`` for a model whose backend
        is not NumPy (the worker processes share host memory).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> check_parallel("processes", Sequential([Dense(2, 3)], backend="numpy"))
    'processes'
    >>> check_parallel("gpus", None)
    Traceback (most recent call last):
    ...
    ValueError: parallel must be one of 'threads', 'processes', got 'gpus'
    """
    if not isinstance(parallel, str):
        raise TypeError(f"parallel must be a str, got {type(parallel).__name__} {parallel!r}")
    if parallel not in PARALLEL:
        choices = ", ".join(repr(p) for p in PARALLEL)
        raise ValueError(f"parallel must be one of {choices}, got {parallel!r}")
    if parallel == "processes" and backend_name(model.xp) != "numpy":
        raise ValueError(
            "parallel='processes' needs the numpy backend (the worker processes share host "
            f"memory); this model's backend is {backend_name(model.xp)!r}: use "
            "parallel='threads'"
        )
    return parallel


@contextlib.contextmanager
def sharded(model: Any, workers: int, parallel: str = "threads") -> Iterator[Any]:
    """:class:`Shards` (threads) or :class:`~arraycnn.nn.processes.ProcessShards`
    (``parallel="processes"``) for ``workers > 1``, else None (every call runs as before).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> with sharded(Sequential([Dense(2, 3)]), 1) as shards:
    ...     shards is None
    True
    """
    if workers == 1:
        yield None
        return
    if parallel == "processes":
        with ProcessShards(model, workers) as shards:
            yield shards
        return
    with Shards(model, workers) as shards:
        yield shards
