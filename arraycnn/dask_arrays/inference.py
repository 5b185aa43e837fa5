"""``Sequential.predict`` / ``predict_proba`` over a dask array of samples, lazily.

The samples (N, ...) are chunked along N only (the other axes are gathered); every chunk
runs the in-memory method of the model. The model enters the graph once, as one
``dask.delayed`` object that the chunk tasks depend on: a ``dask.distributed`` scheduler
ships it to each worker that runs chunks, once (one model copy per worker), instead of
inside every task. The model must pickle (its layers, parameters and backend name do).
Results are NumPy chunks, or CuPy chunks for a CuPy model; other backends' results (torch,
JAX) are copied to NumPy.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..backend import to_numpy
from .checks import check_dtype, check_known_chunks, chunk_namespace

__all__ = ["predict", "predict_proba"]

Array = Any


def predict_proba(model: Any, X: Array, *, batch_size: int) -> Array:
    """The model's outputs (N, *output_shape) for a dask ``X`` (N, *input_shape), lazily."""
    return _blockwise(model, X, batch_size, labels=False)


def predict(model: Any, X: Array, *, batch_size: int) -> Array:
    """The model's labels (N,) int64 for a dask ``X`` (N, *input_shape), lazily."""
    return _blockwise(model, X, batch_size, labels=True)


def _host(y: Any) -> Any:
    """NumPy / CuPy results as they are, anything else copied to NumPy."""
    if isinstance(y, np.ndarray) or type(y).__module__.startswith("cupy"):
        return y
    return to_numpy(y)


def _predict_block(xb: Array, model: Any, *, batch_size: int, labels: bool) -> Array:
    """One chunk of samples through the in-memory method."""
    method = model.predict if labels else model.predict_proba
    return _host(method(xb, batch_size=batch_size))


def _blockwise(model: Any, X: Array, batch_size: int, *, labels: bool) -> Array:
    import dask

    func = "Sequential.predict" if labels else "Sequential.predict_proba"
    check_known_chunks(X, "X", func)
    check_dtype(X, "X", func)
    if X.ndim < 2:
        raise ValueError(f"{func}: X must be (N, *input_shape), got shape {tuple(X.shape)}")
    # zero samples validate the arguments and give the result's dtype and shape
    empty = chunk_namespace(X).zeros((0, *X.shape[1:]), dtype=X.dtype)
    probe = _predict_block(empty, model, batch_size=batch_size, labels=labels)
    samples = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    tail = tuple((s,) for s in probe.shape[1:])
    block = functools.partial(_predict_block, batch_size=batch_size, labels=labels)
    shared = dask.delayed(model, pure=False, traverse=False)
    meta = probe[:0] if math.prod(probe.shape) == 0 else probe
    return samples.map_blocks(
        block,
        shared,
        chunks=(samples.chunks[0], *tail),
        drop_axis=list(range(1, X.ndim)),
        new_axis=list(range(1, probe.ndim)) or None,
        dtype=probe.dtype,
        meta=meta,
    )
