"""Separable forward in bands of output rows; its counts, workspace and eligibility in auto;
the rank decision (once per call, memoised by content for small host kernels).

The plans' band rows are set small so that tiny inputs run in several bands with a shorter
last one; results are checked against the explicit loops of :mod:`oracles` in float64 at
each strategy's error scale and the dtype's tolerance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import chunking, cost, dispatch, explain, facts, separable
from arraycnn.conv.strategy import Call
from arraycnn.testing import assert_close

DTYPES = ["float32", "float64"]
ITEMSIZE = {"float32": 4, "float64": 8}
NUMPY = ac.resolve_backend("numpy")


def _low_rank(rng, w_shape, rank):
    """Weights (F, Cg, kh, kw) whose every slice has rank ``rank`` (a sum of outer products)."""
    f, cg, kh, kw = w_shape
    cols = rng.standard_normal((f, cg, rank, kh, 1))
    rows = rng.standard_normal((f, cg, rank, 1, kw))
    return np.sum(cols * rows, axis=2)


def _plan(geom, rank, itemsize=8, direction="forward", rows=None) -> separable.SeparablePlan:
    """separable's plan for ``geom`` (``rows``: output rows per band instead of its own)."""
    p = separable.plan(Call(geom, direction, "numpy", f"float{8 * itemsize}", itemsize), rank)
    return p if rows is None else dataclasses.replace(p, pass_rows=rows)


# (x shape, w shape, rank, geometry, band rows): each runs in several bands
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
    xp, to_xp, rng, dtype, x_shape, w_shape, rank, geometry, rows
):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = _low_rank(rng, w_shape, rank).astype(dtype)
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    assert separable.numerical_rank(w, xp=NUMPY) == rank
    assert geom.ho > rows  # the case really runs in bands
    expected = oracles.correlate_loops(x, w, **geometry)
    model = oracles.ERROR_MODEL["separable"]["y"]
    (scale,) = oracles.error_scales(x, w, model=model, **geometry)
    tx = to_xp(x)
    y = separable.forward(_plan(geom, rank, ITEMSIZE[dtype], rows=rows), tx, to_xp(w), xp=xp)
    assert_close(y, expected, scale=scale, xp=xp, dtype=getattr(xp, dtype), device=device_of(tx))


def test_some_band_case_has_an_odd_remainder():
    """The table above includes bands whose last one is shorter (an odd remainder)."""
    remainders = [
        ac.conv_geometry(x_shape, w_shape, **geometry).ho % rows
        for x_shape, w_shape, _, geometry, rows in BAND_CASES
    ]
    assert sum(r != 0 for r in remainders) >= 3


@pytest.mark.parametrize("ho", [1, 2, 7, 64, 255, 1000, 4096])
@pytest.mark.parametrize("width", [40, 900, 5000, 40000])
def test_band_rows_are_as_few_even_bands_as_the_byte_target_allows(ho, width):
    geom = ac.conv_geometry((1, 1, ho, width), (1, 1, 3, 3), padding="same")
    widest = max(1, min(ho, separable.BAND_BYTES // (geom.wp * 4)))
    rows = separable.band_rows(geom, 1, 4)
    assert 1 <= rows <= widest
    count = math.ceil(ho / rows)
    assert count == math.ceil(ho / widest)  # as few bands as the width allows
    assert ho - (count - 1) * rows > 0 and rows - (ho - (count - 1) * rows) < count  # even


def test_band_size_follows_the_byte_target():
    """A 4096-wide float32 image: each band's t stays within BAND_BYTES, as wide as allowed."""
    geom = ac.conv_geometry((1, 1, 4096, 4096), (1, 1, 7, 7), padding="same")
    rows = separable.band_rows(geom, 1, 4)
    assert rows * geom.wp * 4 <= separable.BAND_BYTES < (rows + 1) * geom.wp * 4 + geom.wp * 4
    assert separable.band_rows(geom, 1, 8) < rows  # float64: fewer rows per band
    big = ac.conv_geometry((64, 32, 8, 8000), (32, 32, 3, 3))
    assert separable.band_rows(big, 3, 4) == 1  # wide lanes: one row per band, never zero


def test_forward_never_holds_full_size_temporaries(traced_peak):
    """The forward's traced peak beyond its result stays within the predicted band
    workspace, far below one full-size intermediate t."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 1200, 640)).astype(np.float32)
    w = _low_rank(rng, (1, 1, 7, 7), 1).astype(np.float32)
    geom = ac.conv_geometry(x.shape, w.shape)  # no padding: no padded copy
    p = _plan(geom, 1, itemsize=4)
    assert math.ceil(geom.ho / p.pass_rows) > 4
    y, peak = traced_peak(lambda: separable.forward(p, x, w, xp=NUMPY))
    measured = peak - y.nbytes
    predicted = chunking.workspace_bytes(separable.STRATEGY, p)
    assert measured <= predicted
    assert predicted < geom.ho * geom.wp * 4 / 4  # a quarter of the unbanded t


# (x shape, w shape, rank, geometry, transposed): the input gradient as the transposed
# correlation's banded forward where stride 1 and a padding within the kernel's extent
# allow it, else the transposed passes
BACKWARD_CASES = [
    ((1, 1, 23, 19), (1, 1, 3, 3), 1, {"padding": "same"}, True),
    ((2, 3, 20, 13), (4, 3, 5, 3), 2, {"padding": ((2, 1), (0, 2))}, True),
    ((2, 3, 20, 13), (4, 3, 5, 3), 2, {"padding": ((2, 1), (0, 3))}, False),  # 3 > kw - 1
    ((1, 1, 30, 22), (1, 1, 3, 3), 1, {"dilation": (3, 2), "padding": "same"}, True),
    ((2, 4, 15, 14), (6, 2, 3, 3), 1, {"groups": 2, "padding": "same"}, True),
    ((1, 2, 16, 16), (3, 2, 4, 4), 4, {"padding": "full"}, True),
    ((1, 2, 17, 12), (2, 2, 5, 3), 2, {}, True),  # valid: the transposed padding is full
    ((1, 2, 25, 21), (2, 2, 3, 5), 1, {"stride": (2, 3), "padding": 1}, False),
    ((1, 1, 12, 12), (1, 1, 3, 3), 1, {"padding": 3}, False),  # padding beyond the extent
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "rank", "geometry", "transposed"), BACKWARD_CASES)
def test_backward_matches_the_loops(
    xp, to_xp, rng, dtype, x_shape, w_shape, rank, geometry, transposed
):
    """Both gradients against the loops; the transposed correlation runs in several bands
    (two output rows each)."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = _low_rank(rng, w_shape, rank).astype(dtype)
    geom = ac.conv_geometry(x_shape, w_shape, **geometry)
    gy = rng.standard_normal(geom.y_shape).astype(dtype)
    p = _plan(geom, rank, ITEMSIZE[dtype], direction="backward")
    assert (p.grad_geom is not None) is transposed
    if transposed:
        assert p.grad_geom.y_shape == geom.x_shape
        p = dataclasses.replace(p, grad_rows=2)
    expected = oracles.correlate_loops_backward(gy, x, w, **geometry)[:2]
    models = oracles.ERROR_MODEL["separable"]
    scales = [
        oracles.error_scales(x, w, gy=gy, model=models[name], **geometry)[index]
        for index, name in ((1, "gx"), (2, "gw"))
    ]
    tx = to_xp(x)
    got = separable.backward(p, to_xp(gy), tx, to_xp(w), xp=xp)
    for name, value, exact, scale in zip(("gx", "gw"), got, expected, scales, strict=True):
        assert_close(
            value,
            exact,
            scale=scale,
            xp=xp,
            dtype=getattr(xp, dtype),
            device=device_of(tx),
            err_msg=name,
        )


def test_backward_input_gradient_never_holds_full_size_temporaries(traced_peak):
    """The input gradient runs banded: its traced peak beyond the result stays within the
    predicted workspace, under half the transposed passes' (their full-size t)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 1, 1200, 640)).astype(np.float32)
    w = _low_rank(rng, (1, 1, 7, 7), 1).astype(np.float32)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    gy = rng.standard_normal(geom.y_shape).astype(np.float32)
    call = Call(geom, "backward", "numpy", "float32", 4, grads="x")
    p = separable.plan(call, 1)
    assert p.grad_geom is not None and math.ceil(geom.h / p.grad_rows) > 4
    (gx, _), peak = traced_peak(lambda: separable.backward(p, gy, x, w, xp=NUMPY))
    measured = peak - gx.nbytes
    predicted = chunking.workspace_bytes(separable.STRATEGY, p)
    assert measured <= predicted
    passes = separable.workspace(dataclasses.replace(p, grad_geom=None))
    assert predicted < passes / 2


def test_workspace_bytes_are_the_band_temporaries():
    geom = ac.conv_geometry((2, 3, 50, 70), (4, 3, 5, 5), padding="valid")
    for itemsize in (4, 8):
        p = _plan(geom, 2, itemsize)
        lanes = geom.n * geom.f * geom.cg * 2
        assert p.pass_rows == separable.band_rows(geom, 2, itemsize) < geom.ho
        band = 2 * lanes * p.pass_rows * (geom.wp + geom.wo)
        assert separable.workspace(p) == itemsize * band


def test_forward_calls_grow_with_the_bands():
    """Same tap traffic, one set of per-band calls per band: 2 kh - 1 + 2 kw - 1 taps, the
    copy into the result (2) and, where Cg r > 1, the sum over (Cg, r); several bands also
    pay for the result (2 calls, written and read once), a single band is the result."""
    for w_shape, rank, per_band in (((1, 1, 7, 5), 1, 13 + 9 + 2), ((2, 3, 3, 3), 2, 5 + 5 + 3)):
        geom = ac.conv_geometry((1, w_shape[1], 120, 90), w_shape, padding="same")
        one, seven, two = (
            separable.counts(_plan(geom, rank, 4, rows=rows)) for rows in (geom.ho, 7, 2)
        )
        outputs = geom.n * geom.f * geom.ho * geom.wo
        assert seven.bytes == two.bytes == one.bytes + 4 * 2 * outputs
        assert seven.calls - one.calls == per_band * (18 - 1) + 2  # 18 bands of 7 rows
        assert two.calls - one.calls == per_band * (60 - 1) + 2  # 60 bands of 2 rows


# --------------------------------------------------------------------------- auto


def _rank1_3x3(rng, x_shape=(1, 1, 64, 64)):
    x = rng.standard_normal(x_shape)
    w = _low_rank(rng, (1, 1, 3, 3), 1)
    return x, w


@pytest.fixture
def rank_decisions(monkeypatch):
    """Records every numerical-rank decision (an SVD of w read back to the host)."""
    calls = []
    original = separable.numerical_rank

    def spy(w, *, xp):
        calls.append(tuple(w.shape))
        return original(w, xp=xp)

    monkeypatch.setattr(separable, "numerical_rank", spy)
    return calls


def test_auto_may_choose_separable_for_a_rank1_3x3(rng, favour):
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x, calibration=favour("separable"))
    assert (p.strategy, p.kernel.rank) == ("separable", 1)


def test_auto_prices_a_rank1_3x3_with_the_shipped_constants(rng):
    """explain(): separable is priced (not excluded) for a rank-1 3x3 kernel; auto picks the
    cheapest predicted strategy, whichever it is."""
    x, w = _rank1_3x3(rng, (1, 1, 256, 256))
    info = explain(x, w, padding="same")
    assert info["calibration"] == "shipped"
    sep = info["strategies"]["separable"]
    assert sep["eligible"] and sep["predicted_seconds"] > 0, sep
    priced = {k: v["predicted_seconds"] for k, v in info["strategies"].items() if v["eligible"]}
    assert info["choice"] == min(priced, key=priced.get)


def test_rank3_3x3_is_excluded_with_a_reason(rng, favour):
    x = rng.standard_normal((1, 1, 32, 32))
    w = rng.standard_normal((1, 1, 3, 3))  # full rank: 3 * (3 + 3) >= 9 taps
    assert separable.numerical_rank(w, xp=NUMPY) == 3
    favour("separable")  # even where a rank-1 kernel would win
    info = explain(x, w, padding="same")
    assert not info["strategies"]["separable"]["eligible"]
    assert "kernel rank 3 too high" in info["strategies"]["separable"]["reason"]
    assert info["choice"] != "separable"
    assert ac.choose_strategy(x, w, padding="same") != "separable"


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
    assert dispatch.separable_pays_off(rank, geom) is pays
    assert (rank * (kh + kw) < kh * kw) is pays


def test_no_svd_where_even_rank1_cannot_pass_or_is_priced_out(rng, rank_decisions, favour):
    """The SVD of w is skipped for kernels too small for rank 1 and where a rank-1
    separable is predicted slower than the best other strategy."""
    x = rng.standard_normal((1, 1, 32, 32))
    w2 = _low_rank(rng, (1, 1, 2, 2), 1)
    info = explain(x, w2)
    assert "too small" in info["strategies"]["separable"]["reason"] and not rank_decisions
    w3 = _low_rank(rng, (1, 1, 3, 3), 1)
    geom = ac.conv_geometry(x.shape, w3.shape, padding="same")
    shipped = cost.shipped_calibrations()["numpy"]
    slow = dataclasses.replace(shipped, factor={**shipped.factor, "separable": 1e6})
    p = dispatch.plan("auto", w3, geom, xp=NUMPY, x=x, calibration=slow)
    assert p.strategy != "separable" and not rank_decisions
    p = dispatch.plan("auto", w3, geom, xp=NUMPY, x=x, calibration=favour("separable"))
    assert p.strategy == "separable" and rank_decisions  # priced in: the rank was read


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_separable_plan_decides_the_rank_once(rng, rank_decisions, favour, direction):
    """auto's rank decision is handed to the plan (one per call), and the result is still
    the loops' one."""
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    gy = rng.standard_normal(geom.y_shape)
    cal = favour("separable")
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x, gy=gy, direction=direction, calibration=cal)
    assert (p.strategy, p.kernel.rank) == ("separable", 1)
    if direction == "forward":
        got = {"y": dispatch.run_forward(p, x, w, xp=NUMPY)}
        expected = {"y": oracles.correlate_loops(x, w, padding="same")}
    else:
        gx, gw = dispatch.run_backward(p, gy, x, w, xp=NUMPY)
        got = {"gx": gx, "gw": gw}
        ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, padding="same")
        expected = {"gx": ex_gx, "gw": ex_gw}
    assert rank_decisions == [w.shape]
    for name, value in got.items():
        model = oracles.ERROR_MODEL["separable"][name]
        scales = oracles.error_scales(x, w, gy=gy, model=model, padding="same")
        scale = scales[{"y": 0, "gx": 1, "gw": 2}[name]]
        assert_close(value, expected[name], scale=scale, err_msg=name)


def test_forced_separable_decides_the_rank_once(rng, rank_decisions):
    x, w = _rank1_3x3(rng)
    y = ac.conv2d(x, w, padding="same", strategy="separable")
    assert rank_decisions == [w.shape]
    model = oracles.ERROR_MODEL["separable"]["y"]
    (scale,) = oracles.error_scales(x, w, model=model, padding="same")
    assert_close(y, oracles.correlate_loops(x, w, padding="same"), scale=scale)


def test_a_small_host_kernel_is_analysed_once_per_content(rng, rank_decisions, favour):
    """A filter reapplied (even as another array of the same values) reuses its rank;
    edited in place, it is analysed again: to full rank, then to NaN."""
    x, w = _rank1_3x3(rng)
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    cal = favour("separable")

    def plan(kernel):
        return dispatch.plan("auto", kernel, geom, xp=NUMPY, x=x, calibration=cal)

    first, again = plan(w), plan(w.copy())
    assert (first.strategy, first.kernel.rank) == (again.strategy, again.kernel.rank)
    assert (first.strategy, first.kernel.rank) == ("separable", 1)
    assert rank_decisions == [w.shape]
    w[0, 0, 0, 0] += 1.0  # now rank 2: too high for a 3x3
    assert plan(w).strategy != "separable"
    assert rank_decisions == [w.shape] * 2
    w[0, 0, 1, 1] = np.nan
    assert plan(w).strategy not in ("separable", "fft")
    with pytest.raises(ValueError, match=r"separable.*NaN"):
        ac.conv2d(x, w, padding="same", strategy="separable")
    assert rank_decisions == [w.shape] * 2  # NaN: no SVD
    ac.clear_caches()  # the memo of kernel facts is emptied with the others
    w[0, 0, 1, 1] = 0.0
    plan(w)
    plan(w)
    assert rank_decisions == [w.shape] * 3


@pytest.mark.parametrize("where", ["array_api_strict", "large"])
def test_device_and_large_kernels_are_not_looked_up_by_content(rng, rank_decisions, where):
    """Kernels of other namespaces are never read back, and large ones are not hashed:
    their rank is decided on every call."""
    xp = ac.resolve_backend(where if where != "large" else "numpy")
    x, w = _rank1_3x3(rng)
    if where == "large":  # (1, 1, 3, 3) -> (F, 1, 3, 3), one element over the limit
        w = np.tile(w, (facts.KERNEL_FACTS_MAX_ELEMENTS // 9 + 1, 1, 1, 1))
    geom = ac.conv_geometry(x.shape, w.shape, padding="same")
    x, w = ac.asarray(x, backend=xp), ac.asarray(w, backend=xp)
    for _ in range(2):
        assert dispatch.plan("separable", w, geom, xp=xp, x=x).kernel.rank == 1
    assert rank_decisions == [tuple(w.shape)] * 2
