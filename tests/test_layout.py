"""Layout helpers of the strategy kernels: the zero padding of the input.

Oracle: the padded array written element by element in NumPy (tiny inputs).
"""

from __future__ import annotations

import numpy as np
import pytest

from arraycnn.backend import device_of
from arraycnn.conv import _layout
from arraycnn.geometry import conv_geometry
from arraycnn.testing import assert_close

PADDINGS = [1, ((0, 2), (3, 1)), ((2, 0), (0, 0)), "same"]


def _padded_by_loops(x: np.ndarray, top: int, left: int, hp: int, wp: int) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((n, c, hp, wp))
    for a in range(n):
        for b in range(c):
            for i in range(h):
                for j in range(w):
                    out[a, b, top + i, left + j] = x[a, b, i, j]
    return out


@pytest.mark.parametrize("path", ["zeros and copy", "pad"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_pad_input_places_the_input_inside_zeros(xp, to_xp, rng, monkeypatch, path, padding):
    """Both paths (small arrays on NumPy/CuPy: zeros and one copy; else the namespace's
    pad) give the loops' result, in the input's namespace, dtype and device."""
    limit = 10**9 if path == "zeros and copy" else 0
    monkeypatch.setattr(_layout, "SMALL_PAD_ELEMENTS", limit)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    geom = conv_geometry(x.shape, (2, 3, 3, 3), padding=padding)
    tx = to_xp(x)
    got = _layout.pad_input(tx, geom, xp=xp)
    top, left = geom.padding[0][0], geom.padding[1][0]
    expected = _padded_by_loops(x, top, left, geom.hp, geom.wp)
    assert_close(got, expected, xp=xp, dtype=tx.dtype, device=device_of(tx), rtol=0, atol=0)


def test_pad_input_without_padding_is_the_input():
    x = np.ones((1, 2, 3, 3), dtype=np.float32)
    geom = conv_geometry(x.shape, (1, 2, 3, 3))
    assert _layout.pad_input(x, geom, xp=np) is x
