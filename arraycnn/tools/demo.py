"""``arraycnn demo``: every strategy on one input, their agreement and their time."""

from __future__ import annotations

import argparse
import time

import numpy as np

from .backend import asarray, resolve_backend, synchronize, to_numpy
from .conv import available_strategies, choose_strategy, conv2d


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn demo``."""
    parser.add_argument("--backend", default="numpy", help="numpy, torch, cupy, array_api_strict")
    parser.add_argument("--shape", default="8,16,64,64", help="input N,C,H,W")
    parser.add_argument("--filters", type=int, default=32, help="output channels F")
    parser.add_argument("--kernel", type=int, default=5, help="kernel size k (k x k)")
    parser.add_argument("--padding", default="same", help="int or valid/same/full")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per strategy (median)")


def _median_seconds(fn, repeat: int, like) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        synchronize(out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(args: argparse.Namespace) -> int:
    """Run the demo; print a table of strategies, error against the reference and time."""
    xp = resolve_backend(args.backend)
    n, c, h, w = (int(v) for v in args.shape.split(","))
    padding = int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((n, c, h, w)).astype(args.dtype)
    w_host = rng.standard_normal((args.filters, c, args.kernel, args.kernel)).astype(args.dtype)
    x = asarray(x_host, backend=xp)
    wt = asarray(w_host, backend=xp)
    kw = {"stride": args.stride, "padding": padding}
    reference = to_numpy(
        conv2d(
            asarray(x_host.astype(np.float64), backend=xp),
            asarray(w_host.astype(np.float64), backend=xp),
            strategy="naive",
            **kw,
        )
    )
    scale = float(np.abs(reference).max())
    print(f"conv2d x{(n, c, h, w)} w{tuple(w_host.shape)} {kw} {args.dtype} on {args.backend}")
    print(f"{'strategy':<14} {'max rel. error':>15} {'median ms':>10}")
    names = [*available_strategies(xp), "auto"]
    for name in names:
        fn = lambda name=name: conv2d(x, wt, strategy=name, **kw)  # noqa: E731
        y = fn()  # warm-up, and the result we check
        err = float(np.abs(to_numpy(y).astype(np.float64) - reference).max()) / scale
        ms = 1e3 * _median_seconds(fn, args.repeat, y)
        label = f"auto->{choose_strategy(x, wt, **kw)}" if name == "auto" else name
        print(f"{label:<14} {err:>15.2e} {ms:>10.2f}")
    return 0
