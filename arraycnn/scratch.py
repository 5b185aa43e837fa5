"""Reusable scratch buffers for the strategy kernels.

Fresh memory is expensive: the first touch of each page costs a fault, and the C
allocator returns large freed buffers to the OS, so a kernel that allocates a large column
matrix per call pays for it every call (docs/performance.md). Kernels therefore keep their
big *internal* temporaries here and overwrite them on the next call with the same key.

Rules for callers:
- a scratch buffer never escapes: results returned to users are fresh arrays (a GEMM
  output, a copy), never a view of scratch;
- buffers are per thread (``threading.local``), so concurrent calls do not share one;
- the cache holds at most :func:`cache_limit` bytes per thread (least recently used
  first out; ``ARRAYCNN_SCRATCH_BYTES`` -- bytes, a K/M/G/T suffix allowed -- or
  :func:`set_cache_limit` change it; 0 disables).

JAX: arrays are immutable (a write returns a new array) and, under a transformation
(``jit``, ``grad``), even a fresh ``zeros`` is a traced value that must not outlive the
trace. Nothing is cached there: every call returns fresh zeros, which the kernels then
update functionally (``array_api_extra.at``), using the returned arrays.

torch: the public functions run kernels with grad mode off, so a buffer never joins an
autograd graph; a buffer made under ``torch.inference_mode()`` is an inference tensor,
which cannot be updated outside it, so buffers are kept apart by that mode.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from types import ModuleType
from typing import Any

from .backend import backend_name, device_of
from .settings import parse_bytes, register_cache

__all__ = ["cache_limit", "clear", "matmul_into", "scratch", "set_cache_limit"]

Array = Any

_DEFAULT_LIMIT = 1 << 30  # 1 GiB per thread
ENV_SCRATCH_BYTES = "ARRAYCNN_SCRATCH_BYTES"
_state = threading.local()


def _limit_from_environment() -> int:
    """``ARRAYCNN_SCRATCH_BYTES`` (bytes, a K/M/G/T suffix allowed, 0 disables), else the
    default; a value that is not a byte count is reported and ignored."""
    text = os.environ.get(ENV_SCRATCH_BYTES, "").strip()
    if not text:
        return _DEFAULT_LIMIT
    if text == "0":
        return 0
    try:
        return parse_bytes(text, ENV_SCRATCH_BYTES)
    except (TypeError, ValueError) as exc:
        warnings.warn(f"arraycnn: ignoring {exc}", RuntimeWarning, stacklevel=2)
        return _DEFAULT_LIMIT


_limit: list[int] = [_limit_from_environment()]


def cache_limit() -> int:
    """Bytes of scratch kept alive per thread.

    Examples
    --------
    >>> cache_limit() >= 0
    True
    """
    return _limit[0]


def set_cache_limit(nbytes: int) -> None:
    """Set the bytes of scratch kept alive per thread (0 disables reuse).

    Examples
    --------
    >>> before = cache_limit()
    >>> set_cache_limit(0)
    >>> cache_limit()
    0
    >>> set_cache_limit(before)
    """
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative int, got {nbytes!r}")
    _limit[0] = nbytes
    _trim(_buffers(), 0)


def clear() -> None:
    """Drop this thread's scratch buffers (:func:`arraycnn.clear_caches` calls it).

    Examples
    --------
    >>> clear()
    """
    _buffers().clear()


register_cache(clear)


def _buffers() -> OrderedDict:
    if not hasattr(_state, "buffers"):
        _state.buffers = OrderedDict()
    return _state.buffers


def _nbytes(shape: tuple[int, ...], like: Array) -> int:
    size = 1
    for s in shape:
        size *= s
    return size * like.dtype.itemsize if hasattr(like.dtype, "itemsize") else size * 8


def _trim(buffers: OrderedDict, incoming: int) -> None:
    total = sum(nbytes for _, nbytes in buffers.values()) + incoming
    while buffers and total > _limit[0]:
        _, (_, nbytes) = buffers.popitem(last=False)
        total -= nbytes


def scratch(
    tag: str,
    shape: tuple[int, ...],
    *,
    like: Array,
    xp: ModuleType,
    key: Hashable = None,
) -> Array:
    """A zero-initialised buffer of ``shape`` with the dtype and device of ``like``.

    The same ``(tag, shape, dtype, device, key)`` on the same thread returns the same
    buffer with whatever the previous call left in it: callers either overwrite all of
    it, or rely on regions they never write staying zero (then ``key`` must pin down
    which regions those are, e.g. the geometry). On JAX every call returns fresh zeros.

    Examples
    --------
    >>> import numpy as np
    >>> like = np.ones(3)
    >>> buf = scratch("example", (2, 3), like=like, xp=np)
    >>> buf[0] = 7.0
    >>> scratch("example", (2, 3), like=like, xp=np)[0]  # the same buffer, as left
    array([7., 7., 7.])
    >>> clear()
    """
    name = backend_name(xp)
    if name == "jax":  # immutable, and possibly traced: never kept (module docstring)
        return xp.zeros(tuple(shape), dtype=like.dtype, device=device_of(like))
    buffers = _buffers()
    inference = name == "torch" and sys.modules["torch"].is_inference_mode_enabled()
    full_key = (tag, tuple(shape), name, str(like.dtype), str(device_of(like)), key, inference)
    entry = buffers.pop(full_key, None)
    if entry is None:
        nbytes = _nbytes(tuple(shape), like)
        buf = xp.zeros(tuple(shape), dtype=like.dtype, device=device_of(like))
        if nbytes > _limit[0]:  # too big to keep: a one-off buffer
            return buf
        _trim(buffers, nbytes)
        entry = (buf, nbytes)
    buffers[full_key] = entry
    return entry[0]


def matmul_into(
    tag: str, a: Array, b: Array, *, xp: ModuleType, key: Hashable = None
) -> Array:
    """``a @ b`` (matmul's broadcasting), written into a scratch buffer on NumPy.

    NumPy's ``matmul`` takes ``out=``: the product then lands in the buffer of ``(tag,
    shape, ..., key)`` (:func:`scratch`), warm memory, instead of fresh pages, which cost
    more than the product itself for the large, short-K products of transform-based
    strategies (docs/performance.md). The values are those of ``a @ b``. Other namespaces
    (no ``out=`` in the array API), and operands of two dtypes, return a fresh ``a @ b``.
    Like any scratch buffer, the result must not escape to the user.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> matmul_into("example.product", a, b, xp=np)
    array([[3., 3., 3., 3.],
           [3., 3., 3., 3.]])
    >>> clear()
    """
    if not (_is_ndarray(a) and _is_ndarray(b)) or a.dtype != b.dtype:
        return a @ b
    numpy = sys.modules["numpy"]
    batch = b.shape[:-2] if a.ndim == 2 else numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = scratch(tag, (*batch, a.shape[-2], b.shape[-1]), like=b, xp=xp, key=key)
    return numpy.matmul(a, b, out=out)


def _is_ndarray(a: Array) -> bool:
    """True for a NumPy array (NumPy is imported whenever one exists)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(a, numpy.ndarray)
