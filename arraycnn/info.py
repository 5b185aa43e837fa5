"""``arraycnn info``: what this installation can do and what it keeps on disk.

Lists the backends usable here (and the ``pip install`` line for each missing one), whether
depthwise layers and Winograd's transforms on NumPy run compiled loops (numba), which cost
model chooses the strategy of ``strategy="auto"`` (the shipped one, or one fitted here by
``arraycnn tune``), the cache directory with its size, and the workspace budget.
``arraycnn info --clear-cache`` forgets every autotuned choice (memory and disk);
``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from . import budget
from ._version import __version__
from .backend import BACKEND_NAMES, backend_name, resolve_backend
from .conv import cost, measured, naive
from .conv.table import eligible_strategies
from .settings import ENV_CACHE_DIR, autotune_enabled, cache_dir

_PACKAGES = {
    "numpy": "numpy",
    "cupy": "cupy",
    "torch": "torch",
    "jax": "jax",
    "array_api_strict": "array_api_strict",
}

#: backend -> (the arraycnn extra that installs it, its pip name without the extra).
_INSTALL = {
    "numpy": (None, "numpy"),
    "cupy": ("cupy", "cupy-cuda12x"),
    "torch": ("torch", "torch"),
    "jax": ("jax", "jax"),
    "array_api_strict": ("test", "array-api-strict"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn info``."""
    parser.add_argument(
        "--clear-cache", action="store_true", help="forget every autotuned strategy choice"
    )
    parser.add_argument("--entries", action="store_true", help="list the autotune cache entries")
    parser.add_argument("--json", action="store_true", help="print the information as JSON")


def _version(module_name: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module_name), "__version__", "?"))
    except Exception:
        return None


def _extras() -> set[str]:
    try:
        return set(importlib.metadata.metadata("arraycnn").get_all("Provides-Extra") or ())
    except importlib.metadata.PackageNotFoundError:
        return set()


def install_hint(backend: str) -> str:
    """The ``pip install`` line that brings ``backend``'s package: the arraycnn extra where
    the installed arraycnn declares one, else the package itself.

    Examples
    --------
    >>> install_hint("array_api_strict") in (
    ...     'pip install "arraycnn[test]"', "pip install array-api-strict")
    True
    """
    extra, package = _INSTALL.get(backend, (None, backend))
    if extra is not None and extra in _extras():
        return f'pip install "arraycnn[{extra}]"'
    return f"pip install {package}"


def cache_usage(path: Path) -> tuple[int, int]:
    """Files under ``path`` (recursively) and their total size in bytes; (0, 0) if absent.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.json").write_text("{}")
    ...     cache_usage(Path(tmp)), cache_usage(Path(tmp) / "missing")
    ((1, 2), (0, 0))
    """
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.stat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile
                continue
            files += 1
    return files, size


def backends_info() -> list[dict[str, Any]]:
    """Every known backend: available or why not (and the ``pip install`` line where its
    package is missing), version, strategies, calibration in use."""
    rows = []
    for name in BACKEND_NAMES:
        row: dict[str, Any] = {"backend": name}
        try:
            xp = resolve_backend(name)
        except (RuntimeError, ValueError, TypeError) as exc:
            row.update(available=False, reason=str(exc))
            if importlib.util.find_spec(_PACKAGES.get(name, name)) is None:
                row["install"] = install_hint(name)
            rows.append(row)
            continue
        cal, source = cost.calibration_for(backend_name(xp))
        row.update(
            available=True,
            version=_version(_PACKAGES.get(name, name)),
            strategies=eligible_strategies(xp),
            calibration_source=source,
            calibration=cal.describe(),
            calibration_origin=cal.source,
        )
        rows.append(row)
    return rows


def compiled_info() -> dict[str, Any]:
    """Whether NumPy runs the compiled loops (naive's depthwise layers, Winograd's
    transforms): ``enabled``, and the
    numba version, or why not (and the ``pip install`` line where numba is missing)."""
    if naive.compiled_switched_off():
        setting = f"{naive.ENV_NUMBA}={os.environ[naive.ENV_NUMBA]}"
        return {"enabled": False, "reason": f"off ({setting})"}
    if importlib.util.find_spec("numba") is None:
        return {"enabled": False, "install": 'pip install "arraycnn[numba]"'}
    if naive.compiled_kernels() is None:
        return {"enabled": False, "reason": "numba is installed but does not load"}
    return {"enabled": True, "version": _version("numba")}


def collect() -> dict[str, Any]:
    """Everything ``arraycnn info`` shows, as a dict."""
    entries = measured.cache_entries()
    files, size = cache_usage(cache_dir())
    return {
        "arraycnn": __version__,
        "backends": backends_info(),
        "compiled_depthwise": compiled_info(),
        "cache_dir": str(cache_dir()),
        "cache_files": files,
        "cache_bytes": size,
        "calibration_file": str(cost.calibration_path()),
        "calibration_file_exists": cost.calibration_path().exists(),
        "autotune_enabled": autotune_enabled(),
        "autotune_cache": str(measured.cache_path()),
        "autotune_entries": len(entries),
        "entries": entries,
        "workspace_budget_bytes": budget.workspace_limit(),
    }


def run(args: argparse.Namespace) -> int:
    """Run ``arraycnn info``."""
    if args.clear_cache:
        removed = measured.clear_cache()
        print(f"autotune cache cleared: {removed} entries removed ({measured.cache_path()})")
        return 0
    info = collect()
    if args.json:
        if not args.entries:
            info.pop("entries")
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(format_text(info, entries=args.entries))
    return 0


def _cost_model_line(row: dict[str, Any]) -> str:
    if row["calibration_source"] == "user":
        return f"  {row['backend']:<17} fitted on this machine by 'arraycnn tune'"
    return f"  {row['backend']:<17} shipped constants; 'arraycnn tune' fits it to this machine"


def format_text(info: dict[str, Any], *, entries: bool = False) -> str:
    """``arraycnn info``'s text from :func:`collect`'s dict (``entries``: list the
    autotuned choices)."""
    usable = [row for row in info["backends"] if row["available"]]
    missing = [row for row in info["backends"] if not row["available"]]
    header = "Backends usable here (backend=... / --backend), version, strategies:"
    lines = [f"arraycnn {info['arraycnn']}", "", header]
    for row in usable:
        names = ", ".join(row["strategies"])
        lines.append(f"  {row['backend']:<17} {row['version']:<12} {names}")
    if missing:
        lines.append("Not usable here:")
        for row in missing:
            lines.append(f"  {row['backend']:<17} {row.get('install') or row['reason']}")
    compiled = info["compiled_depthwise"]
    if compiled["enabled"]:
        state = f"on (numba {compiled['version']})"
    else:
        state = compiled.get("install") or compiled["reason"]
    lines.append(f"Compiled loops (NumPy: depthwise, Winograd): {state}")
    lines.append('Cost model (picks the strategy of strategy="auto"):')
    lines.extend(_cost_model_line(row) for row in usable)
    size = budget.format_bytes(info["cache_bytes"])
    lines.append(f"Cache directory: {info['cache_dir']}")
    lines.append(f"  {info['cache_files']} files, {size} (${ENV_CACHE_DIR} moves it)")
    state = "on" if info["autotune_enabled"] else "off"
    lines.append(
        f"  autotune {state}: {info['autotune_entries']} choices remembered "
        "(--entries lists, --clear-cache forgets)"
    )
    if entries:
        for key, entry in sorted(info["entries"].items()):
            lines.append(f"    {key} -> {entry['strategy']}")
    lines.append(
        f"Workspace budget: {budget.format_bytes(info['workspace_budget_bytes'])} "
        "(arraycnn.config(workspace_limit=...) changes it)"
    )
    return "\n".join(lines)
