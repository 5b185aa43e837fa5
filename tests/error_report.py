"""Largest error of every convolution strategy against the oracles, per dtype.

Run ``python tests/error_report.py [--count 200] [--seed 2024] [--backend numpy]``.

Over a fixed, seeded set of random fitting geometries (:func:`geometries.seeded_cases`:
N 1-3, groups 1-3, C and F 1-4 per group, H and W 1-24, kernels 1-7, stride and dilation
1-3 per axis, every padding form) it runs each strategy's forward (y) and backward (gx, gw)
in float32 and float64 and prints the largest error relative to two scales:

- *local*: ``|err| / sum |x||w|`` elementwise (the rounding scale of a plain sum of
  products; the oracle on absolute values). Elements whose local scale is 0 (the exact
  result is 0 because the window sees only padding, or an input pixel no window touches)
  are left out of the ratio and counted in ``zero-scale``: the number of such elements
  with a nonzero error, and the largest absolute error there.
- *kernel*: ``|err| / sum_window |x| |w_fc|_F`` (:func:`oracles.kernel_scales`), the scale
  of a factorized kernel whose factors are exact only to ``eps * |w_fc|`` (separable).
- *map*: ``|err| / sum_c |x_nc|_2 |w_fc|_2`` (whole-map norms, :func:`oracles.norm_scales`),
  the scale of a transform whose rounding spreads over the maps (FFT).

``model`` is the strategy's error model in :data:`oracles.ERROR_MODEL`, the scale the
test-suite holds it to; ``ok`` says whether the largest error on that scale is within the
dtype's ``rtol``.

The reference is the scipy.signal oracle in float64 on the same (rounded) inputs. The last
column gives the per-dtype ``rtol`` of ``arraycnn.testing`` that the test-suite applies.
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import oracles
from geometries import seeded_cases

import arraycnn as ac
from arraycnn.backend import asarray, to_numpy
from arraycnn.testing import tolerance

DTYPES = ("float32", "float64")
RESULTS = ("y", "gx", "gw")


class Worst:
    """Running maxima for one (strategy, dtype, result)."""

    def __init__(self) -> None:
        self.local = 0.0
        self.local_case = ""
        self.kernel = 0.0
        self.norm = 0.0
        self.zero_count = 0
        self.zero_abs = 0.0

    def update(self, err, local, kernel, norm, case) -> None:
        positive = local > 0
        if positive.any():
            ratio = float(np.max(err[positive] / local[positive]))
            if ratio > self.local:
                self.local, self.local_case = ratio, repr(case)
        kernel = np.maximum(kernel, local)
        if (kernel > 0).any():
            self.kernel = max(self.kernel, float(np.max(err[kernel > 0] / kernel[kernel > 0])))
        self.norm = max(self.norm, float(np.max(err / np.maximum(norm, 1e-300))))
        zero_err = err[~positive]
        if zero_err.size:
            self.zero_count += int(np.sum(zero_err > 0))
            self.zero_abs = max(self.zero_abs, float(zero_err.max()))


def measure(count: int, seed: int, backend: str) -> dict:
    xp = ac.resolve_backend(backend)
    strategies = ac.available_strategies(xp)
    worst = {(s, d, r): Worst() for s in strategies for d in DTYPES for r in RESULTS}
    for case in seeded_cases(count, seed):
        for dtype in DTYPES:
            x, w, _, gy = case.data(np.dtype(dtype), bias=False)
            y_ref = oracles.correlate_scipy(x, w, **case.kwargs)
            gx_ref, gw_ref, _ = oracles.correlate_scipy_backward(gy, x, w, **case.kwargs)
            local = oracles.error_scales(x, w, None, gy, **case.kwargs)[:3]
            kernel = oracles.kernel_scales(x, w, None, gy, **case.kwargs)[:3]
            norm = oracles.norm_scales(x, w, None, gy, **case.kwargs)[:3]
            tx, tw, tgy = (asarray(a, backend=xp, dtype=dtype) for a in (x, w, gy))
            for name in strategies:
                y = ac.conv2d(tx, tw, strategy=name, **case.kwargs)
                gx, gw, _ = ac.conv2d_backward(tgy, tx, tw, strategy=name, **case.kwargs)
                for label, got, ref, ls, ks, ns in zip(
                    RESULTS, (y, gx, gw), (y_ref, gx_ref, gw_ref), local, kernel, norm
                ):
                    err = np.abs(to_numpy(got).astype(np.float64) - ref)
                    worst[name, dtype, label].update(err, ls, ks, ns, case)
    return worst


def table(worst: dict, strategies: list[str]) -> str:
    head = (
        f"{'strategy':<10} {'dtype':<8} {'res':<3} {'local':>9} {'/eps':>8} {'kernel':>9} "
        f"{'/eps':>6} {'map':>9} {'/eps':>5} {'zero-scale n':>12} {'max |err|':>9} "
        f"{'model':>6} {'rtol':>6} {'ok':>3}"
    )
    lines = [head, "-" * len(head)]
    for name in strategies:
        for dtype in DTYPES:
            eps = float(np.finfo(dtype).eps)
            rtol, _ = tolerance(dtype)
            for label in RESULTS:
                wv = worst[name, dtype, label]
                model = oracles.ERROR_MODEL.get(name, {}).get(label, "?")
                held = {"local": wv.local, "kernel": wv.kernel, "map": wv.norm}.get(model)
                if model == "local" and wv.zero_count:
                    held = float("inf")  # nonzero error where the exact result and scale are 0
                ok = "?" if held is None else ("yes" if held <= rtol else "NO")
                lines.append(
                    f"{name:<10} {dtype:<8} {label:<3} {wv.local:9.2e} {wv.local / eps:8.1f} "
                    f"{wv.kernel:9.2e} {wv.kernel / eps:6.1f} {wv.norm:9.2e} {wv.norm / eps:5.1f} "
                    f"{wv.zero_count:12d} {wv.zero_abs:9.2e} {model:>6} {rtol:6.0e} {ok:>3}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="number of geometries")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the geometry list")
    parser.add_argument("--backend", default="numpy", help="backend name")
    parser.add_argument("--cases", action="store_true", help="print the worst local case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    worst = measure(args.count, args.seed, args.backend)
    strategies = ac.available_strategies(args.backend)
    print(
        f"{args.count} geometries (seed {args.seed}), backend {args.backend}, "
        f"reference scipy.signal in float64; {time.perf_counter() - start:.1f} s"
    )
    print(table(worst, strategies))
    if args.cases:
        for key, wv in worst.items():
            print(*key, wv.local_case)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
