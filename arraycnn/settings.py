"""Process-wide settings (autotune, determinism, workspace budget, cache directory) and the
caches.

:func:`config` sets any of them for a ``with`` block; :func:`set_autotune`,
:func:`set_deterministic` and :func:`set_workspace_limit` set them until changed. Where a
setting is None its environment variable decides (``ARRAYCNN_AUTOTUNE``,
``ARRAYCNN_DETERMINISTIC``, ``ARRAYCNN_WORKSPACE_LIMIT``, ``ARRAYCNN_CACHE_DIR``), then the
default. The settings are shared by all threads.

Determinism: with autotuning off, ``strategy="auto"`` decides from shapes, dtypes, the
calibration and the workspace budget alone, so a seeded run repeats its choices. With
autotuning on, the first call of a signature times the candidates and keeps the fastest for
the rest of the process and in the cache file, so later runs with that file repeat it too;
a run with a fresh cache may measure differently. ``deterministic=True`` turns autotuning
off whatever the other settings say (an explicit ``autotune=True`` is then an error). The
default budget follows the available memory; set ``workspace_limit`` too where runs must
also chunk alike.

:func:`clear_caches` empties every in-memory cache of the library, each registered with
:func:`register_cache`: the dispatcher's plans, the small kernels' facts, the FFT's DFT
matrices, this thread's scratch buffers, the calibrations and measured choices loaded from
disk, the last reading of the available memory. Files on disk stay (``arraycnn info
--clear-cache`` removes the autotune file).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_AUTOTUNE",
    "ENV_CACHE_DIR",
    "ENV_DETERMINISTIC",
    "ENV_WORKSPACE_LIMIT",
    "autotune_enabled",
    "cache_dir",
    "clear_caches",
    "config",
    "deterministic_enabled",
    "parse_bytes",
    "register_cache",
    "set_autotune",
    "set_deterministic",
    "set_workspace_limit",
    "workspace_limit_setting",
]

ENV_AUTOTUNE = "ARRAYCNN_AUTOTUNE"
ENV_WORKSPACE_LIMIT = "ARRAYCNN_WORKSPACE_LIMIT"
ENV_CACHE_DIR = "ARRAYCNN_CACHE_DIR"
ENV_DETERMINISTIC = "ARRAYCNN_DETERMINISTIC"

_UNSET: Any = object()
_lock = threading.Lock()
_settings: dict[str, Any] = {
    "autotune": None,
    "deterministic": None,
    "workspace_limit": None,
    "cache_dir": None,
}
_caches: list[Callable[[], None]] = []

_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(value: Any, name: str = ENV_WORKSPACE_LIMIT) -> int:
    """A byte count from an int or a string like ``"1500000"``, ``"512M"``, ``"1.5GiB"``.

    Raises
    ------
    TypeError
        If it is neither a number nor a string.
    ValueError
        If it is not a positive number of bytes.

    Examples
    --------
    >>> parse_bytes("512M")
    536870912
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes, got bool {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
        if not match:
            raise ValueError(
                f"{name} must be a number of bytes, optionally with a K/M/G/T suffix "
                f"(e.g. 512M), got {value!r}"
            )
        number = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    else:
        raise TypeError(f"{name} must be a number of bytes, got {type(value).__name__}")
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
    return int(number)


def _check_flag(enabled: Any, name: str) -> bool | None:
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"{name} must be True, False or None, got {enabled!r}")
    return enabled


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def set_autotune(enabled: bool | None) -> None:
    """Switch measured strategy choice on or off for every call (``None``: follow the env).

    Examples
    --------
    >>> import arraycnn as ac
    >>> ac.set_autotune(False)
    >>> ac.set_autotune(None)
    """
    _settings["autotune"] = _check_flag(enabled, "enabled")


def set_deterministic(enabled: bool | None) -> None:
    """Switch deterministic mode on or off (``None``: follow ``ARRAYCNN_DETERMINISTIC``).

    Deterministic mode turns autotuning off (see the module doc).

    Examples
    --------
    >>> set_deterministic(True)
    >>> autotune_enabled()
    False
    >>> set_deterministic(None)
    """
    _settings["deterministic"] = _check_flag(enabled, "enabled")


def deterministic_enabled() -> bool:
    """True in deterministic mode: the setting, else ``ARRAYCNN_DETERMINISTIC``.

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(deterministic=True):
    ...     deterministic_enabled()
    True
    """
    if _settings["deterministic"] is not None:
        return _settings["deterministic"]
    return _env_flag(ENV_DETERMINISTIC)


def autotune_enabled(autotune: bool | None = None, *, default: bool = False) -> bool:
    """Resolve a call's ``autotune=``: the explicit value, the setting, the env, then
    ``default`` (the dispatcher's: True on an accelerator whose backend ``arraycnn tune``
    has not fitted, as cuDNN users expect of ``cudnn.benchmark``); always False in
    deterministic mode.

    Raises
    ------
    ValueError
        For an explicit ``autotune=True`` in deterministic mode.

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(autotune=True):
    ...     autotune_enabled(), autotune_enabled(False)
    (True, False)
    >>> with ac.config(autotune=True, deterministic=True):
    ...     autotune_enabled()
    False
    >>> autotune_enabled(default=True), autotune_enabled(False, default=True)
    (True, False)
    """
    explicit = _check_flag(autotune, "autotune")
    if explicit is not None:
        enabled = explicit
    elif _settings["autotune"] is not None:
        enabled = _settings["autotune"]
    elif os.environ.get(ENV_AUTOTUNE, "").strip():
        enabled = _env_flag(ENV_AUTOTUNE)
    else:
        enabled = default
    if enabled and deterministic_enabled():  # asked only where autotuning would be on
        if explicit:
            raise ValueError(
                "autotune=True conflicts with deterministic mode (config(deterministic=True) "
                f"or {ENV_DETERMINISTIC}): measured choices may differ from run to run"
            )
        return False
    return enabled


def set_workspace_limit(limit: int | str | None) -> None:
    """Set the workspace budget of every convolution call, in bytes (``None``: default).

    Overrides ``ARRAYCNN_WORKSPACE_LIMIT``. Strings with a K/M/G/T suffix are accepted.

    Examples
    --------
    >>> import arraycnn as ac
    >>> ac.set_workspace_limit("512M")
    >>> ac.set_workspace_limit(None)
    """
    _settings["workspace_limit"] = None if limit is None else parse_bytes(limit, "limit")


def workspace_limit_setting() -> int | None:
    """The budget set by :func:`set_workspace_limit` or :func:`config`, else the env's
    (None: neither).

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(workspace_limit="1K"):
    ...     workspace_limit_setting()
    1024
    """
    if _settings["workspace_limit"] is not None:
        return _settings["workspace_limit"]
    env = os.environ.get(ENV_WORKSPACE_LIMIT, "").strip()
    return parse_bytes(env) if env else None


def cache_dir() -> Path:
    """The user cache directory: the :func:`config` setting, ``$ARRAYCNN_CACHE_DIR``,
    ``$XDG_CACHE_HOME/arraycnn`` or ``~/.cache/arraycnn`` (read at every call).

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(cache_dir="/tmp/arraycnn-cache"):
    ...     print(cache_dir())
    /tmp/arraycnn-cache
    """
    return Path(cache_dir_name())


def cache_dir_name() -> str:
    """:func:`cache_dir` as a string (cheaper: the dispatcher asks on every call)."""
    if _settings["cache_dir"] is not None:
        return _settings["cache_dir"]
    env = os.environ
    explicit = env.get(ENV_CACHE_DIR, "").strip()
    if explicit:
        return os.path.expanduser(explicit)
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return os.path.join(os.path.expanduser(xdg or "~/.cache"), "arraycnn")


@contextlib.contextmanager
def config(
    *,
    autotune: Any = _UNSET,
    deterministic: Any = _UNSET,
    workspace_limit: Any = _UNSET,
    cache_dir: Any = _UNSET,
) -> Iterator[None]:
    """Set autotuning, determinism, the workspace budget and/or the cache directory for a
    ``with`` block.

    Parameters
    ----------
    autotune : bool or None, optional
        As :func:`set_autotune`.
    deterministic : bool or None, optional
        As :func:`set_deterministic`: True turns autotuning off.
    workspace_limit : int, str or None, optional
        As :func:`set_workspace_limit`.
    cache_dir : str, path or None, optional
        Where calibrations and autotuned choices are stored (None: the default).

    Settings not given keep their value; all are restored on exit. The settings are
    shared by all threads.

    Examples
    --------
    >>> import arraycnn as ac
    >>> with ac.config(autotune=False, workspace_limit="64M"):
    ...     pass
    """
    new: dict[str, Any] = {}
    if autotune is not _UNSET:
        new["autotune"] = _check_flag(autotune, "autotune")
    if deterministic is not _UNSET:
        new["deterministic"] = _check_flag(deterministic, "deterministic")
    if workspace_limit is not _UNSET:
        new["workspace_limit"] = (
            None if workspace_limit is None else parse_bytes(workspace_limit, "workspace_limit")
        )
    if cache_dir is not _UNSET:
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path or None, got {cache_dir!r}")
        new["cache_dir"] = None if cache_dir is None else os.path.expanduser(os.fspath(cache_dir))
    with _lock:
        saved = {key: _settings[key] for key in new}
        _settings.update(new)
    try:
        yield
    finally:
        with _lock:
            _settings.update(saved)


def register_cache(clear: Callable[[], None]) -> Callable[[], None]:
    """Register a function that empties an in-memory cache (for :func:`clear_caches`).

    Examples
    --------
    >>> memo = {"key": "value"}
    >>> _ = register_cache(memo.clear)
    >>> clear_caches()
    >>> memo
    {}
    """
    _caches.append(clear)
    return clear


def clear_caches() -> None:
    """Empty every in-memory cache of the library (files on disk stay).

    Examples
    --------
    >>> import arraycnn as ac
    >>> ac.clear_caches()
    """
    for clear in _caches:
        clear()
