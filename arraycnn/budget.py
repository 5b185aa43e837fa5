"""Memory: the workspace budget of the convolution dispatcher, and the size check of results.

Every strategy needs temporary arrays beyond its inputs and its result; each strategy
predicts their size for a plan (``Strategy.workspace``) before anything is allocated, so
that the dispatcher can skip a strategy, or run it on batch chunks or bands of output rows,
instead of running out of memory.

:func:`workspace_limit` gives the bytes one call may use for workspace, in this order:

1. the value set with :func:`arraycnn.set_workspace_limit` or :func:`arraycnn.config`;
2. the environment variable ``ARRAYCNN_WORKSPACE_LIMIT`` (bytes, or with a suffix
   ``K``, ``M``, ``G``, ``T``: powers of 1024, e.g. ``512M``);
3. :data:`DEFAULT_FRACTION` of :func:`available_memory` on the array's device.

:func:`available_memory` is, for host memory, the least of ``MemAvailable`` of
``/proc/meminfo``, the room left under the process's cgroup memory limit (cgroup v2
``memory.max`` minus ``memory.current``, v1 ``memory.limit_in_bytes`` minus
``memory.usage_in_bytes``, the tightest of the cgroup and its ancestors) and the room left
under ``RLIMIT_AS`` (the soft limit minus the process's virtual size); :data:`FALLBACK_BYTES`
where none of them can be read (the size check then uses the physical memory). On a GPU
(CuPy, torch CUDA) it is the device's free memory plus what the library's memory pool holds
unused. Readings are reused for :data:`READING_TTL` seconds: the budget is asked on every
call.

:func:`check_size` is the check every public function makes on shapes alone, before it
allocates: its results (and the workspace the dispatcher predicted) must fit the available
memory, else :class:`WorkspaceError` names the size and the memory -- at once, instead of a
raw ``MemoryError`` or hours of chunked work ending in one. The workspace budget bounds
temporaries only: a result is as large as it must be, whatever the budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .backend import backend_name, is_accelerator
from .settings import (
    ENV_WORKSPACE_LIMIT,
    parse_bytes,
    register_cache,
    set_workspace_limit,
    workspace_limit_setting,
)

try:  # POSIX only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "CHECK_FLOOR",
    "DEFAULT_FRACTION",
    "ENV_WORKSPACE_LIMIT",
    "FALLBACK_BYTES",
    "READING_TTL",
    "SMALL_ARRAYS_BYTES",
    "HostSources",
    "WorkspaceError",
    "address_space_room",
    "available_memory",
    "cgroup_room",
    "check_size",
    "format_bytes",
    "host_available",
    "itemsize",
    "meminfo_available",
    "memory_limit",
    "parse_bytes",
    "physical_memory",
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
READING_TTL = 1.0
#: A cgroup limit at or above this is no limit (cgroup v1 writes 2**63 rounded to a page).
CGROUP_UNLIMITED = 1 << 60
#: Ancestors of the process's cgroup whose limits are read at most.
CGROUP_DEPTH = 16
#: :func:`check_size` passes totals up to this many bytes without reading the memory (any
#: process has a megabyte; the check runs on every call, the reading costs a microsecond).
CHECK_FLOOR = 1 << 20

#: The last reading per device: {(backend, device): (time.monotonic() of it, bytes)}.
_readings: dict[tuple[str, str], tuple[float, int]] = {}
register_cache(_readings.clear)


class WorkspaceError(MemoryError, ValueError):
    """A call needs more memory than it may use: workspace over the budget even on one
    sample (and one band of output rows), or results over the available memory.

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


# --------------------------------------------------------------------------- host memory


@dataclass(frozen=True)
class HostSources:
    """Where the host's memory facts are read (tests point them at fake files).

    ``address_limit`` / ``address_used``: the soft ``RLIMIT_AS`` and the process's virtual
    size in bytes; None reads them (``resource.getrlimit``, ``statm``).

    Examples
    --------
    >>> sources = HostSources(meminfo="/nonexistent", self_cgroup="/nonexistent",
    ...                       address_limit=8 * 2**30, address_used=3 * 2**30)
    >>> host_available(sources) == 5 * 2**30
    True
    """

    meminfo: str = "/proc/meminfo"
    self_cgroup: str = "/proc/self/cgroup"
    cgroup_root: str = "/sys/fs/cgroup"
    statm: str = "/proc/self/statm"
    address_limit: int | None = None
    address_used: int | None = None


def _read(path: str) -> str | None:
    """The text of a small file, or None where it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(1 << 16)
    except (OSError, ValueError):
        return None


def meminfo_available(text: str | None) -> int | None:
    """``MemAvailable`` in bytes from the text of ``/proc/meminfo`` (None if absent).

    Examples
    --------
    >>> meminfo_available("MemTotal: 100 kB\\nMemAvailable:  2048 kB\\n")
    2097152
    >>> meminfo_available("garbage") is None
    True
    """
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # reported in kB
    return None


def _number(text: str | None) -> int | None:
    """A non-negative integer file's value (None for 'max', garbage or no file)."""
    value = (text or "").strip()
    return int(value) if value.isdigit() else None


def _cgroup_dirs(sources: HostSources) -> list[tuple[str, str, str]]:
    """Directories of the process's memory cgroup and its ancestors, tightest first, as
    (directory, limit file, usage file): v2 (``0::/path``) and v1 (a ``memory``
    controller line) as listed in ``/proc/self/cgroup``."""
    found = []
    for line in (_read(sources.self_cgroup) or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, files = sources.cgroup_root, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base = os.path.join(sources.cgroup_root, "memory")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        parts = [p for p in path.split("/") if p and p not in (".", "..")][:CGROUP_DEPTH]
        for depth in range(len(parts), -1, -1):  # the cgroup, then each ancestor
            found.append((os.path.join(base, *parts[:depth]), *files))
    return found


def cgroup_room(sources: HostSources = HostSources()) -> int | None:
    """Bytes left under the tightest memory limit of the process's cgroup and its
    ancestors (limit minus usage), or None where no limit is set or readable.

    A path listed in ``/proc/self/cgroup`` that is not mounted (a container sees its own
    cgroup at the root) is skipped for its nearest mounted ancestor.

    Examples
    --------
    >>> cgroup_room(HostSources(self_cgroup="/nonexistent")) is None  # nothing to read
    True
    """
    room = None
    for directory, limit_file, usage_file in _cgroup_dirs(sources):
        limit = _number(_read(os.path.join(directory, limit_file)))
        if limit is None or limit >= CGROUP_UNLIMITED:
            continue
        usage = _number(_read(os.path.join(directory, usage_file))) or 0
        left = max(0, limit - usage)
        room = left if room is None else min(room, left)
    return room


def address_space_room(sources: HostSources = HostSources()) -> int | None:
    """Bytes left under the soft ``RLIMIT_AS`` (the limit minus the process's virtual
    size), or None where unlimited or unreadable.

    Examples
    --------
    >>> address_space_room(HostSources(address_limit=2**32, address_used=2**30))
    3221225472
    """
    limit = sources.address_limit
    if limit is None:
        if resource is None:  # pragma: no cover - Windows
            return None
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
    if limit < 0:
        return None
    used = sources.address_used
    if used is None:
        fields = (_read(sources.statm) or "").split()
        if not fields or not fields[0].isdigit():
            return None
        used = int(fields[0]) * os.sysconf("SC_PAGE_SIZE")
    return max(0, limit - used)


def host_available(sources: HostSources = HostSources()) -> int | None:
    """Bytes of host memory available to this process: the least of ``MemAvailable``, the
    room under the cgroup limit and the room under ``RLIMIT_AS``; None where none of them
    can be read.

    Examples
    --------
    >>> host_available() > 0
    True
    """
    readings = [
        meminfo_available(_read(sources.meminfo)),
        cgroup_room(sources),
        address_space_room(sources),
    ]
    known = [r for r in readings if r is not None]
    return min(known) if known else None


def physical_memory() -> int | None:
    """The host's physical memory in bytes (``sysconf``), or None where unknown.

    Examples
    --------
    >>> physical_memory() > 0
    True
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - exotic platforms
        return None


# --------------------------------------------------------------------------- devices


def _device_available(name: str, device: Any) -> int | None:  # pragma: no cover - needs a GPU
    """Free bytes on a GPU, counting the memory pool's unused blocks as free (None where
    the driver cannot tell)."""
    try:
        if name == "cupy":
            import cupy

            free = int(cupy.cuda.Device().mem_info[0])
            return free + int(cupy.get_default_memory_pool().free_bytes())
        import torch

        free = int(torch.cuda.mem_get_info(device)[0])
        pooled = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + max(0, int(pooled))
    except Exception:  # driver trouble
        return None


_HOST = ("host", "")


def _reading(xp: ModuleType | None, device: Any) -> int | None:
    """The memory available on ``device`` (None: unknown), reused for READING_TTL s."""
    host = xp is None or device == "cpu" or getattr(device, "type", None) == "cpu"
    gpu = not host and is_accelerator(xp, device)
    key = (backend_name(xp), str(device)) if gpu else _HOST
    now = time.monotonic()
    last = _readings.get(key)
    if last is not None and now - last[0] < READING_TTL:
        return last[1]
    if not gpu:
        value = host_available()
    elif key[0] in ("cupy", "torch"):
        value = _device_available(key[0], device)
    else:  # pragma: no cover - JAX on a GPU: not known
        value = None
    _readings[key] = (now, value)
    return value


def available_memory(xp: ModuleType | None = None, device: Any = None) -> int:
    """Bytes currently available on ``device`` of namespace ``xp`` (host memory by default;
    see the module doc), read at most once per :data:`READING_TTL` seconds;
    :data:`FALLBACK_BYTES` where it cannot be read.

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    value = _reading(xp, device)
    return FALLBACK_BYTES if value is None else value


def memory_limit(xp: ModuleType | None = None, device: Any = None) -> int | None:
    """The bytes a call's results and workspace may take together on ``device``: the
    memory available there, or where that cannot be read the host's physical memory
    (None: nothing known, no check).

    Examples
    --------
    >>> memory_limit() > 0
    True
    """
    value = _reading(xp, device)
    if value is None and (xp is None or not is_accelerator(xp, device)):
        return physical_memory()
    return value


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


# --------------------------------------------------------------------------- sizes


def itemsize(dtype: Any, xp: ModuleType) -> int:
    """Bytes per element of ``dtype`` (a dtype of namespace ``xp``).

    Examples
    --------
    >>> import numpy as np
    >>> itemsize(np.dtype("float16"), np)
    2
    """
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    if xp.isdtype(dtype, "complex floating"):
        return 2 * (xp.finfo(dtype).bits // 8)  # finfo of a complex dtype: its parts'
    info = xp.finfo(dtype) if xp.isdtype(dtype, "real floating") else xp.iinfo(dtype)
    return info.bits // 8


def check_size(
    nbytes: int,
    what: str | Callable[[], str],
    xp: ModuleType | None = None,
    device: Any = None,
    *,
    limit: int | None = None,
    kind: str = "the memory available",
) -> None:
    """Raise :class:`WorkspaceError` if ``nbytes`` exceed ``limit`` (default: the
    :func:`memory_limit` of ``device``, not read for totals up to :data:`CHECK_FLOOR`); host
    arithmetic, nothing is allocated.

    Parameters
    ----------
    nbytes : int
        Bytes the call is about to allocate (its results, and the workspace if known).
    what : str or callable
        What needs them, for the message (e.g. ``"conv2d: the output (N, F, Ho, Wo) =
        (8, 16, 32, 32) of float32"``); a callable returning it is called only for the
        error (formatting costs microseconds, and the check runs on every call).
    xp, device
        Where they would be allocated.
    limit : int, optional
        The bytes allowed, where the caller has read them (:func:`memory_limit` once for
        several checks, or :func:`workspace_limit` for temporaries).
    kind : str
        What ``limit`` is, for the message.

    Examples
    --------
    >>> check_size(1024, "a small result")
    >>> check_size(2**70, "conv2d: the output")
    Traceback (most recent call last):
    ...
    arraycnn.budget.WorkspaceError: conv2d: the output needs 1180591620717411303424 bytes ...
    """
    if limit is None and nbytes <= CHECK_FLOOR:
        return
    allowed = memory_limit(xp, device) if limit is None else limit
    if allowed is None or nbytes <= allowed:
        return
    what = what() if callable(what) else what
    raise WorkspaceError(
        f"{what} needs {nbytes} bytes ({format_bytes(nbytes)}), more than {kind} of "
        f"{allowed} bytes ({format_bytes(allowed)}); use smaller inputs or batches"
    )


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
