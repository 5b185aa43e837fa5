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
   question (``r (kh + kw) < kh kw``), the inputs' finiteness where FFT would be chosen;
4. **chosen** -- the cheapest, or with autotuning the measured fastest (:mod:`.measured`).

A forced strategy never falls back: a namespace that lacks what it needs, non-finite input
to FFT or separable, or a workspace over budget even for one output row of one sample raise
errors. Every plan runs through one chunking mechanism, :func:`run_chunked`: batch chunks,
and where one sample's workspace is over the budget, bands of its output rows, each run as
a convolution of its own (:func:`arraycnn.geometry.row_band`).

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
from ..budget import (
    ENV_WORKSPACE_LIMIT,
    SMALL_ARRAYS_BYTES,
    WorkspaceError,
    format_bytes,
    workspace_limit,
)
from ..geometry import ConvGeometry, row_band
from ..settings import autotune_enabled, register_cache
from . import cost, measured
from ._layout import ALL, add_at, ranges, zeros
from .facts import Values, nonfinite_error
from .strategy import Call, Counts, Strategy, traffic
from .table import STRATEGIES, STRATEGY_NAMES, eligible_strategies, parse_direction, parse_strategy

Array = Any

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "Band", "Plan", "eligible_strategies", "parse_strategy"]
__all__ += ["plan", "price", "price_candidates", "row_bands", "run_backward", "run_chunked"]
__all__ += ["run_forward"]

#: The reason of a plan chosen by the cost model.
CHEAPEST = "cheapest predicted"
#: Autotuning times the candidates predicted at most this many times the best.
AUTOTUNE_SPREAD = 20.0
#: Entries the memo holds at most (it is emptied when full).
MEMO_ENTRIES = 4096


@dataclass(frozen=True)
class Band:
    """Output rows of one sample run as a convolution of their own: the rows, the input
    rows they read, the strategy's plan for them (None: rows that read only padding, whose
    output is zero) and the output's width Wo."""

    out_rows: slice
    in_rows: slice
    kernel: Any
    wo: int


@dataclass(frozen=True)
class Plan:
    """How one call runs: a strategy, its plan for a chunk of samples, and why.

    ``kernel`` is the strategy's plan for ``chunk`` samples, ``rest`` the one for the last,
    shorter chunk (None when ``chunk`` divides N); ``chunk`` 0 where the strategy is
    excluded. Where one sample's workspace is over the budget, ``chunk`` is 1 and
    ``bands`` cut each sample's output rows into bands of ``rows`` rows (``rows`` 0: whole
    samples). ``bytes``: the workspace of ``kernel`` (of the largest band); ``need``: the
    workspace at the strategy's preferred chunk; ``counts``: of the whole batch.
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
    need: int = 0
    counts: Counts | None = None
    rows: int = 0
    bands: tuple[Band, ...] = ()

    @property
    def chunked(self) -> bool:
        """True if the batch runs in more than one piece (batch chunks or row bands)."""
        return self.chunk < self.n or bool(self.bands)

    def excluded(self, why: str) -> Plan:
        """This plan ruled out (chunk 0) for the reason ``why``."""
        return Plan(self.strategy, self.direction, 0, self.n, why, bytes=self.bytes)


def describe(w: Array, geom: ConvGeometry, *, xp: ModuleType, **options: Any) -> Call:
    """The frozen description of a call on w's dtype and device (keywords ``direction``,
    ``require_exact``)."""
    dtype = w.dtype  # NumPy's scalar type names it cheaply; others print as "ns.float32"
    name = getattr(getattr(dtype, "type", None), "__name__", None) or str(dtype).split(".")[-1]
    direction, exact = options.get("direction", "forward"), options.get("require_exact", False)
    accelerator = is_accelerator(xp, device_of(w))
    return Call(
        geom, direction, backend_name(xp), name, xp.finfo(dtype).bits // 8, accelerator, exact
    )


def separable_pays_off(rank: int, geom: ConvGeometry) -> bool:
    """``r (kh + kw) < kh kw``: fewer taps than the kernel (the cost model weighs the rest)."""
    return rank * (geom.kh + geom.kw) < geom.kh * geom.kw


# --------------------------------------------------------------------------- pricing


def workspace_bytes(s: Strategy, kernel_plan: Any) -> int:
    """The workspace the dispatcher reserves for a kernel plan: the strategy's own
    prediction and :data:`~arraycnn.budget.SMALL_ARRAYS_BYTES`."""
    return s.workspace(kernel_plan) + SMALL_ARRAYS_BYTES


def price(
    name: str, call: Call, *, rank: int | None, cal: cost.Calibration, budget: int, reason: str
) -> Plan:
    """The strategy's plan for ``call``: its preferred chunk, cut to the largest that fits
    ``budget`` (bisection over N); where not even one sample fits, one sample at a time in
    the tallest bands of output rows that fit (bisection over the rows). Returns the
    workspace and predicted seconds (``seconds`` inf and the exclusion in ``reason`` when
    not even one output row of one sample fits)."""
    s, n = STRATEGIES[name], call.geom.n

    def make(samples: int) -> Any:
        return s.plan(call.with_n(samples), rank, lambda c: cal.seconds(name, c))

    whole = make(n)
    chunk = whole.chunk
    kernel = whole if chunk == n else make(chunk)
    need = workspace_bytes(s, kernel)
    if need > budget:
        lo, hi = 0, chunk  # fits(lo) or lo == 0; not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if workspace_bytes(s, make(mid)) <= budget else (lo, mid)
        if lo == 0:
            return _banded(name, call, rank, cal, budget, reason, need)
        chunk, kernel = lo, make(lo)
        reason += f", in chunks of {chunk} samples to fit the workspace budget"
    nbytes = workspace_bytes(s, kernel)
    rest = make(n % chunk) if n % chunk else None
    counts = s.counts(kernel).scaled(n // chunk)
    if rest is not None:
        counts = counts + s.counts(rest)
    if chunk < n:  # the chunks' results, concatenated: read and written once
        counts = counts + _assembly(call)
    seconds = cal.seconds(name, counts)
    return Plan(name, call.direction, chunk, n, reason, kernel, rest, seconds, nbytes, need, counts)


def _assembly(call: Call) -> Counts:
    """The pieces' results, assembled into the whole: read and written once."""
    g = call.geom
    out = g.n * (g.f * g.ho * g.wo if call.direction == "forward" else g.c * g.h * g.w)
    return traffic(2 * out * call.itemsize)


def row_bands(name: str, call: Call, rank: int | None, cal, rows: int) -> tuple[Band, ...]:
    """One sample of ``call`` in bands of ``rows`` output rows, each with the strategy's
    plan for its own geometry (:func:`~arraycnn.geometry.row_band`; bands of equal
    geometry, all the interior ones, share one plan)."""
    s = STRATEGIES[name]
    one = call.with_n(1)
    plans: dict[ConvGeometry, Any] = {}
    bands = []
    for start, stop in ranges(one.geom.ho, rows):
        part = row_band(one.geom, start, stop)
        if part is None:
            bands.append(Band(slice(start, stop), slice(0, 0), None, one.geom.wo))
            continue
        geom, in_rows = part
        if geom not in plans:
            band_call = dataclasses.replace(one, geom=geom, banded=True)
            plans[geom] = s.plan(band_call, rank, lambda c: cal.seconds(name, c))
        bands.append(Band(slice(start, stop), in_rows, plans[geom], one.geom.wo))
    return tuple(bands)


def _bands_workspace(name: str, bands: tuple[Band, ...]) -> int:
    """The largest workspace of the bands' plans."""
    s = STRATEGIES[name]
    kernels = {id(b.kernel): b.kernel for b in bands if b.kernel is not None}
    return max((workspace_bytes(s, k) for k in kernels.values()), default=SMALL_ARRAYS_BYTES)


def _banded(name: str, call: Call, rank, cal, budget: int, reason: str, need: int) -> Plan:
    """One sample at a time in the tallest bands of output rows whose workspace fits
    ``budget`` (bisection over the rows), or the strategy excluded if one row does not."""
    s, g = STRATEGIES[name], call.geom
    lo, hi = 0, g.ho  # fits(lo) or lo == 0; not fits(hi): one whole sample does not fit
    found: dict[int, tuple[Band, ...]] = {}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found[mid] = row_bands(name, call, rank, cal, mid)
        lo, hi = (mid, hi) if _bands_workspace(name, found[mid]) <= budget else (lo, mid)
    if lo == 0:
        nbytes = _bands_workspace(name, found.get(1) or row_bands(name, call, rank, cal, 1))
        why = f"workspace {format_bytes(nbytes)} for one output row of one sample exceeds the "
        why += f"budget {format_bytes(budget)}"
        return Plan(name, call.direction, 0, g.n, why, bytes=nbytes, need=need)
    bands = found[lo]
    per_kernel: dict[int, tuple[Any, int]] = {}
    for band in bands:
        if band.kernel is not None:
            kernel, count = per_kernel.get(id(band.kernel), (band.kernel, 0))
            per_kernel[id(band.kernel)] = (kernel, count + 1)
    counts = Counts()
    for kernel, count in per_kernel.values():
        counts = counts + s.counts(kernel).scaled(count * g.n)
    counts = counts + _assembly(call)
    reason += f", one sample at a time in bands of {lo} output rows to fit the workspace budget"
    first = next((b.kernel for b in bands if b.kernel is not None), None)
    return Plan(
        name,
        call.direction,
        1,
        g.n,
        reason,
        first,
        None,
        cal.seconds(name, counts),
        _bands_workspace(name, bands),
        need,
        counts,
        lo,
        bands,
    )


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
    if call.require_exact and not s.exact_sums:
        return "not exact on integer-valued data (require_exact=True)"
    if s.uses_rank and not separable_pays_off(1, call.geom):
        return "kernel too small for separable passes to pay off"
    return None


def price_candidates(call: Call, xp: ModuleType, cal: cost.Calibration, budget: int) -> dict:
    """Every strategy priced or excluded (separable at rank 1, a lower bound), memoised
    per call description."""

    def compute() -> dict[str, Plan]:
        result = {}
        for name, s in STRATEGIES.items():
            rank, why = 1 if s.uses_rank else None, _exclusion(s, call, xp)
            if why:
                result[name] = Plan(name, call.direction, 0, call.geom.n, why)
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
    values (finiteness is read at the choice, for FFT only). Returns the candidates with
    separable re-priced at the rank or excluded, and the rank where it was read."""
    sep = candidates["separable"]
    if not sep.chunk:
        return candidates, None
    others = [p.seconds for n, p in candidates.items() if p.chunk and n != "separable"]
    if sep.seconds > prune * min(others, default=float("inf")):
        why = "predicted slower than the best strategy even for a rank-1 kernel"
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
        return run_backward(tuned[name], gy, x, w, xp=xp)[0]

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
) -> Plan:
    """The plan of one call: the forced strategy (checked) or ``auto``'s choice.

    ``x`` and ``gy`` (the backward's output gradient) are needed for autotuning and the
    non-finite checks; ``budget`` and ``calibration`` default to the settings'. Raises
    ValueError for an unknown or unrunnable forced strategy and
    :class:`~arraycnn.budget.WorkspaceError` where nothing fits the budget.

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
    call = describe(w, geom, xp=xp, direction=direction, require_exact=require_exact)
    budget = workspace_limit(xp, device_of(w)) if budget is None else budget
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
        "no strategy can run this call: fft cannot take non-finite input and the others do not "
        f"fit: {'; '.join(f'{p.strategy}: {p.reason}' for p in candidates.values())}"
    )


# --------------------------------------------------------------------------- execution


def run_chunked(chosen: Plan, arrays: tuple[Array, ...], *, xp: ModuleType) -> Any:
    """Run ``chosen`` on the batch, chunk by chunk: forward ``arrays = (x, w)`` gives y (the
    chunks' outputs concatenated along N); backward ``(gy, x, w)`` gives (gx, gw) (gx
    concatenated, gw summed). Where the plan has row bands, each sample runs band by band
    (:func:`_run_bands`). The one place a batch is split."""
    s = STRATEGIES[chosen.strategy]
    run = s.forward if chosen.direction == "forward" else s.backward
    *batched, w = arrays
    if not chosen.chunked:
        return run(chosen.kernel, *batched, w, xp=xp)
    parts = []
    for start, stop in ranges(chosen.n, chosen.chunk):
        piece = tuple(a[start:stop, ...] for a in batched)
        if chosen.bands:
            parts.append(_run_bands(chosen, run, piece, w, xp=xp))
            continue
        kernel = chosen.kernel if stop - start == chosen.chunk else chosen.rest
        parts.append(run(kernel, *piece, w, xp=xp))
    if chosen.direction == "forward":
        return xp.concat(parts, axis=0)  # chunks of (n_i, F, Ho, Wo) -> (N, F, Ho, Wo)
    gw = parts[0][1]
    for _, gw_i in parts[1:]:
        gw = gw + gw_i
    return xp.concat([gx for gx, _ in parts], axis=0), gw  # (n_i, C, H, W) -> (N, C, H, W)


def _run_bands(chosen: Plan, run: Any, piece: tuple[Array, ...], w: Array, *, xp) -> Any:
    """One sample band by band: forward, the bands' output rows concatenated (zeros for
    rows that read only padding); backward, each band's input gradient added onto the
    input rows it read, the weight gradients summed."""
    if chosen.direction == "forward":
        (x,) = piece
        rows = []
        for band in chosen.bands:
            if band.kernel is None:  # (1, F, B, Wo) of zeros
                height = band.out_rows.stop - band.out_rows.start
                rows.append(zeros((x.shape[0], w.shape[0], height, band.wo), x, xp=xp))
            else:
                rows.append(run(band.kernel, x[:, :, band.in_rows, :], w, xp=xp))
        return xp.concat(rows, axis=2)  # bands of (1, F, B, Wo) -> (1, F, Ho, Wo)
    gy, x = piece
    gx, gw = zeros(tuple(x.shape), x, xp=xp), None
    for band in chosen.bands:
        if band.kernel is None:  # rows that read only padding: no gradient
            continue
        gy_b, x_b = gy[:, :, band.out_rows, :], x[:, :, band.in_rows, :]
        gx_b, gw_b = run(band.kernel, gy_b, x_b, w, xp=xp)
        gx = add_at(gx, (ALL, ALL, band.in_rows, ALL), gx_b, xp=xp)
        gw = gw_b if gw is None else gw + gw_b
    return gx, zeros(tuple(w.shape), w, xp=xp) if gw is None else gw


def run_forward(chosen: Plan, x: Array, w: Array, *, xp: ModuleType) -> Array:
    """Execute a forward plan: x (N, C, H, W) -> y (N, F, Ho, Wo)."""
    return run_chunked(chosen, (x, w), xp=xp)


def run_backward(chosen: Plan, gy: Array, x: Array, w: Array, *, xp: ModuleType):
    """Execute a backward plan: ``(gx, gw)``."""
    return run_chunked(chosen, (gy, x, w), xp=xp)
