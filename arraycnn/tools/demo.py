"""``arraycnn demo``: every strategy on one input, their agreement and their time.

The reference is the naive strategy in float64; times are medians of interleaved rounds
(:func:`arraycnn.timing.interleaved_medians`).
"""

from __future__ import annotations

import argparse

import numpy as np

from ..backend import asarray, resolve_backend, to_numpy
from ..conv import available_strategies, choose_strategy, conv2d
from ..timing import interleaved_medians
from .cases import seeded

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn demo``."""
    parser.add_argument("--backend", default="numpy", help="numpy, torch, cupy, array_api_strict")
    parser.add_argument("--shape", default="8,16,64,64", help="input N,C,H,W")
    parser.add_argument("--filters", type=int, default=32, help="output channels F")
    parser.add_argument("--kernel", type=int, default=5, help="kernel size k (k x k)")
    parser.add_argument("--padding", default="same", help="int or valid/same/full")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per strategy (median)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; print a table of strategies, error against the reference and time."""
    xp = resolve_backend(args.backend)
    n, c, h, w = (int(v) for v in args.shape.split(","))
    padding = int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
    x_host = seeded((n, c, h, w), np.float64, seed=0)
    w_host = seeded((args.filters, c, args.kernel, args.kernel), np.float64, seed=1)
    kw = {"stride": args.stride, "padding": padding}
    reference = to_numpy(
        conv2d(asarray(x_host, backend=xp), asarray(w_host, backend=xp), strategy="naive", **kw)
    )
    scale = float(np.abs(reference).max())
    x = asarray(x_host.astype(args.dtype), backend=xp)
    wt = asarray(w_host.astype(args.dtype), backend=xp)
    names = [*available_strategies(xp), "auto"]
    errors = {}
    for name in names:
        y = to_numpy(conv2d(x, wt, strategy=name, **kw)).astype(np.float64)
        errors[name] = float(np.abs(y - reference).max()) / scale
    calls = {name: (lambda name=name: conv2d(x, wt, strategy=name, **kw)) for name in names}
    medians = interleaved_medians(calls, max(args.repeat, 1))
    print(f"conv2d x{(n, c, h, w)} w{tuple(w_host.shape)} {kw} {args.dtype} on {args.backend}")
    print(f"{'strategy':<14} {'max rel. error':>15} {'median ms':>10}")
    for name in names:
        label = f"auto->{choose_strategy(x, wt, **kw)}" if name == "auto" else name
        print(f"{label:<14} {errors[name]:>15.2e} {1e3 * medians[name]:>10.2f}")
    return 0
