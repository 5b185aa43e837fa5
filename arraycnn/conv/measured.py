"""Measured strategy choice: time the candidates once per call signature, keep the winner.

With autotuning on (``conv2d(..., autotune=True)``, :func:`arraycnn.set_autotune`,
:func:`arraycnn.config` or ``ARRAYCNN_AUTOTUNE=1``), the first call for a *key* -- backend,
device, dtype, geometry, direction (with the gradients a backward computes), separable
rank, whether the budget chunks the batch and the library version -- times each candidate
the dispatcher passes in with the library's one timing primitive
(:func:`arraycnn.timing.interleaved_medians`: a warm-up, then :data:`REPEATS` interleaved
rounds, each run ended by a device sync; the best counts) and keeps the fastest. The
choice lives in memory and in a JSON file in the user cache directory
(:func:`cache_path`); later calls, in this process or another, reuse it.

The file is written atomically, merging the entries other processes wrote meanwhile under
the file's lock (:mod:`arraycnn.cachefile`), so that concurrent writers keep every entry.
A corrupt file is reported with a
:class:`RuntimeWarning` and replaced by a fresh one.

Determinism: a choice, once measured or read from the file, is kept for its signature for
the rest of the process (and in the file for later runs), so repeated calls -- and seeded
runs sharing the file -- run the same strategy. A first measurement may differ from one run
to the next; ``arraycnn.config(deterministic=True)`` turns autotuning off.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._version import __version__
from ..cachefile import locked, merge_entry, read_section
from ..settings import cache_dir, register_cache
from ..timing import interleaved_medians, time_call
from .strategy import Call

__all__ = [
    "REPEATS",
    "cache_entries",
    "cache_path",
    "clear_cache",
    "make_key",
    "tuned_choice",
]

#: Timed rounds per candidate after the warm-up (the best counts).
REPEATS = 3
#: A candidate whose warm-up takes this many times the best warm-up is not timed further.
GIVE_UP_FACTOR = 4.0
CACHE_FILE = "autotune.json"
CACHE_FORMAT = 1

#: In-memory entries by cache-file path: {path: {key: entry}}.
_memory: dict[str, dict[str, dict[str, Any]]] = {}
register_cache(_memory.clear)


def cache_path() -> Path:
    """Path of the persistent autotune cache (in :func:`arraycnn.settings.cache_dir`)."""
    return cache_dir() / CACHE_FILE


def make_key(call: Call, device: Any, rank: int | None, chunked: bool) -> str:
    """The cache key of one call signature, a readable string.

    ``rank`` is the kernel's separable rank where it was read (it changes separable's
    cost); ``chunked`` marks signatures whose candidates run in batch chunks under the
    current workspace budget.
    """
    g = call.geom

    def dims(shape: tuple[int, ...]) -> str:
        return "x".join(str(int(s)) for s in shape)

    (top, bottom), (left, right) = g.padding
    parts = [
        call.backend,
        str(device),
        call.dtype,
        f"x={dims(g.x_shape)}",
        f"w={dims(g.w_shape)}",
        f"s={dims(g.stride)}",
        f"p={top},{bottom},{left},{right}",
        f"d={dims(g.dilation)}",
        f"g={g.groups}",
        f"r={rank if rank is not None else '-'}",
        f"chunked={int(chunked)}",
        f"v={__version__}",
        call.direction if call.grads == "xw" else f"{call.direction}:{call.grads}",
    ]
    return "|".join(parts)


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    """Entries stored in ``path`` ({} if it does not exist; warns and returns {} if corrupt)."""
    try:
        entries = read_section(path, CACHE_FORMAT, "entries", "autotune cache")
        for entry in entries.values():
            if not isinstance(entry, dict) or not isinstance(entry.get("strategy"), str):
                raise ValueError("malformed entries")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        warnings.warn(f"arraycnn: cannot read autotune cache {path}: {exc}", RuntimeWarning, 3)
        return {}
    except ValueError as exc:
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
    """Add one entry to the file, keeping what other processes wrote since we loaded it
    (:func:`arraycnn.cachefile.merge_entry`)."""
    try:
        merge_entry(path, CACHE_FORMAT, "entries", key, entry)
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
    if path.exists():
        with locked(path):
            path.unlink(missing_ok=True)
    return removed


def lookup(key: str, allowed: list[str]) -> str | None:
    """The cached choice for ``key`` if it is still one of ``allowed``, else None."""
    _, entries = _entries()
    entry = entries.get(key)
    if entry is None or entry.get("strategy") not in allowed:
        return None
    return entry["strategy"]


def measure(
    candidates: list[str], run: Callable[[str], Any], *, repeats: int = REPEATS
) -> dict[str, float]:
    """Seconds per candidate (``run(name)`` executes the call with strategy ``name``): a
    warm-up each, then ``repeats`` interleaved rounds of those within
    :data:`GIVE_UP_FACTOR` of the best warm-up (the others keep their warm-up time)."""
    warm = {name: time_call(lambda name=name: run(name)) for name in candidates}
    best = min(warm.values())
    contenders = {
        name: (lambda name=name: run(name))
        for name, seconds in warm.items()
        if seconds <= GIVE_UP_FACTOR * best
    }
    timed = interleaved_medians(contenders, repeats, warm=False, reduce=min)
    return {**warm, **timed}


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
