"""The dispatcher: the only place strategy names are parsed and strategies are chosen.

One call goes through a short pipeline of pure functions over its frozen description
(:class:`~arraycnn.conv.strategy.Call`: geometry, dtype, backend, device kind,
direction, exactness):

1. **candidates** -- the strategies of :data:`STRATEGIES` whose needs the namespace meets
   (and, with ``require_exact``, whose sums are exact);
2. **priced** -- each strategy's plan, its workspace against the budget (a plan over
   budget runs on batch chunks, or is excluded if not even one sample fits) and its
   predicted seconds (:mod:`.cost`); memoised per call description (:data:`_STATIC`);
3. **value facts** (:func:`read_values`) -- the one step that reads array values, and so
   synchronises with the device: the kernel's numerical rank where separable is still in
   question (``r (kh + kw) < kh kw``, :data:`SEPARABLE_GAIN`), the inputs' finiteness
   where FFT would be chosen;
4. **chosen** -- the cheapest, or with autotuning the measured fastest (:mod:`.measured`).

A forced strategy never falls back: a namespace that lacks what it needs, non-finite input
to FFT or separable, or a workspace over budget even for one sample raise errors.
Execution (:func:`run_forward`, :func:`run_backward`) goes through one chunking
mechanism, :func:`run_chunked`.

Non-finite values (NaN, ±Inf): an output is non-finite only if its receptive field holds
a non-finite value meeting a nonzero factor (where it meets an exact zero the result is
unspecified: BLAS may skip zero operands); the gradients follow the same rule. The FFT
spreads a non-finite value over the whole output, so ``auto`` keeps such input away from
it and ``strategy="fft"`` raises; separable needs the SVD of a finite w.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..backend import backend_name, device_of, is_accelerator
from ..budget import ENV_WORKSPACE_LIMIT, WorkspaceError, format_bytes, workspace_limit
from ..geometry import ConvGeometry
from ..settings import autotune_enabled, register_cache
from . import cost, measured
from ._layout import ranges
from .facts import Values, nonfinite_error
from .strategy import Call, Counts, Strategy, traffic
from .table import STRATEGIES, STRATEGY_NAMES, eligible_strategies, parse_direction, parse_strategy

Array = Any

__all__ = [
    "AUTOTUNE_SPREAD",
    "SEPARABLE_GAIN",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Plan",
    "eligible_strategies",
    "parse_strategy",
    "plan",
    "run_backward",
    "run_chunked",
    "run_forward",
]

#: Separable is a candidate only when r (kh + kw) < SEPARABLE_GAIN kh kw: strictly fewer
#: taps than the direct kernel with 1.0; the cost model weighs the rest.
SEPARABLE_GAIN = 1.0
#: The reason of a plan chosen by the cost model.
CHEAPEST = "cheapest predicted"
#: Autotuning times the candidates predicted at most this many times the best.
AUTOTUNE_SPREAD = 20.0


@dataclass(frozen=True)
class Plan:
    """How one call runs: a strategy, its plan for a chunk of samples, and why.

    ``kernel`` is the strategy's plan for ``chunk`` samples, ``rest`` the one for the last,
    shorter chunk (None when ``chunk`` divides N).
    """

    strategy: str
    direction: str
    chunk: int
    n: int
    reason: str
    kernel: Any = None
    rest: Any = None
    seconds: float = float("inf")
    bytes: int = 0
    need: int = 0  # workspace bytes at the strategy's preferred chunk
    counts: Counts | None = None  # of the whole batch (None where excluded)

    @property
    def chunked(self) -> bool:
        """True if the batch runs in more than one chunk."""
        return self.chunk < self.n


def describe(w: Array, geom: ConvGeometry, *, xp: ModuleType, **options: Any) -> Call:
    """The frozen description of a call on w's dtype and device (``direction``,
    ``require_exact`` as keywords)."""
    return Call(
        geom,
        options.get("direction", "forward"),
        backend_name(xp),
        str(w.dtype).rsplit(".", 1)[-1],
        xp.finfo(w.dtype).bits // 8,
        is_accelerator(xp, device_of(w)),
        options.get("require_exact", False),
    )


# --------------------------------------------------------------------------- pricing


def separable_pays_off(rank: int, geom: ConvGeometry) -> bool:
    """``r (kh + kw) < SEPARABLE_GAIN kh kw``: the passes have fewer taps than the kernel."""
    return rank * (geom.kh + geom.kw) < SEPARABLE_GAIN * geom.kh * geom.kw


def _chunk_plans(s: Strategy, call: Call, rank: int | None, cal: cost.Calibration, budget: int):
    """``(chunk, plan of a chunk, plan of the rest, workspace of the preferred chunk)``: the
    strategy's preferred chunk, cut to the largest that fits ``budget`` (bisection over N;
    chunk 0 if one sample does not fit)."""

    def make(n: int) -> Any:
        return s.plan(call.with_n(n), rank, lambda c: cal.seconds(s.name, c))

    whole = make(call.geom.n)
    chunk = whole.chunk
    need = s.workspace(make(chunk) if chunk < call.geom.n else whole)
    if need > budget:
        lo, hi = 0, chunk  # fits(lo) or lo == 0; not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if s.workspace(make(mid)) <= budget else (lo, mid)
        chunk = lo
    if chunk == 0:
        return 0, make(1), None, need
    kernel = whole if chunk == call.geom.n else make(chunk)
    rest = call.geom.n % chunk
    return chunk, kernel, make(rest) if rest else None, need


def price(
    name: str, call: Call, *, rank: int | None, cal: cost.Calibration, budget: int, reason: str
) -> Plan:
    """The strategy's plan for ``call`` with its workspace, chunk and predicted seconds
    (``seconds`` inf and the exclusion in ``reason`` when one sample exceeds the budget)."""
    s = STRATEGIES[name]
    chunk, kernel, rest, need = _chunk_plans(s, call, rank, cal, budget)
    nbytes = s.workspace(kernel)
    if chunk == 0:
        why = (
            f"workspace {format_bytes(nbytes)} for one sample exceeds the budget "
            f"{format_bytes(budget)}"
        )
        return Plan(
            name, call.direction, 0, call.geom.n, why, kernel, None, float("inf"), nbytes, need
        )
    n = call.geom.n
    counts = plan_counts(s, call, chunk, kernel, rest)
    seconds = cal.seconds(name, counts)
    if need > budget:
        reason += f", in chunks of {chunk} samples to fit the workspace budget"
    return Plan(name, call.direction, chunk, n, reason, kernel, rest, seconds, nbytes, need, counts)


def plan_counts(s: Strategy, call: Call, chunk: int, kernel: Any, rest: Any) -> Counts:
    """The counts of the whole batch run in chunks: each chunk's, and the concatenation of
    the chunks' results (read and written once)."""
    total = s.counts(kernel).scaled(call.geom.n // chunk)
    if rest is not None:
        total = total + s.counts(rest)
    if chunk < call.geom.n:
        g = call.geom
        out = g.n * (g.f * g.ho * g.wo if call.direction == "forward" else g.c * g.h * g.w)
        total = total + traffic(2 * out * call.itemsize)
    return total


def _exclusion(name: str, call: Call, xp: ModuleType) -> str | None:
    s = STRATEGIES[name]
    missing = s.missing(xp)
    if missing:
        return f"namespace {xp.__name__} lacks {', '.join(missing)}"
    if call.require_exact and not s.exact_sums:
        return "not exact on integer-valued data (require_exact=True)"
    if s.uses_rank and not separable_pays_off(1, call.geom):
        return "kernel too small for separable passes to pay off"
    return None


def price_candidates(call: Call, xp: ModuleType, cal: cost.Calibration, budget: int) -> dict:
    """Every strategy priced or excluded, separable at rank 1 (a lower bound); memoised
    per call description, reused while the budget covers every preferred chunk."""
    key = (call, id(cal), None)
    hit = _STATIC.get(key)
    if hit is not None and hit[0] is cal and hit[1] <= budget:
        return hit[2]
    result = {}
    for name, s in STRATEGIES.items():
        why = _exclusion(name, call, xp)
        rank = 1 if s.uses_rank else None
        result[name] = (
            Plan(name, call.direction, 0, call.geom.n, why)
            if why
            else price(name, call, rank=rank, cal=cal, budget=budget, reason=CHEAPEST)
        )
    if len(_STATIC) >= 4096:
        _STATIC.clear()
    _STATIC[key] = (cal, max((p.need for p in result.values()), default=0), result)
    return result


#: The dispatcher's one memo: (call description, calibration, separable rank or None) ->
#: (calibration, workspace bytes at the preferred chunks, priced plans).
_STATIC: dict[tuple[Any, ...], tuple[cost.Calibration, int, dict[str, Plan]]] = {}
register_cache(_STATIC.clear)


# --------------------------------------------------------------------------- value facts


def read_values(
    candidates: dict[str, Plan], call: Call, values: Values, *, cal, budget: int, prune: float
) -> tuple[dict[str, Plan], int | None]:
    """Decide separable from w's numerical rank where it is still in question (its rank-1
    price within ``prune`` times the best other): the one step of planning that reads
    values (finiteness is read at the choice, for FFT only)."""
    sep = candidates["separable"]
    best = min((p.seconds for n, p in candidates.items() if p.chunk and n != "separable"))
    if not sep.chunk:
        return candidates, None
    if sep.seconds > prune * best:
        why = "predicted slower than the best strategy even for a rank-1 kernel"
        return {**candidates, "separable": dataclasses.replace(sep, chunk=0, reason=why)}, None
    rank = values.rank()
    if rank is None:
        why = (
            "w holds NaN or Inf (the SVD is undefined)"
            if not values.traced()
            else ("traced arrays: the kernel's rank cannot be read")
        )
    elif not separable_pays_off(rank, call.geom):
        why = f"kernel rank {rank} too high for separable passes to pay off"
    else:
        key = (call, id(cal), rank)
        hit = _STATIC.get(key)
        if hit is None or hit[0] is not cal or hit[1] > budget:
            new = price("separable", call, rank=rank, cal=cal, budget=budget, reason=CHEAPEST)
            hit = _STATIC[key] = (cal, new.need, {"separable": new})
        new = hit[2]["separable"]
        return {**candidates, "separable": new}, rank
    return {**candidates, "separable": dataclasses.replace(sep, chunk=0, reason=why)}, rank


# --------------------------------------------------------------------------- choosing


def _forced(name: str, call: Call, values: Values, xp: ModuleType, cal, budget: int) -> Plan:
    s = STRATEGIES[name]
    missing = s.missing(xp)
    if missing:
        raise ValueError(
            f"strategy={name!r} needs {', '.join(missing)}, which namespace "
            f"{xp.__name__} does not provide"
        )
    if call.require_exact and not s.exact_sums:
        exact = ", ".join(n for n, t in STRATEGIES.items() if t.exact_sums)
        raise ValueError(
            f"strategy={name!r} is not exact on integer-valued data and require_exact=True; "
            f"exact strategies: {exact}"
        )
    if not s.nan_local and values.nonfinite(call.direction):
        raise nonfinite_error(name, values.nonfinite(call.direction))
    rank = values.rank() if s.uses_rank else None
    if s.uses_rank and rank is None and not values.traced():
        raise nonfinite_error(name, ["w"])
    chosen = price(name, call, rank=rank, cal=cal, budget=budget, reason="forced")
    if not chosen.chunk:
        raise WorkspaceError(
            f"strategy={name!r} ({call.direction}) needs a predicted workspace of "
            f"{chosen.bytes} bytes ({format_bytes(chosen.bytes)}) even for one sample "
            f"of the batch, over the workspace budget of {budget} bytes "
            f"({format_bytes(budget)}); use strategy='auto', or raise the budget with "
            f"arraycnn.set_workspace_limit() or {ENV_WORKSPACE_LIMIT}"
        )
    return chosen


def _measured_order(
    order: list[Plan], call: Call, values: Values, rank: int | None, xp
) -> list[Plan]:
    """``order`` with the measured fastest first (autotune), timed once per signature."""
    tuned = [p for p in order if p.seconds <= AUTOTUNE_SPREAD * order[0].seconds]
    x, gy = values.arrays["x"], values.arrays.get("gy")
    key = measured.make_key(call, device_of(x), rank, any(p.chunked for p in tuned))
    by_name = {p.strategy: p for p in tuned}

    def run(name: str) -> Any:
        if call.direction == "forward":
            return run_forward(by_name[name], x, values.arrays["w"], xp=xp)
        return run_backward(by_name[name], gy, x, values.arrays["w"], xp=xp)[0]

    choice, times = measured.tuned_choice(key, list(by_name), run)
    how = "measured fastest" if times is not None else "autotune (cached or only candidate)"
    first = by_name[choice]
    first = dataclasses.replace(first, reason=first.reason.replace(CHEAPEST, how, 1))
    return [first, *(p for p in order if p.strategy != choice)]


def plan(
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

    ``x`` and ``gy`` (the backward's output gradient) are needed for autotuning and the
    non-finite checks. Raises ValueError for an unknown or unrunnable forced strategy and
    :class:`~arraycnn.conv.WorkspaceError` where nothing fits the budget.
    """
    name = parse_strategy(strategy)
    call = describe(
        w, geom, xp=xp, direction=parse_direction(direction), require_exact=require_exact
    )
    if budget is None:
        budget = workspace_limit(xp, device_of(w))
    cal = calibration if calibration is not None else cost.calibration_for(call.backend)[0]
    values = Values(xp, x=x, w=w, gy=gy)
    if name != "auto":
        return _forced(name, call, values, xp, cal, budget)
    candidates = price_candidates(call, xp, cal, budget)
    tune = (
        autotune_enabled(autotune) and x is not None and (direction == "forward" or gy is not None)
    )
    prune = AUTOTUNE_SPREAD if tune else 1.0
    candidates, rank = read_values(candidates, call, values, cal=cal, budget=budget, prune=prune)
    order = sorted((p for p in candidates.values() if p.chunk), key=lambda p: p.seconds)
    if not order:
        reasons = "; ".join(f"{p.strategy}: {p.reason}" for p in candidates.values())
        raise WorkspaceError(
            f"no convolution strategy fits this call ({direction}, budget {budget} bytes): "
            + reasons
        )
    skipped = ""
    if tune:
        order = _measured_order(order, call, values, rank, xp)
    for chosen in order:
        if not STRATEGIES[chosen.strategy].nan_local and values.nonfinite(direction):
            skipped += f"; {chosen.strategy} skipped: non-finite input"
            continue
        return dataclasses.replace(chosen, reason=chosen.reason + skipped) if skipped else chosen
    raise WorkspaceError(
        "no strategy can run this call: fft cannot take non-finite input and the others do not "
        f"fit: {'; '.join(f'{p.strategy}: {p.reason}' for p in candidates.values())}"
    )


# --------------------------------------------------------------------------- execution


def run_chunked(chosen: Plan, arrays: tuple[Array, ...], *, xp: ModuleType) -> Any:
    """Run ``chosen`` on the batch, chunk by chunk: forward ``arrays = (x, w)`` gives y (the
    chunks' outputs concatenated along N); backward ``(gy, x, w)`` gives (gx, gw) (gx
    concatenated, gw summed)."""
    s = STRATEGIES[chosen.strategy]
    run = s.forward if chosen.direction == "forward" else s.backward
    *batched, w = arrays
    if not chosen.chunked:
        return run(chosen.kernel, *batched, w, xp=xp)
    parts = []
    for start, stop in ranges(chosen.n, chosen.chunk):
        kernel = chosen.kernel if stop - start == chosen.chunk else chosen.rest
        parts.append(run(kernel, *(a[start:stop, ...] for a in batched), w, xp=xp))
    if chosen.direction == "forward":
        return xp.concat(parts, axis=0)  # chunks of (n_i, F, Ho, Wo) -> (N, F, Ho, Wo)
    gw = parts[0][1]
    for _, gw_i in parts[1:]:
        gw = gw + gw_i
    return xp.concat([gx for gx, _ in parts], axis=0), gw  # (n_i, C, H, W) -> (N, C, H, W)


def run_forward(chosen: Plan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W) -> y (N, F, Ho, Wo)."""
    return run_chunked(chosen, (x, w), xp=xp)


def run_backward(chosen: Plan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``."""
    return run_chunked(chosen, (gy, x, w), xp=xp)
