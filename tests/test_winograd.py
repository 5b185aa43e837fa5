"""Winograd F(m x m, r x r): its transforms, its limits, its tile sizes and its scratch.

Oracles: ``numpy.correlate`` for the one-dimensional transforms (float64), the explicit
loops of :func:`oracles.correlate_loops` / :func:`oracles.correlate_loops_backward`
(float64, tiny inputs) for whole calls, with errors held to the ``tile`` error model
(:func:`oracles.tile_scales`: the transforms' growth over a window widened to the tile) and
the per-dtype tolerances of :mod:`arraycnn.testing`. The property tests of every strategy
(tests/test_conv_properties.py) cover Winograd on random stride-1 geometries. On NumPy with
numba installed the transforms run compiled (:mod:`arraycnn.conv._numba_winograd`); the
tests record which path ran and run both.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import oracles
import pytest
from spying import record_calls

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import dispatch, explain, winograd
from arraycnn.scratch import matmul_into
from arraycnn.testing import assert_close

NUMPY = ac.resolve_backend("numpy")
PAIRS = [
    (m, r) for r in range(1, winograd.MAX_KERNEL + 1) for m in range(1, winograd.MAX_ALPHA + 2 - r)
]


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_one_dimensional_transforms_compute_the_correlation(m, r, rng):
    """A^T [(G g) * (B^T d)] is the valid correlation of a tile d (m + r - 1) with g (r)."""
    at, g, bt = (np.asarray(a) for a in winograd.transforms(m, r))
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2
    for _ in range(3):
        taps, tile = rng.standard_normal(r), rng.standard_normal(m + r - 1)
        got = at @ ((g @ taps) * (bt @ tile))
        want = np.correlate(tile, taps, mode="valid")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(tile).sum())


@pytest.mark.parametrize(("m", "r"), [(7, 3), (2, 8), (0, 3), (3, 0)])
def test_transforms_beyond_the_points_are_refused(m, r):
    with pytest.raises(ValueError, match=rf"no Winograd transform for m={m}, r={r}"):
        winograd.transforms(m, r)


LIMITS = [
    ({"stride": 2}, (1, 1, 8, 8), (1, 1, 3, 3), "float64", r"stride \(2, 2\): Winograd tiles"),
    ({"dilation": (1, 2)}, (1, 1, 8, 8), (1, 1, 3, 3), "float64", r"dilation \(1, 2\)"),
    ({}, (1, 1, 12, 12), (1, 1, 9, 3), "float64", r"kernel 9x3: Winograd takes at most 7"),
    ({}, (1, 2, 5, 5), (3, 2, 1, 1), "float64", r"a 1x1 kernel has no taps to save"),
    ({}, (1, 1, 6, 6), (1, 1, 3, 3), "float16", r"dtype float16: Winograd runs in float32"),
]


@pytest.mark.parametrize(("geometry", "x_shape", "w_shape", "dtype", "match"), LIMITS)
def test_forced_winograd_outside_its_limits_raises(geometry, x_shape, w_shape, dtype, match):
    x, w = np.ones(x_shape, dtype), np.ones(w_shape, dtype)
    with pytest.raises(ValueError, match=rf"strategy='winograd' cannot run this call: {match}"):
        ac.conv2d(x, w, strategy="winograd", **geometry)
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    gy = np.ones(geom.y_shape, dtype)
    with pytest.raises(ValueError, match=r"strategy='winograd' cannot run this call"):
        ac.conv2d_backward(gy, x, w, strategy="winograd", **geometry)
    row = explain(x, w, **geometry)["strategies"]["winograd"]
    assert not row["eligible"] and row["reason"] == winograd.unsupported(
        dispatch.describe(w, geom, xp=NUMPY)
    )


def test_forced_winograd_refuses_non_finite_input_on_the_host(rng):
    x = rng.standard_normal((1, 2, 8, 8))
    x[0, 1, 3, 4] = np.nan
    w = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(ValueError, match="Winograd would spread them over their tiles"):
        ac.conv2d(x, w, strategy="winograd")
    y = ac.conv2d(x, w, padding=1)  # auto keeps the NaN local
    assert np.isnan(y).sum() == 2 * 9


TILE_CASES = [
    ((2, 3, 9, 11), (4, 3, 3, 3), {"padding": 1}),
    ((2, 2, 14, 14), (3, 2, 5, 5), {"padding": 2}),
    ((3, 4, 8, 7), (6, 2, 3, 5), {"padding": ((1, 0), (2, 3)), "groups": 2}),
    ((2, 2, 7, 5), (3, 2, 1, 3), {"padding": ((0, 0), (1, 1))}),
    ((2, 3, 5, 6), (3, 3, 7, 7), {"padding": 4}),  # padding beyond the kernel's extent
    ((1, 2, 10, 10), (2, 2, 3, 3), {"padding": ((5, 0), (0, 4))}),
]
#: Every case with each tile size its kernel is offered (one per axis, and one mixed).
TILED = [
    (x_shape, w_shape, geometry, (mh, mw))
    for x_shape, w_shape, geometry in TILE_CASES
    for mh in winograd.axis_sizes(w_shape[2])
    for mw in winograd.axis_sizes(w_shape[3])
    if mh == mw
    or (mh, mw) == (min(winograd.axis_sizes(w_shape[2])), max(winograd.axis_sizes(w_shape[3])))
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "tile"), TILED, ids=str)
def test_every_tile_size_matches_the_loops(xp, to_xp, rng, x_shape, w_shape, geometry, tile):
    """Each tile size a plan may choose, forward and both gradients, against the loops."""
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    gy = rng.standard_normal(geom.y_shape)
    ref = oracles.reference(x, w, None, gy, **geometry)
    s_y, s_gx, s_gw, _ = ref.scales_for(oracles.ERROR_MODEL["winograd"])
    call = dispatch.describe(to_xp(w), geom, xp=xp)
    p = dataclasses.replace(winograd.plan(call), m=tile)
    y = winograd.forward(p, to_xp(x), to_xp(w), xp=xp)
    back = dataclasses.replace(p, direction="backward")
    gx, gw = winograd.backward(back, to_xp(gy), to_xp(x), to_xp(w), xp=xp)
    want = {"xp": xp, "dtype": xp.float64, "device": device_of(to_xp(x))}
    assert_close(y, ref.y, scale=s_y, err_msg=f"y {tile}", **want)
    assert_close(gx, ref.gx, scale=s_gx, err_msg=f"gx {tile}", **want)
    assert_close(gw, ref.gw, scale=s_gw, err_msg=f"gw {tile}", **want)


#: The paths' own functions in winograd: the compiled transforms', the array operations'.
PATH_LABELS = {
    "_correlate_compiled": "compiled",
    "_weight_grad_compiled": "compiled gw",
    "correlate": "array",
    "weight_grad": "array gw",
}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "array operations"])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "tile"), TILED, ids=str)
def test_both_numpy_paths_match_the_loops(
    request, monkeypatch, rng, x_shape, w_shape, geometry, tile, compiled
):
    """On NumPy, float32 and float64: the compiled transforms where the plan takes them (one
    group, numba installed), else the array operations, against the loops."""
    if compiled:
        pytest.importorskip("numba")
    else:
        request.getfixturevalue("array_operations")  # ARRAYCNN_NUMBA=0
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    gy = rng.standard_normal(geom.y_shape)
    ref = oracles.reference(x, w, None, gy, **geometry)
    scales = ref.scales_for(oracles.ERROR_MODEL["winograd"])[:3]
    for dtype in (np.float32, np.float64):
        taken = record_calls(monkeypatch, winograd, PATH_LABELS)
        p = winograd.plan(dispatch.describe(w.astype(dtype), geom, xp=NUMPY))
        assert p.compiled == (compiled and geom.groups == 1)
        p = dataclasses.replace(p, m=tile)
        y = winograd.forward(p, x.astype(dtype), w.astype(dtype), xp=NUMPY)
        back = dataclasses.replace(p, direction="backward")
        gx, gw = winograd.backward(back, *(a.astype(dtype) for a in (gy, x, w)), xp=NUMPY)
        wanted = (ref.y, ref.gx, ref.gw)
        for name, got, want, scale in zip(("y", "gx", "gw"), (y, gx, gw), wanted, scales):
            assert_close(got, want, scale=scale, dtype=dtype, err_msg=f"{name} {tile} {dtype}")
        path = "compiled" if p.compiled else "array"
        assert taken == [path, path, f"{path} gw"]
        monkeypatch.undo()


def test_float32_errors_stay_near_the_local_scale(rng):
    """The growth bound is loose; the actual float32 error of the lecture layer's shape is
    within 50 times the plain-sum tolerance of its local scale."""
    x = rng.standard_normal((4, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((8, 16, 5, 5)).astype(np.float32)
    local = oracles.error_scales(x, w, padding=2)[0]
    y = ac.conv2d(x, w, padding=2, strategy="winograd")
    rtol = ac.testing.tolerance(np.float32)[0]
    assert_close(y, oracles.correlate_scipy(x, w, padding=2), scale=local, rtol=50 * rtol)


def test_plan_keeps_alpha_within_the_points():
    for k in range(2, winograd.MAX_KERNEL + 1):
        geom = ac.conv_geometry((4, 8, 32, 32), (8, 8, k, k), padding="same")
        p = dispatch.plan("winograd", np.ones((8, 8, k, k), np.float32), geom, xp=NUMPY).kernel
        assert all(m + k - 1 <= winograd.MAX_ALPHA for m in p.m)
    geom = ac.conv_geometry((4, 8, 32, 32), (8, 8, 1, 3), padding="same")
    assert dispatch.plan("winograd", np.ones((8, 8, 1, 3)), geom, xp=NUMPY).kernel.m[0] == 1


def test_error_growth_covers_every_offered_tile():
    for k in (2, 3, 5, 7):
        growth = winograd.error_growth(k, k)
        assert growth.widen == (max(winograd.axis_sizes(k)) - 1,) * 2
        assert growth.correlation >= 1 and growth.weight_grad >= 1


def test_matmul_into_reuses_one_buffer_per_key(rng):
    a, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((4, 5))
    first = matmul_into("test.product", a, b, xp=NUMPY, key="k")
    np.testing.assert_allclose(first, a @ b, rtol=1e-15)
    again = matmul_into("test.product", 2 * a, b, xp=NUMPY, key="k")
    assert again is first  # the same warm buffer, overwritten
    np.testing.assert_allclose(again, 2 * (a @ b), rtol=1e-15)
    other = matmul_into("test.product", a, b, xp=NUMPY, key="other")
    assert other is not first
    strict = pytest.importorskip("array_api_strict")
    fresh = matmul_into("test.product", strict.asarray(a), strict.asarray(b), xp=strict)
    np.testing.assert_allclose(np.asarray(fresh), a @ b, rtol=1e-15)
