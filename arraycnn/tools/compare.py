"""``arraycnn bench --compare REV``: the current tree against commit ``REV``, interleaved.

The regression check of CI (``.ci/run`` compares HEAD with its parent). The package of
``REV`` is extracted with ``git archive`` into a temporary folder; one worker process per
tree (:mod:`.compare_worker`, with that tree first on ``PYTHONPATH``) builds the seeded
inputs of :data:`CASES` once. Then every round asks both workers in turn for each case --
the order alternating from round to round, so that drift and noise hit both sides alike --
and each reply is the fastest of ``calls`` consecutive calls; the median over the rounds is
kept per side.

A case slower on the current tree by more than ``--threshold`` (default 1.5x: timing
noise on these machines reaches it) is reported as a warning that names it and both times;
the exit status stays 0, because timing alone never fails CI. A case that errors on the
current tree makes the exit status 1; one that errors only on ``REV`` (an older API) is
reported and skipped.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..cli import UsageError

__all__ = ["CASES", "Side", "compare", "format_report", "run_compare"]

#: The quick subset: (name, function, input shapes, dtype, keyword arguments). Only the
#: long-standing public API, so that older commits run the same calls.
CASES: tuple[tuple[str, str, tuple[tuple[int, ...], ...], dict[str, Any]], ...] = (
    ("conv2d auto 64x1x28x28:32x3x3", "conv2d", ((64, 1, 28, 28), (32, 1, 3, 3)), {}),
    ("conv2d auto 64x32x14x14:64x3x3", "conv2d", ((64, 32, 14, 14), (64, 32, 3, 3)), {}),
    (
        "conv2d_backward auto 64x1x28x28:32x3x3",
        "conv2d_backward",
        ((64, 1, 28, 28), (32, 1, 3, 3)),
        {},
    ),
    (
        "conv2d_backward auto 64x32x14x14:64x3x3",
        "conv2d_backward",
        ((64, 32, 14, 14), (64, 32, 3, 3)),
        {},
    ),
    *(
        (
            f"conv2d {s} 64x32x14x14:64x3x3",
            "conv2d",
            ((64, 32, 14, 14), (64, 32, 3, 3)),
            {"strategy": s},
        )
        for s in ("naive", "im2col", "fft")
    ),
    ("correlate2d auto 256^2 k7", "correlate2d", ((256, 256), (7, 7)), {"mode": "same"}),
    ("correlate2d auto 512^2 k31", "correlate2d", ((512, 512), (31, 31)), {"mode": "same"}),
    ("max_pool2d 64x32x28x28 k2", "max_pool2d", ((64, 32, 28, 28),), {"kernel_size": 2}),
    (
        "max_pool2d_backward 64x32x28x28 k2",
        "max_pool2d_backward",
        ((64, 32, 28, 28),),
        {"kernel_size": 2},
    ),
)


@dataclass
class Side:
    """One tree's timings: seconds per case name (every round), errors by case name."""

    label: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        """The median over the rounds, None where the case errored or never ran."""
        values = self.seconds.get(name)
        return statistics.median(values) if values and name not in self.errors else None


class _Worker:
    """A worker process timing one tree."""

    def __init__(self, script: Path, cases_file: Path, tree: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(cases_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.loaded = self._reply().get("ready", "?")

    def _reply(self) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError(f"the timing worker exited ({self.process.wait()})")
        return json.loads(line)

    def time(self, case: int, calls: int) -> dict[str, Any]:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            raise RuntimeError("the timing worker is closed")
        stdin.write(json.dumps({"case": case, "calls": calls}) + "\n")
        stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {' '.join(args)} failed: {message[-1] if message else '?'}")
    return done.stdout if binary else done.stdout.decode().strip()


def repository_root(start: Path) -> Path:
    """The git checkout of arraycnn that holds ``start``; :class:`UsageError` otherwise."""
    try:
        root = Path(_git(start, "rev-parse", "--show-toplevel"))
    except UsageError:
        raise UsageError(
            f"--compare needs a git checkout of arraycnn; {start} is not in one "
            "(run it from the repository)"
        ) from None
    if not (root / "arraycnn" / "__init__.py").is_file():
        raise UsageError(f"{root} is not a checkout of arraycnn (no arraycnn/__init__.py)")
    return root


def extract_package(repo: Path, rev: str, into: Path) -> str:
    """``REV``'s ``arraycnn/`` package extracted under ``into``; returns the full hash."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except UsageError:
        raise UsageError(f"--compare: {rev!r} is not a commit of {repo}") from None
    archive = _git(repo, "archive", "--format=tar", commit, "arraycnn", binary=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+: refuse links out, devices
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - older 3.10: our own repository's archive
            tar.extractall(into)
    return commit


def compare(
    trees: dict[str, Path], *, rounds: int, calls: int, workdir: Path, progress: Any = None
) -> dict[str, Side]:
    """Time :data:`CASES` on each tree (label -> folder holding ``arraycnn/``), interleaved:
    each round visits every case on every tree, the trees' order alternating by round."""
    script = workdir / "compare_worker.py"
    source = resources.files(__package__).joinpath("compare_worker.py").read_text("utf-8")
    script.write_text(source, encoding="utf-8")  # outside any tree: it imports no neighbour
    cases_file = workdir / "cases.json"
    specs = [{"kind": k, "shapes": s, "dtype": "float32", "kwargs": kw} for _, k, s, kw in CASES]
    cases_file.write_text(json.dumps(specs), encoding="utf-8")
    workers = {label: _Worker(script, cases_file, tree) for label, tree in trees.items()}
    sides = {label: Side(label) for label in trees}
    try:
        labels = list(trees)
        for r in range(rounds):
            for i, (name, *_) in enumerate(CASES):
                for label in labels if r % 2 == 0 else labels[::-1]:
                    side = sides[label]
                    if name in side.errors:
                        continue
                    reply = workers[label].time(i, calls)
                    if "error" in reply:
                        side.errors[name] = reply["error"]
                    else:
                        side.seconds.setdefault(name, []).append(reply["seconds"])
            if progress is not None:
                progress(r + 1, rounds)
    finally:
        for worker in workers.values():
            worker.close()
    return sides


def format_report(base: Side, head: Side, threshold: float) -> tuple[list[str], list[str]]:
    """The table lines and the warnings (cases slower on ``head`` by more than
    ``threshold``)."""
    width = max(len(name) for name, *_ in CASES)
    cols = [max(12, len(base.label)), max(12, len(head.label))]
    lines = [f"{'case':<{width}}  {base.label:>{cols[0]}}  {head.label:>{cols[1]}}  ratio"]
    warnings = []
    for name, *_ in CASES:
        b, h = base.median(name), head.median(name)
        cells = [
            f"{f'{t * 1e3:.2f} ms' if t is not None else 'error':>{col}}"
            for t, col in zip((b, h), cols)
        ]
        ratio = f"{h / b:5.2f}x" if b and h else "    -"
        lines.append(f"{name:<{width}}  {cells[0]}  {cells[1]}  {ratio}")
        if b and h and h > threshold * b:
            warnings.append(
                f"warning: {name} is {h / b:.2f}x slower on {head.label} than on {base.label} "
                f"({b * 1e3:.2f} ms -> {h * 1e3:.2f} ms, threshold {threshold:g}x)"
            )
    return lines, warnings


def run_compare(rev: str, *, rounds: int, calls: int, threshold: float) -> int:
    """Compare the working tree with ``rev``; print the table and warnings. Exit status 1
    if a case errors on the working tree, else 0."""
    root = repository_root(Path.cwd())
    with tempfile.TemporaryDirectory(prefix="arraycnn-compare-") as tmp:
        base_tree = Path(tmp) / "base"
        commit = extract_package(root, rev, base_tree)
        head_label = "working tree"
        base_label = f"{rev} ({commit[:10]})"
        print(
            f"comparing {head_label} ({root}) with {base_label}: {len(CASES)} cases, "
            f"{rounds} interleaved rounds, fastest of {calls} calls each",
            flush=True,
        )

        def progress(done: int, total: int) -> None:
            print(f"  round {done}/{total}", flush=True)

        sides = compare(
            {base_label: base_tree, head_label: root},
            rounds=rounds,
            calls=calls,
            workdir=Path(tmp),
            progress=progress,
        )
    base, head = sides[base_label], sides[head_label]
    lines, warnings = format_report(base, head, threshold)
    print("\n".join(lines))
    for name, error in base.errors.items():
        print(f"note: {name} does not run on {base_label} ({error}); not compared")
    for warning in warnings:
        print(warning)
    if not warnings:
        print(f"no case slower than {threshold:g}x")
    for name, error in head.errors.items():
        print(f"error: {name} fails on the {head_label}: {error}", file=sys.stderr)
    return 1 if head.errors else 0
