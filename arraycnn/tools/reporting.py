"""What ``arraycnn bench`` prints and writes: the progress of the cases, the tables, the layer
and filtering summaries, the regret summary, the crossover plot, ``results.json`` and, with
``--format markdown`` or ``csv``, the tables as ``results.md`` or every median as
``results.csv``.

Printed tables fit the terminal (80 columns when it is not one): one table per backend and
case group, one per peer library, short column headers explained under each table, and a
table still too wide is split into column blocks that repeat the case column -- no header
or number is ever cut. Regret of a case on a backend = time(auto) / the fastest of the timed
strategies and auto (1.0 when the dispatcher picked the fastest and planning cost nothing);
choice regret = auto's pick run forced / the fastest strategy (the cost of the pick alone).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._version import __version__
from ..conv.table import STRATEGY_NAMES
from .cases import FILTER_KINDS
from .measuring import CaseResult, OnCall
from .peers import OPENCV_PEERS, PEER_GROUPS, PEER_LEGEND, SCIPY_PEERS, optional

__all__ = [
    "FORMATS",
    "GAP",
    "LineProgress",
    "RichProgress",
    "Table",
    "bench_tables",
    "case_progress",
    "crossover_plot",
    "environment",
    "filter_summary",
    "fit_width",
    "geomean",
    "layer_summary",
    "markdown",
    "peer_tables",
    "print_summary",
    "print_tables",
    "regret_summary",
    "render_plain",
    "strategy_table",
    "terminal_width",
    "write_csv",
    "write_results",
]

#: ``--format``: tables on the terminal only, or also written to ``--out`` as
#: ``results.md`` (markdown) or every median as ``results.csv``.
FORMATS = ("table", "markdown", "csv")
#: Spaces between two columns of a printed table.
GAP = 2
#: Column headers of the strategies (``sep``: separable).
SHORT_STRATEGY = {"separable": "sep"}
STRATEGY_LEGEND = "sep = separable; choice = auto's strategy; regret = auto / the fastest"


@dataclass
class Table:
    """One printed table: title, column headers, rows of cells and a legend under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


def _ms(seconds: float | None) -> str:
    """Milliseconds: 3 significant digits, whole above 100 (never in exponent notation)."""
    if seconds is None:
        return "-"
    ms = 1e3 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _short(strategy: str) -> str:
    return SHORT_STRATEGY.get(strategy, strategy)


def geomean(values: list[float]) -> float:
    """Geometric mean (nan for no values)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def strategy_table(results: list[CaseResult], backend: str, title: str) -> Table:
    """Median ms of every strategy and auto on ``backend``, auto's choice and regret, one
    row per case."""
    header = ["case", *map(_short, STRATEGY_NAMES), "auto", "choice", "regret"]
    rows = []
    for r in results:
        times = r.times.get(backend)
        if times is None:
            continue
        row = [r.case.label, *(_ms(times.get(s)) for s in STRATEGY_NAMES), _ms(times["auto"])]
        rows.append([*row, _short(r.choice[backend]), f"{r.regret(backend):.2f}"])
    return Table(f"{title}, {backend}: median ms", header, rows, STRATEGY_LEGEND)


def peer_tables(results: list[CaseResult], title: str) -> list[Table]:
    """One table per peer library (:data:`arraycnn.tools.peers.PEER_GROUPS`) that timed
    something in ``results``: median ms per case; the legend names each function."""
    seen = {p for r in results for p in r.peers}
    tables = []
    for group, columns in PEER_GROUPS.items():
        names = [name for name in columns if name in seen]
        if not names:
            continue
        header = ["case", *(columns[name] for name in names)]
        rows = [[r.case.label, *(_ms(r.peers.get(name)) for name in names)] for r in results]
        legend = "; ".join(f"{columns[name]} = {PEER_LEGEND.get(name, name)}" for name in names)
        tables.append(Table(f"{title}, peers from {group}: median ms", header, rows, legend))
    return tables


def layer_summary(forward: list[CaseResult], backward: list[CaseResult], backend: str) -> Table:
    """Forward + backward per layer on ``backend`` against torch, and GFLOP/s against GEMM.

    ``ratio`` is (auto forward + auto backward) / (torch forward + torch backward);
    ``autoGF`` is auto's forward GFLOP/s and ``gemmGF`` that of the layer's GEMM alone on
    the same backend, ``%gemm`` their ratio. The last row is the geometric mean of the ratios.
    """
    header = ["case", "auto", "best", "torch", "ratio", "autoGF", "gemmGF", "%gemm"]
    rows: list[list[str]] = []
    ratios: list[float] = []
    by_label = {r.case.label: r for r in backward}
    for fwd in forward:
        bwd = by_label.get(fwd.case.label)
        if bwd is None or backend not in fwd.times or backend not in bwd.times:
            continue
        flops = 2 * fwd.case.geometry().macs()
        torch = [r.peers.get("torch") for r in (fwd, bwd)]
        torch_total = None if None in torch else sum(torch)
        f, b = fwd.times[backend], bwd.times[backend]
        auto = f["auto"] + b["auto"]
        best = min((f[s] + b[s] for s in set(f) & set(b) - {"auto"}), default=None)
        gemm = fwd.gemm.get(backend)
        gemm_rate = flops / gemm / 1e9 if gemm else None
        auto_rate = flops / f["auto"] / 1e9
        ratio = auto / torch_total if torch_total else None
        if ratio is not None:
            ratios.append(ratio)
        rows.append(
            [
                fwd.case.label,
                _ms(auto),
                _ms(best),
                _ms(torch_total),
                "-" if ratio is None else f"{ratio:.2f}",
                f"{auto_rate:.0f}",
                "-" if gemm_rate is None else f"{gemm_rate:.0f}",
                "-" if gemm_rate is None else f"{100 * auto_rate / gemm_rate:.0f}",
            ]
        )
    if ratios:
        rows.append(["geometric mean", "", "", "", f"{geomean(ratios):.2f}", "", "", ""])
    legend = (
        "auto, best (the fastest strategy), torch: forward + backward ms; ratio = auto / "
        "torch; autoGF: auto's forward GFLOP/s; gemmGF: the layer's GEMM alone; "
        "%gemm = autoGF / gemmGF"
    )
    return Table(f"conv layers, {backend}: forward + backward", header, rows, legend)


def filter_summary(results: list[CaseResult], backend: str) -> Table:
    """auto on ``backend`` against the fastest SciPy function and the fastest OpenCV
    function per case."""
    header = ["case", "auto", "scipy", "auto/scipy", "cv2", "auto/cv2"]
    rows = []
    for r in results:
        if backend not in r.times:
            continue
        auto = r.times[backend]["auto"]
        row = [r.case.label, _ms(auto)]
        for names in (SCIPY_PEERS, OPENCV_PEERS):
            group = [t for p, t in r.peers.items() if p in names]
            row += [_ms(min(group)), f"{auto / min(group):.2f}"] if group else ["-", "-"]
        rows.append(row)
    legend = "scipy, cv2: the fastest of their functions (tables above), ms"
    return Table(f"image filtering, {backend}: auto against SciPy and OpenCV", header, rows, legend)


def bench_tables(results: list[CaseResult], backends: list[str], peers: bool) -> list[Table]:
    """Every table of a run, in print order: per case group its strategy tables (one per
    backend) and peer tables (one per library), then the summaries per backend."""
    layers = [r for r in results if not r.case.is_filter]
    forward = [r for r in layers if r.direction == "forward"]
    backward = [r for r in layers if r.direction == "backward"]
    filtering = [r for r in results if r.case.is_filter]
    tables: list[Table] = []
    for title, group in (
        ("conv layers, forward", forward),
        ("conv layers, backward (gx, gw, gb)", backward),
        ("image filtering ('same')", filtering),
    ):
        if group:
            tables += [strategy_table(group, backend, title) for backend in backends]
            tables += peer_tables(group, title)
    if forward and backward:
        tables += [layer_summary(forward, backward, backend) for backend in backends]
    if filtering and peers:
        tables += [filter_summary(filtering, backend) for backend in backends]
    return [t for t in tables if t.rows]


def _widths(header: list[str], rows: list[list[str]]) -> list[int]:
    return [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]


def fit_width(table: Table, width: int) -> list[Table]:
    """``table`` as it is when it fits ``width`` characters, else split into column blocks
    that each repeat the first (case) column, titled ``(1/2)``, ``(2/2)``, ...; the caption
    goes under the last block."""
    widths = _widths(table.header, table.rows)
    blocks: list[list[int]] = [[]]
    used = widths[0]
    for i in range(1, len(widths)):
        if blocks[-1] and used + GAP + widths[i] > width:
            blocks.append([])
            used = widths[0]
        blocks[-1].append(i)
        used += GAP + widths[i]
    if len(blocks) == 1:
        return [table]
    return [
        Table(
            f"{table.title} ({n}/{len(blocks)})",
            [table.header[0], *(table.header[i] for i in block)],
            [[row[0], *(row[i] for i in block)] for row in table.rows],
            table.caption if n == len(blocks) else "",
        )
        for n, block in enumerate(blocks, start=1)
    ]


def render_plain(table: Table) -> list[str]:
    """The lines of ``table`` as aligned text: the case column left, the others right."""
    widths = _widths(table.header, table.rows)

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return (" " * GAP).join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    rule = (" " * GAP).join("-" * w for w in widths)
    return [line(table.header), rule, *(line(row) for row in table.rows)]


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` when set), 80 when it is not one."""
    return shutil.get_terminal_size((80, 24)).columns


def print_tables(tables: list[Table], console: Any = None) -> None:
    """Print ``tables`` within the width of ``console`` (a ``rich.console.Console``; default:
    one on stdout when rich is installed, else aligned plain text at
    :func:`terminal_width`): title, table, wrapped legend, each table split by
    :func:`fit_width` where it is too wide."""
    if console is None and optional("rich") is not None:
        from rich.console import Console

        console = Console()
    width = console.width if console is not None else terminal_width()
    for table in (block for t in tables for block in fit_width(t, width)):
        title = textwrap.fill(table.title, width, subsequent_indent="  ")
        caption = textwrap.fill(table.caption, width) if table.caption else ""
        if console is None:
            print(f"\n{title}")
            print("\n".join(render_plain(table)))
            if caption:
                print(caption)
            continue
        console.print(f"\n{title}", style="bold", markup=False, highlight=False)
        console.print(_rich_table(table))
        if caption:
            console.print(caption, style="dim", markup=False, highlight=False)


def _rich_table(table: Table) -> Any:
    from rich import box
    from rich.table import Table as RichTable

    rich_table = RichTable(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, GAP - 1, 0, 0)
    )
    for i, name in enumerate(table.header):
        rich_table.add_column(name, justify="right" if i else "left", no_wrap=True)
    for row in table.rows:
        rich_table.add_row(*row)
    return rich_table


def markdown(tables: list[Table]) -> str:
    """The tables as markdown (``results.md``), whole: no width limit, no split."""
    parts = []
    for table in tables:
        lines = [f"### {table.title}", ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join([":---", *("---:" for _ in table.header[1:])]) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        if table.caption:
            lines += ["", table.caption]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_csv(path: Path, results: list[CaseResult]) -> None:
    """Every median of the run as ``results.csv``, one row per case, direction and
    contender: columns case, direction, kind (strategy, auto, peer or gemm), backend (empty
    for peers, which run on NumPy arrays), name, ms, and auto's choice on that backend."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "direction", "kind", "backend", "name", "ms", "auto_choice"])
        for r in results:
            head = [r.case.label, r.direction]
            for backend, times in r.times.items():
                choice = r.choice[backend]
                for name, seconds in times.items():
                    kind = "auto" if name == "auto" else "strategy"
                    writer.writerow([*head, kind, backend, name, 1e3 * seconds, choice])
                if backend in r.gemm:
                    writer.writerow([*head, "gemm", backend, "gemm", 1e3 * r.gemm[backend], ""])
            for name, seconds in r.peers.items():
                writer.writerow([*head, "peer", "", name, 1e3 * seconds, ""])


class LineProgress:
    """One short line per case (stdout not a terminal, or rich not installed): its number
    and label when it starts, its seconds when it ends."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.count, self.stream = total, 0, stream
        self.started = 0.0

    def start(self, label: str) -> OnCall | None:
        """Announce a case; no per-call updates."""
        self.count += 1
        self.started = time.monotonic()
        width = len(str(self.total))
        stream = self.stream or sys.stdout
        print(f"[{self.count:>{width}}/{self.total}] {label} ...", end="", file=stream, flush=True)
        return None

    def finish(self) -> None:
        """End the case's line with its seconds."""
        seconds = time.monotonic() - self.started
        print(f" {seconds:.1f} s", file=self.stream or sys.stdout, flush=True)


class RichProgress:
    """A rich progress bar for the running case, advanced as each call is timed and naming
    the contender being timed, over a bar of all cases; a finished case leaves one line
    with its seconds. rich repaints twice a second from its own thread, so that the elapsed
    time moves during a long call (about a millisecond of drawing each time: noise far
    below the timings')."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=2,
            transient=True,
        )
        self.total, self.count = total, 0
        self.overall = self.progress.add_task("cases", total=total)
        self.task: Any = None
        self.label, self.started = "", 0.0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str) -> OnCall:
        """Add the case's bar; returns the ``on_call`` that advances it."""
        self.count += 1
        self.label, self.started = label, time.monotonic()
        self.task = self.progress.add_task(label, total=None)
        self.progress.update(self.overall, description=f"case {self.count}/{self.total}")
        return self.advance

    def advance(self, contender: str, done: int, planned: int) -> None:
        """``contender`` is timed next; ``done`` calls of ``planned`` so far are done."""
        description = f"{self.label} {contender}"
        self.progress.update(self.task, completed=done, total=planned, description=description)

    def finish(self) -> None:
        """Drop the case's bar, leave its line, advance the bar of all cases."""
        self.progress.remove_task(self.task)
        self.progress.advance(self.overall)
        seconds = time.monotonic() - self.started
        width = len(str(self.total))
        line = f"[{self.count:>{width}}/{self.total}] {self.label} {seconds:.1f} s"
        self.progress.console.print(line, markup=False, highlight=False)


@contextmanager
def case_progress(total: int) -> Iterator[LineProgress | RichProgress]:
    """The progress display of ``total`` cases: :class:`RichProgress` when rich is installed
    and stdout is a terminal, else :class:`LineProgress`."""
    if optional("rich") is not None and sys.stdout.isatty():
        with RichProgress(total) as progress:
            yield progress
    else:
        yield LineProgress(total)


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


def print_summary(
    results: list[CaseResult], regrets: dict[str, dict[str, Any]], width: int | None = None
) -> None:
    """The regret lines per backend and the cases not timed, wrapped at ``width``
    (default: :func:`terminal_width`)."""
    width = width or terminal_width()

    def say(text: str, indent: str = "") -> None:
        print(textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + "  "))

    for backend, s in regrets.items():
        print()
        say(
            f"regret on {backend}: max {s['max']:.2f} ({s['max_case']}), "
            f"geometric mean {s['geomean']:.3f} over {s['cases']} cases"
        )
        if s["choice_max"] is not None:
            others = s["other_choice_cases"]
            say(
                f"auto's choice alone (its strategy forced / the fastest): max "
                f"{s['choice_max']:.2f}, geometric mean {s['choice_geomean']:.3f}; "
                f"another strategy than the fastest in {len(others)} case(s)"
                + (": " + "; ".join(others) if others else ""),
                indent="  ",
            )
    skipped = [r for r in results if r.skipped]
    if skipped:
        count = sum(len(r.skipped) for r in skipped)
        print(f"\nnot timed ({count}):")
        for r in skipped:
            reasons = "; ".join(f"{k}: {v}" for k, v in r.skipped.items())
            say(f"{r.case.label} ({r.direction}): {reasons}", indent="  ")


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
    colors = ["#d9d9d9", "#8dd3c7", "#fdb462", "#80b1d3", "#fb8072", "#bebada"]  # none + 5
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
            cmap, top = ListedColormap(colors), len(colors) - 1
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=top, aspect="auto")
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
