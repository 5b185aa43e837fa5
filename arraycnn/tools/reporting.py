"""What ``arraycnn bench`` prints and writes: the tables, the layer and filtering summaries,
the regret summary, the crossover plot and ``results.json``.

Regret of a case on a backend = time(auto) / the fastest of the timed strategies and auto
(1.0 when the dispatcher picked the fastest and planning cost nothing); choice regret =
auto's pick run forced / the fastest strategy (the cost of the pick alone).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..conv.table import STRATEGY_NAMES
from .cases import FILTER_KINDS
from .measuring import CaseResult
from .peers import OPENCV_PEERS, PEER_LEGEND, SCIPY_PEERS, optional

__all__ = [
    "crossover_plot",
    "environment",
    "filter_summary_rows",
    "geomean",
    "layer_summary_rows",
    "print_summary",
    "print_table",
    "regret_summary",
    "table_rows",
    "write_results",
]

Table = tuple[list[str], list[list[str]]]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g}"


def geomean(values: list[float]) -> float:
    """Geometric mean (nan for no values)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def table_rows(results: list[CaseResult]) -> Table:
    """Header and rows (milliseconds) of one group of cases, one row per case x backend."""
    peer_names = sorted({p for r in results for p in r.peers})
    header = ["case", "backend", *STRATEGY_NAMES, "auto", "choice", "regret", *peer_names]
    rows = []
    for r in results:
        for backend, times in r.times.items():
            row = [r.case.label, backend]
            row += [_ms(times.get(s)) for s in STRATEGY_NAMES]
            row += [_ms(times["auto"]), r.choice[backend], f"{r.regret(backend):.2f}"]
            first = backend == next(iter(r.times))  # peers once per case
            row += [_ms(r.peers.get(p)) if first else "" for p in peer_names]
            rows.append(row)
    return header, rows


def layer_summary_rows(forward: list[CaseResult], backward: list[CaseResult]) -> Table:
    """Forward + backward per layer and backend against torch, and GFLOP/s against GEMM.

    ``auto/torch`` is (auto forward + auto backward) / (torch forward + torch backward);
    ``%gemm`` is auto's forward GFLOP/s over the GFLOP/s of the layer's GEMM alone on the
    same backend. The last rows are the geometric means of auto/torch per backend.
    """
    header = ["case", "backend", "auto f+b", "best f+b", "torch f+b", "auto/torch"]
    header += ["gemm GF/s", "auto fwd GF/s", "%gemm"]
    rows: list[list[str]] = []
    ratios: dict[str, list[float]] = {}
    by_label = {r.case.label: r for r in backward}
    for fwd in forward:
        bwd = by_label.get(fwd.case.label)
        if bwd is None:
            continue
        flops = 2 * fwd.case.geometry().macs()
        torch = [r.peers.get("torch") for r in (fwd, bwd)]
        torch_total = None if None in torch else sum(torch)
        for backend in fwd.times:
            f, b = fwd.times[backend], bwd.times[backend]
            auto = f["auto"] + b["auto"]
            best = min((f[s] + b[s] for s in set(f) & set(b) - {"auto"}), default=None)
            gemm = fwd.gemm.get(backend)
            gemm_rate = flops / gemm / 1e9 if gemm else None
            auto_rate = flops / f["auto"] / 1e9
            ratio = auto / torch_total if torch_total else None
            if ratio is not None:
                ratios.setdefault(backend, []).append(ratio)
            rows.append(
                [
                    fwd.case.label,
                    backend,
                    _ms(auto),
                    _ms(best),
                    _ms(torch_total),
                    "-" if ratio is None else f"{ratio:.2f}",
                    "-" if gemm_rate is None else f"{gemm_rate:.0f}",
                    f"{auto_rate:.0f}",
                    "-" if gemm_rate is None else f"{100 * auto_rate / gemm_rate:.0f}",
                ]
            )
    for backend, values in ratios.items():
        rows.append(["geometric mean", backend, "", "", "", f"{geomean(values):.2f}", "", "", ""])
    return header, rows


def filter_summary_rows(results: list[CaseResult]) -> Table:
    """auto against the fastest SciPy function and the fastest OpenCV function per case."""
    header = ["case", "backend", "auto", "scipy best", "auto/scipy", "cv2 best", "auto/cv2"]
    rows = []
    for r in results:
        scipy = {p: t for p, t in r.peers.items() if p in SCIPY_PEERS}
        opencv = {p: t for p, t in r.peers.items() if p in OPENCV_PEERS}
        for backend, times in r.times.items():
            auto = times["auto"]
            row = [r.case.label, backend, _ms(auto)]
            for group in (scipy, opencv):
                if group:
                    name = min(group, key=group.__getitem__)
                    row += [f"{_ms(group[name])} ({name})", f"{auto / group[name]:.2f}"]
                else:
                    row += ["-", "-"]
            rows.append(row)
    return header, rows


def regret_summary(results: list[CaseResult]) -> dict[str, dict[str, Any]]:
    """Per backend: the largest regret, its case, and the geometric mean over all cases;
    the same of :meth:`CaseResult.choice_regret`, and the cases where auto ran another
    strategy than the fastest."""
    regrets: dict[str, list[tuple[float, str]]] = {}
    choices: dict[str, list[tuple[float, str]]] = {}
    for r in results:
        for backend in r.times:
            label = f"{r.case.label} ({r.direction})"
            regrets.setdefault(backend, []).append((r.regret(backend), label))
            choice = r.choice_regret(backend)
            if choice is not None:
                choices.setdefault(backend, []).append((choice, label))
    summary: dict[str, dict[str, Any]] = {}
    for backend, values in regrets.items():
        chosen = choices.get(backend, [])
        summary[backend] = {
            "max": max(values)[0],
            "max_case": max(values)[1],
            "geomean": geomean([v for v, _ in values]),
            "cases": len(values),
            "choice_max": max(chosen)[0] if chosen else None,
            "choice_geomean": geomean([v for v, _ in chosen]) if chosen else None,
            "other_choice_cases": sorted(label for v, label in chosen if v > 1.0),
        }
    return summary


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A rich table when rich is installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(f"\n{title}")
        for line in [header, *rows]:
            print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
        return
    table = RichTable(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=i < 2)
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, sum(len(h) + 3 for h in header))).print(table)


def print_summary(results: list[CaseResult], regrets: dict[str, dict[str, Any]]) -> None:
    """The regret lines per backend, the peers' legend and the cases not timed."""
    for backend, s in regrets.items():
        print(
            f"\nregret on {backend}: max {s['max']:.2f} ({s['max_case']}), "
            f"geometric mean {s['geomean']:.3f} over {s['cases']} cases"
        )
        if s["choice_max"] is not None:
            others = s["other_choice_cases"]
            print(
                f"  auto's choice alone (its strategy forced / the fastest): max "
                f"{s['choice_max']:.2f}, geometric mean {s['choice_geomean']:.3f}; "
                f"another strategy than the fastest in {len(others)} case(s)"
                + (": " + "; ".join(others) if others else "")
            )
    peers_seen = sorted({p for r in results for p in r.peers})
    if peers_seen:
        print("\npeers: " + "; ".join(f"{p} = {PEER_LEGEND.get(p, p)}" for p in peers_seen))
    skipped = {f"{r.case.label} {k}": v for r in results for k, v in r.skipped.items()}
    if skipped:
        listed = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        print(f"\nnot timed ({len(skipped)}): {listed}")


def crossover_plot(results: list[CaseResult], backends: list[str], path: Path) -> bool:
    """Best measured strategy by image size x kernel size, one panel per backend x kind.

    Cell text: the best strategy, and auto's choice under it when that differs. Returns
    False (nothing written) when there are no filtering cases.
    """
    filters = [r for r in results if r.case.is_filter]
    if not filters:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    images = sorted({r.case.image for r in filters})
    kernels = sorted({r.case.kernel for r in filters})
    colors = ["#d9d9d9", "#8dd3c7", "#fdb462", "#80b1d3", "#fb8072"]  # none + 4 strategies
    width = 2.2 + 1.1 * len(kernels) * len(FILTER_KINDS)
    height = 1.2 + 1.0 * len(images) * len(backends)
    fig, axes = plt.subplots(
        len(backends), len(FILTER_KINDS), figsize=(width, height), squeeze=False
    )
    for bi, backend in enumerate(backends):
        for ki, kind in enumerate(FILTER_KINDS):
            ax = axes[bi][ki]
            grid = np.zeros((len(images), len(kernels)))
            for r in filters:
                if r.case.kind != kind or backend not in r.times:
                    continue
                i, j = images.index(r.case.image), kernels.index(r.case.kernel)
                best = r.best(backend)
                grid[i, j] = 0 if best is None else 1 + STRATEGY_NAMES.index(best)
                label = best or "-"
                if r.choice[backend] != best:
                    label += f"\nauto: {r.choice[backend]}\n×{r.regret(backend):.1f}"
                ax.text(j, i, label, ha="center", va="center", fontsize=7)
            ax.imshow(grid, cmap=ListedColormap(colors), vmin=0, vmax=4, aspect="auto")
            ax.set_xticks(range(len(kernels)), [str(k) for k in kernels])
            ax.set_yticks(range(len(images)), [f"{s}²" for s in images])
            ax.set_xlabel("kernel size")
            ax.set_ylabel("image size")
            ax.set_title(f"{backend}, {kind} kernel", fontsize=9)
    fig.suptitle("fastest conv strategy (measured); auto's choice where it differs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def environment() -> dict[str, Any]:
    """Versions and machine facts stored with the results."""
    versions = {}
    for name in ("numpy", "scipy", "torch", "cv2"):
        module = optional(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return {
        "arraycnn": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": versions,
    }


def write_results(
    path: Path, results: list[CaseResult], settings: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Write ``results.json`` (settings, environment, regret summary, every case); the dict."""
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": settings,
        "strategies": list(STRATEGY_NAMES),
        "seconds_total": seconds,
        "regret": regret_summary(results),
        "cases": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
