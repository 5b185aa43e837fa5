"""``arraycnn demo``: every strategy on one input, their agreement and their time.

The reference is the naive strategy in float64; times are medians of interleaved rounds
(:func:`arraycnn.timing.interleaved_medians`).
"""

from __future__ import annotations

import argparse

import numpy as np

from ..backend import asarray, resolve_backend, to_numpy
from ..budget import WorkspaceError
from ..cli import UsageError
from ..conv import available_strategies, choose_strategy, conv2d
from ..geometry import conv_geometry
from ..timing import interleaved_medians
from .cases import seeded
from .options import backend_list, positive_int, positive_int_list

__all__ = ["add_arguments", "run"]


def _one_backend(text: str) -> str:
    names = backend_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one backend, got {text!r}")
    return names[0]


def _shape(text: str) -> tuple[int, int, int, int]:
    values = positive_int_list(text)
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected four positive integers N,C,H,W, got {text!r}")
    return (values[0], values[1], values[2], values[3])


def _padding(text: str) -> int | str:
    if text in ("valid", "same", "full"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0 or valid/same/full, got {text!r}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn demo``.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--shape", "2,3,16,16", "--padding", "1"])
    >>> args.shape, args.padding, args.backend
    ((2, 3, 16, 16), 1, 'numpy')
    """
    parser.add_argument(
        "--backend",
        type=_one_backend,
        default="numpy",
        help="array library: numpy, torch, cupy, jax, array_api_strict",
    )
    parser.add_argument(
        "--shape",
        type=_shape,
        default=(8, 16, 64, 64),
        help="input shape N,C,H,W (default: 8,16,64,64)",
    )
    parser.add_argument("--filters", type=positive_int, default=32, help="output channels F")
    parser.add_argument("--kernel", type=positive_int, default=5, help="kernel size k (k x k)")
    parser.add_argument("--padding", type=_padding, default="same", help="int or valid/same/full")
    parser.add_argument("--stride", type=positive_int, default=1, help="stride of the convolution")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "float64"), help="floating-point type"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=5, help="timed rounds per strategy (median)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; print a table of strategies, error against the reference and time.

    A backend that is not usable here, or a geometry that does not fit (a kernel larger than
    the padded image), is a usage error.
    """
    try:
        xp = resolve_backend(args.backend)
    except RuntimeError as exc:
        raise UsageError(f"argument --backend: {exc}") from None
    n, c, h, w = args.shape
    padding = args.padding
    try:
        conv_geometry(
            (n, c, h, w),
            (args.filters, c, args.kernel, args.kernel),
            stride=args.stride,
            padding=padding,
        )
    except ValueError as exc:
        raise UsageError(f"the options do not make a convolution: {exc}") from None
    x_host = seeded((n, c, h, w), np.float64, seed=0)
    w_host = seeded((args.filters, c, args.kernel, args.kernel), np.float64, seed=1)
    kw = {"stride": args.stride, "padding": padding}
    try:
        reference = to_numpy(
            conv2d(asarray(x_host, backend=xp), asarray(w_host, backend=xp), strategy="naive", **kw)
        )
    except WorkspaceError as exc:
        raise UsageError(f"argument --shape: {exc}") from None
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
