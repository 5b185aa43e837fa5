"""The dispatcher: the only place strategy names are parsed and strategies are chosen.

One call goes through a short pipeline of pure functions over its frozen description
(:class:`~arraycnn.conv.strategy.Call`: geometry, dtype, backend, device kind,
direction, exactness, the gradients a backward computes):

1. **candidates** -- the strategies of :data:`STRATEGIES` whose needs the namespace meets
   (and, with ``require_exact``, whose sums are exact);
2. **priced** -- each strategy's plan in its preferred pieces cut to fit the budget, or
   excluded if not even one output row of one sample fits (:func:`.chunking.price`), and
   its predicted seconds (:mod:`.cost`); memoised per call description (:data:`_STATIC`);
3. **value facts** (:func:`read_values`) -- the one step that reads array values, and so
   synchronises with the device: the kernel's numerical rank where separable is still in
   question (``r (kh + kw) < kh kw``), the inputs' finiteness where FFT or Winograd would
   be chosen;
4. **chosen** -- the cheapest, or with autotuning the measured fastest (:mod:`.measured`).

A forced strategy never falls back: a namespace that lacks what it needs, a call the
strategy does not run (:meth:`~.strategy.Strategy.why_not`: Winograd at stride 2),
non-finite input to FFT, Winograd or separable, or a workspace over budget even for one
output row of one sample raise errors. Every plan runs through one chunking mechanism
(:mod:`.chunking`): batch chunks and bands of output rows, each run as a convolution of
its own.

Non-finite values (NaN, ±Inf): an output is non-finite only if its receptive field holds
a non-finite value meeting a nonzero factor (where it meets an exact zero the result is
unspecified: BLAS may skip zero operands); the gradients follow the same rule. The FFT
spreads a non-finite value over the whole output and Winograd over its tile, so ``auto``
keeps such input away from them and a forced ``"fft"`` or ``"winograd"`` raises;
separable needs the SVD of a finite w.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from types import ModuleType
from typing import Any

from ..backend import backend_name, device_of, is_accelerator
from ..budget import ENV_WORKSPACE_LIMIT, WorkspaceError, format_bytes, workspace_limit
from ..geometry import ConvGeometry
from ..settings import autotune_enabled, register_cache
from . import cost, measured
from .chunking import Plan, price, run_backward, run_forward
from .facts import Values, nonfinite_error
from .strategy import Call, Strategy
from .table import STRATEGIES, STRATEGY_NAMES, eligible_strategies, parse_direction, parse_strategy

Array = Any

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "Plan", "eligible_strategies", "parse_strategy"]
__all__ += ["GRADIENT_NAMES", "parse_needs", "plan", "price_candidates", "run_backward"]
__all__ += ["run_forward"]

#: The reason of a plan chosen by the cost model.
CHEAPEST = "cheapest predicted"
#: Autotuning times the candidates predicted at most this many times the best.
AUTOTUNE_SPREAD = 20.0
#: Entries the memo holds at most (it is emptied when full).
MEMO_ENTRIES = 4096


def describe(w: Array, geom: ConvGeometry, *, xp: ModuleType, **options: Any) -> Call:
    """The frozen description of a call on w's dtype and device (keywords ``direction``,
    ``require_exact``, ``grads``)."""
    dtype = w.dtype  # NumPy's scalar type names it cheaply; others print as "ns.float32"
    name = getattr(getattr(dtype, "type", None), "__name__", None) or str(dtype).split(".")[-1]
    direction, exact = options.get("direction", "forward"), options.get("require_exact", False)
    accelerator = is_accelerator(xp, device_of(w))
    grads = options.get("grads", "xw") if direction == "backward" else "xw"
    size = xp.finfo(dtype).bits // 8
    return Call(geom, direction, backend_name(xp), name, size, accelerator, exact, grads)


#: The gradients a backward computes (``conv2d_backward(needs=...)``), in its order.
GRADIENT_NAMES = ("x", "w", "b")


def parse_needs(needs: Collection[str]) -> str:
    """The gradient names ``needs`` holds, in the order x, w, b (``"xwb"``, ``"wb"``, ...)."""
    if isinstance(needs, str) or not isinstance(needs, Collection):
        raise TypeError(
            f"needs must be a collection (tuple, list, set) of names from {GRADIENT_NAMES}, "
            f"got {needs!r}"
        )
    if not all(isinstance(name, str) for name in needs):
        raise TypeError(f"needs must hold names (str) from {GRADIENT_NAMES}, got {needs!r}")
    if set(needs) - set(GRADIENT_NAMES):
        raise ValueError(f"needs names gradients from {GRADIENT_NAMES}, got {needs!r}")
    return "".join(name for name in GRADIENT_NAMES if name in needs)


def separable_pays_off(rank: int, geom: ConvGeometry) -> bool:
    """``r (kh + kw) < kh kw``: fewer taps than the kernel (the cost model weighs the rest)."""
    return rank * (geom.kh + geom.kw) < geom.kh * geom.kw


# --------------------------------------------------------------------------- pricing


def _memoised(key: tuple[Any, ...], cal: cost.Calibration, budget: int, compute) -> dict:
    """``compute()`` (plans by name), memoised in :data:`_STATIC` under ``key``. An entry
    serves a later budget if it is the same, or if no plan's workspace at its preferred
    chunk exceeded either budget (the budget bound nowhere)."""
    hit = _STATIC.get(key)
    if hit is not None and hit[0] is cal and (hit[2] == budget or hit[1] <= min(budget, hit[2])):
        return hit[3]
    plans = compute()
    if len(_STATIC) >= MEMO_ENTRIES:
        _STATIC.clear()
    _STATIC[key] = (cal, max((p.need for p in plans.values()), default=0), budget, plans)
    return plans


def _exclusion(s: Strategy, call: Call, xp: ModuleType) -> str | None:
    if s.missing(xp):
        return f"namespace {xp.__name__} lacks {', '.join(s.missing(xp))}"
    if why := s.why_not(call):
        return why
    if call.require_exact and not s.exact_sums:
        return "not exact on integer-valued data (require_exact=True)"
    if s.uses_rank and not separable_pays_off(1, call.geom):
        return "kernel too small for separable passes to pay off"
    if s.uses_rank and call.direction == "backward" and "x" not in call.grads:
        return "the weight gradient alone uses no separable passes (it is naive's)"
    return None


def price_candidates(call: Call, xp: ModuleType, cal: cost.Calibration, budget: int) -> dict:
    """Every strategy priced or excluded (separable at rank 1, a lower bound), memoised
    per call description."""

    def compute() -> dict[str, Plan]:
        result = {}
        for name, s in STRATEGIES.items():
            rank, why = 1 if s.uses_rank else None, _exclusion(s, call, xp)
            if why:
                result[name] = Plan(name, call.direction, call.geom, 0, why)
            else:
                result[name] = price(name, call, rank=rank, cal=cal, budget=budget, reason=CHEAPEST)
        return result

    return _memoised((call, id(cal)), cal, budget, compute)


def priced(name: str, call: Call, rank: int | None, cal, budget: int, reason: str) -> Plan:
    """:func:`price`, memoised per call description, rank and reason."""

    def compute() -> dict[str, Plan]:
        return {name: price(name, call, rank=rank, cal=cal, budget=budget, reason=reason)}

    return _memoised((call, id(cal), name, rank, reason), cal, budget, compute)[name]


#: The dispatcher's one memo: key -> (calibration, largest workspace at the preferred
#: chunks, budget, plans by name); keys are (call description, calibration) for every
#: strategy, (call description, calibration, name, rank, reason) for one.
_STATIC: dict[tuple[Any, ...], tuple[cost.Calibration, int, int, dict[str, Plan]]] = {}
register_cache(_STATIC.clear)


# --------------------------------------------------------------------------- value facts


def read_values(
    candidates: dict[str, Plan], call: Call, values: Values, *, cal, budget: int, prune: float
) -> tuple[dict[str, Plan], int | None]:
    """Decide separable from w's numerical rank where it is still in question (its rank-1
    price within ``prune`` times the best other): the one step of planning that reads
    values (finiteness is read at the choice, for FFT only), and only on the host: on a
    device separable is excluded unread (:mod:`.facts`). Returns the candidates with
    separable re-priced at the rank or excluded, and the rank where it was read."""
    sep = candidates["separable"]
    if not sep.chunk:
        return candidates, None
    others = [p.seconds for n, p in candidates.items() if p.chunk and n != "separable"]
    if sep.seconds > prune * min(others, default=float("inf")):
        why = "predicted slower than the best strategy even for a rank-1 kernel"
        return {**candidates, "separable": sep.excluded(why)}, None
    if not values.on_host:
        why = (
            "on a device auto does not read the kernel's rank (a host round trip); "
            "force strategy='separable' for a low-rank kernel"
        )
        return {**candidates, "separable": sep.excluded(why)}, None
    rank = values.rank()
    if rank is not None and separable_pays_off(rank, call.geom):
        return {
            **candidates,
            "separable": priced("separable", call, rank, cal, budget, CHEAPEST),
        }, rank
    if rank is not None:
        why = f"kernel rank {rank} too high for separable passes to pay off"
    elif values.traced():
        why = "traced arrays: the kernel's rank cannot be read"
    else:
        why = "w holds NaN or Inf (the SVD is undefined)"
    return {**candidates, "separable": sep.excluded(why)}, rank


# --------------------------------------------------------------------------- choosing


def _forced(name: str, call: Call, values: Values, xp: ModuleType, cal, budget: int) -> Plan:
    s = STRATEGIES[name]
    if s.missing(xp):
        raise ValueError(
            f"strategy={name!r} needs {', '.join(s.missing(xp))}, which namespace "
            f"{xp.__name__} does not provide"
        )
    if why := s.why_not(call):
        raise ValueError(f"strategy={name!r} cannot run this call: {why}")
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
    chosen = priced(name, call, rank, cal, budget, "forced")
    if not chosen.chunk:
        raise WorkspaceError(
            f"strategy={name!r} ({call.direction}) needs a predicted workspace of "
            f"{chosen.bytes} bytes ({format_bytes(chosen.bytes)}) even for one output row of "
            f"one sample of the batch, over the workspace budget of {budget} bytes "
            f"({format_bytes(budget)}); use strategy='auto', or raise the budget with "
            f"arraycnn.set_workspace_limit() or {ENV_WORKSPACE_LIMIT}"
        )
    return chosen


def _measured_order(order: list[Plan], call: Call, values: Values, rank, xp) -> list[Plan]:
    """``order`` with the measured fastest first (autotune), timed once per signature."""
    tuned = {p.strategy: p for p in order if p.seconds <= AUTOTUNE_SPREAD * order[0].seconds}
    x, w, gy = values.arrays["x"], values.arrays["w"], values.arrays.get("gy")
    key = measured.make_key(call, device_of(x), rank, any(p.chunked for p in tuned.values()))

    def run(name: str) -> Any:
        if call.direction == "forward":
            return run_forward(tuned[name], x, w, xp=xp)
        gx, gw = run_backward(tuned[name], gy, x, w, xp=xp)
        return gw if gx is None else gx

    choice, times = measured.tuned_choice(key, list(tuned), run)
    how = "measured fastest" if times is not None else "autotune (cached or only candidate)"
    first = dataclasses.replace(
        tuned[choice], reason=tuned[choice].reason.replace(CHEAPEST, how, 1)
    )
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
    grads: str = "xw",
) -> Plan:
    """The plan of one call: the forced strategy (checked) or ``auto``'s choice.

    ``x`` and ``gy`` (the backward's output gradient) are needed for autotuning and the
    non-finite checks; ``grads``: the gradients a backward computes ("xw", "x" or "w");
    ``budget`` and ``calibration`` default to the settings'. Raises ValueError for an
    unknown or unrunnable forced strategy and :class:`~arraycnn.budget.WorkspaceError`
    where nothing fits the budget.

    Examples
    --------
    >>> import numpy as np
    >>> import arraycnn as ac
    >>> w = np.ones((1, 1, 3, 3))
    >>> p = plan("naive", w, ac.conv_geometry((4, 1, 8, 8), w.shape), xp=np)
    >>> p.strategy, p.chunk, p.reason
    ('naive', 4, 'forced')
    """
    name = parse_strategy(strategy)
    direction = parse_direction(direction)
    call = describe(w, geom, xp=xp, direction=direction, require_exact=require_exact, grads=grads)
    budget = workspace_limit(xp, device_of(w)) if budget is None else budget
    cal, origin = (
        (calibration, "given") if calibration is not None else cost.calibration_for(call.backend)
    )
    values = Values(xp, x=x, w=w, gy=gy)
    if name != "auto":
        return _forced(name, call, values, xp, cal, budget)
    candidates = price_candidates(call, xp, cal, budget)
    tune = (  # traced arrays (JAX) cannot be timed: the cost model decides
        autotune_enabled(autotune, default=call.accelerator and origin != "user")
        and x is not None
        and (direction == "forward" or gy is not None)
        and not values.traced()
    )
    prune = AUTOTUNE_SPREAD if tune else 1.0
    candidates, rank = read_values(candidates, call, values, cal=cal, budget=budget, prune=prune)
    order = sorted((p for p in candidates.values() if p.chunk), key=lambda p: p.seconds)
    if not order:
        raise WorkspaceError(
            f"no convolution strategy fits this call ({direction}, budget {budget} bytes): "
            + "; ".join(f"{p.strategy}: {p.reason}" for p in candidates.values())
        )
    if tune:
        order = _measured_order(order, call, values, rank, xp)
    skipped = ""
    for chosen in order:
        if not STRATEGIES[chosen.strategy].nan_local and values.nonfinite(direction):
            skipped += f"; {chosen.strategy} skipped: non-finite input"
            continue
        return dataclasses.replace(chosen, reason=chosen.reason + skipped) if skipped else chosen
    raise WorkspaceError(
        "no strategy can run this call: fft and winograd cannot take non-finite input and the "
        f"others do not fit: {'; '.join(f'{p.strategy}: {p.reason}' for p in candidates.values())}"
    )
