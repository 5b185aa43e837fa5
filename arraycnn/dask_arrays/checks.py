"""Detection of dask arrays and the checks every chunked path makes before building a graph.

Nothing here imports dask unless it is handed a dask array (dask is an optional extra).
"""

from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "check_dtype",
    "check_known_chunks",
    "chunk_namespace",
    "is_dask_array",
    "local_operand",
]

Array = Any

#: dtype kinds (``numpy.dtype.kind``) the chunked paths hand on to the in-memory functions:
#: bool, signed and unsigned integers, floats, complex (which those refuse by name).
ARITHMETIC_KINDS = "biufc"


def is_dask_array(x: Any) -> bool:
    """True if ``x`` is a ``dask.array.Array``; never imports dask (a dask array can only
    exist once ``dask.array`` is imported).

    Examples
    --------
    >>> is_dask_array(np.ones(3))
    False
    """
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


def check_known_chunks(x: Array, name: str, func: str) -> None:
    """ValueError naming ``name`` if a chunk size of the dask array ``x`` is unknown (NaN),
    as after boolean indexing."""
    for axis, sizes in enumerate(x.chunks):
        if any(isinstance(c, float) and math.isnan(c) for c in sizes):
            raise ValueError(
                f"{func}: {name} has unknown chunk sizes (NaN) along axis {axis} (shape "
                f"{x.shape}); call {name}.compute_chunk_sizes() or rechunk it to known sizes "
                f"first"
            )


def check_dtype(x: Array, name: str, func: str) -> None:
    """TypeError naming ``name`` if the dask array's dtype is not numeric (object,
    string, datetime, structured...)."""
    if np.dtype(x.dtype).kind not in ARITHMETIC_KINDS:
        raise TypeError(
            f"{func}: {name} is a dask array of unsupported dtype {x.dtype}; chunks must "
            f"hold bool, integer or floating numbers"
        )


def chunk_namespace(x: Array) -> ModuleType:
    """The array namespace of the chunks of the dask array ``x`` (NumPy, CuPy...)."""
    return array_api_compat.array_namespace(x._meta)


def local_operand(a: Any, like: Array, name: str, func: str) -> Array:
    """A small operand (kernel, weights, bias) as an array of the chunks' namespace.

    A dask array is computed here (it must fit in memory); a NumPy array moves to the
    chunks' namespace (a CuPy chunk gets a CuPy kernel); an array of the chunks' own type
    is kept. Anything else raises TypeError naming ``name``.
    """
    if is_dask_array(a):
        check_known_chunks(a, name, func)
        a = a.compute()
    chunk_type = type(like._meta)
    if type(a) is chunk_type:
        return a
    if isinstance(a, (np.ndarray, np.generic)):
        return chunk_namespace(like).asarray(a)
    raise TypeError(
        f"{func}: {name} is a {type(a).__module__}.{type(a).__name__}, but the chunks of the "
        f"dask array are {chunk_type.__module__}.{chunk_type.__name__}; pass {name} as a "
        f"NumPy array or an array of the chunks' type"
    )
