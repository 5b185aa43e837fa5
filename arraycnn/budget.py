"""The workspace budget of the convolution dispatcher.

Every strategy needs temporary arrays beyond its inputs and its result; each strategy
predicts their size for a plan (``Strategy.workspace``) before anything is allocated, so
that the dispatcher can skip a strategy, or run it on batch chunks, instead of running out
of memory.

:func:`workspace_limit` gives the bytes one call may use for workspace, in this order:

1. the value set with :func:`arraycnn.set_workspace_limit` or :func:`arraycnn.config`;
2. the environment variable ``ARRAYCNN_WORKSPACE_LIMIT`` (bytes, or with a suffix
   ``K``, ``M``, ``G``, ``T``: powers of 1024, e.g. ``512M``);
3. :data:`DEFAULT_FRACTION` of the memory available on the array's device: ``MemAvailable``
   of ``/proc/meminfo`` for host memory, the free device memory for CuPy / torch CUDA;
   :data:`FALLBACK_BYTES` where that cannot be read.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from .backend import backend_name
from .settings import (
    ENV_WORKSPACE_LIMIT,
    parse_bytes,
    register_cache,
    set_workspace_limit,
    workspace_limit_setting,
)

__all__ = [
    "DEFAULT_FRACTION",
    "ENV_WORKSPACE_LIMIT",
    "FALLBACK_BYTES",
    "SMALL_ARRAYS_BYTES",
    "WorkspaceError",
    "available_memory",
    "format_bytes",
    "parse_bytes",
    "set_workspace_limit",
    "workspace_limit",
]

#: Fraction of the available memory one convolution call may use as workspace.
DEFAULT_FRACTION = 0.5
#: Available memory assumed where it cannot be read (2 GiB).
FALLBACK_BYTES = 2 * 1024**3
#: Added to every strategy's prediction: small arrays (kernel factors, per-tap results).
SMALL_ARRAYS_BYTES = 64 * 1024
#: Seconds a reading of the available memory is reused (reading /proc costs microseconds).
_MEMINFO_TTL = 1.0

#: The last reading of /proc/meminfo: (time.monotonic() of the reading, bytes available).
_meminfo: list[tuple[float, int]] = []
register_cache(_meminfo.clear)


class WorkspaceError(MemoryError, ValueError):
    """A call needs more workspace than the budget, even on one sample.

    Subclasses both :class:`MemoryError` and :class:`ValueError`.

    Examples
    --------
    >>> import numpy as np
    >>> import arraycnn as ac
    >>> x, w = np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3))
    >>> with ac.config(workspace_limit=16):
    ...     ac.conv2d(x, w, strategy="naive")
    Traceback (most recent call last):
    ...
    arraycnn.budget.WorkspaceError: strategy='naive' (forward) needs a predicted workspace ...
    """


def _host_available() -> int:
    """``MemAvailable`` of /proc/meminfo in bytes (reused for a second), else the fallback."""
    now = time.monotonic()
    if _meminfo and now - _meminfo[0][0] < _MEMINFO_TTL:
        return _meminfo[0][1]
    available = FALLBACK_BYTES
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # reported in kB
                    break
    except (OSError, ValueError, IndexError):
        available = FALLBACK_BYTES
    _meminfo[:] = [(now, available)]
    return available


def available_memory(xp: ModuleType | None = None, device: Any = None) -> int:
    """Bytes currently available on ``device`` of namespace ``xp`` (host memory by default).

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    name = backend_name(xp) if xp is not None else "numpy"
    try:
        if name == "cupy":  # pragma: no cover - needs a GPU
            import cupy

            return int(cupy.cuda.Device().mem_info[0])
        if name == "torch" and getattr(device, "type", "cpu") == "cuda":  # pragma: no cover
            import torch

            return int(torch.cuda.mem_get_info(device)[0])
    except Exception:  # pragma: no cover - driver trouble: be conservative
        return FALLBACK_BYTES
    return _host_available()


def workspace_limit(xp: ModuleType | None = None, device: Any = None) -> int:
    """The workspace budget in bytes for a call on ``device`` of ``xp`` (see module doc).

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(workspace_limit="512M"):
    ...     workspace_limit()
    536870912
    """
    setting = workspace_limit_setting()
    if setting is not None:
        return setting
    return int(DEFAULT_FRACTION * available_memory(xp, device))


def format_bytes(n: float) -> str:
    """Human-readable bytes.

    Examples
    --------
    >>> format_bytes(3 * 2**30), format_bytes(512)
    ('3.00 GiB', '512 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
