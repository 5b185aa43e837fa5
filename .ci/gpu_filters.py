"""GPU check, step filters: the filtering grid (arraycnn.tools.cases.FILTERS: image sides x
kernel sides x Gaussian / random kernels, float32, 'same' output, zero boundary) on CuPy,
``arraycnn.correlate2d`` with every strategy and ``auto`` against ``cupyx.scipy.signal`` and
``cupyx.scipy.ndimage``.

Peers (kernels flipped for the convolutions, so that every contender computes the same
correlation): ``signal.correlate2d``, ``signal.fftconvolve``, ``signal.oaconvolve``,
``signal.convolve(method="auto")`` and ``ndimage.correlate(mode="constant")``. ``rel_err`` is
each output against ``signal.fftconvolve``'s. Timing as in gpu_bench.py. Cases run image-major
(small images first) until the step's budget is spent.

Usage: python .ci/gpu_filters.py --json filters.json [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from gpu_common import (  # .ci/, the script's folder, is on sys.path
    STANDIN,
    Deadline,
    Report,
    array_backend,
    free_device_memory,
    geometric_mean,
    skip,
    time_case,
)

REFERENCE = "signal.fftconvolve"


def scipy_modules(backend: str) -> tuple[Any, Any]:
    """(signal, ndimage): cupyx.scipy's for CuPy, SciPy's for the NumPy stand-in."""
    if backend == "cupy":
        from cupyx.scipy import ndimage, signal
    else:
        from scipy import ndimage, signal
    return signal, ndimage


def peer_calls(signal: Any, ndimage: Any, image: Any, kernel: Any) -> dict[str, Any]:
    """The SciPy-API peers on one image (H, W) and kernel (k, k), output (H, W)."""
    flipped = kernel[::-1, ::-1].copy()  # convolution = correlation with the flipped kernel
    return {
        "signal.correlate2d": lambda: signal.correlate2d(image, kernel, mode="same"),
        "signal.fftconvolve": lambda: signal.fftconvolve(image, flipped, mode="same"),
        "signal.oaconvolve": lambda: signal.oaconvolve(image, flipped, mode="same"),
        "signal.convolve.auto": lambda: signal.convolve(image, flipped, mode="same", method="auto"),
        "ndimage.correlate": lambda: ndimage.correlate(image, kernel, mode="constant"),
    }


def strategy_calls(ac: Any, backend: str, image: Any, kernel: Any) -> dict[str, Any]:
    """``arraycnn.correlate2d`` with each strategy and ``auto``, output (H, W)."""

    def call(strategy: str) -> Any:
        return lambda: ac.correlate2d(image, kernel, mode="same", strategy=strategy)

    return {f"{backend}:{s}": call(s) for s in [*ac.available_strategies(backend), "auto"]}


def case_summary(case: Any, backend: str, results: dict[str, dict]) -> dict[str, Any]:
    """``auto`` against the best strategy and the fastest peer of one case."""
    ms = {name: r["ms"] for name, r in results.items() if r.get("ms")}
    auto = ms.get(f"{backend}:auto")
    mine = {n: t for n, t in ms.items() if n.startswith(f"{backend}:") and not n.endswith("auto")}
    peers = {n: t for n, t in ms.items() if not n.startswith(f"{backend}:")}
    best = min(mine, key=mine.get) if mine else None
    peer = min(peers, key=peers.get) if peers else None
    return {
        "case": case.label,
        "auto_ms": auto,
        "best_strategy": best,
        "best_strategy_ms": mine.get(best),
        "best_peer": peer,
        "best_peer_ms": peers.get(peer),
        "auto_over_best_peer": round(auto / peers[peer], 3) if auto and peer else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="the step's report")
    parser.add_argument("--seconds", type=float, default=60.0, help="the step's budget")
    parser.add_argument("--images", default=None, help="image sides, e.g. 256,1024")
    parser.add_argument("--kernels", default=None, help="kernel sides, e.g. 3,15")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds at least")
    parser.add_argument("--min-seconds", type=float, default=0.1, help="timing per case")
    parser.add_argument("--slow-seconds", type=float, default=0.25, help="no rounds above")
    args = parser.parse_args(argv)
    deadline = Deadline(args.seconds)

    backend, reason = array_backend()
    if backend is None:
        return skip(args.json, reason)

    import arraycnn as ac
    from arraycnn.tools import cases

    grid = cases.FILTERS
    images = [int(v) for v in args.images.split(",")] if args.images else grid.images
    kernels = [int(v) for v in args.kernels.split(",")] if args.kernels else grid.kernels
    todo = cases.FilterGrid(tuple(images), tuple(kernels)).cases()
    signal, ndimage = scipy_modules(backend)
    report = Report(
        args.json,
        status="running",
        standin=STANDIN,
        backend=backend,
        dtype="float32",
        reference=REFERENCE,
        strategies=ac.available_strategies(backend),
        cases=[],
        summary=[],
        geomean_auto_over_best_peer=None,
        not_run=[],
    )
    for case in todo:
        if deadline.left() < 3:
            report.data["not_run"].append(case.label)
            report.flush()
            continue
        print(f"{case.label} ...", flush=True)
        x, w, _ = cases.host_arrays(case)

        def make_calls(x=x, w=w) -> dict:
            image = ac.asarray(np.ascontiguousarray(x[0, 0]), backend=backend)  # (H, W)
            kernel = ac.asarray(np.ascontiguousarray(w[0, 0]), backend=backend)  # (k, k)
            calls = strategy_calls(ac, backend, image, kernel)
            calls.update(peer_calls(signal, ndimage, image, kernel))
            return calls

        results = time_case(make_calls, REFERENCE, args, deadline)
        report.data["cases"].append({"case": case.label, "contenders": results})
        report.data["summary"].append(case_summary(case, backend, results))
        ratios = [row["auto_over_best_peer"] for row in report.data["summary"]]
        report.update(geomean_auto_over_best_peer=geometric_mean(ratios))
        for name, r in results.items():
            print(f"  {name:22s} {r}", flush=True)
        free_device_memory()

    report.update(status="done")
    print(
        f"geometric mean of auto / the fastest peer: {report.data['geomean_auto_over_best_peer']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
