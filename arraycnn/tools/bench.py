"""``arraycnn bench``: every strategy, ``auto`` and the peers on a compact grid of cases.

For each case (the reference conv layers, forward and backward, and single-image filtering
over image size x kernel size x kernel kind: :mod:`.cases`) every contender -- each
strategy on each backend, ``auto`` on each backend, and the peers (torch, SciPy, OpenCV
where installed: :mod:`.peers`) -- is timed **interleaved in one process**
(:func:`arraycnn.timing.interleaved_medians`: round-robin rounds in a rotated order, each
contender warmed right before its timed call, the median kept), so that noise from other
work on the machine hits all contenders alike. A case runs ``--repeat`` rounds and, while
under ``--case-seconds`` of timing, more (at most :data:`.measuring.MAX_ROUNDS`).

It talks while it measures: warnings first when the machine is not fit for timing
(:func:`.measuring.condition_warnings`) and, once, which peers are not installed and how to
install them; then a progress bar per case (rich, on a terminal) or one line per case.

Outputs (:mod:`.reporting`): tables that fit the terminal (one per backend and case group,
one per peer library), ``results.json`` (raw medians, choices, regrets) and
``crossover.png`` (the measured best strategy by image size x kernel size) in ``--out``,
with ``--format markdown`` also ``results.md`` (the tables), with ``--format csv``
``results.csv`` (every median).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

from ..backend import resolve_backend
from . import cases, compare, dask_bench, options, reporting
from .measuring import MAX_ROUNDS, CaseResult, condition_warnings, measure_case
from .peers import missing_peers, optional, torch_one_thread

__all__ = ["add_arguments", "run"]

#: Settings of the full and the quick run: (filter grid, repeats, max seconds per call,
#: seconds of timing per case at least).
FULL = (cases.FILTERS, 5, 2.0, 2.0)
QUICK = (cases.FILTERS_QUICK, 3, 0.25, 0.2)
#: ``--compare``: interleaved rounds, calls per timing (the fastest kept), warning ratio.
COMPARE_ROUNDS, COMPARE_CALLS, COMPARE_THRESHOLD = 15, 3, 1.5
#: Wall-clock time of each mode, rounded up, with numpy and torch and every peer, measured
#: on a 2-core x86 machine shared with other work (``--help`` says them).
MINUTES = {"quick": "about 1 min", "layers": "5", "filters": "25-30", "compare": "10 s"}


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
    parser.epilog = (
        f"Time with numpy, torch and every peer on a 2-core machine: --quick "
        f"{MINUTES['quick']}; the layers alone (--no-filters) about {MINUTES['layers']} min; "
        f"the filters alone (--layers none) about {MINUTES['filters']} min; everything (no "
        f"option) the sum; --compare REV about {MINUTES['compare']}. Pin the threads "
        "(OMP_NUM_THREADS=1) and keep the machine idle for timings worth comparing."
    )
    add = parser.add_argument
    add(
        "--quick",
        action="store_true",
        help=f"two layers, a small filtering grid, {QUICK[1]} repeats ({MINUTES['quick']})",
    )
    add(
        "--backend",
        type=options.backend_list,
        default=None,
        metavar="NAMES",
        help="comma-separated backends (default: numpy, and torch when installed)",
    )
    add("--out", type=Path, default=Path("out/bench"), help="directory for the outputs")
    add(
        "--format",
        choices=reporting.FORMATS,
        default="table",
        help="tables on the terminal only (table), or also written to --out as results.md "
        "(markdown) or every median as results.csv (csv)",
    )
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
        help="reference layers to time: all, none, or comma-separated labels (default: all, "
        f"about {MINUTES['layers']} min; quick: a subset; none with the filters: about "
        f"{MINUTES['filters']} min)",
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
    add(
        "--no-filters",
        action="store_true",
        help=f"time the reference layers only (about {MINUTES['layers']} min)",
    )
    add(
        "--compare",
        default=None,
        metavar="REV",
        help="regression check instead: this checkout's working tree against git commit REV "
        "on a quick subset, interleaved rounds (--repeat, default "
        f"{COMPARE_ROUNDS}: about {MINUTES['compare']}); warns of cases slower than "
        "--threshold, exit 1 only if a case errors (default: off)",
    )
    add(
        "--dask",
        action="store_true",
        help="instead: one large float32 image filtered in memory and on a dask LocalCluster "
        "(time and peak memory per worker; --image-sizes, default "
        f"{_ints(dask_bench.DEFAULT_IMAGES)}; --kernel-sizes, default "
        f"{_ints(dask_bench.DEFAULT_KERNELS)}; needs arraycnn[dask])",
    )
    add("--dask-workers", type=options.positive_int, default=2, help="--dask: worker processes")
    add(
        "--dask-memory-limit",
        default="auto",
        metavar="SIZE",
        help="--dask: memory limit per worker, e.g. 1GiB (default: auto, the machine's share)",
    )
    add("--dask-chunk", type=options.positive_int, default=2048, help="--dask: chunk side")
    add("--dask-no-in-memory", action="store_true", help="--dask: skip the in-memory runs")
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
        "missing_peers": sorted(missing_peers()) if not args.no_peers else [],
    }


def _measure_all(settings: dict, namespaces: dict[str, ModuleType]) -> list[CaseResult]:
    """Every case in turn, under a progress display (:func:`.reporting.case_progress`)."""
    grid = cases.FilterGrid(tuple(settings["image_sizes"]), tuple(settings["kernel_sizes"]))
    todo = [(cases.LAYERS[name], d) for name in settings["layers"] for d in ("forward", "backward")]
    todo += [(case, "forward") for case in grid.cases()]
    results = []
    with reporting.case_progress(len(todo)) as progress:
        for case, direction in todo:
            label = case.label + (" backward" if direction == "backward" else "")
            on_call = progress.start(label)
            result = measure_case(
                case,
                namespaces,
                repeats=settings["repeats"],
                max_seconds=settings["max_seconds"],
                peers=settings["peers"],
                direction=direction,
                case_seconds=settings["case_seconds"],
                on_call=on_call,
            )
            progress.finish()
            results.append(result)
    return results


def warn_conditions() -> None:
    """Print :func:`.measuring.condition_warnings` on stderr, once, before any timing."""
    for warning in condition_warnings():
        text = f"arraycnn bench: warning: {warning}"
        width = reporting.terminal_width()
        print(textwrap.fill(text, width, subsequent_indent="  "), file=sys.stderr, flush=True)


def _say_missing_peers(missing: dict[str, str]) -> None:
    """The peers not installed, once for the whole run, with the command installing each."""
    by_command: dict[str, list[str]] = {}
    for name, command in missing.items():
        by_command.setdefault(command, []).append(name)
    for command, names in by_command.items():
        text = f"note: peer {', '.join(names)} not installed, left out of every case; to time it:"
        print(textwrap.fill(text, reporting.terminal_width(), subsequent_indent="  "))
        print(f"  {command}", flush=True)


def _fail(message: str) -> int:
    print(f"arraycnn bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Measure the grid, print the tables, write ``results.json`` and ``crossover.png``
    (with ``--compare REV``: the regression check of :mod:`.compare` instead)."""
    warn_conditions()
    if args.dask:
        return dask_bench.run(args)
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
    if settings["peers"]:
        _say_missing_peers(missing_peers())

    started = time.monotonic()
    results = _measure_all(settings, namespaces)
    elapsed = time.monotonic() - started

    tables = reporting.bench_tables(results, settings["backends"], settings["peers"])
    reporting.print_tables(tables)
    written = [out / "results.json"]
    report = reporting.write_results(written[0], results, settings, elapsed)
    if reporting.crossover_plot(results, settings["backends"], out / "crossover.png"):
        written.append(out / "crossover.png")
    if args.format == "markdown":
        written.append(out / "results.md")
        written[-1].write_text(reporting.markdown(tables), encoding="utf-8")
    elif args.format == "csv":
        written.append(out / "results.csv")
        reporting.write_csv(written[-1], results)
    reporting.print_summary(results, report["regret"])
    print(f"\n{len(results)} cases (directions counted apart) in {elapsed:.1f} s; wrote:")
    print("\n".join(f"  {path}" for path in written))
    return 0
