"""Data parallelism on threads: the shards of a batch run on ``workers`` threads at once.

``Sequential.fit(..., workers=k)`` (and ``evaluate``, ``predict``, ``predict_proba``) cuts
every batch into ``k`` contiguous shards of nearly equal size. Shard 0 runs on the calling
thread with the model itself, the others on worker threads, each with a *replica* of the model
(:meth:`~arraycnn.nn.base.Layer.replica`: the same parameter arrays, its own gradients and
forward state). A training step then adds the replicas' parameter gradients, each shard's loss
gradient having been weighted by its share of the batch (``n_i / N``: a loss is a mean over
samples, :class:`~arraycnn.nn.losses.Loss`), and makes one optimizer step: the gradient of
the whole batch, up to rounding. Dropout draws each replica's masks from its own seeded
generator, so a seeded run is reproducible for a given ``workers``, though its masks differ
from those of ``workers=1``.

Why threads pay on NumPy: its array operations and BLAS calls release the GIL, so the shards'
convolutions, products and element-wise passes run on two cores at once; Python's own steps
between them (microseconds each) hold it. A batch's arrays are too small for NumPy's BLAS to
gain from a second thread per call (docs/performance.md), so while a ``workers > 1`` call runs
the BLAS thread pools are limited to one thread (``threadpoolctl``); they are restored after.

``workers`` follows ``scipy.fft``: a positive int, or a negative one counting back from
``os.cpu_count()`` (-1: all CPUs).
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..backend import backend_name
from .base import backward_through, forward_through
from .data import Index

__all__ = [
    "Replica",
    "Shards",
    "add_layer_gradients",
    "batch_length",
    "resolve_workers",
    "shard_bounds",
    "shard_index",
    "shard_rows",
]

Array = Any

#: Backends whose arrays are NumPy's, computed with NumPy's BLAS (limited to one thread).
NUMPY_BLAS_BACKENDS = ("numpy", "array_api_strict")


def resolve_workers(workers: Any) -> int:
    """The number of threads ``workers`` asks for (``scipy.fft``'s convention).

    ``None`` is 1; a negative value counts back from ``os.cpu_count()`` (-1: all CPUs).

    Raises
    ------
    TypeError
        If ``workers`` is not an int (a bool is not).
    ValueError
        If it is 0, or negative beyond the CPU count.

    Examples
    --------
    >>> resolve_workers(None), resolve_workers(2)
    (1, 2)
    >>> resolve_workers(-1) == (os.cpu_count() or 1)
    True
    >>> resolve_workers(0)
    Traceback (most recent call last):
    ...
    ValueError: workers must be a positive int or a negative one counting back from the ... got 0
    """
    if workers is None:
        return 1
    if isinstance(workers, bool):
        raise TypeError(f"workers must be an int, got bool {workers!r}")
    try:
        count = operator.index(workers)
    except TypeError:
        kind = type(workers).__name__
        raise TypeError(f"workers must be an int, got {kind} {workers!r}") from None
    cpus = os.cpu_count() or 1
    resolved = count if count > 0 else cpus + 1 + count
    if count == 0 or resolved < 1:
        raise ValueError(
            "workers must be a positive int or a negative one counting back from the "
            f"{cpus} CPUs (-1: all), got {count}"
        )
    return resolved


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of ``min(shards, n)`` contiguous pieces of ``n`` samples, sizes differing
    by at most one (the larger first, as ``numpy.array_split``).

    Examples
    --------
    >>> shard_bounds(64, 2), shard_bounds(5, 2), shard_bounds(1, 4)
    ([(0, 32), (32, 64)], [(0, 3), (3, 5)], [(0, 1)])
    """
    count = max(1, min(shards, n))
    size, extra = divmod(n, count)
    bounds, lo = [], 0
    for i in range(count):
        hi = lo + size + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def shard_index(index: Index, lo: int, hi: int) -> Index:
    """Rows ``[lo, hi)`` of a batch's ``index`` (a slice of consecutive rows, or an int array
    of row numbers, as :func:`~arraycnn.nn.data.batches` yields).

    Examples
    --------
    >>> import numpy as np
    >>> shard_index(slice(10, 20), 2, 5), shard_index(np.array([7, 3, 5]), 1, 3).tolist()
    (slice(12, 15, None), [3, 5])
    """
    if isinstance(index, slice):
        start = index.start or 0
        return slice(start + lo, start + hi)
    return index[lo:hi]


def batch_length(index: Index) -> int:
    """Samples in a batch ``index`` (a slice of consecutive rows or an array of row numbers).

    Examples
    --------
    >>> import numpy as np
    >>> batch_length(slice(10, 20)), batch_length(np.array([7, 3, 5]))
    (10, 3)
    """
    if isinstance(index, slice):
        return index.stop - (index.start or 0)
    return len(index)


def shard_rows(index: Index, workers: int) -> list[tuple[Index, int]]:
    """The shards of a batch ``index`` for ``workers`` threads: (rows, their count) each
    (:func:`shard_bounds`, :func:`shard_index`).

    Examples
    --------
    >>> shard_rows(slice(10, 15), 2)
    [(slice(10, 13, None), 3), (slice(13, 15, None), 2)]
    """
    bounds = shard_bounds(batch_length(index), workers)
    return [(shard_index(index, lo, hi), hi - lo) for lo, hi in bounds]


class Replica:
    """A model's layers as replicas (:meth:`Layer.replica`) for one worker thread, with the
    passes of :class:`~arraycnn.nn.model.Sequential` (``forward``, ``backward``) that a shard
    needs.

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(2, 3)], seed=0)
    >>> _ = model.build((2,))
    >>> replica = Replica(model.layers, 1)
    >>> replica.layers[0].params is model.layers[0].params
    True
    >>> replica.forward(np.ones((4, 2), dtype=np.float32)).shape
    (4, 3)
    """

    def __init__(self, layers: Sequence[Any], index: int) -> None:
        for i, layer in enumerate(layers):
            if not callable(getattr(layer, "replica", None)):
                raise TypeError(
                    f"workers > 1 needs layers with a replica() method (arraycnn.nn.Layer "
                    f"subclasses); layer {i} ({type(layer).__name__}) has none"
                )
        self.layers = [layer.replica(index) for layer in layers]

    def forward(self, x: Array, *, training: bool = False, stop: int | None = None) -> Array:
        """As :meth:`Sequential.forward <arraycnn.nn.model.Sequential.forward>`."""
        return forward_through(self.layers, x, training=training, stop=stop)

    def backward(
        self, gy: Array, *, stop: int | None = None, input_grad: bool = True
    ) -> Array | None:
        """As :meth:`Sequential.backward <arraycnn.nn.model.Sequential.backward>`."""
        return backward_through(self.layers, gy, stop=stop, input_grad=input_grad)


@dataclass
class Shards:
    """The threads and replicas of a ``workers > 1`` call (a context manager: the threads,
    and the BLAS limit, last until it exits).

    ``runners[0]`` is the model itself (shard 0 runs on the calling thread), ``runners[i]`` a
    :class:`Replica` for worker thread ``i``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(2, 3)], seed=0)
    >>> _ = model.build((2,))
    >>> with Shards(model, 2) as shards:
    ...     outs = shards.map(lambda run, x: run.forward(x), [np.ones((1, 2))] * 2)
    >>> [out.shape for out in outs]
    [(1, 3), (1, 3)]
    """

    model: Any
    workers: int
    runners: list[Any] = field(init=False)
    _pool: ThreadPoolExecutor | None = field(init=False, default=None)
    _stack: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.runners = [self.model] + [
            Replica(self.model.layers, i) for i in range(1, self.workers)
        ]

    def __enter__(self) -> Shards:
        if self.workers > 1:
            self._stack.enter_context(_one_blas_thread(self.model.xp))
            self._pool = self._stack.enter_context(
                ThreadPoolExecutor(self.workers - 1, thread_name_prefix="arraycnn-shard")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool = None
        self._stack.close()

    #: The shards run in this process (their pieces may refer to the caller's data).
    remote = False

    def run(self, job: Callable[[Any, Any, Any], Any], pieces: Sequence[Any]) -> list[Any]:
        """``[job(runners[i], model, pieces[i]) ...]`` at once, as :meth:`map`."""
        return self.map(lambda runner, piece: job(runner, self.model, piece), pieces)

    def run_training(self, job: Callable[[Any, Any, Any], Any], pieces: Sequence[Any]) -> list:
        """As :meth:`run` (each replica keeps its gradients for :meth:`add_gradients`)."""
        return self.run(job, pieces)

    def add_gradients(self, count: int) -> None:
        """Add the parameter gradients of the replicas that ran the last ``count - 1`` shards
        into the model's layers' own (shard 0's)."""
        add_layer_gradients(self.model.layers, [r.layers for r in self.runners[1:count]])

    def publish(self) -> None:
        """Make the model's parameters after an optimizer step those of every shard: the
        replicas share its ``params`` dicts, so nothing to do."""

    def map(self, run: Callable[[Any, Any], Any], pieces: Sequence[Any]) -> list[Any]:
        """``[run(runners[i], pieces[i]) ...]``, piece 0 on this thread, the others at once
        on the worker threads; every piece finishes before an exception is raised."""
        if len(pieces) > len(self.runners):
            raise ValueError(f"{len(pieces)} pieces for {len(self.runners)} runners")
        if len(pieces) == 1 or self._pool is None:
            return [run(self.runners[i], piece) for i, piece in enumerate(pieces)]
        futures: list[Future] = [
            self._pool.submit(run, self.runners[i], piece)
            for i, piece in enumerate(pieces)
            if i > 0
        ]
        try:
            first = run(self.runners[0], pieces[0])
        finally:
            wait(futures)  # all of them: no replica may still run once this returns or raises
        return [first, *(future.result() for future in futures)]


def add_layer_gradients(layers: Sequence[Any], others: Sequence[Sequence[Any]]) -> None:
    """Add the parameter gradients of the layer lists ``others`` (the other shards' copies
    of ``layers``) into those of ``layers``.

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.nn import Dense
    >>> layer, twin = Dense(1, 1), Dense(1, 1)
    >>> layer.grads, twin.grads = {"w": np.ones((1, 1))}, {"w": np.full((1, 1), 2.0)}
    >>> add_layer_gradients([layer], [[twin]])
    >>> layer.grads["w"].tolist()
    [[3.0]]
    """
    for i, layer in enumerate(layers):
        grads = getattr(layer, "grads", {})
        for name in list(grads):
            total = grads[name]
            for copies in others:
                total = total + copies[i].grads[name]
            grads[name] = total


@contextlib.contextmanager
def _one_blas_thread(xp: Any) -> Iterator[None]:
    """Limit the BLAS thread pools to one thread on NumPy backends (each worker thread then
    runs its own products), restored on exit; nothing elsewhere."""
    if backend_name(xp) not in NUMPY_BLAS_BACKENDS:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
