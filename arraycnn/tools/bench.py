"""``arraycnn bench``: every strategy, ``auto`` and the peers on a compact grid of cases.

For each case (the reference conv layers, and single-image filtering over image size x
kernel size x kernel kind) every contender -- each strategy on each backend, ``auto`` on
each backend, and the peers (torch, SciPy, OpenCV where installed) -- is timed
**interleaved in one process**: round-robin rounds, each contender warmed right before its
timed call, the median of each kept, so that noise from other work on the machine hits all
contenders alike. A case runs ``--repeat`` rounds and, while under ``--case-seconds`` of
timing, more (at most :data:`MAX_ROUNDS`): sub-millisecond cases get many samples.

Outputs: a table per case group (rich when installed), ``results.json`` (raw medians,
choices, regrets) and ``crossover.png`` (the measured best strategy by image size x kernel
size, matplotlib Agg) in ``--out``.

Regret of a case on a backend = time(auto) / min over the timed strategies (and auto):
1.0 when the dispatcher picked the fastest. A strategy predicted slower than
``--max-seconds`` per call, or to need a workspace over 2 GiB, is not timed (listed as
skipped with the reason).

Inputs are generated on the host with NumPy (seeded) and moved to each backend: explicit,
benchmark-only host work.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import __version__
from .backend import BACKEND_NAMES, asarray, resolve_backend, synchronize
from .capabilities import STRATEGY_NAMES
from .conv import choose_strategy, conv2d, conv2d_backward
from .conv import cost as _cost
from .conv import memory as _memory
from .conv.dispatch import eligible_strategies, plan_call
from .conv.separable import numerical_rank
from .geometry import ConvGeometry, conv_geometry

__all__ = ["Case", "add_arguments", "build_cases", "measure_case", "run"]

#: Workspaces above this many bytes are not timed.
MAX_WORKSPACE_BYTES = 2 * 1024**3
KERNEL_KINDS = ("gaussian", "random")

#: Reference layers: label -> (x shape, filters, kernel, stride, padding, groups).
LAYERS: dict[str, tuple[tuple[int, int, int, int], int, int, int, int, int]] = {
    "64x1x28x28:32x3x3": ((64, 1, 28, 28), 32, 3, 1, 1, 1),
    "64x32x14x14:64x3x3": ((64, 32, 14, 14), 64, 3, 1, 1, 1),
    "32x64x56x56:64x3x3": ((32, 64, 56, 56), 64, 3, 1, 1, 1),
    "8x3x224x224:64x7x7/s2": ((8, 3, 224, 224), 64, 7, 2, 3, 1),
    "16x64x56x56:64x3x3/g64": ((16, 64, 56, 56), 64, 3, 1, 1, 64),
}
QUICK_LAYERS = ("64x1x28x28:32x3x3", "64x32x14x14:64x3x3")

#: Grids: (image sides, kernel sides, repeats, max seconds per call).
FULL_GRID = ((256, 1024, 4096), (3, 7, 15, 31, 63), 5, 2.0)
QUICK_GRID = ((64, 256), (3, 7, 15), 3, 0.25)
#: Seconds of timing a case gets at least (cheap cases run more rounds; see
#: :func:`interleaved_medians`), full and quick grids.
CASE_SECONDS, QUICK_CASE_SECONDS = 2.0, 0.2
#: Rounds a case gets at most.
MAX_ROUNDS = 60


@dataclass(frozen=True)
class Case:
    """One convolution to time: NCHW input, (F, C/groups, kh, kw) weights, geometry keywords.

    ``kind`` is ``"layer"`` (seeded normal weights) or a filtering kernel kind
    (``"gaussian"``: rank 1, ``"random"``: full rank) with N = C = F = 1.
    """

    label: str
    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kind: str = "layer"

    @property
    def kwargs(self) -> dict[str, int]:
        """Geometry keywords of :func:`arraycnn.conv2d`."""
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups}

    def geometry(self) -> ConvGeometry:
        return conv_geometry(self.x_shape, self.w_shape, **self.kwargs)

    @property
    def image(self) -> int:
        return self.x_shape[2]

    @property
    def kernel(self) -> int:
        return self.w_shape[2]


def layer_case(label: str) -> Case:
    """The reference layer called ``label`` (a key of :data:`LAYERS`)."""
    x_shape, filters, k, stride, padding, groups = LAYERS[label]
    w_shape = (filters, x_shape[1] // groups, k, k)
    return Case(label, x_shape, w_shape, stride=stride, padding=padding, groups=groups)


def filter_case(image: int, kernel: int, kind: str) -> Case:
    """One image (image x image) filtered by one kernel, output the input's size."""
    label = f"img{image}:k{kernel}:{kind}"
    return Case(label, (1, 1, image, image), (1, 1, kernel, kernel), padding=kernel // 2, kind=kind)


def build_cases(layers: list[str], images: list[int], kernels: list[int]) -> list[Case]:
    """Layer cases, then the filtering grid (image x kernel x kind), kernel <= image."""
    cases = [layer_case(name) for name in layers]
    for image in images:
        for kernel in kernels:
            if kernel <= image:
                cases.extend(filter_case(image, kernel, kind) for kind in KERNEL_KINDS)
    return cases


# --- host data ------------------------------------------------------------------------------


def gaussian_kernel(size: int) -> np.ndarray:
    """Normalized Gaussian (rank 1), sigma = size / 6, float32, shape (size, size)."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / max(size / 6.0, 0.5)) ** 2)
    return np.outer(g / g.sum(), g / g.sum()).astype(np.float32)


def host_arrays(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float32 input and weights of ``case`` (host)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x_shape).astype(np.float32)
    if case.kind == "gaussian":
        w = gaussian_kernel(case.kernel)[None, None, ...]  # (k, k) -> (1, 1, k, k)
    else:
        w = rng.standard_normal(case.w_shape).astype(np.float32)
        w /= np.float32(math.sqrt(float((w * w).sum()) / case.w_shape[0]))
    return x, w


# --- feasibility ----------------------------------------------------------------------------


def estimated_seconds(
    strategy: str, geom: ConvGeometry, rank: int | None = None, *, direction: str = "forward"
) -> float:
    """The dispatcher's own prediction (:func:`arraycnn.conv.cost.predicted_seconds`)."""
    return _cost.predicted_seconds(strategy, geom, rank, direction=direction)


def workspace_bytes(
    strategy: str, geom: ConvGeometry, itemsize: int = 4, *, direction: str = "forward"
) -> int:
    """The dispatcher's own workspace prediction (:func:`arraycnn.conv.memory.workspace_bytes`)."""
    return _memory.workspace_bytes(strategy, geom, itemsize=itemsize, direction=direction)


def skip_reason(
    strategy: str,
    geom: ConvGeometry,
    rank: int | None,
    max_seconds: float,
    *,
    direction: str = "forward",
    itemsize: int = 4,
) -> str:
    """Why ``strategy`` is not timed on this case ('' if it is)."""
    seconds = estimated_seconds(strategy, geom, rank, direction=direction)
    if seconds > max_seconds:
        return f"predicted {seconds:.2g} s per call"
    if workspace_bytes(strategy, geom, itemsize, direction=direction) > MAX_WORKSPACE_BYTES:
        return f"workspace over {MAX_WORKSPACE_BYTES / 2**30:.0f} GiB"
    return ""


# --- peers ----------------------------------------------------------------------------------

#: Peer column names: what each one calls.
PEER_LEGEND = {
    "torch": "torch.nn.functional.conv2d (one thread, no autograd)",
    "scipy.fft": "scipy.signal.fftconvolve",
    "scipy.oa": "scipy.signal.oaconvolve",
    "scipy.2d": "scipy.signal.convolve2d",
    "scipy.auto": 'scipy.signal.convolve(method="auto")',
    "ndimage": "scipy.ndimage.convolve",
    "cv2": "cv2.filter2D",
    "cv2.sep": "cv2.sepFilter2D (rank-1 kernels)",
}

#: Direct-method peers: rough multiply-adds per second, for the feasibility rule.
DIRECT_RATES = {"scipy.2d": 3e8, "ndimage": 5e8, "torch": 5e9}


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _torch() -> ModuleType | None:
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
    return torch


def layer_peers(
    case: Case, x: np.ndarray, w: np.ndarray, gy: np.ndarray | None = None
) -> dict[str, Callable[[], Any]]:
    """Peers of a layer case: torch, one thread, no autograd graph.

    Forward: ``torch.nn.functional.conv2d``. Backward (when ``gy`` is given):
    ``torch.ops.aten.convolution_backward`` for (gx, gw, gb), the kernel torch's autograd
    runs for conv2d, so that both sides are timed without a forward pass in the backward.
    """
    torch = _torch()
    if torch is None:
        return {}
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    if gy is None:

        def forward() -> Any:
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, **case.kwargs)

        return {"torch": forward}
    tgy = torch.from_numpy(gy)
    geom = case.geometry()
    (top, _), (left, _) = geom.padding  # the reference layers pad symmetrically

    def backward() -> Any:
        return torch.ops.aten.convolution_backward(
            tgy,
            tx,
            tw,
            [geom.f],
            list(geom.stride),
            [top, left],
            list(geom.dilation),
            False,
            [0, 0],
            geom.groups,
            [True, True, True],
        )

    return {"torch": backward}


def gemm_reference(case: Case, xp: ModuleType) -> Callable[[], Any]:
    """The GEMM of an im2col forward of ``case`` alone: (G, Fg, Cg·kh·kw) @ (G, Cg·kh·kw, M).

    Its GFLOP/s is the backend's matrix-multiply rate on the layer's own shape, the
    anchor for "fraction of GEMM speed".
    """
    g = case.geometry()
    k, m = g.cg * g.kh * g.kw, g.n * g.ho * g.wo
    rng = np.random.default_rng(3)
    a = asarray(rng.standard_normal((g.groups, g.fg, k), dtype=np.float32), backend=xp)
    b = asarray(rng.standard_normal((g.groups, k, m), dtype=np.float32), backend=xp)
    return lambda: a @ b


def forward_flops(case: Case) -> int:
    """Multiply-adds × 2 of the direct forward convolution of ``case``."""
    g = case.geometry()
    return 2 * g.n * g.f * g.ho * g.wo * g.cg * g.kh * g.kw


def filter_peers(
    case: Case, x: np.ndarray, w: np.ndarray, max_seconds: float
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Peers of a filtering case ('same' output) and the reasons peers are left out."""
    image, kernel = x[0, 0], w[0, 0]  # (1, 1, H, W) -> (H, W); (1, 1, k, k) -> (k, k)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # convolution = flipped correlation
    macs = case.image**2 * case.kernel**2
    peers: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}

    def direct_ok(name: str) -> bool:
        seconds = macs / DIRECT_RATES[name]
        if seconds > max_seconds:
            skipped[name] = f"predicted {seconds:.2g} s per call"
            return False
        return True

    from scipy import ndimage, signal

    peers["scipy.fft"] = lambda: signal.fftconvolve(image, flipped, mode="same")
    peers["scipy.oa"] = lambda: signal.oaconvolve(image, flipped, mode="same")
    if direct_ok("scipy.2d"):
        peers["scipy.2d"] = lambda: signal.convolve2d(image, flipped, mode="same")
    peers["scipy.auto"] = lambda: signal.convolve(image, flipped, mode="same", method="auto")
    if direct_ok("ndimage"):
        peers["ndimage"] = lambda: ndimage.convolve(image, flipped, mode="constant")
    cv2 = _optional("cv2")
    if cv2 is None:
        skipped["cv2"] = "opencv-python-headless is not installed"
    else:
        cv2.setNumThreads(1)
        border = cv2.BORDER_CONSTANT
        peers["cv2"] = lambda: cv2.filter2D(image, -1, kernel, borderType=border)
        if case.kind == "gaussian":
            u, s, vt = np.linalg.svd(kernel.astype(np.float64))
            col = (u[:, 0] * math.sqrt(s[0])).astype(np.float32)
            row = (vt[0] * math.sqrt(s[0])).astype(np.float32)
            peers["cv2.sep"] = lambda: cv2.sepFilter2D(image, -1, row, col, borderType=border)
    torch = _torch()
    if torch is not None and direct_ok("torch"):
        peers.update(layer_peers(case, x, w))
    return peers, skipped


# --- measurement ----------------------------------------------------------------------------


def _timed(call: Callable[[], Any]) -> float:
    """Seconds of one call, the device synchronised on its result (a tuple: its first array)."""
    start = time.perf_counter()
    out = call()
    synchronize(out[0] if isinstance(out, tuple) else out)
    return time.perf_counter() - start


def interleaved_medians(
    calls: dict[Any, Callable[[], Any]],
    repeats: int,
    reduce: Callable[[list[float]], float] = statistics.median,
    *,
    min_seconds: float = 0.0,
    max_rounds: int = MAX_ROUNDS,
) -> dict[Any, float]:
    """Median (or ``reduce``) of the steady-state seconds of each call, measured round-robin.

    Each round visits every contender in a rotated order; a contender gets one untimed call
    right before its timed one, so that it is timed in its own steady state (its buffers
    reused, as in a loop that repeats the call) and not while paying for pages another
    contender just returned to the OS (see DESIGN.md: first touches cost ~3 µs per 4 KiB
    page here). Machine noise still hits all contenders alike, and no contender always
    follows the same other one.

    At least ``repeats`` rounds run; more follow (up to ``max_rounds``) while the rounds so
    far took less than ``min_seconds`` in all, so that sub-millisecond cases, whose single
    timings scatter most, get a median of many samples at little cost.
    """
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    round_ = 0
    while round_ < repeats or (round_ < max_rounds and time.perf_counter() - started < min_seconds):
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            _timed(calls[name])  # warm: plans, scratch buffers, fresh pages
            samples[name].append(_timed(calls[name]))
        round_ += 1
    return {name: reduce(values) for name, values in samples.items()}


@dataclass
class CaseResult:
    """Medians of one case in one direction: per backend, strategies and auto; peers."""

    case: Case
    direction: str = "forward"
    times: dict[str, dict[str, float]] = field(default_factory=dict)  # backend -> name -> s
    choice: dict[str, str] = field(default_factory=dict)  # backend -> auto's strategy
    skipped: dict[str, str] = field(default_factory=dict)  # "backend:strategy"/peer -> why
    peers: dict[str, float] = field(default_factory=dict)
    gemm: dict[str, float] = field(default_factory=dict)  # backend -> s of the layer's GEMM

    def best(self, backend: str) -> str | None:
        """The fastest timed strategy on ``backend`` (None if none was timed)."""
        timed = {s: t for s, t in self.times[backend].items() if s != "auto"}
        return min(timed, key=timed.__getitem__) if timed else None

    def regret(self, backend: str) -> float:
        """time(auto) / min(time of strategies, time(auto))."""
        times = self.times[backend]
        return times["auto"] / min(times.values())

    def choice_regret(self, backend: str) -> float | None:
        """time(auto's strategy, forced) / time(the fastest strategy): what auto's choice
        alone costs, without auto's planning and the timing noise between two runs of one
        kernel (1.0 where auto chose the fastest). None if that strategy was not timed."""
        times = self.times[backend]
        forced = [t for name, t in times.items() if name != "auto"]
        chosen = times.get(self.choice.get(backend, ""))
        return chosen / min(forced) if chosen is not None and forced else None

    def to_json(self) -> dict[str, Any]:
        c = self.case
        return {
            "case": c.label,
            "kind": c.kind,
            "direction": self.direction,
            "x_shape": list(c.x_shape),
            "w_shape": list(c.w_shape),
            "stride": c.stride,
            "padding": c.padding,
            "groups": c.groups,
            "times": self.times,
            "auto_choice": self.choice,
            "best": {b: self.best(b) for b in self.times},
            "regret": {b: self.regret(b) for b in self.times},
            "choice_regret": {b: self.choice_regret(b) for b in self.times},
            "peers": self.peers,
            "gemm": self.gemm,
            "skipped": self.skipped,
        }


def _strategy_call(
    case: Case, direction: str, strategy: str, x: Any, w: Any, gy: Any
) -> Callable[[], Any]:
    if direction == "forward":
        return lambda: conv2d(x, w, **case.kwargs, strategy=strategy)
    return lambda: conv2d_backward(gy, x, w, **case.kwargs, strategy=strategy)


def measure_case(
    case: Case,
    namespaces: dict[str, ModuleType],
    *,
    repeats: int,
    max_seconds: float,
    peers: bool = True,
    direction: str = "forward",
    case_seconds: float = 0.0,
) -> CaseResult:
    """Time every strategy and auto on each backend, and the peers, interleaved.

    ``direction="backward"`` times ``conv2d_backward`` (and torch's convolution backward);
    forward layer cases also time the layer's GEMM alone on each backend.
    """
    x_host, w_host = host_arrays(case)
    geom = case.geometry()
    gy_host = None
    if direction == "backward":
        gy_host = np.random.default_rng(2).standard_normal(geom.y_shape).astype(np.float32)
    result = CaseResult(case, direction)
    calls: dict[str, Callable[[], Any]] = {}
    for backend, xp in namespaces.items():
        x, w = asarray(x_host, backend=xp), asarray(w_host, backend=xp)
        gy = None if gy_host is None else asarray(gy_host, backend=xp)
        if direction == "forward":
            result.choice[backend] = choose_strategy(x, w, **case.kwargs)
        else:
            result.choice[backend] = plan_call(
                "auto", w, geom, xp=xp, x=x, gy=gy, direction="backward"
            ).strategy
        for strategy in [*eligible_strategies(xp), "auto"]:
            runs = result.choice[backend] if strategy == "auto" else strategy
            rank = numerical_rank(w, xp=xp) if runs == "separable" else None
            reason = skip_reason(runs, geom, rank, max_seconds, direction=direction)
            if reason and strategy != "auto":  # auto is always timed: it is the subject
                result.skipped[f"{backend}:{strategy}"] = reason
                continue
            calls[f"{backend}:{strategy}"] = _strategy_call(case, direction, strategy, x, w, gy)
        if case.kind == "layer" and direction == "forward":
            calls[f"gemm:{backend}"] = gemm_reference(case, xp)
    if peers:
        if case.kind == "layer":
            peer_calls = layer_peers(case, x_host, w_host, gy_host)
        else:
            peer_calls, peer_skipped = filter_peers(case, x_host, w_host, max_seconds)
            result.skipped.update(peer_skipped)
        calls.update({f"peer:{name}": call for name, call in peer_calls.items()})
    medians = interleaved_medians(calls, repeats, min_seconds=case_seconds)
    for key, seconds in medians.items():
        owner, name = key.split(":", 1)
        if owner == "peer":
            result.peers[name] = seconds
        elif owner == "gemm":
            result.gemm[name] = seconds
        else:
            result.times.setdefault(owner, {})[name] = seconds
    return result


# --- output ---------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g}"


def table_rows(results: list[CaseResult]) -> tuple[list[str], list[list[str]]]:
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


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def layer_summary_rows(
    forward: list[CaseResult], backward: list[CaseResult]
) -> tuple[list[str], list[list[str]]]:
    """Forward + backward per layer and backend against torch, and GFLOP/s against GEMM.

    ``auto/torch`` is (auto forward + auto backward) / (torch forward + torch backward);
    ``%gemm`` is auto's forward GFLOP/s over the GFLOP/s of the layer's GEMM alone on the
    same backend. The last rows are the geometric means of auto/torch per backend.
    """
    header = [
        "case",
        "backend",
        "auto f+b",
        "best f+b",
        "torch f+b",
        "auto/torch",
        "gemm GF/s",
        "auto fwd GF/s",
        "%gemm",
    ]
    rows, ratios = [], {}
    by_label = {r.case.label: r for r in backward}
    for fwd in forward:
        bwd = by_label.get(fwd.case.label)
        if bwd is None:
            continue
        flops = forward_flops(fwd.case)
        torch_total = (
            fwd.peers["torch"] + bwd.peers["torch"]
            if "torch" in fwd.peers and "torch" in bwd.peers
            else None
        )
        for backend in fwd.times:
            auto = fwd.times[backend]["auto"] + bwd.times[backend]["auto"]
            common = set(fwd.times[backend]) & set(bwd.times[backend]) - {"auto"}
            best = min(
                (fwd.times[backend][s] + bwd.times[backend][s] for s in common), default=None
            )
            gemm = fwd.gemm.get(backend)
            gemm_rate = flops / gemm / 1e9 if gemm else None
            auto_rate = flops / fwd.times[backend]["auto"] / 1e9
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
        rows.append(["geometric mean", backend, "", "", "", f"{_geomean(values):.2f}", "", "", ""])
    return header, rows


#: SciPy's functions among the filtering peers (the "scipy best" of a case).
SCIPY_PEERS = ("scipy.fft", "scipy.oa", "scipy.2d", "scipy.auto", "ndimage")
#: OpenCV's functions among the filtering peers.
OPENCV_PEERS = ("cv2", "cv2.sep")


def filter_summary_rows(results: list[CaseResult]) -> tuple[list[str], list[list[str]]]:
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
    by_backend: dict[str, list[tuple[float, str]]] = {}
    choices: dict[str, list[tuple[float, str]]] = {}
    for r in results:
        for backend in r.times:
            label = f"{r.case.label} ({r.direction})"
            by_backend.setdefault(backend, []).append((r.regret(backend), label))
            choice = r.choice_regret(backend)
            if choice is not None:
                choices.setdefault(backend, []).append((choice, label))
    summary: dict[str, dict[str, Any]] = {}
    for backend, values in by_backend.items():
        chosen = choices.get(backend, [])
        summary[backend] = {
            "max": max(values)[0],
            "max_case": max(values)[1],
            "geomean": _geomean([v for v, _ in values]),
            "cases": len(values),
            "choice_max": max(chosen)[0] if chosen else None,
            "choice_geomean": _geomean([v for v, _ in chosen]) if chosen else None,
            "other_choice_cases": sorted(label for v, label in chosen if v > 1.0),
        }
    return summary


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A rich table when rich is installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(f"\n{title}")
        for line in [header, *rows]:
            print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=i < 2)
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, sum(len(h) + 3 for h in header))).print(table)


def crossover_plot(results: list[CaseResult], backends: list[str], path: Path) -> bool:
    """Best measured strategy by image size x kernel size, one panel per backend x kind.

    Cell text: the best strategy, and auto's choice under it when that differs. Returns
    False (nothing written) when there are no filtering cases.
    """
    filters = [r for r in results if r.case.kind != "layer"]
    if not filters:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    images = sorted({r.case.image for r in filters})
    kernels = sorted({r.case.kernel for r in filters})
    colors = ["#d9d9d9", "#8dd3c7", "#fdb462", "#80b1d3", "#fb8072"]  # none + 4 strategies
    fig, axes = plt.subplots(
        len(backends),
        len(KERNEL_KINDS),
        figsize=(
            2.2 + 1.1 * len(kernels) * len(KERNEL_KINDS),
            1.2 + 1.0 * len(images) * len(backends),
        ),
        squeeze=False,
    )
    for bi, backend in enumerate(backends):
        for ki, kind in enumerate(KERNEL_KINDS):
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


# --- command line ---------------------------------------------------------------------------


def _positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    values = _positive_int_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _backend_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKEND_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(map(repr, unknown or [text]))}; "
            f"choose from {', '.join(BACKEND_NAMES)}"
        )
    return names


def _layer_list(text: str) -> list[str]:
    if text in ("none", ""):
        return []
    if text == "all":
        return list(LAYERS)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown layer {', '.join(map(repr, unknown))}; choose from all, none, "
            + ", ".join(LAYERS)
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn bench``."""
    parser.add_argument(
        "--quick", action="store_true", help="small grid and 3 repeats (well under a minute)"
    )
    parser.add_argument(
        "--backend",
        type=_backend_list,
        default=None,
        metavar="NAMES",
        help="comma-separated backends (default: numpy, and torch when installed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench"),
        help="directory for results.json, crossover.png",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        help="timed rounds at least (median); cheap cases get more, up to "
        f"{MAX_ROUNDS}, until --case-seconds of timing",
    )
    parser.add_argument(
        "--case-seconds",
        type=_nonnegative_float,
        default=None,
        help=f"seconds of timing per case at least (default {CASE_SECONDS:g}; "
        f"quick {QUICK_CASE_SECONDS:g}; 0: exactly --repeat rounds)",
    )
    parser.add_argument(
        "--layers",
        type=_layer_list,
        default=None,
        metavar="NAMES",
        help="reference layers to time: all, none, or comma-separated labels",
    )
    parser.add_argument(
        "--image-sizes", type=_positive_int_list, default=None, metavar="N,N", help="image sides"
    )
    parser.add_argument(
        "--kernel-sizes", type=_positive_int_list, default=None, metavar="K,K", help="kernel sides"
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=None,
        help="skip strategies predicted slower than this per call",
    )
    parser.add_argument("--no-peers", action="store_true", help="time arraycnn only")
    parser.add_argument("--no-filters", action="store_true", help="time the reference layers only")


def _default_backends() -> list[str]:
    return ["numpy", "torch"] if _optional("torch") is not None else ["numpy"]


def _resolve_all(names: list[str]) -> dict[str, ModuleType]:
    """Namespaces by name; RuntimeError (message names the backend) if one is unusable."""
    namespaces = {}
    for name in names:
        namespaces[name] = resolve_backend(name)
        if name == "torch":
            _torch()
    return namespaces


def _environment() -> dict[str, Any]:
    versions = {}
    for name in ("numpy", "scipy", "torch", "cv2"):
        module = _optional(name)
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


def run(args: argparse.Namespace) -> int:
    """Measure the grid, print the tables, write ``results.json`` and ``crossover.png``."""
    images, kernels, repeats, max_seconds = QUICK_GRID if args.quick else FULL_GRID
    images = args.image_sizes or list(images)
    kernels = args.kernel_sizes or list(kernels)
    repeats = args.repeat or repeats
    max_seconds = args.max_seconds or max_seconds
    default_seconds = QUICK_CASE_SECONDS if args.quick else CASE_SECONDS
    case_seconds = default_seconds if args.case_seconds is None else args.case_seconds
    layers = (
        args.layers if args.layers is not None else list(QUICK_LAYERS if args.quick else LAYERS)
    )
    if args.no_filters:
        images = []
    if not any(k <= i for k in kernels for i in images) and not layers:
        print(
            "arraycnn bench: no case to run (no layer, and no kernel fits an image)",
            file=sys.stderr,
        )
        return 2
    backends = args.backend or _default_backends()
    try:
        namespaces = _resolve_all(backends)
    except RuntimeError as exc:
        print(f"arraycnn bench: {exc}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "arraycnn bench: the crossover plot needs matplotlib (pip install matplotlib)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    cases = build_cases(layers, images, kernels)
    results = []
    for case in cases:
        for direction in ("forward", "backward") if case.kind == "layer" else ("forward",):
            results.append(
                measure_case(
                    case,
                    namespaces,
                    repeats=repeats,
                    max_seconds=max_seconds,
                    peers=not args.no_peers,
                    direction=direction,
                    case_seconds=case_seconds,
                )
            )
    elapsed = time.perf_counter() - started

    layer_fwd = [r for r in results if r.case.kind == "layer" and r.direction == "forward"]
    layer_bwd = [r for r in results if r.case.kind == "layer" and r.direction == "backward"]
    filtering = [r for r in results if r.case.kind != "layer"]
    for title, group in (
        ("conv layers (forward, float32), median ms", layer_fwd),
        ("conv layers (backward: gx, gw, gb; float32), median ms", layer_bwd),
        ("image filtering ('same', float32), median ms", filtering),
    ):
        if group:
            print_table(title, *table_rows(group))
    if layer_fwd and layer_bwd:
        print_table(
            "conv layers: forward + backward against torch, ms; forward GFLOP/s against the "
            "layer's GEMM",
            *layer_summary_rows(layer_fwd, layer_bwd),
        )
    if filtering and not args.no_peers:
        print_table(
            "image filtering: auto against the fastest SciPy and OpenCV function, ms",
            *filter_summary_rows(filtering),
        )
    regrets = regret_summary(results)
    for backend, summary in regrets.items():
        print(
            f"\nregret on {backend}: max {summary['max']:.2f} ({summary['max_case']}), "
            f"geometric mean {summary['geomean']:.3f} over {summary['cases']} cases"
        )
        if summary["choice_max"] is not None:
            others = summary["other_choice_cases"]
            print(
                f"  auto's choice alone (its strategy forced / the fastest): max "
                f"{summary['choice_max']:.2f}, geometric mean {summary['choice_geomean']:.3f}; "
                f"another strategy than the fastest in {len(others)} case(s)"
                + (": " + "; ".join(others) if others else "")
            )
    peers_seen = sorted({p for r in results for p in r.peers})
    if peers_seen:
        print("\npeers: " + "; ".join(f"{p} = {PEER_LEGEND.get(p, p)}" for p in peers_seen))
    skipped = {f"{r.case.label} {k}": v for r in results for k, v in r.skipped.items()}
    if skipped:
        print(
            f"\nnot timed ({len(skipped)}): " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )

    plot_path = out / "crossover.png"
    plotted = crossover_plot(results, backends, plot_path)
    report = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": _environment(),
        "settings": {
            "quick": bool(args.quick),
            "backends": backends,
            "repeats": repeats,
            "case_seconds": case_seconds,
            "max_seconds": max_seconds,
            "layers": layers,
            "image_sizes": images,
            "kernel_sizes": kernels,
            "peers": not args.no_peers,
        },
        "strategies": list(STRATEGY_NAMES),
        "seconds_total": elapsed,
        "regret": regrets,
        "cases": [r.to_json() for r in results],
    }
    json_path = out / "results.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"\n{len(cases)} cases in {elapsed:.1f} s; wrote {json_path}", end="")
    print(f" and {plot_path}" if plotted else " (no filtering case: no crossover plot)")
    return 0
