"""Planning time per call of ``strategy="auto"``: ``choose_strategy`` in a warm loop, in µs.

Usage: ``OMP_NUM_THREADS=1 python docs/scripts/plan_us.py`` prints JSON ``{case: µs}``;
``PYTHONPATH`` picks the checkout to measure (alternate two checkouts, several runs each).
"""

from __future__ import annotations

import json

import numpy as np

import arraycnn as ac
from arraycnn.timing import interleaved_medians

CALLS_PER_SAMPLE = 300
ROUNDS = 15


def gaussian(k: int) -> np.ndarray:
    """A normalised k x k Gaussian kernel (rank 1), shape (1, 1, k, k)."""
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-0.5 * (t / max(k / 6, 0.5)) ** 2)
    g = np.outer(g, g)
    return (g / g.sum()).astype(np.float32)[None, None]


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    """(x, w, padding, groups) per case."""
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    image = normal(1, 1, 256, 256)
    return {
        "256^2 k3 gaussian": (image, gaussian(3), 1, 1),
        "256^2 k7 random": (image, normal(1, 1, 7, 7), 3, 1),
        "256^2 k15 gaussian": (image, gaussian(15), 7, 1),
        "64x32x14x14:64x3x3": (normal(64, 32, 14, 14), normal(64, 32, 3, 3), 1, 1),
        "16x64x56x56 depthwise": (normal(16, 64, 56, 56), normal(64, 1, 3, 3), 1, 64),
    }


def main() -> None:
    loops = {}
    for name, (x, w, padding, groups) in cases().items():

        def loop(x=x, w=w, padding=padding, groups=groups) -> None:
            for _ in range(CALLS_PER_SAMPLE):
                ac.choose_strategy(x, w, padding=padding, groups=groups)

        loop()  # the first call of a signature prices every plan: not what is measured
        loops[name] = loop
    seconds = interleaved_medians(loops, ROUNDS)
    print(json.dumps({k: round(v / CALLS_PER_SAMPLE * 1e6, 2) for k, v in seconds.items()}))


if __name__ == "__main__":
    main()
