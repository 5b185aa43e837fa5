"""The timing worker of ``arraycnn bench --compare``: one process per source tree.

Run as a script (``python compare_worker.py CASES.json``) with the tree to time first on
``PYTHONPATH``, so that ``import arraycnn`` loads that tree's code. It uses only the
long-standing public API (``conv2d``, ``conv2d_backward``, ``correlate2d``, ``max_pool2d``,
``max_pool2d_backward``), so the same worker times older commits too, and imports nothing
else of arraycnn.

Protocol (one JSON object per line): after building every case's seeded inputs it prints
``{"ready": <arraycnn file>}``; then for each line ``{"case": i, "calls": k}`` on stdin it
runs case ``i`` ``k`` times and prints ``{"seconds": <the fastest>}`` (or ``{"error":
<message>}``). The first request of a case also warms it up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _arrays(spec: dict[str, Any]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(spec["dtype"]) for shape in spec["shapes"]]


def _call(ac: Any, spec: dict[str, Any]) -> Callable[[], Any]:
    """The timed call of one case (inputs built here, outside the timing)."""
    kind, kwargs = spec["kind"], spec["kwargs"]
    arrays = _arrays(spec)
    if kind == "conv2d_backward":  # gy of the forward's shape
        x, w = arrays
        gy = np.ones(ac.conv2d(x, w, **kwargs).shape, dtype=x.dtype)
        arrays = [gy, x, w]
    if kind == "max_pool2d_backward":
        (x,) = arrays
        gy = np.ones(ac.max_pool2d(x, **kwargs).shape, dtype=x.dtype)
        arrays = [gy, x]
    function = getattr(ac, kind)
    return lambda: function(*arrays, **kwargs)


def _serve(cases: list[dict[str, Any]]) -> None:
    import arraycnn as ac

    calls: list[Callable[[], Any] | str] = []
    for spec in cases:
        try:
            calls.append(_call(ac, spec))
        except Exception as exc:  # reported per case: older trees may lack an option
            calls.append(f"{type(exc).__name__}: {exc}")
    warmed: set[int] = set()
    print(json.dumps({"ready": ac.__file__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        index, count = request["case"], request["calls"]
        call = calls[index]
        if isinstance(call, str):
            print(json.dumps({"error": call}), flush=True)
            continue
        try:
            if index not in warmed:
                call()
                warmed.add(index)
            best = float("inf")
            for _ in range(count):
                start = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - start)
            reply: dict[str, Any] = {"seconds": best}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        _serve(json.load(fh))
