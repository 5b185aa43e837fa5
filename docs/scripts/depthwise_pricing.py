"""The cost model's predicted milliseconds against measured ones on depthwise layers.

``OMP_NUM_THREADS=1 PYTHONPATH=. python docs/scripts/depthwise_pricing.py`` prints, per
layer and direction, auto's pick and ``predicted / measured`` ms of naive and im2col
(``explain()``'s predicted seconds; medians of 7 timings of each strategy forced).
"""

from __future__ import annotations

import os
import time
from functools import partial

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import arraycnn as ac
from arraycnn.conv import explain

LAYERS = [
    # (x shape, kernel side, stride, channel multiplier)
    ((16, 64, 56, 56), 3, 1, 1),
    ((16, 64, 56, 56), 3, 2, 1),
    ((8, 32, 112, 112), 3, 2, 1),
    ((64, 32, 28, 28), 5, 1, 1),
    ((16, 64, 56, 56), 7, 1, 1),
    ((16, 32, 56, 56), 3, 1, 4),
    ((64, 1, 28, 28), 3, 1, 4),
    ((16, 64, 28, 28), 3, 1, 2),
]


def _median_ms(call, rounds: int = 7) -> float:
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    for shape, k, stride, multiplier in LAYERS:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((shape[1] * multiplier, 1, k, k), dtype=np.float32)
        kw = {"stride": stride, "padding": k // 2, "groups": shape[1]}
        gy = np.ones(ac.conv2d(x, w, **kw).shape, np.float32)
        parts = []
        for direction in ("forward", "backward"):
            e = explain(x, w, direction=direction, gy=gy if direction == "backward" else None, **kw)
            cells = [f"{direction} {e['choice']}:"]
            for name in ("naive", "im2col"):
                predicted = e["strategies"][name]["predicted_seconds"] * 1e3
                if direction == "forward":
                    call = partial(ac.conv2d, x, w, strategy=name, **kw)
                else:
                    call = partial(ac.conv2d_backward, gy, x, w, strategy=name, **kw)
                measured = _median_ms(call)
                cells.append(f"{name} {predicted:.2f} / {measured:.2f}")
            parts.append(" ".join(cells))
        print(f"{shape} {k}x{k} stride {stride} x{multiplier}: " + " | ".join(parts))


if __name__ == "__main__":
    main()
