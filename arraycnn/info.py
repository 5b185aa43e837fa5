"""``arraycnn info``: backends, strategies, the dispatcher's calibration and autotune cache.

``arraycnn info --clear-cache`` forgets every autotuned choice (memory and disk).
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from . import budget
from ._version import __version__
from .backend import BACKEND_NAMES, backend_name, resolve_backend
from .conv import cost, measured
from .conv.table import eligible_strategies
from .settings import autotune_enabled, cache_dir

_PACKAGES = {
    "numpy": "numpy",
    "cupy": "cupy",
    "torch": "torch",
    "jax": "jax",
    "array_api_strict": "array_api_strict",
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


def backends_info() -> list[dict[str, Any]]:
    """Every known backend: available or why not, version, strategies, calibration in use."""
    rows = []
    for name in BACKEND_NAMES:
        row: dict[str, Any] = {"backend": name}
        try:
            xp = resolve_backend(name)
        except (RuntimeError, ValueError, TypeError) as exc:
            row.update(available=False, reason=str(exc))
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


def collect() -> dict[str, Any]:
    """Everything ``arraycnn info`` shows, as a dict."""
    entries = measured.cache_entries()
    return {
        "arraycnn": __version__,
        "backends": backends_info(),
        "cache_dir": str(cache_dir()),
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
    print(f"arraycnn {info['arraycnn']}")
    print("backends:")
    for row in info["backends"]:
        if not row["available"]:
            print(f"  {row['backend']:<17} unavailable: {row['reason']}")
            continue
        names = ", ".join(row["strategies"])
        print(f"  {row['backend']:<17} {row['version']:<10} strategies: {names}")
        print(f"    calibration ({row['calibration_source']}): {row['calibration']}")
        print(f"    from: {row['calibration_origin']}")
    exists = "" if info["calibration_file_exists"] else " (absent: shipped constants in use)"
    print(f"calibration file: {info['calibration_file']}{exists}")
    print(f"workspace budget: {budget.format_bytes(info['workspace_budget_bytes'])}")
    state = "on" if info["autotune_enabled"] else "off"
    print(f"autotune: {state}; cache {info['autotune_cache']}: {info['autotune_entries']} entries")
    if args.entries:
        for key, entry in sorted(info["entries"].items()):
            print(f"  {key} -> {entry['strategy']}")
    return 0
