"""The dispatcher: the only place strategy names are parsed and strategies are chosen.

A call's *plan* (:class:`Plan`: a strategy and a batch chunk size) comes from:

1. **Eligibility** -- the capability table against the namespace (``xp.fft``,
   ``xp.linalg.svd``); with ``require_exact=True`` only strategies whose result is a plain
   sum of products (no FFT, no SVD); separable only where the kernel's numerical rank r
   gives its passes fewer taps than the direct kernel, ``r (kh + kw) < SEPARABLE_GAIN kh kw``
   (then the cost model decides); the SVD is skipped where even r = 1 fails that test.
   A small NumPy kernel's rank and finiteness are kept by its content (``_KERNEL_FACTS``):
   a filter reapplied to frame after frame is analysed once.
2. **Memory** -- the predicted workspace (:mod:`.memory`) against the budget. A strategy
   over budget runs on batch chunks (N split so that each chunk fits; forward outputs are
   concatenated along N; backward concatenates gx and sums gw), or is skipped if not even
   one sample fits.
3. **Cost** -- predicted seconds from the calibrated cost model (:mod:`.cost`), chunked
   plans paying per chunk; ``auto`` takes the cheapest.
4. **Measurement** (optional, :mod:`.autotune`) -- with autotuning on, the candidates
   predicted within :data:`AUTOTUNE_SPREAD` of the best are timed once per call signature
   and the fastest is cached.

A forced strategy never falls back: a namespace that lacks what it needs, non-finite input
to FFT, or a workspace over budget even for one sample raise errors.

Non-finite values (NaN, ±Inf) -- one behaviour for every strategy
------------------------------------------------------------------
Every output element is the sum over its *receptive field*: the kernel taps times the
padded input positions they meet. An output is non-finite (NaN or ±Inf) only if its
receptive field holds a non-finite input or weight, and it is non-finite whenever such a
value meets a nonzero factor; all other outputs are finite and correct (overflow aside).
A NaN gives NaN; an infinity gives ±Inf or NaN as IEEE arithmetic makes it
(``Inf - Inf`` is NaN), which the strategies may resolve differently. Where a non-finite
value meets an exact zero (zero padding, a zero weight) IEEE says ``0 * Inf = NaN``, but
BLAS kernels may skip zero operands, so such an output is either NaN or the finite sum of
its other terms -- unspecified. The gradients follow the same rule for their own sums
(``gx`` over the outputs that read an input position, ``gw`` over the positions a tap met).

The FFT cannot keep this rule (a non-finite value spreads over the whole transform), so:

- ``auto`` checks ``xp.all(xp.isfinite(...))`` of the inputs (x and w; for the backward
  also gy) -- one pass and one host synchronisation -- but only when FFT would otherwise be
  chosen; non-finite input then goes to the next best strategy;
- ``strategy="fft"`` checks the same and raises ValueError on non-finite input;
- separable needs the SVD of w: ``auto`` skips it for a non-finite w, ``strategy="separable"``
  raises ValueError.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from array_api_compat import is_numpy_array

from ..backend import backend_name, device_of, namespace_of
from ..capabilities import (
    CAPABILITIES,
    STRATEGY_NAMES,
    exact_strategies,
    missing_requirements,
)
from ..geometry import ConvGeometry, Padding, conv_geometry
from . import autotune as _autotune
from . import cost, fft, im2col, memory, naive, separable
from ._layout import ranges

Array = Any

__all__ = [
    "AUTOTUNE_SPREAD",
    "DIRECTIONS",
    "KERNELS",
    "SEPARABLE_GAIN",
    "Plan",
    "eligible_strategies",
    "explain",
    "parse_strategy",
    "plan_call",
    "predicted_costs",
    "run_backward",
    "run_forward",
    "select_strategy",
]

#: Strategy modules by name; each has ``forward(x, w, geom, *, xp)`` and
#: ``backward(gy, x, w, geom, *, xp) -> (gx, gw)``.
KERNELS: dict[str, ModuleType] = {
    "naive": naive,
    "separable": separable,
    "im2col": im2col,
    "fft": fft,
}

#: Separable is eligible for ``auto`` only when r (kh + kw) < SEPARABLE_GAIN * kh * kw:
#: with 1.0, strictly fewer taps than the direct kernel (rank 1 from 2x3 and 3x3 up); the
#: cost model weighs the rest (per-call overhead, bands, the SVD).
SEPARABLE_GAIN = 1.0
#: Autotuning times only candidates predicted at most this many times the best.
AUTOTUNE_SPREAD = 20.0

VALID_STRATEGIES = ("auto", *STRATEGY_NAMES)
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class Plan:
    """How one call runs.

    Attributes
    ----------
    strategy : str
        The strategy kernel.
    direction : {"forward", "backward"}
    chunk : int
        Batch samples per kernel call (``== n`` when the batch runs whole).
    n : int
        The batch size N.
    reason : str
        Why this plan, in words.
    rank : int or None
        For separable: w's numerical rank, decided while planning and handed to the kernel
        (None: the kernel computes it).
    """

    strategy: str
    direction: str
    chunk: int
    n: int
    reason: str
    rank: int | None = None

    @property
    def chunked(self) -> bool:
        """True if the batch runs in more than one chunk."""
        return self.chunk < self.n


@dataclass
class _Candidate:
    """A strategy as the dispatcher sees it for one call."""

    name: str
    excluded: str | None = None
    seconds: float = math.inf
    bytes: int = 0
    chunk: int = 0


@dataclass
class _Analysis:
    """The candidates of one call and what deciding separable computed from w."""

    candidates: dict[str, _Candidate]
    rank: int | None = None  # separable's rank (None where it was not computed)


def parse_strategy(strategy: Any) -> str:
    """Validate ``strategy=``; return it lower-cased.

    Raises
    ------
    TypeError
        If it is not a string.
    ValueError
        If it is not one of ``auto``, ``naive``, ``separable``, ``im2col``, ``fft``.
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string, got {type(strategy).__name__} {strategy!r}")
    name = strategy.lower()
    if name not in VALID_STRATEGIES:
        valid = ", ".join(repr(s) for s in VALID_STRATEGIES)
        raise ValueError(f"strategy must be one of {valid}; got {strategy!r}")
    return name


def _parse_direction(direction: Any) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    return direction


def eligible_strategies(xp: ModuleType) -> list[str]:
    """Strategies whose requirements namespace ``xp`` meets, in table order."""
    return [name for name in STRATEGY_NAMES if not missing_requirements(name, xp)]


def _itemsize(dtype: Any, xp: ModuleType) -> int:
    return xp.finfo(dtype).bits // 8


def _separable_rank_pays_off(rank: int, geom: ConvGeometry) -> bool:
    """``r (kh + kw) < SEPARABLE_GAIN kh kw``: the passes have fewer taps than the kernel."""
    return rank * (geom.kh + geom.kw) < SEPARABLE_GAIN * geom.kh * geom.kw


def _separable_worth_trying(geom: ConvGeometry) -> bool:
    """Even rank 1 must pass :func:`_separable_rank_pays_off` (else the SVD is skipped)."""
    return _separable_rank_pays_off(1, geom)


def worthwhile_separable_rank(w: Array, geom: ConvGeometry, *, xp: ModuleType) -> int | None:
    """The kernel's numerical rank if its passes have fewer taps than the kernel, else None.

    The SVD is skipped where even rank 1 could not pass the test. ``w`` must be finite.
    """
    if not _separable_worth_trying(geom):
        return None
    rank = separable.numerical_rank(w, xp=xp)
    return rank if _separable_rank_pays_off(rank, geom) else None


class _Inputs:
    """The call's arrays, with a memoised finiteness check (one host sync per array)."""

    def __init__(self, xp: ModuleType, **arrays: Array | None) -> None:
        self.xp = xp
        self.arrays = {k: v for k, v in arrays.items() if v is not None}
        self._finite: dict[str, bool] = {}

    def finite(self, name: str) -> bool:
        """True if array ``name`` has no NaN/Inf (True for an array not given)."""
        if name not in self.arrays:
            return True
        if name not in self._finite:
            xp = self.xp
            self._finite[name] = bool(xp.all(xp.isfinite(self.arrays[name])))
        return self._finite[name]

    def nonfinite(self, direction: str) -> list[str]:
        """Names of the inputs of ``direction`` that hold NaN or Inf."""
        names = ("x", "w") if direction == "forward" else ("gy", "x", "w")
        return [n for n in names if not self.finite(n)]

    def w_rank(self) -> int | None:
        """w's numerical rank (:func:`separable.numerical_rank`); None if w holds NaN/Inf.

        A small NumPy kernel is looked up by its content (:data:`_KERNEL_FACTS`).
        """
        w = self.arrays["w"]
        key = _content_key(w)
        facts = _KERNEL_FACTS.get(key) if key is not None else None
        if facts is None:
            finite = self.finite("w")
            facts = (finite, separable.numerical_rank(w, xp=self.xp) if finite else None)
            if key is not None:
                if len(_KERNEL_FACTS) >= KERNEL_FACTS_KEPT:
                    _KERNEL_FACTS.clear()
                _KERNEL_FACTS[key] = facts
        self._finite.setdefault("w", facts[0])
        return facts[1]


#: What the dispatcher learned of a small NumPy kernel, by content: ``(dtype, shape,
#: bytes) -> (finite, numerical rank or None)``. A filter applied frame after frame is
#: analysed once (the SVD of a 63x63 kernel costs ~130 us, its FFT call at 256^2 ~600 us);
#: weights changed by a training step or an in-place edit have another key.
_KERNEL_FACTS: dict[tuple[Any, ...], tuple[bool, int | None]] = {}
#: Kernels kept at most (the memo is emptied when full).
KERNEL_FACTS_KEPT = 256
#: Largest kernel (elements) looked up by content: hashing 4096 elements costs ~3 us.
KERNEL_FACTS_MAX_ELEMENTS = 4096


def _content_key(w: Array) -> tuple[Any, ...] | None:
    """w's key in :data:`_KERNEL_FACTS`; None unless w is a small NumPy array (reading
    the bytes of an array on a device would be a transfer)."""
    if not is_numpy_array(w) or w.size > KERNEL_FACTS_MAX_ELEMENTS:
        return None
    return (w.dtype.str, w.shape, w.tobytes())


@functools.lru_cache(maxsize=4096)
def _counts(
    name: str, geom: ConvGeometry, direction: str, itemsize: int, rank: int | None
) -> cost.OpCounts:
    """Memoised :func:`cost.op_counts` (host arithmetic, repeated for every call)."""
    return cost.op_counts(name, geom, direction=direction, itemsize=itemsize, rank=rank)


@functools.lru_cache(maxsize=4096)
def _workspace(name: str, geom: ConvGeometry, direction: str, itemsize: int, rank: int) -> int:
    """Memoised :func:`memory.workspace_bytes`."""
    return memory.workspace_bytes(name, geom, itemsize=itemsize, direction=direction, rank=rank)


def _chunked_seconds(
    name: str,
    geom: ConvGeometry,
    chunk: int,
    *,
    direction: str,
    itemsize: int,
    rank: int | None,
    cal: cost.Calibration,
) -> float:
    """Predicted time of the whole batch run in chunks of ``chunk`` samples."""

    def seconds(n: int) -> float:
        g = geom if n == geom.n else dataclasses.replace(geom, n=n)
        return cal.seconds(name, _counts(name, g, direction, itemsize, rank), direction)

    if chunk >= geom.n:
        return seconds(geom.n)
    full, rest = divmod(geom.n, chunk)
    total = full * seconds(chunk) + (seconds(rest) if rest else 0.0)
    out_elems = geom.n * (
        geom.f * geom.ho * geom.wo if direction == "forward" else geom.c * geom.h * geom.w
    )
    concat = cost.OpCounts(bytes=2 * out_elems * itemsize, calls=1)
    return total + cal.seconds(name, concat, direction)


def _price(
    cand: _Candidate,
    geom: ConvGeometry,
    *,
    direction: str,
    itemsize: int,
    rank: int | None,
    budget: int,
    calibration: cost.Calibration,
) -> None:
    """Set the candidate's workspace, chunk and predicted seconds, or its exclusion."""
    name = cand.name
    kw = {"itemsize": itemsize, "direction": direction, "rank": rank or 0}
    cand.bytes = _workspace(name, geom, direction, itemsize, rank or 0)
    fits = cand.bytes <= budget
    cand.chunk = geom.n if fits else memory.chunk_size(name, geom, budget, **kw)
    if cand.chunk == 0:
        one = memory.workspace_bytes(name, dataclasses.replace(geom, n=1), **kw)
        cand.excluded = (
            f"workspace {memory.format_bytes(one)} for one sample exceeds the budget "
            f"{memory.format_bytes(budget)}"
        )
        return
    cand.seconds = _chunked_seconds(
        name, geom, cand.chunk, direction=direction, itemsize=itemsize, rank=rank, cal=calibration
    )


def _analyse_static(
    geom: ConvGeometry,
    *,
    itemsize: int,
    xp: ModuleType,
    direction: str,
    budget: int,
    require_exact: bool,
    calibration: cost.Calibration,
    prune: float = math.inf,
) -> tuple[dict[str, _Candidate], bool]:
    """The part of :func:`_analyse` that does not read w's values.

    Returns the candidates -- separable priced at rank 1 when it is still in question --
    and whether separable needs w's rank (and finiteness) to be decided.
    """
    result = {name: _Candidate(name) for name in STRATEGY_NAMES}
    price = functools.partial(
        _price, direction=direction, itemsize=itemsize, budget=budget, calibration=calibration
    )
    for cand in result.values():
        missing = missing_requirements(cand.name, xp)
        if missing:
            cand.excluded = f"namespace {xp.__name__} lacks {', '.join(missing)}"
        elif require_exact and not CAPABILITIES[cand.name].exact_sums:
            cand.excluded = "not exact on integer-valued data (require_exact=True)"
        elif cand.name != "separable":
            price(cand, geom, rank=None)
    cand = result["separable"]
    if cand.excluded is not None:
        return result, False
    if not _separable_worth_trying(geom):
        cand.excluded = "kernel too small for separable passes to pay off"
        return result, False
    price(cand, geom, rank=1)  # a lower bound: the cost grows with the rank
    others = [c.seconds for c in result.values() if c.excluded is None and c is not cand]
    best_other = min(others, default=math.inf)
    if cand.excluded is not None:
        return result, False
    if cand.seconds > prune * best_other:
        cand.excluded = "predicted slower than the best strategy even for a rank-1 kernel"
        cand.seconds = math.inf
        return result, False
    return result, True


def _with_separable_rank(
    static: dict[str, _Candidate],
    geom: ConvGeometry,
    inputs: _Inputs,
    *,
    itemsize: int,
    direction: str,
    budget: int,
    calibration: cost.Calibration,
) -> _Analysis:
    """``static`` with separable decided by the inputs' w: its finiteness, SVD rank and price.

    ``static`` is not modified (it may be memoised): the result holds a new separable
    candidate and shares the others.
    """
    result = dict(static)
    cand = result["separable"] = copy.copy(static["separable"])
    rank = inputs.w_rank()
    if rank is None:
        cand.excluded, cand.seconds = "w holds NaN/Inf (no SVD)", math.inf
        return _Analysis(result)
    if not _separable_rank_pays_off(rank, geom):
        cand.excluded = f"kernel rank {rank} too high for separable passes to pay off"
        cand.seconds = math.inf
        return _Analysis(result, rank)
    _price(
        cand,
        geom,
        direction=direction,
        itemsize=itemsize,
        rank=rank,
        budget=budget,
        calibration=calibration,
    )
    return _Analysis(result, rank)


def _analyse(
    w: Array,
    geom: ConvGeometry,
    inputs: _Inputs,
    *,
    xp: ModuleType,
    direction: str,
    budget: int,
    require_exact: bool,
    calibration: cost.Calibration,
    prune: float = math.inf,
) -> _Analysis:
    """Every strategy with its exclusion reason or its predicted seconds, bytes and chunk.

    Separable is priced last: if even a rank-1 kernel is predicted more than ``prune``
    times the best other strategy, it is excluded without computing the SVD of w.
    """
    itemsize = _itemsize(w.dtype, xp)
    static, needs_rank = _analyse_static(
        geom,
        itemsize=itemsize,
        xp=xp,
        direction=direction,
        budget=budget,
        require_exact=require_exact,
        calibration=calibration,
        prune=prune,
    )
    if not needs_rank:
        return _Analysis(static)
    return _with_separable_rank(
        static,
        geom,
        inputs,
        itemsize=itemsize,
        direction=direction,
        budget=budget,
        calibration=calibration,
    )


#: The w-independent part of ``auto`` analyses (:func:`_analyse_static`), by call signature:
#: ``key -> (calibration, candidates, separable needs w's rank, bytes needed for every
#: candidate to run unchunked)``. The calibration is held so that its ``id`` in the key
#: cannot be reused by another.
_ANALYSES: dict[tuple[Any, ...], tuple[cost.Calibration, dict[str, _Candidate], bool, int]] = {}
#: Signatures kept at most (the memo is emptied when full).
ANALYSES_KEPT = 1024


def _memoised_analyse(
    w: Array, geom: ConvGeometry, inputs: _Inputs, *, xp: ModuleType, **options: Any
) -> _Analysis:
    """:func:`_analyse` (same arguments), its w-independent part reused where exact.

    The part that does not read w (:func:`_analyse_static`) is kept for a call signature
    when every candidate fitted the budget unchunked, and reused while the budget still
    holds them all; w's finiteness, SVD rank and separable's price are decided afresh on
    every call that needs them. The candidates are shared: read them only.
    """
    calibration, budget = options["calibration"], options["budget"]
    itemsize = _itemsize(w.dtype, xp)
    key = (
        backend_name(xp),
        device_of(w),  # devices and dtypes hash (str() of them costs ~2.5 us a call)
        w.dtype,
        geom,
        options["direction"],
        options["require_exact"],
        options["prune"],
        id(calibration),
    )
    hit = _ANALYSES.get(key)
    if hit is not None and hit[0] is calibration and budget >= hit[3]:
        static, needs_rank = hit[1], hit[2]
    else:
        static, needs_rank = _analyse_static(geom, itemsize=itemsize, xp=xp, **options)
        priced = [c for c in static.values() if c.bytes]
        if all(c.chunk == geom.n for c in priced):
            if len(_ANALYSES) >= ANALYSES_KEPT:
                _ANALYSES.clear()
            need = max((c.bytes for c in priced), default=0)
            _ANALYSES[key] = (calibration, static, needs_rank, need)
    if not needs_rank:
        return _Analysis(static)
    return _with_separable_rank(
        static,
        geom,
        inputs,
        itemsize=itemsize,
        direction=options["direction"],
        budget=budget,
        calibration=calibration,
    )


def predicted_costs(
    w: Array,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    direction: str = "forward",
    calibration: cost.Calibration | None = None,
) -> dict[str, float]:
    """Predicted seconds of each strategy ``auto`` may pick for this call (memory ignored).

    ``calibration`` defaults to the one in use for the namespace's backend.
    """
    direction = _parse_direction(direction)
    cal = calibration if calibration is not None else cost.calibration_for(backend_name(xp))[0]
    candidates = _analyse(
        w,
        geom,
        _Inputs(xp, w=w),
        xp=xp,
        direction=direction,
        budget=2**62,
        require_exact=False,
        calibration=cal,
    ).candidates
    return {c.name: c.seconds for c in candidates.values() if c.excluded is None}


def _nonfinite_error(name: str, bad: list[str]) -> ValueError:
    why = {
        "fft": "FFT would spread them over the whole output",
        "separable": "the SVD of w is undefined",
    }[name]
    return ValueError(
        f"strategy={name!r} cannot handle non-finite input: {', '.join(bad)} "
        f"contain{'s' if len(bad) == 1 else ''} NaN or Inf and {why}; use strategy='auto' "
        "or a direct strategy ('naive', 'im2col'), which keep non-finite values local"
    )


def _forced_plan(
    name: str,
    geom: ConvGeometry,
    inputs: _Inputs,
    *,
    xp: ModuleType,
    direction: str,
    budget: int,
    require_exact: bool,
    w: Array,
) -> Plan:
    missing = missing_requirements(name, xp)
    if missing:
        raise ValueError(
            f"strategy={name!r} needs {', '.join(missing)}, which namespace "
            f"{xp.__name__} does not provide"
        )
    if require_exact and not CAPABILITIES[name].exact_sums:
        raise ValueError(
            f"strategy={name!r} is not exact on integer-valued data and require_exact=True; "
            f"exact strategies: {', '.join(exact_strategies())}"
        )
    if name == "fft" and inputs.nonfinite(direction):
        raise _nonfinite_error(name, inputs.nonfinite(direction))
    rank = inputs.w_rank() if name == "separable" else 0
    if rank is None:
        raise _nonfinite_error(name, ["w"])
    kw = {"itemsize": _itemsize(w.dtype, xp), "direction": direction, "rank": rank}
    chunk = memory.chunk_size(name, geom, budget, **kw)
    if chunk == 0:
        need = memory.workspace_bytes(name, dataclasses.replace(geom, n=1), **kw)
        raise memory.WorkspaceError(
            f"strategy={name!r} ({direction}) needs a predicted workspace of {need} bytes "
            f"({memory.format_bytes(need)}) even for one sample of the batch, over the "
            f"workspace budget of {budget} bytes ({memory.format_bytes(budget)}); use "
            "strategy='auto', or raise the budget with arraycnn.conv.set_workspace_limit() "
            f"or {memory.ENV_WORKSPACE_LIMIT}"
        )
    reason = "forced"
    if chunk < geom.n:
        reason += f", in chunks of {chunk} samples to fit the workspace budget"
    return Plan(name, direction, chunk, geom.n, reason, rank or None)


def _autotune_choice(
    order: list[_Candidate],
    geom: ConvGeometry,
    inputs: _Inputs,
    *,
    xp: ModuleType,
    direction: str,
    rank: int | None,
    w: Array,
) -> tuple[str, dict[str, float] | None]:
    """Measured choice among the candidates predicted within AUTOTUNE_SPREAD of the best."""
    best = order[0].seconds
    tuned = [c for c in order if c.seconds <= AUTOTUNE_SPREAD * best]
    x = inputs.arrays["x"]
    key = _autotune.make_key(
        backend=backend_name(xp),
        device=device_of(x),
        dtype=x.dtype,
        x_shape=geom.x_shape,
        w_shape=geom.w_shape,
        stride=geom.stride,
        padding=geom.padding,
        dilation=geom.dilation,
        groups=geom.groups,
        direction=direction,
        rank=rank,
        budget_chunked=any(c.chunk < geom.n for c in tuned),
    )
    by_name = {c.name: c for c in tuned}

    def run(name: str) -> Any:
        plan = Plan(name, direction, by_name[name].chunk, geom.n, "autotune")
        if direction == "forward":
            return run_forward(plan, x, w, geom, xp=xp)
        return run_backward(plan, inputs.arrays["gy"], x, w, geom, xp=xp)[0]

    return _autotune.tuned_choice(key, [c.name for c in tuned], run)


def plan_call(
    strategy: Any,
    w: Array,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    x: Array | None = None,
    gy: Array | None = None,
    direction: str = "forward",
    require_exact: bool = False,
    autotune: bool | None = None,
    budget: int | None = None,
    calibration: cost.Calibration | None = None,
) -> Plan:
    """The plan of one call: the forced strategy (checked) or ``auto``'s choice.

    Parameters
    ----------
    strategy : str
        ``"auto"`` or a strategy name.
    w : array, shape (F, Cg, kh, kw)
    geom : ConvGeometry
    xp : namespace
    x, gy : array, optional
        The call's input (and output gradient for the backward). Needed for autotuning and
        for the non-finite checks; without them those steps are skipped.
    direction : {"forward", "backward"}
    require_exact : bool
        Only strategies that compute plain sums of products (for integer-valued data).
    autotune : bool or None
        Measure instead of predicting (None: the global setting, see :mod:`.autotune`).
    budget : int, optional
        Workspace bytes (default :func:`arraycnn.conv.memory.workspace_limit`).
    calibration : Calibration, optional
        Cost constants (default: the ones in use for the backend).

    Raises
    ------
    ValueError
        Unknown strategy; forced strategy the namespace cannot run, that is inexact under
        ``require_exact``, or that cannot take the non-finite input.
    WorkspaceError
        (a MemoryError and ValueError) Forced strategy over budget even for one sample, or
        ``auto`` with no strategy that fits.
    """
    name = parse_strategy(strategy)
    direction = _parse_direction(direction)
    if budget is None:
        budget = memory.workspace_limit(xp, device_of(w))
    inputs = _Inputs(xp, x=x, w=w, gy=gy)
    if name != "auto":
        return _forced_plan(
            name,
            geom,
            inputs,
            xp=xp,
            direction=direction,
            budget=budget,
            require_exact=require_exact,
            w=w,
        )
    cal = calibration if calibration is not None else cost.calibration_for(backend_name(xp))[0]
    tune = _autotune.autotune_enabled(autotune)
    analysis = _memoised_analyse(
        w,
        geom,
        inputs,
        xp=xp,
        direction=direction,
        budget=budget,
        require_exact=require_exact,
        calibration=cal,
        prune=AUTOTUNE_SPREAD if tune else 1.0,
    )
    candidates, rank = analysis.candidates, analysis.rank
    order = sorted((c for c in candidates.values() if c.excluded is None), key=lambda c: c.seconds)
    if not order:
        reasons = "; ".join(f"{c.name}: {c.excluded}" for c in candidates.values())
        raise memory.WorkspaceError(
            f"no convolution strategy fits this call ({direction}, budget {budget} bytes): "
            f"{reasons}"
        )
    times = None
    can_measure = x is not None and (direction == "forward" or gy is not None)
    if tune and can_measure:
        choice, times = _autotune_choice(
            order, geom, inputs, xp=xp, direction=direction, rank=rank, w=w
        )
        how = "measured fastest" if times is not None else "autotune (cached or only candidate)"
        ranked = [choice] + [c.name for c in order if c.name != choice]
    else:
        how = "cheapest predicted"
        ranked = [c.name for c in order]
    for pick in ranked:
        if pick == "fft" and inputs.nonfinite(direction):
            how += "; fft skipped: non-finite input"
            continue
        cand = candidates[pick]
        reason = how
        if cand.chunk < geom.n:
            reason += f", in chunks of {cand.chunk} samples to fit the workspace budget"
        sep_rank = rank if pick == "separable" else None
        return Plan(pick, direction, cand.chunk, geom.n, reason, sep_rank)
    raise memory.WorkspaceError(  # only fft was left and the input is not finite
        f"no strategy can run this call: fft cannot take non-finite input and the others "
        f"do not fit: {'; '.join(f'{c.name}: {c.excluded}' for c in candidates.values())}"
    )


def select_strategy(
    strategy: Any,
    w: Array,
    geom: ConvGeometry,
    *,
    xp: ModuleType,
    **options: Any,
) -> str:
    """The strategy a call runs: the forced one (checked) or ``auto``'s choice.

    ``options`` are those of :func:`plan_call` (``x``, ``gy``, ``direction``,
    ``require_exact``, ``autotune``, ``budget``, ``calibration``). For callers with
    integer-valued data (``arraycnn.filters``) pass ``require_exact=True``.
    """
    return plan_call(strategy, w, geom, xp=xp, **options).strategy


def _kernel_options(plan: Plan) -> dict[str, Any]:
    """Keyword arguments the plan hands its kernel (separable: the rank of w)."""
    return {"rank": plan.rank} if plan.rank is not None else {}


def run_forward(plan: Plan, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W) -> y (N, F, Ho, Wo), chunks concatenated on N."""
    kernel, extra = KERNELS[plan.strategy], _kernel_options(plan)
    if not plan.chunked:
        return kernel.forward(x, w, geom, xp=xp, **extra)
    parts = [
        kernel.forward(
            x[start:stop, ...], w, dataclasses.replace(geom, n=stop - start), xp=xp, **extra
        )
        for start, stop in ranges(geom.n, plan.chunk)
    ]
    return xp.concat(parts, axis=0)  # chunks of (n_i, F, Ho, Wo) -> (N, F, Ho, Wo)


def run_backward(
    plan: Plan, gy: Array, x: Array, w: Array, geom: ConvGeometry, *, xp: ModuleType
) -> tuple[Array, Array]:
    """Execute a backward plan: ``(gx, gw)``; chunks' gx concatenated on N, their gw summed."""
    kernel, extra = KERNELS[plan.strategy], _kernel_options(plan)
    if not plan.chunked:
        return kernel.backward(gy, x, w, geom, xp=xp, **extra)
    gx_parts = []
    gw = None
    for start, stop in ranges(geom.n, plan.chunk):
        g = dataclasses.replace(geom, n=stop - start)
        sl = slice(start, stop)
        gx_i, gw_i = kernel.backward(gy[sl, ...], x[sl, ...], w, g, xp=xp, **extra)
        gx_parts.append(gx_i)
        gw = gw_i if gw is None else gw + gw_i
    return xp.concat(gx_parts, axis=0), gw  # chunks of (n_i, C, H, W) -> (N, C, H, W)


def explain(
    x: Array,
    w: Array,
    /,
    *,
    stride: Any = 1,
    padding: Padding = 0,
    dilation: Any = 1,
    groups: int = 1,
    strategy: str = "auto",
    direction: str = "forward",
    gy: Array | None = None,
    require_exact: bool = False,
    autotune: bool | None = False,
) -> dict[str, Any]:
    """Why the dispatcher runs what it runs, for benchmarks and ``arraycnn bench``.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    w : array, shape (F, C / groups, kh, kw)
    stride, padding, dilation, groups, strategy
        As in :func:`arraycnn.conv2d`.
    direction : {"forward", "backward"}
    gy : array, shape (N, F, Ho, Wo), optional
        The backward's output gradient (its finiteness matters for FFT).
    require_exact : bool
    autotune : bool or None
        False by default: explain the model's choice without timing anything.

    Returns
    -------
    dict
        ``backend``, ``dtype``, ``direction``, ``geometry`` (dict), ``budget_bytes``,
        ``calibration`` (its source), ``strategies`` (per name: ``eligible``, ``reason``,
        ``predicted_seconds``, ``workspace_bytes``, ``chunk``), ``choice``, ``chunk``, ``why``
        (``choice`` is None and ``why`` the error message if no plan is possible).
    """
    xp = namespace_of(x, w, gy, names=("x", "w", "gy"))
    geom = conv_geometry(
        tuple(x.shape),
        tuple(w.shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    direction = _parse_direction(direction)
    budget = memory.workspace_limit(xp, device_of(w))
    cal, source = cost.calibration_for(backend_name(xp))
    inputs = _Inputs(xp, x=x, w=w, gy=gy)
    candidates = _analyse(
        w,
        geom,
        inputs,
        xp=xp,
        direction=direction,
        budget=budget,
        require_exact=require_exact,
        calibration=cal,
    ).candidates
    nonfinite = inputs.nonfinite(direction)
    if nonfinite and candidates["fft"].excluded is None:
        candidates["fft"].excluded = f"non-finite input ({', '.join(nonfinite)})"
    strategies = {
        c.name: {
            "eligible": c.excluded is None,
            "reason": c.excluded or "eligible",
            "predicted_seconds": None if c.excluded else c.seconds,
            "workspace_bytes": c.bytes or None,
            "chunk": c.chunk or None,
        }
        for c in candidates.values()
    }
    try:
        plan = plan_call(
            strategy,
            w,
            geom,
            xp=xp,
            x=x,
            gy=gy,
            direction=direction,
            require_exact=require_exact,
            autotune=autotune,
            budget=budget,
            calibration=cal,
        )
        choice, chunk, why = plan.strategy, plan.chunk, plan.reason
    except (ValueError, MemoryError) as exc:
        choice, chunk, why = None, None, str(exc)
    return {
        "backend": backend_name(xp),
        "dtype": str(x.dtype).rsplit(".", 1)[-1],
        "direction": direction,
        "geometry": dataclasses.asdict(geom),
        "budget_bytes": budget,
        "calibration": source,
        "strategies": strategies,
        "choice": choice,
        "chunk": chunk,
        "why": why,
    }
