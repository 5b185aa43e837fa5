"""``arraycnn bench``: every strategy, ``auto`` and the peers on a compact grid of cases.

For each case (the reference conv layers, forward and backward, and single-image filtering
over image size x kernel size x kernel kind: :mod:`.cases`) every contender -- each
strategy on each backend, ``auto`` on each backend, and the peers (torch, SciPy, OpenCV
where installed: :mod:`.peers`) -- is timed **interleaved in one process**
(:func:`arraycnn.timing.interleaved_medians`: round-robin rounds in a rotated order, each
contender warmed right before its timed call, the median kept), so that noise from other
work on the machine hits all contenders alike. A case runs ``--repeat`` rounds and, while
under ``--case-seconds`` of timing, more (at most :data:`.measuring.MAX_ROUNDS`).

Outputs (:mod:`.reporting`): a table per case group (rich when installed), ``results.json``
(raw medians, choices, regrets) and ``crossover.png`` (the measured best strategy by image
size x kernel size) in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import ModuleType

from ..backend import resolve_backend
from . import cases, compare, options, reporting
from .measuring import MAX_ROUNDS, CaseResult, measure_case
from .peers import optional, torch_one_thread

__all__ = ["add_arguments", "run"]

#: Settings of the full and the quick run: (filter grid, repeats, max seconds per call,
#: seconds of timing per case at least).
FULL = (cases.FILTERS, 5, 2.0, 2.0)
QUICK = (cases.FILTERS_QUICK, 3, 0.25, 0.2)
#: ``--compare``: interleaved rounds, calls per timing (the fastest kept), warning ratio.
COMPARE_ROUNDS, COMPARE_CALLS, COMPARE_THRESHOLD = 15, 3, 1.5


def _layer_list(text: str) -> list[str]:
    if text in ("none", ""):
        return []
    if text == "all":
        return list(cases.LAYERS)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in cases.LAYERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown layer {', '.join(map(repr, unknown))}; choose from all, none, "
            + ", ".join(cases.LAYERS)
        )
    return names


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn bench``."""
    add = parser.add_argument
    add("--quick", action="store_true", help="small grid and 3 repeats (well under a minute)")
    add(
        "--backend",
        type=options.backend_list,
        default=None,
        metavar="NAMES",
        help="comma-separated backends (default: numpy, and torch when installed)",
    )
    add("--out", type=Path, default=Path("out/bench"), help="directory for the outputs")
    add(
        "--repeat",
        type=options.positive_int,
        default=None,
        help=f"timed rounds at least (median; default {FULL[1]}, quick {QUICK[1]}); cheap "
        f"cases get more, up to {MAX_ROUNDS}, until --case-seconds of timing",
    )
    add(
        "--case-seconds",
        type=options.nonnegative_float,
        default=None,
        help=f"seconds of timing per case at least (default {FULL[3]:g}; quick {QUICK[3]:g}; "
        "0: exactly --repeat rounds)",
    )
    add(
        "--layers",
        type=_layer_list,
        default=None,
        metavar="NAMES",
        help="reference layers to time: all, none, or comma-separated labels (default: all; "
        "quick: a subset)",
    )
    add(
        "--image-sizes",
        type=options.positive_int_list,
        default=None,
        metavar="N,N",
        help="image sides of the filtering cases (default: "
        f"{_ints(FULL[0].images)}; quick {_ints(QUICK[0].images)})",
    )
    add(
        "--kernel-sizes",
        type=options.positive_int_list,
        default=None,
        metavar="K,K",
        help="kernel sides of the filtering cases (default: "
        f"{_ints(FULL[0].kernels)}; quick {_ints(QUICK[0].kernels)})",
    )
    add(
        "--max-seconds",
        type=options.positive_float,
        default=None,
        help="skip strategies predicted slower than this per call (default: "
        f"{FULL[2]:g}; quick {QUICK[2]:g})",
    )
    add("--no-peers", action="store_true", help="time arraycnn only")
    add("--no-filters", action="store_true", help="time the reference layers only")
    add(
        "--compare",
        default=None,
        metavar="REV",
        help="regression check instead: this checkout's working tree against git commit REV "
        "on a quick subset, interleaved rounds (--repeat, default "
        f"{COMPARE_ROUNDS}); warns of cases slower than --threshold, exit 1 only if a case "
        "errors (default: off)",
    )
    add(
        "--threshold",
        type=options.positive_float,
        default=COMPARE_THRESHOLD,
        help="--compare: ratio above which a case is reported slower "
        f"(default {COMPARE_THRESHOLD:g})",
    )


def _namespaces(names: list[str]) -> dict[str, ModuleType]:
    """Namespaces by name; RuntimeError (message names the backend) if one is unusable."""
    namespaces = {name: resolve_backend(name) for name in names}
    if "torch" in namespaces:
        torch_one_thread()
    return namespaces


def _settings(args: argparse.Namespace) -> dict:
    """The run's settings from the options and the full or quick defaults."""
    grid, repeats, max_seconds, case_seconds = QUICK if args.quick else FULL
    layers = args.layers
    if layers is None:
        layers = list(cases.QUICK_LAYERS if args.quick else cases.LAYERS)
    return {
        "quick": bool(args.quick),
        "backends": args.backend or (["numpy", "torch"] if optional("torch") else ["numpy"]),
        "repeats": args.repeat or repeats,
        "case_seconds": case_seconds if args.case_seconds is None else args.case_seconds,
        "max_seconds": args.max_seconds or max_seconds,
        "layers": layers,
        "image_sizes": [] if args.no_filters else args.image_sizes or list(grid.images),
        "kernel_sizes": args.kernel_sizes or list(grid.kernels),
        "peers": not args.no_peers,
    }


def _measure_all(settings: dict, namespaces: dict[str, ModuleType]) -> list[CaseResult]:
    grid = cases.FilterGrid(tuple(settings["image_sizes"]), tuple(settings["kernel_sizes"]))
    todo = [(cases.LAYERS[name], d) for name in settings["layers"] for d in ("forward", "backward")]
    todo += [(case, "forward") for case in grid.cases()]
    return [
        measure_case(
            case,
            namespaces,
            repeats=settings["repeats"],
            max_seconds=settings["max_seconds"],
            peers=settings["peers"],
            direction=direction,
            case_seconds=settings["case_seconds"],
        )
        for case, direction in todo
    ]


def _print_tables(results: list[CaseResult], peers: bool) -> None:
    layers = [r for r in results if not r.case.is_filter]
    forward = [r for r in layers if r.direction == "forward"]
    backward = [r for r in layers if r.direction == "backward"]
    filtering = [r for r in results if r.case.is_filter]
    for title, group in (
        ("conv layers (forward, float32), median ms", forward),
        ("conv layers (backward: gx, gw, gb; float32), median ms", backward),
        ("image filtering ('same', float32), median ms", filtering),
    ):
        if group:
            reporting.print_table(title, *reporting.table_rows(group))
    if forward and backward:
        reporting.print_table(
            "conv layers: forward + backward against torch, ms; forward GFLOP/s against the "
            "layer's GEMM",
            *reporting.layer_summary_rows(forward, backward),
        )
    if filtering and peers:
        reporting.print_table(
            "image filtering: auto against the fastest SciPy and OpenCV function, ms",
            *reporting.filter_summary_rows(filtering),
        )


def _fail(message: str) -> int:
    print(f"arraycnn bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Measure the grid, print the tables, write ``results.json`` and ``crossover.png``
    (with ``--compare REV``: the regression check of :mod:`.compare` instead)."""
    if args.compare is not None:
        rounds = args.repeat or COMPARE_ROUNDS
        return compare.run_compare(
            args.compare, rounds=rounds, calls=COMPARE_CALLS, threshold=args.threshold
        )
    settings = _settings(args)
    fits = any(k <= i for k in settings["kernel_sizes"] for i in settings["image_sizes"])
    if not fits and not settings["layers"]:
        return _fail("no case to run (no layer, and no kernel fits an image)")
    try:
        namespaces = _namespaces(settings["backends"])
    except RuntimeError as exc:
        return _fail(str(exc))
    if optional("matplotlib") is None:
        return _fail("the crossover plot needs matplotlib (pip install matplotlib)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results = _measure_all(settings, namespaces)
    elapsed = time.monotonic() - started

    _print_tables(results, settings["peers"])
    plot_path, json_path = out / "crossover.png", out / "results.json"
    plotted = reporting.crossover_plot(results, settings["backends"], plot_path)
    report = reporting.write_results(json_path, results, settings, elapsed)
    reporting.print_summary(results, report["regret"])
    count = len({r.case for r in results})
    print(f"\n{count} cases in {elapsed:.1f} s; wrote {json_path}", end="")
    print(f" and {plot_path}" if plotted else " (no filtering case: no crossover plot)")
    return 0
