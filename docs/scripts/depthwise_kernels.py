"""Time naive's compiled depthwise loops (numba) alone, with their errors against torch.

Run with the checkout on the path and numba installed:
``OMP_NUM_THREADS=1 PYTHONPATH=. python docs/scripts/depthwise_kernels.py``. Prints, per
layer, the first call (compilation or loading the cache), the relative error of each
result against torch in float64 (when torch is installed), and the median milliseconds of
the forward, input gradient and weight gradient over 11 interleaved rounds.
"""

from __future__ import annotations

import os
import time
from functools import partial

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from arraycnn.conv import _numba_depthwise as kernels
from arraycnn.geometry import conv_geometry

LAYERS = [
    # (x shape, kernel side, stride, padding, channel multiplier)
    ((16, 64, 56, 56), 3, 1, 1, 1),
    ((16, 64, 56, 56), 3, 2, 1, 1),
    ((16, 64, 56, 56), 5, 1, 2, 1),
    ((16, 64, 56, 56), 7, 1, 3, 1),
]


def _errors(x, w, gy, results, g, stride, padding) -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    torch.set_num_threads(1)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tw = torch.from_numpy(w.astype(np.float64)).requires_grad_(True)
    y = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding, groups=g.groups)
    y.backward(torch.from_numpy(gy.astype(np.float64)))
    expected = (y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy())
    return [f"{np.abs(a - b).max() / np.abs(b).max():.1e}" for a, b in zip(results, expected)]


def main() -> None:
    rng = np.random.default_rng(0)
    for shape, k, stride, padding, multiplier in LAYERS:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((shape[1] * multiplier, 1, k, k), dtype=np.float32)
        g = conv_geometry(x.shape, w.shape, stride=stride, padding=padding, groups=shape[1])
        gy = rng.standard_normal(g.y_shape, dtype=np.float32)
        calls = {
            "forward": partial(kernels.forward, x, w, g),
            "input gradient": partial(kernels.input_grad, gy, w, g),
            "weight gradient": partial(kernels.weight_grad, gy, x, g),
        }
        start = time.perf_counter()
        results = [call() for call in calls.values()]
        first = time.perf_counter() - start
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(11):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        medians = ", ".join(f"{n} {np.median(t) * 1e3:.2f}" for n, t in times.items())
        errors = _errors(x, w, gy, results, g, stride, padding)
        print(f"{shape} {k}x{k} stride {stride}: first call {first:.2f} s; {medians} ms"
              + (f"; relative errors {', '.join(errors)}" if errors else ""))  # fmt: skip


if __name__ == "__main__":
    main()
