"""Measuring one case: ``auto``, every strategy forced, the layer's GEMM alone and the peers,
timed interleaved in one process by :func:`arraycnn.timing.interleaved_medians`.

A strategy that the dispatcher predicts slower than ``max_seconds`` per call, or to need a
workspace over :data:`MAX_WORKSPACE_BYTES`, or that cannot run the case at all, is not
timed (:func:`skip_reason`, listed as skipped with the reason); ``auto`` is always timed:
it is the subject.

:func:`measure_case` reports each timed call to an optional ``on_call`` (the progress bar of
``arraycnn bench``), and :func:`condition_warnings` says when the machine is not fit for
timing (threads not pinned, other work running).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import asarray
from ..budget import format_bytes
from ..conv import conv2d, conv2d_backward, dispatch
from ..conv.table import eligible_strategies
from ..geometry import ConvGeometry
from ..timing import interleaved_medians
from . import peers as peer_calls
from .cases import Case, host_arrays, seeded

__all__ = [
    "BUSY_LOAD_PER_CPU",
    "MAX_ROUNDS",
    "MAX_WORKSPACE_BYTES",
    "THREAD_VARIABLES",
    "CaseResult",
    "condition_warnings",
    "gemm_reference",
    "measure_case",
    "predicted",
    "skip_reason",
    "timed_rounds",
]

#: Workspaces above this many bytes are not timed.
MAX_WORKSPACE_BYTES = 2 * 1024**3
#: Rounds a case gets at most.
MAX_ROUNDS = 60

#: Environment variables that pin the thread count of NumPy's BLAS (OpenBLAS and MKL read
#: their own variable, then ``OMP_NUM_THREADS``).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: The machine counts as busy above this one-minute load average per CPU: the bench times
#: on one core, so a load over half the cores means other work likely shares its core or
#: its memory bandwidth.
BUSY_LOAD_PER_CPU = 0.5

Array = Any
#: ``on_call(contender, calls done, calls planned)``, before each timed call of a case.
OnCall = Callable[[str, int, int], None]


def condition_warnings(
    environ: Mapping[str, str] | None = None,
    load: tuple[float, float, float] | None = None,
    cpus: int | None = None,
) -> list[str]:
    """Why timings on this machine may mislead, one sentence each ([] when none).

    Thread counts are unpinned when none of :data:`THREAD_VARIABLES` is set (NumPy's BLAS
    then uses every core, while torch and OpenCV are timed on one thread); the machine is
    busy when the one-minute load average exceeds :data:`BUSY_LOAD_PER_CPU` per CPU.
    ``environ``, ``load`` (``os.getloadavg()``) and ``cpus`` default to this process's.
    """
    environ = os.environ if environ is None else environ
    warnings = []
    if not any(environ.get(name) for name in THREAD_VARIABLES):
        warnings.append(
            "thread counts are not pinned (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and "
            "MKL_NUM_THREADS unset): NumPy's BLAS may use every core while the peers use "
            "one; run with OMP_NUM_THREADS=1 for comparable timings"
        )
    if load is None:
        try:
            load = os.getloadavg()
        except (AttributeError, OSError):  # not on Windows
            load = None
    cpus = cpus or os.cpu_count() or 1
    if load is not None and load[0] > BUSY_LOAD_PER_CPU * cpus:
        warnings.append(
            f"the machine is busy (load average {load[0]:.1f} on {cpus} CPUs, above "
            f"{BUSY_LOAD_PER_CPU:g} per CPU): timings will be noisy; rerun when it is idle"
        )
    return warnings


def predicted(
    strategy: str,
    w: Array,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    direction: str = "forward",
    x: Array | None = None,
    gy: Array | None = None,
    autotune: bool | None = False,
) -> dispatch.Plan:
    """The dispatcher's plan of the call (``auto``: its choice; ``autotune`` as in
    :func:`arraycnn.conv2d`, off by default) with its predicted seconds and workspace;
    raises as :func:`arraycnn.conv2d` would."""
    return dispatch.plan(
        strategy, w, geom, xp=xp, x=x, gy=gy, direction=direction, autotune=autotune
    )


def skip_reason(
    strategy: str,
    w: Array,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    max_seconds: float,
    direction: str = "forward",
    x: Array | None = None,
    gy: Array | None = None,
) -> str:
    """Why the call with ``strategy`` is not timed ('' if it is): the dispatcher's own
    predictions against ``max_seconds`` and :data:`MAX_WORKSPACE_BYTES`, or why it cannot
    run."""
    try:
        plan = predicted(strategy, w, geom, xp=xp, direction=direction, x=x, gy=gy)
    except (ValueError, MemoryError) as exc:  # WorkspaceError is both
        return str(exc)
    if plan.seconds > max_seconds:
        return f"predicted {plan.seconds:.2g} s per call"
    if plan.bytes > MAX_WORKSPACE_BYTES:
        return f"workspace {format_bytes(plan.bytes)} over {format_bytes(MAX_WORKSPACE_BYTES)}"
    return ""


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
        """The case's entry of ``results.json``."""
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


def gemm_reference(case: Case, xp: ModuleType) -> Callable[[], Any]:
    """The GEMM of an im2col forward of ``case`` alone: (G, Fg, Cg·kh·kw) @ (G, Cg·kh·kw, M).

    Its GFLOP/s is the backend's matrix-multiply rate on the layer's own shape, the
    anchor for "fraction of GEMM speed".
    """
    g = case.geometry()
    k, m = g.cg * g.kh * g.kw, g.n * g.ho * g.wo
    a = asarray(seeded((g.groups, g.fg, k), case.dtype, seed=3), backend=xp)
    b = asarray(seeded((g.groups, k, m), case.dtype, seed=4), backend=xp)
    return lambda: a @ b


def _strategy_call(
    case: Case, direction: str, strategy: str, x: Array, w: Array, gy: Array
) -> Callable[[], Any]:
    if direction == "forward":
        return lambda: conv2d(x, w, **case.kwargs, strategy=strategy)
    return lambda: conv2d_backward(gy, x, w, **case.kwargs, strategy=strategy)


def _peer_calls(
    case: Case, direction: str, hosts: tuple[np.ndarray, ...], max_seconds: float
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    x, w, gy = hosts
    if not case.is_filter:
        return peer_calls.layer_peers(case, x, w, gy if direction == "backward" else None)
    return peer_calls.filter_peers(case, x, w, max_seconds)


def timed_rounds(
    calls: Mapping[str, Callable[[], Any]],
    rounds: int,
    *,
    min_seconds: float = 0.0,
    max_rounds: int = MAX_ROUNDS,
    on_call: OnCall | None = None,
) -> dict[str, float]:
    """Median seconds of each call over interleaved rounds
    (:func:`arraycnn.timing.interleaved_medians`), with ``on_call`` before each call is
    timed, outside the timed region, so that a progress bar moves within a round."""
    return interleaved_medians(
        calls, rounds, min_seconds=min_seconds, max_rounds=max_rounds, on_call=on_call
    )


def measure_case(
    case: Case,
    namespaces: dict[str, ModuleType],
    *,
    repeats: int,
    max_seconds: float,
    peers: bool = True,
    direction: str = "forward",
    case_seconds: float = 0.0,
    on_call: OnCall | None = None,
) -> CaseResult:
    """Time every strategy and auto on each backend, and the peers, interleaved.

    ``direction="backward"`` times ``conv2d_backward`` (and torch's convolution backward);
    forward layer cases also time the layer's GEMM alone on each backend. At least
    ``repeats`` rounds, more while under ``case_seconds`` (at most :data:`MAX_ROUNDS`);
    ``on_call(contender, done, planned)`` before each timed call (:func:`timed_rounds`).
    """
    hosts = host_arrays(case)
    geom = case.geometry()
    result = CaseResult(case, direction)
    calls: dict[str, Callable[[], Any]] = {}
    for backend, xp in namespaces.items():
        x, w, gy = (asarray(a, backend=xp) for a in hosts)
        gy_or_none = gy if direction == "backward" else None
        auto = predicted(  # autotuned where the timed conv2d calls are (the setting)
            "auto", w, geom, xp=xp, direction=direction, x=x, gy=gy_or_none, autotune=None
        )
        result.choice[backend] = auto.strategy
        for strategy in eligible_strategies(xp):
            reason = skip_reason(
                strategy,
                w,
                geom,
                xp=xp,
                max_seconds=max_seconds,
                direction=direction,
                x=x,
                gy=gy_or_none,
            )
            if reason:
                result.skipped[f"{backend}:{strategy}"] = reason
            else:
                calls[f"{backend}:{strategy}"] = _strategy_call(case, direction, strategy, x, w, gy)
        calls[f"{backend}:auto"] = _strategy_call(case, direction, "auto", x, w, gy)
        if not case.is_filter and direction == "forward":
            calls[f"gemm:{backend}"] = gemm_reference(case, xp)
    if peers:
        found, skipped = _peer_calls(case, direction, hosts, max_seconds)
        result.skipped.update(skipped)
        calls.update({f"peer:{name}": call for name, call in found.items()})
    medians = timed_rounds(
        calls, repeats, min_seconds=case_seconds, max_rounds=MAX_ROUNDS, on_call=on_call
    )
    for key, seconds in medians.items():
        owner, name = key.split(":", 1)
        if owner == "peer":
            result.peers[name] = seconds
        elif owner == "gemm":
            result.gemm[name] = seconds
        else:
            result.times.setdefault(owner, {})[name] = seconds
    return result
