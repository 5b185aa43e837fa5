"""Why the dispatcher runs what it runs: :func:`explain`, the dispatcher's pipeline in words."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..backend import device_of
from ..budget import workspace_limit
from . import cost
from ._boundary import prepare
from .dispatch import GRADIENT_NAMES, describe, parse_needs, plan, price_candidates, read_values
from .facts import Values
from .table import parse_direction

__all__ = ["explain"]

Array = Any


def explain(
    x: Array,
    w: Array,
    /,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    strategy: str = "auto",
    direction: str = "forward",
    gy: Array | None = None,
    require_exact: bool = False,
    autotune: bool | None = False,
    needs: Any = GRADIENT_NAMES,
) -> dict[str, Any]:
    """Why the dispatcher runs what it runs (for ``arraycnn bench`` and curious users).

    Parameters are those of :func:`arraycnn.conv2d`, plus ``direction``, ``gy`` (the
    backward's output gradient), ``needs`` (the backward's gradients, as
    :func:`arraycnn.conv2d_backward`; "x" or "w" among them) and ``require_exact``;
    ``autotune`` is False by default (explain the model's choice without timing anything).

    Returns
    -------
    dict
        ``backend``, ``dtype``, ``direction``, ``geometry``, ``budget_bytes``,
        ``calibration`` (its source), ``strategies`` (per name: ``eligible``, ``reason``,
        ``predicted_seconds``, ``workspace_bytes``, ``chunk``, ``rows``), ``choice``,
        ``chunk``, ``rows`` (output rows per band where one sample is over the budget, else
        None) and ``why`` (``choice`` None and ``why`` the error message if no plan is
        possible).

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.conv import explain
    >>> x, w = np.ones((1, 1, 32, 32)), np.ones((1, 1, 3, 3))
    >>> info = explain(x, w, padding=1)
    >>> info["choice"] in info["strategies"]
    True
    """
    extra = (("gy", gy),) if gy is not None else ()
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    xp, geom = prepare(x, w, **geometry, extra=extra)
    direction = parse_direction(direction)
    grads = parse_needs(needs).replace("b", "")
    if not grads:
        raise ValueError(f"needs must name 'x' or 'w' (a convolution) to explain, got {needs!r}")
    call = describe(w, geom, xp=xp, direction=direction, require_exact=require_exact, grads=grads)
    budget = workspace_limit(xp, device_of(w))
    cal, source = cost.calibration_for(call.backend)
    values = Values(xp, x=x, w=w, gy=gy)
    candidates = price_candidates(call, xp, cal, budget)
    candidates, _ = read_values(candidates, call, values, cal=cal, budget=budget, prune=1e300)
    nonfinite = values.nonfinite(direction)
    if nonfinite and candidates["fft"].chunk:
        candidates["fft"] = candidates["fft"].excluded(f"non-finite input ({', '.join(nonfinite)})")
    options = {"x": x, "gy": gy, "direction": direction, "require_exact": require_exact}
    options.update(autotune=autotune, grads=grads)
    try:
        chosen = plan(strategy, w, geom, xp=xp, **options, budget=budget, calibration=cal)
        choice, chunk, why = chosen.strategy, chosen.chunk, chosen.reason
        rows = chosen.rows or None
    except (ValueError, MemoryError) as exc:
        choice, chunk, why, rows = None, None, str(exc), None
    strategies = {
        name: {
            "eligible": bool(p.chunk),
            "reason": p.reason if not p.chunk else "eligible",
            "predicted_seconds": p.seconds if p.chunk else None,
            "workspace_bytes": p.bytes or None,
            "chunk": p.chunk or None,
            "rows": p.rows or None,
        }
        for name, p in candidates.items()
    }
    return {
        "backend": call.backend,
        "dtype": call.dtype,
        "direction": direction,
        "geometry": dataclasses.asdict(geom),
        "budget_bytes": budget,
        "calibration": source,
        "strategies": strategies,
        "choice": choice,
        "chunk": chunk,
        "rows": rows,
        "why": why,
    }
