"""The one chunking mechanism: how a call runs in pieces, what that costs, and running it.

Every strategy's plan states the piece it prefers: ``chunk`` samples per kernel call
(cache-sized on a CPU, the whole batch on an accelerator) and ``rows`` output rows per
kernel call (Ho: whole samples; im2col cuts a large image into cache-sized bands). The
dispatcher combines that preference with the workspace budget (:func:`price`): a plan over
budget runs on smaller batch chunks (bisection over the chunk); where one sample does not
fit, one sample at a time in bands of output rows (bisection over the rows); the strategy
is excluded if one output row of one sample does not fit. A band is a convolution of its
own (:func:`arraycnn.geometry.row_band`: its output rows, the input rows they read, its own
top and bottom padding), planned by the strategy like any call, so kernels only ever see
whole calls.

:func:`run_chunked` runs every piece and writes its result into one preallocated array:
forward, each piece's output rows; backward, each piece's input gradient onto the input
rows it read (added where bands overlap), the weight gradients summed (each only where the
call's ``grads`` asks for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ..budget import SMALL_ARRAYS_BYTES, format_bytes
from ..geometry import ConvGeometry, row_band
from . import cost
from ._layout import ALL, add_at, empty, ranges, set_at, zeros
from .strategy import Call, Counts, Strategy, traffic
from .table import STRATEGIES

Array = Any

__all__ = ["Band", "Plan", "price", "row_bands", "run_backward", "run_chunked", "run_forward"]
__all__ += ["workspace_bytes"]


class Band(NamedTuple):
    """Output rows of one sample run as a convolution of their own: the rows, the input
    rows they read and the strategy's plan for them (None: rows that read only padding,
    whose output is zero)."""

    out_rows: slice
    in_rows: slice
    kernel: Any


@dataclass(frozen=True)
class Plan:
    """How one call runs: a strategy, its plan for a piece of the call, and why.

    ``kernel`` is the strategy's plan for ``chunk`` samples, ``rest`` the one for the last,
    shorter chunk (None when ``chunk`` divides N); ``chunk`` 0 where the strategy is
    excluded. Where the samples run in bands of ``rows`` output rows (``rows`` 0: whole
    samples), ``chunk`` is 1 and ``bands`` hold each band's plan. ``bytes``: the workspace
    of the largest piece; ``need``: the workspace at the strategy's preferred piece;
    ``counts``: of the whole call; ``grads``: the backward's gradients (as the call's).
    """

    strategy: str
    direction: str
    geom: ConvGeometry
    chunk: int
    reason: str
    kernel: Any = None
    rest: Any = None
    seconds: float = float("inf")
    bytes: int = 0
    need: int = 0
    counts: Counts | None = None
    rows: int = 0
    bands: tuple[Band, ...] = ()
    grads: str = "xw"

    @property
    def n(self) -> int:
        """Samples of the call."""
        return self.geom.n

    @property
    def chunked(self) -> bool:
        """True if the call runs in more than one piece (batch chunks or row bands)."""
        return self.chunk < self.n or bool(self.bands)

    def excluded(self, why: str) -> Plan:
        """This plan ruled out (chunk 0) for the reason ``why``."""
        return Plan(self.strategy, self.direction, self.geom, 0, why, bytes=self.bytes)

    def pieces(self) -> Iterator[tuple[slice, Band]]:
        """The pieces in order: the samples and the band (whole samples: all rows)."""
        whole = (slice(0, self.geom.ho), slice(0, self.geom.h))
        for start, stop in ranges(self.n, self.chunk):
            kernel = self.kernel if stop - start == self.chunk else self.rest
            for band in self.bands or (Band(*whole, kernel),):
                yield slice(start, stop), band


# --------------------------------------------------------------------------- pricing


def workspace_bytes(s: Strategy, kernel_plan: Any) -> int:
    """The workspace the dispatcher reserves for a kernel plan: the strategy's own
    prediction and :data:`~arraycnn.budget.SMALL_ARRAYS_BYTES`."""
    return s.workspace(kernel_plan) + SMALL_ARRAYS_BYTES


def price(
    name: str, call: Call, *, rank: int | None, cal: cost.Calibration, budget: int, reason: str
) -> Plan:
    """The strategy's plan for ``call`` in its preferred pieces, cut to the largest that
    fit ``budget``: batch chunks (bisection over N), or where not even one sample fits,
    one sample at a time in the tallest bands of output rows that fit (bisection over the
    rows). Returns the workspace and predicted seconds (``seconds`` inf and the exclusion
    in ``reason`` when not even one output row of one sample fits)."""
    s, n = STRATEGIES[name], call.geom.n

    def make(c: Call) -> Any:
        return s.plan(c, rank, lambda counts: cal.seconds(name, counts))

    whole = make(call)
    if whole.rows < call.geom.ho:  # the strategy prefers bands of rows
        return _banded(name, call, make, cal, budget, reason, whole.rows)
    chunk = whole.chunk
    kernel = whole if chunk == n else make(call.with_n(chunk))
    need = workspace_bytes(s, kernel)
    if need > budget:
        lo, hi = 0, chunk  # fits(lo) or lo == 0; not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            fits = workspace_bytes(s, make(call.with_n(mid))) <= budget
            lo, hi = (mid, hi) if fits else (lo, mid)
        if lo == 0:
            return _banded(name, call, make, cal, budget, reason, call.geom.ho, need)
        chunk, kernel = lo, make(call.with_n(lo))
        reason += f", in chunks of {chunk} samples to fit the workspace budget"
    rest = make(call.with_n(n % chunk)) if n % chunk else None
    counts = s.counts(kernel).scaled(n // chunk)
    if rest is not None:
        counts = counts + s.counts(rest)
    if chunk < n:
        counts = counts + _assembly(call)
    seconds, nbytes = cal.seconds(name, counts), workspace_bytes(s, kernel)
    fields = (name, call.direction, call.geom, chunk, reason, kernel, rest, seconds, nbytes, need)
    return Plan(*fields, counts, grads=call.grads)


def _assembly(call: Call) -> Counts:
    """The pieces' results, written into the whole: read and written once (gw is summed,
    small)."""
    g = call.geom
    if call.direction == "backward" and "x" not in call.grads:
        return Counts()
    out = g.n * (g.f * g.ho * g.wo if call.direction == "forward" else g.c * g.h * g.w)
    return traffic(2 * out * call.itemsize)


def row_bands(call: Call, make: Callable[[Call], Any], rows: int) -> tuple[Band, ...]:
    """One sample of ``call`` in bands of ``rows`` output rows, each with the strategy's
    plan ``make(band call)`` for its own geometry (:func:`~arraycnn.geometry.row_band`;
    bands of equal geometry, all the interior ones, share one plan)."""
    one = call.with_n(1)
    plans: dict[ConvGeometry, Any] = {}
    bands = []
    for start, stop in ranges(one.geom.ho, rows):
        part = row_band(one.geom, start, stop)
        if part is None:
            bands.append(Band(slice(start, stop), slice(0, 0), None))
            continue
        geom, in_rows = part
        if geom not in plans:
            plans[geom] = make(replace(one, geom=geom))
        bands.append(Band(slice(start, stop), in_rows, plans[geom]))
    return tuple(bands)


def _distinct(bands: tuple[Band, ...]) -> dict[int, tuple[Any, int]]:
    """The bands' plans by identity, each with the number of bands it runs."""
    found: dict[int, tuple[Any, int]] = {}
    for band in bands:
        if band.kernel is not None:
            found[id(band.kernel)] = (band.kernel, found.get(id(band.kernel), (None, 0))[1] + 1)
    return found


def _bands_workspace(s: Strategy, bands: tuple[Band, ...]) -> int:
    """The largest workspace of the bands' plans."""
    sizes = (workspace_bytes(s, kernel) for kernel, _ in _distinct(bands).values())
    return max(sizes, default=SMALL_ARRAYS_BYTES)


def _banded(name, call: Call, make, cal, budget: int, reason: str, rows: int, need=0) -> Plan:
    """One sample at a time in bands of ``rows`` output rows (the strategy's preference),
    or where those do not fit ``budget`` (or ``rows`` is Ho: a whole sample does not), the
    tallest bands that fit (bisection over the rows); the strategy excluded if one row
    does not fit."""
    s, g = STRATEGIES[name], call.geom
    found = {rows: row_bands(call, make, rows)} if rows < g.ho else {}
    need = max(need, _bands_workspace(s, found[rows])) if found else need
    lo = rows if found and need <= budget else 0
    if not lo:
        hi = rows  # fits(lo) or lo == 0; not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            found[mid] = row_bands(call, make, mid)
            lo, hi = (mid, hi) if _bands_workspace(s, found[mid]) <= budget else (lo, mid)
        if lo == 0:
            nbytes = _bands_workspace(s, found.get(1) or row_bands(call, make, 1))
            why = f"workspace {format_bytes(nbytes)} for one output row of one sample exceeds "
            why += f"the budget {format_bytes(budget)}"
            return Plan(name, call.direction, g, 0, why, bytes=nbytes, need=need)
        reason += f", one sample at a time in bands of {lo} output rows to fit the workspace"
        reason += " budget"
    bands = found[lo]
    counts = _assembly(call)
    for kernel, count in _distinct(bands).values():
        counts = counts + s.counts(kernel).scaled(count * g.n)
    first = next((b.kernel for b in bands if b.kernel is not None), None)
    seconds, nbytes = cal.seconds(name, counts), _bands_workspace(s, bands)
    fields = (name, call.direction, g, 1, reason, first, None, seconds, nbytes, need, counts)
    return Plan(*fields, lo, bands, call.grads)


# --------------------------------------------------------------------------- execution


def run_chunked(chosen: Plan, arrays: tuple[Array, ...], *, xp) -> Any:
    """Run ``chosen`` piece by piece: forward ``arrays = (x, w)`` gives y, backward ``(gy,
    x, w)`` gives (gx, gw) (None for a gradient ``chosen.grads`` leaves out). Each piece's
    output rows (forward) or input gradient (backward, onto the input rows it read) are
    written into one preallocated result, the weight gradients summed. The one place a call
    is split."""
    s = STRATEGIES[chosen.strategy]
    *batched, w = arrays
    forward = chosen.direction == "forward"
    run = s.forward if forward else s.backward
    if not chosen.chunked:
        return run(chosen.kernel, *batched, w, xp=xp)
    x, g = batched[-1], chosen.geom
    # banded: rows that read only padding stay zero, overlapping input gradients add up
    result = None
    if forward or "x" in chosen.grads:
        result = (zeros if chosen.bands else empty)(g.y_shape if forward else g.x_shape, x, xp=xp)
    gw, sample, written = None, -1, 0  # input rows below `written` hold the sample's gradients
    for samples, band in chosen.pieces():
        if band.kernel is None:
            continue
        if samples.start != sample:
            sample, written = samples.start, 0
        if forward:
            y = run(band.kernel, x[samples, :, band.in_rows, :], w, xp=xp)
            result = set_at(result, (samples, ALL, band.out_rows, ALL), y, xp=xp)
            continue
        gy = batched[0][samples, :, band.out_rows, :]
        gx, gw_part = run(band.kernel, gy, x[samples, :, band.in_rows, :], w, xp=xp)
        if gw_part is not None:
            gw = gw_part if gw is None else gw + gw_part
        if gx is None:
            continue
        start, stop = band.in_rows.start, band.in_rows.stop
        seen = min(max(written, start), stop)
        if seen > start:  # (n, C, rows, W): add onto the rows earlier bands wrote
            where = (samples, ALL, slice(start, seen), ALL)
            result = add_at(result, where, gx[:, :, : seen - start, :], xp=xp)
        where = (samples, ALL, slice(seen, stop), ALL)
        result = set_at(result, where, gx[:, :, seen - start :, :], xp=xp)
        written = max(written, stop)
    if forward:
        return result
    if "w" in chosen.grads and gw is None:  # every band read only padding
        gw = zeros(tuple(w.shape), w, xp=xp)
    return result, gw


def run_forward(chosen: Plan, x: Array, w: Array, *, xp) -> Array:
    """Execute a forward plan: x (N, C, H, W) -> y (N, F, Ho, Wo)."""
    return run_chunked(chosen, (x, w), xp=xp)


def run_backward(chosen: Plan, gy: Array, x: Array, w: Array, *, xp):
    """Execute a backward plan: ``(gx, gw)``."""
    return run_chunked(chosen, (gy, x, w), xp=xp)
