"""``arraycnn tune``: fit the dispatcher's cost model on this machine, per backend.

The command times a small designed set of convolutions (:data:`CASES`) with every strategy,
forward and backward, interleaved as by ``arraycnn bench`` (each strategy in turn, warmed
right before its timed run, repeated; the best run counts), and fits the constants of
:class:`arraycnn.conv.cost.Calibration` to the times.

The fit
-------
The model predicts ``sum_{k in GEMM} c_k n_k + scale[s, d] * sum_{k not in GEMM} c_k n_k``
for strategy ``s`` in direction ``d`` (forward or backward: one factor each, since the
backward's kernels differ) with operation counts ``n_k``
(:func:`arraycnn.conv.cost.op_counts`); the GEMM counts (``gemm_flops``, ``gemm_cells``)
are priced alike for every strategy. The constants are fitted in log space,
``min sum_i (log pred_i - log t_i)^2`` (relative errors: a 10 µs case matters as much as a
100 ms one), over ``log c_k`` and ``log scale[s, d]``, with a weak prior pulling the constants
toward their previous values and the scales toward 1 (it keeps a constant that the cases
barely exercise sane, and pins the scale/constant degeneracy). The fit is host work with
``scipy.optimize.least_squares``.

The result is stored as JSON in the user cache directory (``ARRAYCNN_CACHE_DIR``,
``$XDG_CACHE_HOME/arraycnn`` or ``~/.cache/arraycnn``), where the dispatcher finds it.
``--update-shipped`` instead rewrites the shipped defaults in ``arraycnn/conv/cost.py``
(for the project's maintainers; run on an idle machine with ``OMP_NUM_THREADS=1``).

Test inputs are drawn on the host with NumPy's seeded generator and moved to the backend
(an explicit, documented host step).

``--evaluate N`` fits nothing: it times N seeded random geometries (held out from the
designed set) and reports the regret ``time(model's pick) / min(time)`` of the calibration
in use and of dispatcher v1's model.

The environment variable ``ARRAYCNN_TUNE_CASES=tiny`` shrinks the case set to a few tiny
convolutions (for tests of the command itself).

Commands::

    arraycnn tune                      # fit this machine, store in the user cache dir
    arraycnn tune --quick --dry-run    # ~5 s, print the fit only
    arraycnn tune --evaluate 40        # held-out regret of the calibration in use
    OMP_NUM_THREADS=1 arraycnn tune --backend numpy --backend torch --update-shipped
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import asarray, backend_name, resolve_backend
from ..bench import interleaved_medians
from ..capabilities import STRATEGY_NAMES, missing_requirements
from ..geometry import ConvGeometry, conv_geometry
from . import cost
from .dispatch import KERNELS, _separable_rank_pays_off
from .separable import numerical_rank

ENV_TUNE_CASES = "ARRAYCNN_TUNE_CASES"
#: Number of fitted constants (one per count).
NC = len(cost.COUNT_NAMES)
#: Weight of the prior residuals (log constants toward the previous ones, scales toward 1).
PRIOR_WEIGHT_CONSTANTS = 0.05
PRIOR_WEIGHT_SCALES = 0.3


@dataclass(frozen=True)
class Case:
    """One timed convolution: input (N, C, H, W), F filters of k x k, geometry, dtype.

    ``rank1`` builds an outer-product kernel (separable's favourite, where it is timed).
    """

    n: int
    c: int
    h: int
    f: int
    k: int
    stride: int = 1
    groups: int = 1
    padding: str | int = "same"
    dtype: str = "float32"
    rank1: bool = False
    quick: bool = True

    def label(self) -> str:
        extra = "".join(
            [
                f" s{self.stride}" if self.stride != 1 else "",
                f" g{self.groups}" if self.groups != 1 else "",
                " r1" if self.rank1 else "",
                f" {self.dtype}" if self.dtype != "float32" else "",
            ]
        )
        return f"({self.n},{self.c},{self.h},{self.h})*{self.f}x{self.k}x{self.k}{extra}"


#: The designed set: call overhead (tiny), long-K GEMMs (many channels), short-K GEMMs
#: (C = 1), memory-bound depthwise, large kernels (FFT), rank-1 kernels (separable),
#: stride, float64. ``quick=False`` cases are added without ``--quick``.
CASES: tuple[Case, ...] = (
    Case(1, 1, 16, 1, 3),
    Case(8, 16, 16, 16, 3),
    Case(4, 32, 16, 32, 3),
    Case(16, 1, 28, 8, 5),
    Case(2, 16, 32, 16, 3, groups=16),
    Case(1, 2, 64, 2, 11, rank1=True),
    Case(1, 4, 48, 4, 7, rank1=True),
    Case(4, 8, 32, 8, 5, stride=2),
    Case(8, 16, 16, 16, 3, dtype="float64"),
    Case(32, 32, 24, 32, 3, quick=False),
    Case(1, 1, 128, 1, 21, quick=False),
    Case(8, 64, 8, 128, 3, quick=False),
    Case(2, 8, 64, 8, 9, rank1=True, quick=False),
    Case(64, 1, 28, 32, 5, padding=0, quick=False),
    Case(64, 32, 12, 64, 5, padding=0, quick=False),
    Case(1, 1, 96, 1, 15, dtype="float64", quick=False),
    Case(4, 32, 32, 32, 3, groups=32, quick=False),
    Case(2, 4, 40, 4, 9, quick=False),
    # sizes of the benchmark grid: images filtered in bands, batches run in cache chunks
    Case(1, 1, 256, 1, 3, rank1=True, quick=False),
    Case(1, 1, 256, 1, 7, quick=False),
    Case(1, 1, 512, 1, 3, rank1=True, quick=False),
    Case(1, 1, 1024, 1, 3, rank1=True, quick=False),
    Case(1, 1, 1024, 1, 7, rank1=True, quick=False),
    Case(1, 1, 2048, 1, 3, quick=False),
    Case(64, 32, 14, 64, 3, quick=False),
    Case(16, 64, 28, 64, 3, quick=False),
    Case(32, 64, 56, 64, 3, quick=False),
)
TINY_CASES: tuple[Case, ...] = (
    Case(1, 1, 8, 1, 3),
    Case(2, 2, 8, 2, 5, rank1=True),
)


@dataclass
class Sample:
    """One measurement: a case, a strategy, a direction, its geometry and its best time."""

    case: Case
    strategy: str
    direction: str
    geom: ConvGeometry
    itemsize: int
    rank: int
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn tune``."""
    parser.add_argument(
        "--backend",
        action="append",
        help="backend(s) to calibrate: numpy, torch, cupy, ... (repeat or comma-separate; "
        "default numpy)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats (~10 s)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per strategy")
    parser.add_argument("--dry-run", action="store_true", help="fit and report, store nothing")
    parser.add_argument(
        "--update-shipped",
        action="store_true",
        help="maintainers: write the fitted constants into arraycnn/conv/cost.py as the "
        "shipped defaults (run on an idle machine with OMP_NUM_THREADS=1)",
    )
    parser.add_argument("--note", default="", help="text added to the calibration's source")
    parser.add_argument(
        "--evaluate",
        type=int,
        default=0,
        metavar="N",
        help="no fit: time N random held-out cases and report the regret of the "
        "calibration in use and of dispatcher v1",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the --evaluate cases")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _cases(quick: bool) -> tuple[Case, ...]:
    if os.environ.get(ENV_TUNE_CASES, "").strip().lower() == "tiny":
        return TINY_CASES
    return tuple(c for c in CASES if c.quick or not quick)


def _inputs(case: Case, xp: Any, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    """Seeded host data moved to the backend: x, w, gy."""
    cg = case.c // case.groups
    x = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(case.dtype)
    if case.rank1:
        u = rng.standard_normal((case.f, cg, case.k, 1))
        v = rng.standard_normal((case.f, cg, 1, case.k))
        w = (u * v).astype(case.dtype)
    else:
        w = rng.standard_normal((case.f, cg, case.k, case.k)).astype(case.dtype)
    geom = _geometry(case)
    gy = rng.standard_normal(geom.y_shape).astype(case.dtype)
    return tuple(asarray(a, backend=xp) for a in (x, w, gy))  # type: ignore[return-value]


def _geometry(case: Case) -> ConvGeometry:
    return conv_geometry(
        (case.n, case.c, case.h, case.h),
        (case.f, case.c // case.groups, case.k, case.k),
        stride=case.stride,
        padding=case.padding,
        groups=case.groups,
    )


def _strategies(case: Case, xp: Any) -> list[str]:
    """Strategies timed for a case: all the namespace runs; separable on rank-1 kernels only."""
    names = [n for n in STRATEGY_NAMES if not missing_requirements(n, xp)]
    return [n for n in names if n != "separable" or case.rank1]


def measure_case(case: Case, xp: Any, *, repeats: int, rng: np.random.Generator) -> list[Sample]:
    """Best-of-``repeats`` times of each strategy and direction, interleaved as by
    ``arraycnn bench`` (each run warmed right before it is timed, order rotated)."""
    x, w, gy = _inputs(case, xp, rng)
    geom = _geometry(case)
    rank = numerical_rank(w, xp=xp) if case.rank1 else min(case.k, case.k)
    names = _strategies(case, xp)
    runs = {
        (name, "forward"): (lambda k=KERNELS[name]: k.forward(x, w, geom, xp=xp)) for name in names
    }
    runs.update(
        {
            (name, "backward"): (lambda k=KERNELS[name]: k.backward(gy, x, w, geom, xp=xp)[0])
            for name in names
        }
    )
    best = interleaved_medians(runs, repeats, reduce=min)  # best of each, steady state
    itemsize = np.dtype(case.dtype).itemsize
    return [
        Sample(case, name, direction, geom, itemsize, rank, seconds)
        for (name, direction), seconds in best.items()
    ]


def _counts(s: Sample) -> tuple[float, ...]:
    return cost.op_counts(
        s.strategy, s.geom, direction=s.direction, itemsize=s.itemsize, rank=s.rank
    ).as_tuple()


def fit(samples: list[Sample], prior: cost.Calibration, *, source: str) -> cost.Calibration:
    """Log-space least-squares fit of the constants and per-strategy scales (see module doc)."""
    from scipy.optimize import least_squares

    counts = np.array([_counts(s) for s in samples])  # (S, NC)
    times = np.array([s.seconds for s in samples])  # (S,)
    names = [cost.scale_key(n, d) for n in STRATEGY_NAMES for d in ("forward", "backward")]
    which = np.array([names.index(cost.scale_key(s.strategy, s.direction)) for s in samples])
    # a constant the prior lacks (0: fitted before its count existed) starts from v1's estimate
    start = [
        p if p > 0 else f for p, f in zip(prior.coefficients(), cost.FIRST_ESTIMATES.coefficients())
    ]
    theta0 = np.log(np.maximum(np.array(start), 1e-30))
    present = np.isin(np.arange(len(names)), which)

    gemm_terms = cost.GEMM_TERMS  # not scaled per strategy
    other_terms = slice(gemm_terms.stop, NC)

    def residuals(params: np.ndarray) -> np.ndarray:
        theta, log_scale = params[:NC], params[NC:]
        c = np.exp(theta)
        gemm = counts[:, gemm_terms] @ c[gemm_terms]
        other = counts[:, other_terms] @ c[other_terms]
        pred = np.log(np.maximum(gemm + np.exp(log_scale[which]) * other, 1e-30))
        return np.concatenate(
            [
                pred - np.log(times),
                PRIOR_WEIGHT_CONSTANTS * (theta - theta0),
                PRIOR_WEIGHT_SCALES * log_scale * present,
            ]
        )

    result = least_squares(residuals, np.concatenate([theta0, np.zeros(len(names))]))
    theta, log_scale = result.x[:NC], result.x[NC:]
    c = np.exp(theta)
    scale = {n: float(np.exp(log_scale[i])) if present[i] else 1.0 for i, n in enumerate(names)}
    return cost.Calibration(*(float(v) for v in c), scale=scale, source=source, scales_gemm=False)


def _v1_seconds(name: str, g: ConvGeometry, rank: int) -> float:
    """Dispatcher v1's cost model, kept verbatim as the baseline of the regret report.

    v1 priced the forward pass only (the backward reused its choice) with first-estimate
    constants: GEMM 60 GFLOP/s at half rate for K = 24, 0.8e9 elements/s, FFT 6 GFLOP/s,
    4 µs per operation (and per matrix of a batched product).
    """
    from .fft import fast_shape

    def gemm(m: int, k: int, ncol: int, batch: int = 1) -> float:
        return batch * 2.0 * m * k * ncol / (60e9 * k / (k + 24.0)) + batch * 4e-6

    def traffic(elements: float, ops: int = 1) -> float:
        return elements / 0.8e9 + ops * 4e-6

    cols = g.n * g.ho * g.wo
    if name == "naive":
        per_tap = traffic(g.c * cols) + gemm(g.fg, g.cg, cols, g.groups) + traffic(g.f * cols)
        return g.kh * g.kw * per_tap
    if name == "im2col":
        k = g.cg * g.kh * g.kw
        unfold = traffic(2 * g.c * g.kh * g.kw * cols, ops=g.kh * g.kw)
        return unfold + gemm(g.fg, k, cols, g.groups)
    if name == "fft":
        lh, lw = fast_shape(g)
        spectrum = lh * (lw // 2 + 1)
        size = lh * lw
        count = g.n * g.c + g.f * g.cg + g.n * g.f
        transforms = count * 2.5 * size * math.log2(max(size, 2)) / 6e9 + 4e-6
        product = 4 * gemm(g.n, g.cg, g.fg, g.groups * spectrum)
        return transforms + product + traffic(4 * count * spectrum)
    lanes = g.n * g.f * g.cg * rank
    column = traffic(3 * lanes * g.ho * g.wp * g.kh, ops=2 * g.kh)
    return column + traffic(3 * lanes * g.ho * g.wo * g.kw, ops=2 * g.kw)


def _auto_eligible(s: Sample) -> bool:
    """The sample's strategy is one ``auto`` may pick (separable: the dispatcher's rule)."""
    return s.strategy != "separable" or _separable_rank_pays_off(s.rank, s.geom)


def regret(
    samples: list[Sample], cal: cost.Calibration | None
) -> list[tuple[str, str, str, float]]:
    """Per (case, direction): (label, direction, model's pick, time(pick) / min time).

    ``cal=None`` evaluates dispatcher v1's model (:func:`_v1_seconds`).
    """

    def predicted(s: Sample) -> float:
        if cal is None:
            return _v1_seconds(s.strategy, s.geom, s.rank)
        return cal.seconds(s.strategy, cost.OpCounts(*_counts(s)), s.direction)

    groups: dict[tuple[Case, str], list[Sample]] = {}
    for s in samples:
        if _auto_eligible(s):
            groups.setdefault((s.case, s.direction), []).append(s)
    rows = []
    for (case, direction), group in groups.items():
        pick = min(group, key=predicted)
        best = min(s.seconds for s in group)
        rows.append((case.label(), direction, pick.strategy, pick.seconds / best))
    return rows


def _summary(rows: list[tuple[str, str, str, float]]) -> dict[str, float]:
    ratios = np.array([r[3] for r in rows])
    return {
        "geomean": float(np.exp(np.mean(np.log(ratios)))),
        "max": float(ratios.max()),
        "optimal_fraction": float(np.mean(ratios <= 1.0 + 1e-12)),
    }


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores)"


def _load_note() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        return ""
    busy = load > 0.5 * (os.cpu_count() or 1)
    return f"load average {load:.1f}" + (" -- BUSY machine, refit when idle" if busy else "")


def tune_backend(
    backend: str, *, quick: bool, repeats: int | None, note: str = ""
) -> dict[str, Any]:
    """Measure, fit and evaluate one backend; returns the calibration and its report."""
    xp = resolve_backend(backend)
    name = backend_name(xp)
    reps = repeats if repeats is not None else (3 if quick else 7)
    if os.environ.get(ENV_TUNE_CASES, "").strip().lower() == "tiny" and repeats is None:
        reps = 1
    prior = cost.SHIPPED.get(name, cost.FIRST_ESTIMATES)
    rng = np.random.default_rng(0)
    samples: list[Sample] = []
    start = time.perf_counter()
    for case in _cases(quick):
        samples.extend(measure_case(case, xp, repeats=reps, rng=rng))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    source = (
        f"fitted by `arraycnn tune{' --quick' if quick else ''}` on {_machine()} at {when}, "
        f"{len(samples)} timings, OMP_NUM_THREADS={threads}; {_load_note()}"
    )
    if note:
        source += f"; {note}"
    cal = fit(samples, prior, source=source)
    before = regret(samples, None)
    after = regret(samples, cal)
    return {
        "backend": name,
        "calibration": cal,
        "samples": len(samples),
        "seconds": time.perf_counter() - start,
        "regret_before": _summary(before),
        "regret_after": _summary(after),
        "rows_before": before,
        "rows_after": after,
    }


#: Work cap (multiply-accumulates) of a held-out case, normal and tiny.
HOLDOUT_MAX_MACS = 3e7
HOLDOUT_MAX_MACS_TINY = 2e5


def holdout_cases(count: int, seed: int) -> list[Case]:
    """``count`` seeded random geometries, unlike the designed set (host arithmetic)."""
    tiny = os.environ.get(ENV_TUNE_CASES, "").strip().lower() == "tiny"
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    while len(cases) < count:
        c = int(rng.choice([1, 3, 8, 16, 32]))
        f = int(rng.choice([1, 4, 8, 16, 32]))
        k = int(rng.choice([1, 3, 5, 7, 9, 11, 15]))
        h = int(rng.choice([8, 12] if tiny else [8, 16, 28, 32, 48, 64]))
        groups = c if (c == f and c > 1 and rng.random() < 0.3) else 1
        case = Case(
            n=int(rng.choice([1, 2, 4, 8, 16])),
            c=c,
            h=h,
            f=f,
            k=k,
            stride=int(rng.choice([1, 1, 1, 2])),
            groups=groups,
            padding=str(rng.choice(["same", "valid"])),
            dtype="float64" if rng.random() < 0.2 else "float32",
            rank1=bool(k >= 5 and rng.random() < 0.3),
        )
        if k > h:
            continue
        macs = _geometry(case).macs()
        if macs <= (HOLDOUT_MAX_MACS_TINY if tiny else HOLDOUT_MAX_MACS):
            cases.append(case)
    return cases


def evaluate_backend(backend: str, count: int, *, seed: int, repeats: int | None) -> dict:
    """Time held-out cases; regret of the calibration in use and of dispatcher v1."""
    xp = resolve_backend(backend)
    name = backend_name(xp)
    cal, source = cost.calibration_for(name)
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    for case in holdout_cases(count, seed):
        samples.extend(measure_case(case, xp, repeats=repeats or 3, rng=rng))
    current, v1 = regret(samples, cal), regret(samples, None)
    return {
        "backend": name,
        "calibration_source": source,
        "cases": count,
        "regret_calibration": _summary(current),
        "regret_v1": _summary(v1),
        "rows_before": v1,
        "rows_after": current,
    }


def _print_evaluation(report: dict) -> None:
    print(
        f"backend {report['backend']}: {report['cases']} held-out cases, calibration "
        f"{report['calibration_source']}"
    )
    print(f"  {'case':<34} {'dir':<8} {'v1 pick':<10} {'regret':>7} {'now pick':<10} {'regret':>7}")
    for b, a in zip(report["rows_before"], report["rows_after"]):
        print(f"  {b[0]:<34} {b[1]:<8} {b[2]:<10} {b[3]:>7.2f} {a[2]:<10} {a[3]:>7.2f}")
    rb, ra = report["regret_v1"], report["regret_calibration"]
    print(
        f"  regret time(model pick)/min: dispatcher v1 geomean {rb['geomean']:.3f} max "
        f"{rb['max']:.2f}; calibration in use geomean {ra['geomean']:.3f} max {ra['max']:.2f}"
    )


def _shipped_block(calibrations: dict[str, cost.Calibration]) -> str:
    """The SHIPPED block as ruff-formatted Python (JSON string literals are Python ones)."""
    lines = [
        "# BEGIN SHIPPED CALIBRATION (generated by `arraycnn tune --update-shipped`; "
        "do not edit by hand)",
        "SHIPPED: dict[str, Calibration] = {",
    ]
    for backend, cal in sorted(calibrations.items()):
        lines.append(f"    {json.dumps(backend)}: Calibration(")
        for f in dataclasses.fields(cal):
            if f.name in ("scale", "source"):
                continue
            value = getattr(cal, f.name)
            text = repr(value) if isinstance(value, bool) else f"{value:.6g}"
            lines.append(f"        {f.name}={text},")
        lines.append("        scale={")
        lines.extend(f"            {json.dumps(k)}: {v:.4g}," for k, v in cal.scale.items())
        lines.append("        },")
        lines.append("        source=(")
        words = cal.source.split(" ")
        chunk = ""
        for word in words:
            if len(chunk) + len(word) + 1 > 70:
                lines.append(f"            {json.dumps(chunk)}")
                chunk = ""
            chunk += word + " "
        lines.append(f"            {json.dumps(chunk.rstrip())}")
        lines.append("        ),")
        lines.append("    ),")
    lines.append("}")
    lines.append("# END SHIPPED CALIBRATION")
    return "\n".join(lines)


def update_shipped(calibrations: dict[str, cost.Calibration], path: Path | None = None) -> Path:
    """Rewrite the SHIPPED block of cost.py, keeping backends not refitted now."""
    path = path or Path(cost.__file__)
    text = path.read_text(encoding="utf-8")
    merged = dict(cost.SHIPPED)
    merged.update(calibrations)
    pattern = re.compile(r"# BEGIN SHIPPED CALIBRATION.*?# END SHIPPED CALIBRATION", re.DOTALL)
    if not pattern.search(text):
        raise RuntimeError(f"no SHIPPED CALIBRATION block found in {path}")
    path.write_text(pattern.sub(lambda _: _shipped_block(merged), text), encoding="utf-8")
    return path


def _print_report(report: dict[str, Any]) -> None:
    cal: cost.Calibration = report["calibration"]
    print(f"backend {report['backend']}: {report['samples']} timings in {report['seconds']:.1f} s")
    print(f"  {cal.describe()}")
    print(f"  source: {cal.source}")
    print(f"  {'case':<34} {'dir':<8} {'v1 pick':<10} {'regret':>7} {'fit pick':<10} {'regret':>7}")
    for b, a in zip(report["rows_before"], report["rows_after"]):
        print(f"  {b[0]:<34} {b[1]:<8} {b[2]:<10} {b[3]:>7.2f} {a[2]:<10} {a[3]:>7.2f}")
    rb, ra = report["regret_before"], report["regret_after"]
    print(
        f"  regret time(model pick)/min: dispatcher v1 geomean {rb['geomean']:.3f} max "
        f"{rb['max']:.2f}; fitted geomean {ra['geomean']:.3f} max {ra['max']:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``arraycnn tune``."""
    backends = [b.strip() for arg in (args.backend or ["numpy"]) for b in arg.split(",")]
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"arraycnn tune: --repeats must be >= 1, got {args.repeats}")
    if args.evaluate < 0:
        raise SystemExit(f"arraycnn tune: --evaluate must be >= 0, got {args.evaluate}")
    reports = []
    for backend in backends:
        try:
            resolve_backend(backend)
        except (RuntimeError, ValueError, TypeError) as exc:
            print(f"arraycnn tune: skipping backend {backend!r}: {exc}")
            continue
        if args.evaluate:
            report = evaluate_backend(backend, args.evaluate, seed=args.seed, repeats=args.repeats)
            if args.json:
                print(json.dumps(report, indent=1))
            else:
                _print_evaluation(report)
            reports.append(report)
            continue
        reports.append(
            tune_backend(backend, quick=args.quick, repeats=args.repeats, note=args.note)
        )
    if not reports:
        return 1
    if args.evaluate:
        return 0
    fitted = {r["backend"]: r["calibration"] for r in reports}
    for report in reports:
        name, cal = report["backend"], report["calibration"]
        extra = {
            "regret_before": report["regret_before"],
            "regret_after": report["regret_after"],
        }
        if args.dry_run or args.update_shipped:
            continue
        path = cost.save_user_calibration(name, cal, extra=extra)
        report["stored"] = str(path)
    if args.update_shipped:
        path = update_shipped(fitted)
        print(f"shipped defaults written to {path}")
    if args.json:
        out = [
            {
                **{k: v for k, v in r.items() if k != "calibration"},
                "calibration": r["calibration"].to_json(),
            }
            for r in reports
        ]
        print(json.dumps(out, indent=1))
    else:
        for report in reports:
            _print_report(report)
            if "stored" in report:
                print(f"  stored in {report['stored']}")
    return 0
