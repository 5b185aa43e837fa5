"""Separable forward in bands of output rows; its counts, workspace and eligibility in auto.

The band size is forced small (``separable.BAND_BYTES``) so that tiny inputs run in several
bands with a shorter last one; results are checked against the explicit loops of
:mod:`oracles` in float64 at each strategy's error scale and the dtype's tolerance.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import cost, dispatch, memory, separable
from arraycnn.testing import assert_close

DTYPES = ["float32", "float64"]
ITEMSIZE = {"float32": 4, "float64": 8}


def _low_rank(rng, w_shape, rank):
    """Weights (F, Cg, kh, kw) whose every slice has rank ``rank`` (a sum of outer products)."""
    f, cg, kh, kw = w_shape
    cols = rng.standard_normal((f, cg, rank, kh, 1))
    rows = rng.standard_normal((f, cg, rank, 1, kw))
    return np.sum(cols * rows, axis=2)


def _force_band_rows(monkeypatch, geom, rank, itemsize, rows):
    """Make the widest band ``rows`` output rows for this geometry and dtype."""
    lanes = geom.n * geom.f * geom.cg * rank
    monkeypatch.setattr(separable, "BAND_BYTES", rows * lanes * geom.wp * itemsize)


# (x shape, w shape, rank, geometry, widest band rows): each runs in several bands
BAND_CASES = [
    ((1, 1, 23, 19), (1, 1, 3, 3), 1, {"padding": "same"}, 4),  # 6 bands of 4, last 3
    ((1, 1, 17, 16), (1, 1, 7, 7), 1, {"padding": 3}, 5),  # bands 5, 5, 5, 2
    ((2, 3, 20, 13), (4, 3, 5, 3), 2, {"padding": ((2, 1), (0, 3))}, 3),  # Cg 3, F 4, rank 2
    ((1, 2, 25, 21), (2, 2, 3, 5), 1, {"stride": (2, 3), "padding": 1}, 3),  # Ho 13
    ((1, 1, 30, 22), (1, 1, 3, 3), 1, {"dilation": (3, 2), "padding": "same"}, 7),
    ((2, 4, 15, 14), (6, 2, 3, 3), 1, {"groups": 2, "padding": "same"}, 2),  # Ho 15: odd
    ((1, 4, 19, 18), (4, 1, 5, 5), 2, {"groups": 4, "stride": 2, "dilation": 2}, 1),
    ((1, 2, 16, 16), (3, 2, 4, 4), 4, {"padding": "full"}, 6),  # full rank 4, Ho 19
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "rank", "geometry", "rows"), BAND_CASES)
def test_banded_forward_matches_the_loops(
    xp, to_xp, rng, monkeypatch, dtype, x_shape, w_shape, rank, geometry, rows
):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = _low_rank(rng, w_shape, rank).astype(dtype)
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    assert separable.numerical_rank(w, xp=ac.resolve_backend("numpy")) == rank
    _force_band_rows(monkeypatch, geom, rank, ITEMSIZE[dtype], rows)
    plan = separable.bands(geom, rank, ITEMSIZE[dtype])
    assert len(plan) >= 2, plan  # the case really runs in bands
    assert plan[-1][1] - plan[-1][0] < plan[0][1] - plan[0][0] or geom.ho % len(plan) == 0
    expected = oracles.correlate_loops(x, w, **geometry)
    model = oracles.ERROR_MODEL["separable"]["y"]
    (scale,) = oracles.error_scales(x, w, model=model, **geometry)
    tx = to_xp(x)
    y = ac.conv2d(tx, to_xp(w), strategy="separable", **geometry)
    assert_close(y, expected, scale=scale, xp=xp, dtype=getattr(xp, dtype), device=device_of(tx))


def test_some_band_case_has_an_odd_remainder():
    """The table above includes bands whose last one is shorter (an odd remainder)."""
    short = []
    for x_shape, w_shape, rank, geometry, rows in BAND_CASES:
        geom = ac.conv_geometry(x_shape, w_shape, **geometry)
        lanes = geom.n * geom.f * geom.cg * rank
        old = separable.BAND_BYTES
        try:
            separable.BAND_BYTES = rows * lanes * geom.wp * 4
            plan = separable.bands(geom, rank, 4)
        finally:
            separable.BAND_BYTES = old
        short.append(plan[-1][1] - plan[-1][0] < plan[0][1] - plan[0][0])
    assert sum(short) >= 3


@pytest.mark.parametrize("ho", [1, 2, 7, 64, 255, 1000, 4096])
@pytest.mark.parametrize("widest", [1, 3, 8, 100, 5000])
def test_bands_cover_the_output_rows_in_order(monkeypatch, ho, widest):
    geom = ac.conv_geometry((1, 1, ho, 40), (1, 1, 3, 3), padding="same")
    _force_band_rows(monkeypatch, geom, 1, 4, widest)
    plan = separable.bands(geom, 1)
    assert plan[0][0] == 0 and plan[-1][1] == ho
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))  # contiguous, in order
    sizes = [stop - start for start, stop in plan]
    assert max(sizes) <= min(widest, ho)
    assert len(plan) == math.ceil(ho / min(widest, ho))  # as few bands as the width allows
    assert all(s == sizes[0] for s in sizes[:-1]) and 0 < sizes[-1] <= sizes[0]


def test_band_size_follows_the_byte_target():
    """A 4096-wide float32 image: each band's t stays within BAND_BYTES, as wide as allowed."""
    geom = ac.conv_geometry((1, 1, 4096, 4096), (1, 1, 7, 7), padding="same")
    rows = separable.band_rows(geom, 1, 4)
    assert rows * geom.wp * 4 <= separable.BAND_BYTES < (rows + 1) * geom.wp * 4 + geom.wp * 4
    assert separable.band_rows(geom, 1, 8) < rows  # float64: fewer rows per band
    big = ac.conv_geometry((64, 32, 8, 8000), (32, 32, 3, 3))
    assert separable.band_rows(big, 3, 4) == 1  # wide lanes: one row per band, never zero


def test_forward_never_holds_full_size_temporaries():
    """tracemalloc (NumPy reports to it): the forward's peak beyond its result stays within
    the predicted band workspace, far below one full-size intermediate t."""
    import tracemalloc

    xp = ac.resolve_backend("numpy")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 1200, 640)).astype(np.float32)
    w = _low_rank(rng, (1, 1, 7, 7), 1).astype(np.float32)
    geom = ac.conv_geometry(x.shape, w.shape)  # no padding: no padded copy
    full_t = geom.ho * geom.wp * 4  # bytes of the unbanded column-pass result
    tracemalloc.start()
    try:
        y = separable.forward(x, w, geom, xp=xp)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    measured = peak - y.nbytes
    predicted = memory.workspace_bytes("separable", geom, itemsize=4, rank=1)
    assert measured <= predicted
    assert predicted < full_t / 4
    assert len(separable.bands(geom, 1)) > 4


def test_workspace_bytes_are_the_band_temporaries():
    geom = ac.conv_geometry((2, 3, 50, 70), (4, 3, 5, 5), padding="valid")
    for itemsize in (4, 8):
        rows = separable.band_rows(geom, 2, itemsize)
        lanes = geom.n * geom.f * geom.cg * 2
        band = 2 * lanes * rows * (geom.wp + geom.wo)
        got = memory.workspace_bytes("separable", geom, itemsize=itemsize, rank=2)
        assert got == itemsize * band + memory.SMALL_ARRAYS_BYTES
        assert rows < geom.ho  # smaller than the unbanded 2 lanes Ho (Wp + Wo)


def test_forward_calls_grow_with_the_bands(monkeypatch):
    """Same tap traffic, one set of per-band calls per band: 2 kh - 1 + 2 kw - 1 taps, the
    copy into the result (2) and, where Cg r > 1, the sum over (Cg, r); several bands also
    pay for the result (2 calls, written and read once), a single band is the result."""
    for w_shape, rank, per_band in (((1, 1, 7, 5), 1, 13 + 9 + 2), ((2, 3, 3, 3), 2, 5 + 5 + 3)):
        geom = ac.conv_geometry((1, w_shape[1], 120, 90), w_shape, padding="same")
        counts = {}
        for rows in (geom.ho, 7, 2):
            _force_band_rows(monkeypatch, geom, rank, 4, rows)
            counts[rows] = (
                cost.op_counts("separable", geom, rank=rank),
                separable.bands(geom, rank),
            )
        (one, plan1), (seven, plan7), (two, plan2) = counts.values()
        assert len(plan1) == 1 and len(plan7) == 18 and len(plan2) == 60
        outputs = geom.n * geom.f * geom.ho * geom.wo
        assert seven.bytes == two.bytes == one.bytes + 4 * 2 * outputs
        assert seven.calls - one.calls == per_band * (len(plan7) - 1) + 2
        assert two.calls - one.calls == per_band * (len(plan2) - 1) + 2


# --------------------------------------------------------------------------- auto


def _rank1_3x3(rng, x_shape=(1, 1, 64, 64)):
    x = rng.standard_normal(x_shape)
    w = _low_rank(rng, (1, 1, 3, 3), 1)
    return x, w


def _favouring_separable(w, geom, xp, direction="forward"):
    """The shipped calibration with separable's factor (of ``direction``) lowered until it
    is priced cheapest. The dispatcher's memo of kernel facts is left as it was."""
    cal = cost.calibration_for("numpy")[0]
    memo = dict(dispatch._KERNEL_FACTS)
    costs = dispatch.predicted_costs(w, geom, xp=xp, direction=direction, calibration=cal)
    dispatch._KERNEL_FACTS.clear()
    dispatch._KERNEL_FACTS.update(memo)
    best_other = min(v for k, v in costs.items() if k != "separable")
    factor = 0.5 * best_other / costs["separable"]
    key = "separable" if direction == "forward" else "separable:backward"
    scale = {**cal.scale, key: cal.factor("separable", direction) * factor}
    return dataclasses.replace(cal, scale=scale, source="test: separable favoured")


def test_auto_may_choose_separable_for_a_rank1_3x3(rng):
    xp = ac.resolve_backend("numpy")
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    cal = _favouring_separable(w, geom, xp)
    costs = dispatch.predicted_costs(w, geom, xp=xp, calibration=cal)
    assert min(costs, key=costs.get) == "separable"
    plan = dispatch.plan_call("auto", w, geom, xp=xp, x=x, autotune=False, calibration=cal)
    assert plan.strategy == "separable"
    assert dispatch.worthwhile_separable_rank(w, geom, xp=xp) == 1


def test_auto_prices_a_rank1_3x3_with_the_shipped_constants(rng, monkeypatch):
    """explain(): separable is priced (not excluded) for a rank-1 3x3 kernel; auto picks the
    cheapest predicted strategy, whichever it is."""
    monkeypatch.setattr(cost, "load_user_calibrations", lambda: {})
    x, w = _rank1_3x3(rng, (1, 1, 256, 256))
    info = dispatch.explain(x, w, padding="same")
    sep = info["strategies"]["separable"]
    assert sep["eligible"] and sep["predicted_seconds"] > 0, sep
    priced = {k: v["predicted_seconds"] for k, v in info["strategies"].items() if v["eligible"]}
    assert info["choice"] == min(priced, key=priced.get)


def test_rank3_3x3_is_excluded_with_a_reason(rng):
    x = rng.standard_normal((1, 1, 32, 32))
    w = rng.standard_normal((1, 1, 3, 3))  # full rank: 3 * (3 + 3) >= 9 taps
    xp = ac.resolve_backend("numpy")
    assert separable.numerical_rank(w, xp=xp) == 3
    info = dispatch.explain(x, w, padding="same")
    assert not info["strategies"]["separable"]["eligible"]
    assert "kernel rank 3 too high" in info["strategies"]["separable"]["reason"]
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    assert dispatch.worthwhile_separable_rank(w, geom, xp=xp) is None
    cal = _favouring_separable(_low_rank(rng, (1, 1, 3, 3), 1), geom, xp)
    plan = dispatch.plan_call("auto", w, geom, xp=xp, x=x, autotune=False, calibration=cal)
    assert plan.strategy != "separable"  # even where a rank-1 kernel would win


@pytest.mark.parametrize(
    ("kh", "kw", "rank", "pays"),
    [
        (3, 3, 1, True),
        (3, 3, 2, False),
        (2, 3, 1, True),
        (2, 2, 1, False),
        (1, 9, 1, False),
        (5, 5, 2, True),
        (5, 5, 3, False),
        (7, 7, 3, True),
        (4, 4, 2, False),
    ],
)
def test_eligibility_is_strictly_fewer_taps(kh, kw, rank, pays):
    geom = ac.conv_geometry((1, 1, 12, 12), (1, 1, kh, kw))
    assert dispatch._separable_rank_pays_off(rank, geom) is pays
    assert (rank * (kh + kw) < kh * kw) is pays


def test_no_svd_where_even_rank1_cannot_pass_or_is_priced_out(rng, monkeypatch):
    """The SVD of w is skipped for kernels too small for rank 1 and, under the default
    prune, where a rank-1 separable is predicted slower than the best other strategy."""
    xp = ac.resolve_backend("numpy")
    svds = []
    original = separable.numerical_rank
    monkeypatch.setattr(
        separable, "numerical_rank", lambda w, *, xp: svds.append(1) or original(w, xp=xp)
    )
    x = rng.standard_normal((1, 1, 32, 32))
    w2 = _low_rank(rng, (1, 1, 2, 2), 1)
    info = dispatch.explain(x, w2)
    assert "too small" in info["strategies"]["separable"]["reason"] and not svds
    w3 = _low_rank(rng, (1, 1, 3, 3), 1)
    geom = ac.conv_geometry(x.shape, w3.shape, padding="same")
    cal = cost.calibration_for("numpy")[0]
    slow = dataclasses.replace(cal, scale={**cal.scale, "separable": 1e6})
    plan = dispatch.plan_call("auto", w3, geom, xp=xp, x=x, autotune=False, calibration=slow)
    assert plan.strategy != "separable" and not svds
    fast = _favouring_separable(w3, geom, xp)
    svds.clear()
    plan = dispatch.plan_call("auto", w3, geom, xp=xp, x=x, autotune=False, calibration=fast)
    assert plan.strategy == "separable" and svds  # priced in: the rank was computed


@pytest.fixture
def rank_decisions(monkeypatch):
    """Records every rank decision from singular values (:func:`separable.rank_of`)."""
    calls = []
    original = separable.rank_of

    def spy(s, w, *, xp):
        calls.append(tuple(w.shape))
        return original(s, w, xp=xp)

    monkeypatch.setattr(separable, "rank_of", spy)
    return calls


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_separable_plan_decides_the_rank_once(rng, rank_decisions, direction):
    """auto's rank decision is handed to the kernel (one per call, not two), and the
    result is still the loops' one."""
    xp = ac.resolve_backend("numpy")
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    cal = _favouring_separable(w, geom, xp, direction)
    gy = rng.standard_normal(geom.y_shape)
    rank_decisions.clear()
    options = {"x": x, "gy": gy, "direction": direction, "autotune": False, "calibration": cal}
    plan = dispatch.plan_call("auto", w, geom, xp=xp, **options)
    assert plan.strategy == "separable" and plan.rank == 1
    if direction == "forward":
        got = {"y": dispatch.run_forward(plan, x, w, geom, xp=xp)}
        expected = {"y": oracles.correlate_loops(x, w, padding="same")}
    else:
        gx, gw = dispatch.run_backward(plan, gy, x, w, geom, xp=xp)
        got = {"gx": gx, "gw": gw}
        ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, padding="same")
        expected = {"gx": ex_gx, "gw": ex_gw}
    assert rank_decisions == [w.shape]
    for name, value in got.items():
        model = oracles.ERROR_MODEL["separable"][name]
        scales = oracles.error_scales(x, w, gy=gy, model=model, padding="same")
        scale = scales[{"y": 0, "gx": 1, "gw": 2}[name]]
        assert_close(value, expected[name], scale=scale, xp=xp, err_msg=name)


def test_forced_separable_decides_the_rank_once(rng, rank_decisions):
    xp = ac.resolve_backend("numpy")
    x, w = _rank1_3x3(rng)
    y = ac.conv2d(x, w, padding="same", strategy="separable")
    assert rank_decisions == [w.shape]
    model = oracles.ERROR_MODEL["separable"]["y"]
    (scale,) = oracles.error_scales(x, w, model=model, padding="same")
    assert_close(y, oracles.correlate_loops(x, w, padding="same"), scale=scale, xp=xp)


def test_a_small_host_kernel_is_analysed_once_per_content(rng, rank_decisions):
    """A filter reapplied (even as another array of the same values) reuses its rank;
    edited in place, it is analysed again: to full rank, then to NaN."""
    xp = ac.resolve_backend("numpy")
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    cal = _favouring_separable(w, geom, xp)

    def plan(kernel):
        return dispatch.plan_call("auto", kernel, geom, xp=xp, x=x, autotune=False, calibration=cal)

    rank_decisions.clear()
    first, again = plan(w), plan(w.copy())
    assert (first.strategy, first.rank, again.strategy, again.rank) == ("separable", 1) * 2
    assert rank_decisions == [w.shape]
    w[0, 0, 0, 0] += 1.0  # now rank 2: too high for a 3x3
    assert plan(w).strategy != "separable"
    assert rank_decisions == [w.shape] * 2
    w[0, 0, 1, 1] = np.nan
    assert plan(w).strategy not in ("separable", "fft")
    with pytest.raises(ValueError, match=r"separable.*NaN"):
        ac.conv2d(x, w, padding="same", strategy="separable")
    assert rank_decisions == [w.shape] * 2  # NaN: no SVD


@pytest.mark.parametrize("where", ["array_api_strict", "large"])
def test_device_and_large_kernels_are_not_looked_up_by_content(rng, rank_decisions, where):
    """Kernels of other namespaces are never read back, and large ones are not hashed:
    their rank is decided on every call."""
    xp = ac.resolve_backend(where if where != "large" else "numpy")
    x, w = _rank1_3x3(rng)
    if where == "large":  # (1, 1, 3, 3) -> (F, 1, 3, 3), one element over the limit
        w = np.tile(w, (dispatch.KERNEL_FACTS_MAX_ELEMENTS // 9 + 1, 1, 1, 1))
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    x, w = ac.asarray(x, backend=xp), ac.asarray(w, backend=xp)
    rank_decisions.clear()
    for _ in range(2):
        assert dispatch.plan_call("separable", w, geom, xp=xp, x=x).rank == 1
    assert rank_decisions == [tuple(w.shape)] * 2
