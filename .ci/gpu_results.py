"""GPU check, the summary: gathers the machine's facts, each step's status and figures into
``results.json`` in the output folder (docs/gpu.md describes its fields).

Inputs, from .ci/gpu-check's work folder: ``env.json`` (gpu_env.py), ``steps.tsv`` (one line
per step: name, status, seconds, exit code, time limit, reason), ``nvidia-smi.txt``, the
step reports ``bench.json``, ``filters.json``, ``mnist.json``, and ``tests.xml`` (pytest's
JUnit XML) in the output folder. Only the standard library: it must run whatever else is broken.

Usage: python .ci/gpu_results.py --work DIR --out DIR --budget 480 --started ISO --commit REV
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

#: The steps in order, and the file of each one's figures (relative to the work folder).
STEPS = ("setup", "tests", "bench", "filters", "mnist")
FIGURES = {"bench": "bench.json", "filters": "filters.json", "mnist": "mnist.json"}
#: Failing tests listed in full at most.
MAX_FAILURES = 100


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: Path) -> dict[str, dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, status, seconds, code, limit, reason = (line.split("\t") + [""] * 6)[:6]
            steps[name] = {
                "status": status,
                "seconds": int(seconds) if seconds.isdigit() else None,
                "exit_code": int(code) if code.lstrip("-").isdigit() else None,
                "limit_seconds": int(limit) if limit.isdigit() else None,
                "reason": reason or None,
            }
    return steps


def backends_of(name: str) -> list[str]:
    """The matrix backends in a test's parameter id (``test_x[cupy-3]`` -> ['cupy'])."""
    match = re.search(r"\[(.*)\]$", name)
    parts = match.group(1).split("-") if match else []
    return [p for p in parts if p in ("cupy", "torch", "numpy", "array_api_strict")]


def junit_summary(path: Path) -> dict[str, Any] | None:
    """Counts (all, and per backend) and the failing tests of pytest's JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    by_backend: dict[str, dict[str, int]] = {}
    failures: list[dict[str, str]] = []
    skip_reasons: dict[str, int] = {}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0][:300] if message else ""
                break
        counts[outcome] += 1
        name = case.get("name", "")
        for backend in backends_of(name) or ["none"]:
            row = by_backend.setdefault(backend, dict.fromkeys(counts, 0))
            row[outcome] += 1
        if outcome in ("failed", "error"):
            test = f"{case.get('classname', '')}::{name}"
            failures.append({"test": test, "outcome": outcome, "message": message})
        elif outcome == "skipped":
            skip_reasons[message] = skip_reasons.get(message, 0) + 1
    return {
        "counts": counts,
        "by_backend": by_backend,
        "failures": failures[:MAX_FAILURES],
        "failures_left_out": max(0, len(failures) - MAX_FAILURES),
        "skip_reasons": dict(sorted(skip_reasons.items(), key=lambda kv: -kv[1])[:20]),
    }


def goals(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, each True, False or None (not measured)."""
    tests = steps.get("tests", {}).get("junit") or {}
    counts = tests.get("counts")
    ran = counts and (counts["passed"] + counts["failed"] + counts["error"]) > 0
    complete = steps.get("tests", {}).get("status") in ("ok", "failed")
    green = (counts["failed"] + counts["error"] == 0) if ran and complete else None
    bench = steps.get("bench", {}).get("figures") or {}
    mnist = steps.get("mnist", {}).get("figures") or {}
    return {
        "tests_green_on_gpu": green,
        "auto_within_2x_of_cudnn": (bench.get("goal") or {}).get("met"),
        "auto_over_cudnn_geomean": bench.get("geomean_auto_over_reference"),
        "mnist_epoch_within_2x_of_torch_cuda": (mnist.get("goal") or {}).get("met"),
        "mnist_arraycnn_over_torch": mnist.get("arraycnn_over_torch"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--started", required=True)
    parser.add_argument("--seconds", type=int, required=True, help="the check's seconds")
    parser.add_argument("--commit", default="")
    args = parser.parse_args(argv)

    steps = read_steps(args.work / "steps.tsv")
    for name in STEPS:
        step = steps.setdefault(
            name, {"status": "not run", "reason": "the check stopped before this step"}
        )
        if (args.out / f"{name}.log").exists():
            step["log"] = f"{name}.log"
        if name in FIGURES:
            step["figures"] = read_json(args.work / FIGURES[name])
        if name == "tests":
            step["junit"] = junit_summary(args.out / "tests.xml")
    smi = args.work / "nvidia-smi.txt"
    machine = {
        "nvidia_smi": smi.read_text().strip() if smi.exists() else None,
        **(read_json(args.work / "env.json") or {"error": "the probe wrote nothing"}),
    }
    results = {
        "check": "arraycnn GPU check (.ci/gpu-check)",
        "started": args.started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": args.seconds,
        "budget_seconds": args.budget,
        "commit": args.commit or None,
        "standin": os.environ.get("ARRAYCNN_GPU_CHECK_STANDIN") == "1",
        "goals": goals(steps),
        "steps": steps,
        "machine": machine,
    }
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    width = max(len(n) for n in STEPS)
    for name in STEPS:
        step = steps[name]
        took = f"{step['seconds']} s" if step.get("seconds") is not None else ""
        print(f"  {name:{width}s}  {step['status']:8s} {took:>6s}  {step.get('reason') or ''}")
    print(f"  goals: {json.dumps(results['goals'])}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
