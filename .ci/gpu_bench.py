"""GPU check, step bench: the reference conv layers (arraycnn.tools.cases.LAYERS), forward and
backward, float32, for every CuPy strategy, CuPy ``auto`` and torch's cuDNN, side by side.

``arraycnn bench`` times its torch peer on the CPU (one thread, NumPy-backed tensors), so this
script times the GPU contenders itself, with the project's timing primitive
(``arraycnn.timing.interleaved_medians``: synchronised calls, interleaved rounds, medians):

- ``cupy:<strategy>`` and ``cupy:auto``: ``arraycnn.conv2d`` / ``conv2d_backward`` on CuPy
  arrays;
- ``torch``: ``torch.nn.functional.conv2d`` / ``aten.convolution_backward`` on CUDA tensors
  with torch's defaults (no cuDNN autotuner, TF32 allowed for convolutions);
- ``torch.benchmark``: the same with ``cudnn.benchmark = True`` (what cuDNN users set);
- ``torch.fp32``: ``cudnn.benchmark = True`` and IEEE float32 (no TF32): the precision CuPy
  computes in, the reference of the goal (``auto`` forward + backward within 2x, geometric
  mean over the layers) and of every output's ``rel_err``.

``first_ms`` is each contender's first call (planning, CuPy kernel compilation and
autotuning included); ``ms`` the median of the rounds after it.

Usage: python .ci/gpu_bench.py --json bench.json [--seconds 100] [--layers all]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpu_common import (  # .ci/, the script's folder, is on sys.path
    STANDIN,
    Deadline,
    Report,
    array_backend,
    cudnn_settings,
    free_device_memory,
    geometric_mean,
    skip,
    time_case,
    torch_device,
)

#: The goal: CuPy ``auto`` forward + backward at most this many times torch's (geometric mean).
GOAL_RATIO = 2.0
#: The torch contenders: (benchmark, tf32) settings of cuDNN.
TORCH_VARIANTS = {
    "torch": (False, True),
    "torch.benchmark": (True, True),
    "torch.fp32": (True, False),
}
REFERENCE = "torch.fp32"


def torch_calls(torch: Any, device: str, case: Any, x, w, gy, direction: str) -> dict:
    """The torch contenders of one case and direction (inputs: host NumPy arrays)."""
    from arraycnn.tools.peers import torch_conv_call  # arraycnn imported once found usable

    tx, tw, tgy = (torch.from_numpy(a).to(device) for a in (x, w, gy))
    run = torch_conv_call(torch, case, tx, tw, tgy if direction == "backward" else None)

    def variant(benchmark: bool, tf32: bool) -> Any:
        def call() -> Any:
            with cudnn_settings(torch, benchmark=benchmark, tf32=tf32):
                return run()

        return call

    return {name: variant(*flags) for name, flags in TORCH_VARIANTS.items()}


def array_calls(ac: Any, backend: str, case: Any, x, w, gy, direction: str) -> dict:
    """The CuPy contenders (each strategy and ``auto``) of one case and direction."""
    strategies = ac.available_strategies(backend)
    cx, cw, cgy = (ac.asarray(a, backend=backend) for a in (x, w, gy))

    def contender(strategy: str) -> Any:
        if direction == "forward":
            return lambda: ac.conv2d(cx, cw, strategy=strategy, **case.kwargs)
        return lambda: ac.conv2d_backward(cgy, cx, cw, strategy=strategy, **case.kwargs)

    return {f"{backend}:{s}": contender(s) for s in [*strategies, "auto"]}


def layer_summary(label: str, backend: str, forward: dict, backward: dict) -> dict[str, Any]:
    """``auto`` and the best strategy against each torch variant, forward + backward."""

    def total(name: str) -> float | None:
        f, b = forward.get(name, {}).get("ms"), backward.get(name, {}).get("ms")
        return None if f is None or b is None else f + b

    auto = f"{backend}:auto"
    strategies = [n for n in forward if n.startswith(f"{backend}:") and n != auto]
    totals = {n: total(n) for n in strategies}
    timed = {n: t for n, t in totals.items() if t is not None}
    best = min(timed, key=timed.get) if timed else None
    row: dict[str, Any] = {"layer": label, "auto_ms": total(auto), "best_strategy": best}
    row["best_strategy_ms"] = timed.get(best) if best else None
    for name in TORCH_VARIANTS:
        theirs = total(name)
        row[f"{name}_ms"] = theirs
        mine = row["auto_ms"]
        row[f"auto_over_{name}"] = round(mine / theirs, 3) if mine and theirs else None
    return row


def goal(layers: list[dict[str, Any]], wanted: int) -> dict[str, Any]:
    """The geometric mean of ``auto`` over the reference, and the goal: met, missed, or None
    while a layer is missing."""
    ratios = [row[f"auto_over_{REFERENCE}"] for row in layers]
    ratio = geometric_mean(ratios)
    complete = len(ratios) == wanted and all(ratios)
    return {
        "geomean_auto_over_reference": ratio,
        "goal": {
            "what": f"CuPy auto forward+backward within {GOAL_RATIO}x of {REFERENCE} "
            "(geometric mean over the reference layers)",
            "geomean": ratio,
            "met": (ratio is not None and ratio <= GOAL_RATIO) if complete else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="the step's report")
    parser.add_argument("--seconds", type=float, default=100.0, help="the step's budget")
    parser.add_argument("--layers", default="all", help="all, or comma-separated labels")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds at least")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="timing per case")
    parser.add_argument("--slow-seconds", type=float, default=0.5, help="no rounds above")
    args = parser.parse_args(argv)
    deadline = Deadline(args.seconds)

    backend, backend_reason = array_backend()
    torch, device, torch_reason = torch_device()
    if backend is None:
        return skip(args.json, backend_reason, torch_cuda=torch_reason or "usable")

    import arraycnn as ac
    from arraycnn.tools import cases

    labels = list(cases.LAYERS) if args.layers == "all" else args.layers.split(",")
    report = Report(
        args.json,
        status="running",
        standin=STANDIN,
        backend=backend,
        torch_device=device,
        dtype="float32",
        strategies=ac.available_strategies(backend),
        torch_variants={n: {"benchmark": b, "tf32": t} for n, (b, t) in TORCH_VARIANTS.items()},
        reference=REFERENCE,
        torch_skipped=torch_reason,
        cases=[],
        layers=[],
        not_run=[],
    )
    for label in labels:
        case = cases.LAYERS[label]
        x, w, gy = cases.host_arrays(case)
        measured: dict[str, dict] = {}
        for direction in ("forward", "backward"):
            if deadline.left() < 5:
                report.data["not_run"].append(f"{label} {direction}: the step's budget is spent")
                report.flush()
                continue
            print(f"{label} {direction} ...", flush=True)

            def make_calls(case=case, x=x, w=w, gy=gy, direction=direction) -> dict:
                calls = array_calls(ac, backend, case, x, w, gy, direction)
                if torch is not None:
                    calls.update(torch_calls(torch, device, case, x, w, gy, direction))
                return calls

            reference = REFERENCE if torch is not None else f"{backend}:auto"
            results = time_case(make_calls, reference, args, deadline)
            measured[direction] = results
            entry = {"layer": label, "direction": direction, "contenders": results}
            report.data["cases"].append(entry)
            report.flush()
            for name, r in results.items():
                print(f"  {name:18s} {r}", flush=True)
            free_device_memory()
        if len(measured) == 2 and torch is not None:
            summary = layer_summary(label, backend, measured["forward"], measured["backward"])
            report.data["layers"].append(summary)
            report.update(**goal(report.data["layers"], len(labels)))

    report.update(status="done", **goal(report.data["layers"], len(labels)))
    print(f"geometric mean of auto / {REFERENCE} (forward + backward): {report.data['goal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
