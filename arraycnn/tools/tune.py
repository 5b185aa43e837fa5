"""``arraycnn tune``: fit the dispatcher's cost model (:mod:`arraycnn.conv.cost`) on this
machine, per backend.

The command times a designed set of convolutions (:data:`.cases.TUNE_CASES`): every
strategy ``auto`` may choose for a case, forced, forward and backward, each plan executed
as the dispatcher executes it; seconds are the best of ``--repeats`` interleaved rounds
(:func:`arraycnn.timing.interleaved_medians`). Each plan's operation counts come from the
dispatcher's own pricing (:func:`arraycnn.conv.dispatch.plan`), so that the fit sees
exactly what the model prices.

The fit
-------
The model predicts ``t = G·c_G + f_s R·c_R`` for strategy ``s``: ``G`` the GEMM counts
(``gemm_flops``, ``gemm_cells``), ``R`` the others (``bytes``, ``fft_flops``, ``calls``),
``c`` the five constants and ``f_s`` the strategy's factor. It minimises the squared
*relative* error ``sum_i (t_pred_i / t_i - 1)^2`` (a 10 µs case matters as much as a 100 ms
one) by alternating two exact steps until the error stops improving: factors fixed, the
constants by non-negative least squares (:func:`scipy.optimize.nnls`); constants fixed,
each factor in closed form. The factors are then scaled to geometric mean 1 (the scale
they share with ``c_R`` is free). A constant that no sample exercises keeps the value of
the calibration in use.

Regret of a model on a case = measured time of the model's pick / the fastest measured:
reported on the fitted cases (in-sample) and, with ``--evaluate N``, on N seeded held-out
cases (:func:`.cases.holdout_cases`), for the calibration in use and the fitted one.

The fit is stored in the user cache (:func:`arraycnn.conv.cost.save_user_calibration`),
where the dispatcher finds it; ``--update-shipped`` instead rewrites the package data
``arraycnn/conv/calibration.json`` (maintainers: an idle machine, ``OMP_NUM_THREADS=1``).

Commands::

    arraycnn tune                          # fit this machine, store in the user cache
    arraycnn tune --quick --dry-run        # fewer cases and rounds, print the fit only
    arraycnn tune --evaluate 40            # and the held-out regret on 40 random cases
    arraycnn tune --backend numpy,torch --update-shipped
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import asarray, backend_name, resolve_backend
from ..cachefile import atomic_write_json
from ..conv import cost, dispatch, explain
from ..conv.strategy import Counts
from ..timing import interleaved_medians
from . import options
from .cases import TUNE_CASES, Case, holdout_cases, host_arrays

__all__ = ["Sample", "add_arguments", "case_plans", "fit", "measure", "regret", "run"]

#: The counts priced alike by every strategy (GEMM work); the others carry the factor.
GEMM_TERMS = 2
#: The alternation stops when a round improves the squared error by less than this share.
TOLERANCE = 1e-12
MAX_ROUNDS = 500
#: Smallest factor (a strategy's non-GEMM work is never free).
FACTOR_FLOOR = 1e-9
#: Timed rounds per case set (best of), unless ``--repeats``.
DEFAULT_REPEATS = {"full": 7, "quick": 3, "tiny": 1}


@dataclass(frozen=True)
class Sample:
    """One measured plan: its case, strategy, direction, counts and best seconds."""

    case: Case
    strategy: str
    direction: str
    counts: Counts
    seconds: float


Row = tuple[str, str, str, float]  # (case label, direction, model's pick, regret)


# --------------------------------------------------------------------------- measuring


def case_plans(
    case: Case, xp: ModuleType, cal: cost.Calibration
) -> dict[tuple[str, str], tuple[dispatch.Plan, Callable[[], Any]]]:
    """Per (strategy, direction) that ``auto`` may choose: the forced plan priced with
    ``cal`` and a call that executes it on the case's seeded inputs."""
    x, w, gy = (asarray(a, backend=xp) for a in host_arrays(case))
    geom = case.geometry()
    plans = {}
    for direction in ("forward", "backward"):
        grad = gy if direction == "backward" else None
        info = explain(x, w, **case.kwargs, direction=direction, gy=grad, autotune=False)
        for name, row in info["strategies"].items():
            if not row["eligible"]:
                continue
            plan = dispatch.plan(
                name, w, geom, xp=xp, x=x, gy=grad, direction=direction, calibration=cal
            )
            if direction == "forward":
                call = lambda p=plan: dispatch.run_forward(p, x, w, xp=xp)  # noqa: E731
            else:
                call = lambda p=plan: dispatch.run_backward(p, gy, x, w, xp=xp)  # noqa: E731
            plans[name, direction] = (plan, call)
    return plans


def measure(case: Case, xp: ModuleType, cal: cost.Calibration, *, repeats: int) -> list[Sample]:
    """Best-of-``repeats`` seconds of each plan of :func:`case_plans`, interleaved."""
    plans = case_plans(case, xp, cal)
    best = interleaved_medians({k: call for k, (_, call) in plans.items()}, repeats, reduce=min)
    return [Sample(case, s, d, plans[s, d][0].counts, best[s, d]) for s, d in plans]


# --------------------------------------------------------------------------- fitting


def _relative_errors(
    gemm: np.ndarray, rest: np.ndarray, constants: np.ndarray, factors: np.ndarray
) -> np.ndarray:
    """pred / t - 1 per sample (``gemm``, ``rest``: counts over seconds, per sample)."""
    return gemm @ constants[:GEMM_TERMS] + factors * (rest @ constants[GEMM_TERMS:]) - 1.0


def fit(samples: list[Sample], start: cost.Calibration, *, source: str = "") -> cost.Calibration:
    """The constants and factors that minimise the squared relative error (module doc),
    starting from ``start`` (its factors; its constants where no sample has that count)."""
    from scipy.optimize import nnls

    counts = np.array([s.counts.as_tuple() for s in samples])  # (S, 5)
    seconds = np.array([s.seconds for s in samples])  # (S,)
    gemm = counts[:, :GEMM_TERMS] / seconds[:, None]  # (S, 2)
    rest = counts[:, GEMM_TERMS:] / seconds[:, None]  # (S, 3)
    names = sorted({s.strategy for s in samples})
    which = np.array([names.index(s.strategy) for s in samples])  # (S,)
    factors = np.array([start.factor.get(n, 1.0) or 1.0 for n in names])
    norms = np.linalg.norm(counts / seconds[:, None], axis=0)  # (5,), columns scaled to 1
    used = norms > 0
    constants = np.array([getattr(start, name) for name in cost.CONSTANTS], dtype=float)
    error = math.inf
    for _ in range(MAX_ROUNDS):
        design = np.hstack([gemm, factors[which][:, None] * rest])  # (S, 5)
        solution, _ = nnls(design[:, used] / norms[used], np.ones(len(samples)))
        constants[used] = solution / norms[used]
        g, r = gemm @ constants[:GEMM_TERMS], rest @ constants[GEMM_TERMS:]  # (S,) each
        for i in range(len(names)):
            mine = which == i
            if (r[mine] ** 2).sum() > 0:  # argmin_f sum (g + f r - 1)^2, f >= 0
                best = ((1.0 - g[mine]) * r[mine]).sum() / (r[mine] ** 2).sum()
                factors[i] = max(best, FACTOR_FLOOR)
        scale = math.exp(np.log(factors).mean())
        factors /= scale
        constants[GEMM_TERMS:][used[GEMM_TERMS:]] *= scale  # predictions unchanged
        new = float((_relative_errors(gemm, rest, constants, factors[which]) ** 2).sum())
        if math.isfinite(error) and error - new <= TOLERANCE * error:
            break
        error = new
    fitted = dict(start.factor)
    fitted.update({name: float(f) for name, f in zip(names, factors)})
    values = {name: float(v) for name, v in zip(cost.CONSTANTS, constants)}
    return replace(start, **values, factor=fitted, source=source)


def regret(samples: list[Sample], cal: cost.Calibration) -> list[Row]:
    """Per (case, direction): the pick of ``cal`` and time(pick) / min time."""
    groups: dict[tuple[Case, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.case, s.direction), []).append(s)
    rows = []
    for (case, direction), group in groups.items():
        pick = min(group, key=lambda s: cal.seconds(s.strategy, s.counts))
        rows.append(
            (case.label, direction, pick.strategy, pick.seconds / min(s.seconds for s in group))
        )
    return rows


def summary(rows: list[Row]) -> dict[str, float]:
    """Geometric mean and max of the regrets, and the share of cases picked right."""
    ratios = np.array([r[3] for r in rows])
    return {
        "geomean": float(np.exp(np.mean(np.log(ratios)))),
        "max": float(ratios.max()),
        "optimal_fraction": float(np.mean(ratios <= 1.0 + 1e-12)),
    }


# --------------------------------------------------------------------------- storing


def machine() -> str:
    """The CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def shipped_path() -> Path:
    """The package data file of the shipped calibrations."""
    return Path(cost.__file__).with_name("calibration.json")


def _rounded(cal: cost.Calibration) -> dict[str, Any]:
    data = cal.to_json()
    for name in cost.CONSTANTS:
        data[name] = float(f"{data[name]:.6g}")
    data["factor"] = {k: float(f"{v:.4g}") for k, v in sorted(data["factor"].items())}
    return data


def update_shipped(calibrations: dict[str, cost.Calibration], path: Path | None = None) -> Path:
    """Replace these backends' entries of the shipped calibration file (JSON), keeping the
    others and the file's format."""
    path = path or shipped_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    backends = dict(data["backends"])
    backends.update({name: _rounded(cal) for name, cal in calibrations.items()})
    atomic_write_json(path, {**data, "backends": backends})
    return path


# --------------------------------------------------------------------------- command


def tune_backend(xp: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    """Measure, fit and evaluate one backend; the report (its ``calibration`` a
    :class:`~arraycnn.conv.cost.Calibration`)."""
    name = backend_name(xp)
    in_use, origin = cost.calibration_for(name)
    repeats = args.repeats or DEFAULT_REPEATS[args.cases]
    started = time.monotonic()
    fitting = TUNE_CASES[args.cases]
    samples = [s for case in fitting for s in measure(case, xp, in_use, repeats=repeats)]
    source = f"arraycnn tune --cases {args.cases}: {len(fitting)} cases, {len(samples)} timings"
    cal = fit(samples, in_use, source=f"{source}, {machine()}")
    report: dict[str, Any] = {
        "backend": name,
        "calibration": cal,
        "in_use": f"{origin}: {in_use.source}",
        "samples": len(samples),
        "rows": {"in_use": regret(samples, in_use), "fitted": regret(samples, cal)},
    }
    report["regret"] = {k: summary(rows) for k, rows in report["rows"].items()}
    if args.evaluate:
        held = holdout_cases(args.evaluate, args.seed, tiny=args.cases == "tiny")
        held_samples = [s for case in held for s in measure(case, xp, in_use, repeats=repeats)]
        report["held_out"] = {
            "cases": len(held),
            "seed": args.seed,
            "in_use": summary(regret(held_samples, in_use)),
            "fitted": summary(regret(held_samples, cal)),
        }
    report["seconds"] = time.monotonic() - started
    return report


def _print_report(report: dict[str, Any]) -> None:
    cal: cost.Calibration = report["calibration"]
    print(f"backend {report['backend']}: {report['samples']} timings in {report['seconds']:.1f} s")
    print(f"  fitted: {cal.describe()}")
    print(f"  in use before: {report['in_use']}")
    print(f"  {'case':<34} {'dir':<8} {'in use':<10} {'regret':>7} {'fitted':<10} {'regret':>7}")
    for b, a in zip(report["rows"]["in_use"], report["rows"]["fitted"]):
        print(f"  {b[0]:<34} {b[1]:<8} {b[2]:<10} {b[3]:>7.2f} {a[2]:<10} {a[3]:>7.2f}")
    lines = [("in-sample", report["regret"])]
    if "held_out" in report:
        lines.append((f"held-out ({report['held_out']['cases']} cases)", report["held_out"]))
    for what, r in lines:
        print(
            f"  {what} regret time(model's pick)/fastest: in use geomean "
            f"{r['in_use']['geomean']:.3f} max {r['in_use']['max']:.2f}; fitted geomean "
            f"{r['fitted']['geomean']:.3f} max {r['fitted']['max']:.2f}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn tune``."""
    add = parser.add_argument
    add(
        "--backend",
        type=options.backend_list,
        action="append",
        metavar="NAMES",
        help="backends to calibrate (comma-separated or repeated; default numpy)",
    )
    add("--quick", action="store_true", help="the quick case set and 3 rounds")
    add("--cases", choices=tuple(TUNE_CASES), default=None, help="case set (default full)")
    add(
        "--repeats",
        type=options.at_least(1),
        default=None,
        help="timed rounds per plan, the fastest kept (default: "
        + ", ".join(f"{n} {name}" for name, n in DEFAULT_REPEATS.items())
        + ")",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--dry-run", action="store_true", help="fit and report, store nothing")
    store.add_argument(
        "--update-shipped",
        action="store_true",
        help="maintainers: write the fit into arraycnn/conv/calibration.json (package data) "
        "instead of the user cache",
    )
    add(
        "--evaluate",
        type=options.at_least(0),
        default=0,
        metavar="N",
        help="also time N seeded held-out cases and report the regret there",
    )
    add("--seed", type=int, default=1, help="seed of the held-out cases")
    add("--json", action="store_true", help="print the reports as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``arraycnn tune``."""
    args.cases = args.cases or ("quick" if args.quick else "full")
    names = [n for group in (args.backend or [["numpy"]]) for n in group]
    try:
        namespaces = {name: resolve_backend(name) for name in dict.fromkeys(names)}
    except RuntimeError as exc:
        print(f"arraycnn tune: {exc}", file=sys.stderr)
        return 2
    reports = [tune_backend(xp, args) for xp in namespaces.values()]
    for report in reports:
        if args.dry_run or args.update_shipped:
            continue
        extra = {"regret": report["regret"]["fitted"]}
        path = cost.save_user_calibration(report["backend"], report["calibration"], extra=extra)
        report["stored"] = str(path)
    if args.update_shipped:
        path = update_shipped({r["backend"]: r["calibration"] for r in reports})
        for report in reports:
            report["stored"] = str(path)
    if args.json:
        print(
            json.dumps(
                [{**r, "calibration": r["calibration"].to_json()} for r in reports], indent=1
            )
        )
        return 0
    for report in reports:
        _print_report(report)
        if "stored" in report:
            print(f"  stored in {report['stored']}")
    return 0
