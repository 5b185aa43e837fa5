"""Measured strategy choice: time the candidates once per call signature, remember the winner.

With autotuning on (``conv2d(..., autotune=True)``, :func:`set_autotune` or the environment
variable ``ARRAYCNN_AUTOTUNE=1``), the first call for a *key* -- backend, device, dtype,
input and weight shapes, geometry, separable rank, library version and direction
(forward / backward) -- times each candidate strategy the dispatcher passes in (a warm-up
run, then :data:`REPEATS` timed runs, each ended by :func:`arraycnn.synchronize`; the best
run counts) and keeps the fastest. The choice lives in memory and in a JSON file in the
user cache directory (see :func:`cache_path`); later calls, in this process or another one,
reuse it without timing.

The file is written atomically (a temporary file in the same directory, then
:func:`os.replace`), merging entries other processes wrote meanwhile. A corrupt file is
reported with a :class:`RuntimeWarning` and replaced by a fresh one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backend import synchronize
from .cost import cache_dir

__all__ = [
    "ENV_AUTOTUNE",
    "REPEATS",
    "atomic_write_json",
    "autotune_enabled",
    "cache_entries",
    "cache_path",
    "clear_cache",
    "make_key",
    "set_autotune",
    "tuned_choice",
]

#: Environment variable switching autotuning on ("1", "true", "yes", "on").
ENV_AUTOTUNE = "ARRAYCNN_AUTOTUNE"
#: Timed runs per candidate after the warm-up (the best counts).
REPEATS = 3
#: A candidate whose warm-up takes this many times the best time so far is not repeated.
GIVE_UP_FACTOR = 4.0
CACHE_FILE = "autotune.json"
CACHE_FORMAT = 1

_setting: bool | None = None
#: In-memory entries by cache-file path: {path: {key: entry}}.
_memory: dict[str, dict[str, dict[str, Any]]] = {}


def set_autotune(enabled: bool | None) -> None:
    """Switch measured strategy choice on or off for every call (``None``: follow the env)."""
    global _setting
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True, False or None, got {enabled!r}")
    _setting = enabled


def autotune_enabled(autotune: bool | None = None) -> bool:
    """Resolve a call's ``autotune=`` argument: explicit value, :func:`set_autotune`, env."""
    if autotune is not None:
        if not isinstance(autotune, bool):
            raise TypeError(f"autotune must be True, False or None, got {autotune!r}")
        return autotune
    if _setting is not None:
        return _setting
    return os.environ.get(ENV_AUTOTUNE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_path() -> Path:
    """Path of the persistent autotune cache (in :func:`arraycnn.conv.cost.cache_dir`)."""
    return cache_dir() / CACHE_FILE


def make_key(
    *,
    backend: str,
    device: Any,
    dtype: Any,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
    direction: str,
    rank: int | None = None,
    budget_chunked: bool = False,
) -> str:
    """The cache key of one call signature, a readable string.

    ``rank`` is the kernel's separable rank when separable is a candidate (it changes the
    separable cost, so it is part of the signature); ``budget_chunked`` marks signatures
    whose candidates run in batch chunks under the current workspace budget.
    """
    from .. import __version__

    def dims(shape: tuple[int, ...]) -> str:
        return "x".join(str(int(s)) for s in shape)

    (top, bottom), (left, right) = padding
    parts = [
        backend,
        str(device),
        str(dtype).rsplit(".", 1)[-1],
        f"x={dims(x_shape)}",
        f"w={dims(w_shape)}",
        f"s={dims(stride)}",
        f"p={top},{bottom},{left},{right}",
        f"d={dims(dilation)}",
        f"g={groups}",
        f"r={rank if rank is not None else '-'}",
        f"chunked={int(budget_chunked)}",
        f"v={__version__}",
        direction,
    ]
    return "|".join(parts)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file + :func:`os.replace`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    """Entries stored in ``path`` ({} if it does not exist; warns and returns {} if corrupt)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        warnings.warn(f"arraycnn: cannot read autotune cache {path}: {exc}", RuntimeWarning, 3)
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError("unknown format")
        entries = data["entries"]
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("strategy"), str) for e in entries.values()
        ):
            raise ValueError("malformed entries")
    except (ValueError, KeyError) as exc:
        warnings.warn(
            f"arraycnn: the autotune cache {path} is corrupt ({exc}); starting a fresh one",
            RuntimeWarning,
            stacklevel=3,
        )
        return {}
    return entries


def _entries() -> tuple[Path, dict[str, dict[str, Any]]]:
    """The cache path and its in-memory entries (loaded from the file on first use)."""
    path = cache_path()
    key = str(path)
    if key not in _memory:
        _memory[key] = _read_file(path)
    return path, _memory[key]


def _persist(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one entry to the file, merging what other processes wrote since we loaded it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # corruption was reported on load
        on_disk = _read_file(path)
    on_disk[key] = entry
    try:
        atomic_write_json(path, {"format": CACHE_FORMAT, "entries": on_disk})
    except OSError as exc:
        warnings.warn(
            f"arraycnn: cannot write the autotune cache {path}: {exc}; the choice is kept "
            "in memory only",
            RuntimeWarning,
            stacklevel=4,
        )


def cache_entries() -> dict[str, dict[str, Any]]:
    """A copy of the autotune cache: ``{key: {"strategy", "times", "created"}}``."""
    _, entries = _entries()
    return {k: dict(v) for k, v in entries.items()}


def clear_cache() -> int:
    """Forget every autotuned choice, in memory and on disk. Returns the number removed."""
    path, entries = _entries()
    removed = len(entries)
    entries.clear()
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return removed


def lookup(key: str, allowed: list[str]) -> str | None:
    """The cached choice for ``key`` if it is still one of ``allowed``, else None."""
    _, entries = _entries()
    entry = entries.get(key)
    if entry is None or entry.get("strategy") not in allowed:
        return None
    return entry["strategy"]


def _time_runs(run: Callable[[], Any], best_so_far: float, repeats: int) -> float:
    """Best wall time of ``run`` (warm-up excluded), each run ended by a device sync."""
    start = time.perf_counter()
    synchronize(run())
    warm = time.perf_counter() - start
    if warm > GIVE_UP_FACTOR * best_so_far:
        return warm  # clearly slower: do not spend repeats on it
    best = warm
    for _ in range(repeats):
        start = time.perf_counter()
        synchronize(run())
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    candidates: list[str], run: Callable[[str], Any], *, repeats: int = REPEATS
) -> dict[str, float]:
    """Seconds per candidate: ``run(name)`` executes the call with strategy ``name``.

    Candidates are timed in the given order (pass the predicted-fastest first, so slow
    ones are cut short).
    """
    times: dict[str, float] = {}
    best = float("inf")
    for name in candidates:
        seconds = _time_runs(lambda name=name: run(name), best, repeats)
        times[name] = seconds
        best = min(best, seconds)
    return times


def tuned_choice(
    key: str,
    candidates: list[str],
    run: Callable[[str], Any],
    *,
    repeats: int = REPEATS,
) -> tuple[str, dict[str, float] | None]:
    """The measured-fastest candidate for ``key`` (cached), and the fresh times if measured.

    ``candidates`` come ordered by predicted time; a single candidate is returned untimed.
    """
    cached = lookup(key, candidates)
    if cached is not None:
        return cached, None
    if len(candidates) == 1:
        return candidates[0], None
    times = measure(candidates, run, repeats=repeats)
    choice = min(times, key=times.__getitem__)
    entry = {
        "strategy": choice,
        "times": {k: float(v) for k, v in times.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path, entries = _entries()
    entries[key] = entry
    _persist(path, key, entry)
    return choice, times
