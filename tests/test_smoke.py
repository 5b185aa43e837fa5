"""Smoke test: the lecture's worked example (6x6 image, 3x3 mean filter) on every strategy."""

import numpy as np
import pytest

import arraycnn as ac

IMAGE = [
    [4, 1, 2, 9, 8, 6],
    [9, 5, 9, 5, 8, 5],
    [1, 5, 9, 7, 6, 4],
    [2, 9, 8, 3, 7, 1],
    [8, 1, 6, 4, 2, 2],
    [1, 0, 5, 7, 8, 2],
]
EXPECTED = [
    [5, 5.78, 7, 6.44],
    [6.33, 6.67, 6.89, 5.11],
    [5.44, 5.78, 5.78, 4],
    [4.44, 4.78, 5.56, 4],
]


@pytest.mark.parametrize("strategy", ac.available_strategies())
def test_lecture_mean_filter(strategy):
    x = np.asarray(IMAGE, dtype=np.float64)[None, None]  # (1, 1, 6, 6)
    w = np.full((1, 1, 3, 3), 1 / 9)
    y = ac.conv2d(x, w, padding="valid", strategy=strategy)
    np.testing.assert_array_equal(np.round(y[0, 0], 2), EXPECTED)


def test_backend_fixture_runs_every_namespace(xp, to_xp):
    x = to_xp(np.ones((1, 1, 4, 4), dtype=np.float32))
    w = to_xp(np.ones((2, 1, 3, 3), dtype=np.float32))
    y = ac.conv2d(x, w)
    assert tuple(y.shape) == (1, 2, 2, 2)
    assert y.dtype == xp.float32
