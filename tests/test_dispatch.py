"""The dispatcher: choices follow the cost model, workspace budget and chunking, exactness,
non-finite input, calibration files, explain().

The cost model is steered through the public contract: a user calibration written into the
test's cache directory (the ``favour`` fixture) or ``calibration=`` on ``dispatch.plan``.
Oracles: the explicit loops of :mod:`oracles` (float64, tiny inputs).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn import budget
from arraycnn.backend import to_numpy
from arraycnn.conv import chunking, cost, dispatch, explain, fft, strategy
from arraycnn.conv.facts import Values
from arraycnn.conv.strategy import Call
from arraycnn.conv.table import STRATEGIES, STRATEGY_NAMES
from arraycnn.testing import assert_close

NUMPY = ac.resolve_backend("numpy")


@pytest.fixture
def spy(monkeypatch):
    """Records (strategy, direction) of every kernel call the dispatcher runs."""
    calls: list[tuple[str, str]] = []
    for name, s in list(STRATEGIES.items()):

        def forward(p, x, w, *, xp, _s=s):
            calls.append((_s.name, "forward"))
            return _s.forward(p, x, w, xp=xp)

        def backward(p, gy, x, w, *, xp, _s=s):
            calls.append((_s.name, "backward"))
            return _s.backward(p, gy, x, w, xp=xp)

        monkeypatch.setitem(
            STRATEGIES, name, dataclasses.replace(s, forward=forward, backward=backward)
        )
    return calls


def _data(rng, x_shape, w_shape, *, rank1=False):
    x = rng.standard_normal(x_shape)
    if rank1:
        f, cg, kh, kw = w_shape
        w = rng.standard_normal((f, cg, kh, 1)) * rng.standard_normal((f, cg, 1, kw))
    else:
        w = rng.standard_normal(w_shape)
    return x, w


def _shipped() -> cost.Calibration:
    return cost.shipped_calibrations()["numpy"]


def _priced(name: str, call: strategy.Call, rank: int | None = None) -> dispatch.Plan:
    """The strategy's plan for ``call`` under an unlimited budget."""
    return chunking.price(name, call, rank=rank, cal=_shipped(), budget=2**62, reason="")


def _workspace(name: str, call: strategy.Call, n: int, rank: int | None = None) -> int:
    """The dispatcher's predicted workspace for ``n`` samples of ``call`` in one piece."""
    return _priced(name, call.with_n(n), rank).bytes


def _check_forward(y, x, w, xp=None, **geometry):
    expected = oracles.correlate_loops(x, w, **geometry)
    scale = oracles.error_scales(x, w, **geometry)[0]
    assert_close(y, expected, scale=scale, xp=xp, rtol=1e-9, atol=1e-9)


def _check_backward(gx, gw, gy, x, w, xp=None, **geometry):
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    _, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    assert_close(gx, ex_gx, scale=sgx, xp=xp, rtol=1e-9, atol=1e-9, err_msg="gx")
    assert_close(gw, ex_gw, scale=sgw, xp=xp, rtol=1e-9, atol=1e-9, err_msg="gw")


# --------------------------------------------------------------------------- parsing


def test_parse_strategy_errors():
    with pytest.raises(TypeError, match="strategy must be a string, got int"):
        dispatch.parse_strategy(3)
    with pytest.raises(ValueError, match=r"strategy must be one of .*'winograd'; got 'cook'"):
        dispatch.parse_strategy("cook")
    assert dispatch.parse_strategy("FFT") == "fft"


def test_direction_error():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="direction must be 'forward' or 'backward', got 'up'"):
        explain(x, w, direction="up")
    geom = ac.conv_geometry(x.shape, w.shape)
    with pytest.raises(ValueError, match="direction must be 'forward' or 'backward'"):
        dispatch.plan("auto", w, geom, xp=NUMPY, direction="sideways")


# --------------------------------------------------------------------------- cost model


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_auto_follows_the_cost_model(name, favour, spy, rng):
    favour(name)
    x, w = _data(rng, (2, 2, 9, 9), (2, 2, 5, 5), rank1=True)  # separable is worthwhile
    assert ac.choose_strategy(x, w, padding=1) == name
    y = ac.conv2d(x, w, padding=1)
    assert spy == [(name, "forward")]
    _check_forward(y, x, w, padding=1)
    spy.clear()
    gy = rng.standard_normal(y.shape)
    gx, gw, _ = ac.conv2d_backward(gy, x, w, padding=1)
    assert spy == [(name, "backward")]
    _check_backward(gx, gw, gy, x, w, padding=1)


def test_separable_needs_a_low_rank_kernel(favour, rng):
    favour("separable")
    x, w = _data(rng, (1, 1, 9, 9), (1, 1, 5, 5))  # full rank 5: 5 * 10 > 25 taps
    assert ac.choose_strategy(x, w) != "separable"
    assert "rank 5 too high" in explain(x, w)["strategies"]["separable"]["reason"]
    x2, w2 = _data(rng, (1, 1, 9, 9), (1, 1, 2, 2), rank1=True)  # 1 * (2 + 2) taps, not < 4
    assert "too small" in explain(x2, w2)["strategies"]["separable"]["reason"]


def test_prices_and_counts():
    w = np.ones((4, 3, 3, 3))
    geom = ac.conv_geometry((2, 3, 16, 16), w.shape, padding=1)
    cal = _shipped()
    fwd = dispatch.price_candidates(dispatch.describe(w, geom, xp=NUMPY), NUMPY, cal, 2**40)
    assert set(fwd) == set(STRATEGY_NAMES)  # priced: separable at rank 1, 1 * (3 + 3) < 9
    assert all(p.chunk == 2 and p.seconds > 0 and p.bytes > 0 for p in fwd.values())
    call = dispatch.describe(w, geom, xp=NUMPY, direction="backward")
    back = dispatch.price_candidates(call, NUMPY, cal, 2**40)
    assert all(back[k].seconds > fwd[k].seconds for k in fwd)  # strictly more work

    def im2col_counts(dtype):
        call = dispatch.describe(w.astype(dtype), geom, xp=NUMPY)
        return chunking.price("im2col", call, rank=None, cal=cal, budget=2**40, reason="").counts

    c32, c64 = im2col_counts(np.float32), im2col_counts(np.float64)
    # float64 doubles bytes and flops (float32-equivalents) of the same geometry
    assert c64.bytes == 2 * c32.bytes and c64.gemm_flops == 2 * c32.gemm_flops
    # im2col's one GEMM: 2 F (Cg kh kw) (N Ho Wo) flops
    assert c32.gemm_flops == 2 * 4 * 27 * (2 * 16 * 16)


def test_spectral_products_count_a_complex_mac_as_four_weighted_real_ones():
    """Per-frequency products (m x k) @ (k x n): 4 real MACs per complex one, weighted as
    GEMM work by the backend's weight, with its flops per matrix; short-K cells as for a
    GEMM; one array call. Too small for a matrix product (a broadcast product and sum), the
    flops weigh BROADCAST_SPECTRAL_WEIGHT, with nothing per matrix."""
    real = strategy.gemm(3, 5, 7, batch=11)
    assert real.gemm_flops == 2 * 11 * 3 * 5 * 7 and real.gemm_cells == 2 * 11 * 3 * 7
    for backend in ("numpy", "torch"):
        costs = strategy.spectral_costs(backend)
        counts = strategy.spectral(3, 5, 7, 11, costs)
        per_matrix = 11 * costs.matrix_flops
        assert counts.gemm_flops == 4 * costs.weight * real.gemm_flops + per_matrix
        assert counts.gemm_cells == 4 * real.gemm_cells
        assert counts.calls == 1 and counts.bytes == 0
        small = strategy.spectral(3, 5, 7, 11, costs, matmul=False)
        assert small.gemm_flops == 4 * strategy.BROADCAST_SPECTRAL_WEIGHT * real.gemm_flops
        assert small.calls == 1
    numpy, torch = strategy.NUMPY_SPECTRAL, strategy.FITTED_SPECTRAL
    assert strategy.spectral_costs("numpy") == numpy and strategy.spectral_costs("jax") == torch
    assert numpy.weight < torch.weight == strategy.BROADCAST_SPECTRAL_WEIGHT
    assert numpy.matrix_flops > 0 == torch.matrix_flops


def test_the_fft_backward_counts_its_products_as_it_runs_them():
    """The backward's contractions are batched products where _contract runs them so (at
    least SMALL_CONTRACTION multiply-adds per frequency), else broadcast products."""
    for n, f, c, batched in ((4, 8, 8, True), (1, 1, 2, False), (2, 2, 4, True)):
        geom = ac.conv_geometry((n, c, 12, 12), (f, c, 3, 3), padding=1)
        call = Call(geom, "backward", "numpy", "float32", 4, grads="x")
        p = fft.plan(call)
        lh, lw = fft.fast_shape(geom)
        bins = lh * (lw // 2 + 1)
        assert fft._matmul(n, f, c) is batched
        costs = strategy.NUMPY_SPECTRAL
        weight = costs.weight if batched else strategy.BROADCAST_SPECTRAL_WEIGHT
        products = 4 * weight * 2 * bins * n * f * c + batched * costs.matrix_flops * bins
        assert fft.counts(p).gemm_flops == pytest.approx(products)  # float32: flops as counted


def test_fft_counts_its_flops_and_more_per_plane():
    for costs in (strategy.NUMPY_SPECTRAL, strategy.FITTED_SPECTRAL):
        counts = strategy.fft(10, 16, 8, costs)
        assert counts.fft_flops == 10 * (2.5 * 128 * 7 + costs.plane_flops)
        assert counts.calls == 1
    assert strategy.NUMPY_SPECTRAL.plane_flops > 0 == strategy.FITTED_SPECTRAL.plane_flops


def test_the_fft_plan_counts_with_its_backends_costs():
    """NumPy's products are dearer per matrix and cheaper per flop: on 32 x 64 x 32
    products the flops win."""
    geom = ac.conv_geometry((32, 32, 12, 12), (64, 32, 3, 3), padding=1)
    for backend, costs in (("numpy", strategy.NUMPY_SPECTRAL), ("torch", strategy.FITTED_SPECTRAL)):
        for direction in ("forward", "backward"):
            p = fft.plan(Call(geom, direction, backend, "float32", 4))
            assert p.costs == costs
    numpy, torch = (fft.plan(Call(geom, "backward", b, "float32", 4)) for b in ("numpy", "torch"))
    assert fft.counts(numpy).gemm_flops < fft.counts(torch).gemm_flops
    assert fft.counts(numpy).fft_flops > fft.counts(torch).fft_flops


def test_the_model_prices_counts_with_five_constants_and_one_factor():
    cal = cost.Calibration(1.0, 10.0, 100.0, 1000.0, 10000.0, {"fft": 2.0})
    counts = strategy.Counts(gemm_flops=1, gemm_cells=2, bytes=3, fft_flops=4, calls=5)
    assert cal.seconds("naive", counts) == 1 + 20 + (300 + 4000 + 50000)
    assert cal.seconds("fft", counts) == 1 + 20 + 2 * (300 + 4000 + 50000)  # not on GEMMs


# --------------------------------------------------------------------------- calibration files


def test_calibration_user_file_wins_over_shipped(tmp_path):
    assert cost.calibration_for("numpy") == (_shipped(), "shipped")
    mine = dataclasses.replace(_shipped(), sec_per_call=1.0, source="mine")
    path = cost.save_user_calibration("numpy", mine)
    assert path == tmp_path / "cache" / "calibration.json" == cost.calibration_path()
    assert cost.calibration_for("numpy") == (mine, "user")
    # a backend absent from the file keeps its shipped constants
    assert cost.calibration_for("torch")[1] == "shipped"
    assert cost.calibration_for("jax")[1] == "shipped (numpy)"


def test_user_calibration_steers_auto(rng, favour):
    x, w = _data(rng, (1, 1, 12, 12), (1, 1, 3, 3))
    for name in ("naive", "fft", "im2col"):
        favour(name)
        assert ac.choose_strategy(x, w) == name
        assert explain(x, w)["calibration"] == "user"


def test_calibration_corrupt_file_warns_and_falls_back(tmp_path):
    path = tmp_path / "cache" / "calibration.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="corrupt calibration file"):
        assert cost.calibration_for("numpy")[1] == "shipped"
    entry = _shipped().to_json() | {"sec_per_byte": -1}
    path.write_text(json.dumps({"format": 2, "backends": {"numpy": entry}}))
    with pytest.warns(RuntimeWarning, match="malformed calibration entry"):
        assert cost.calibration_for("numpy")[1] == "shipped"
    path.write_text(json.dumps({"format": 1, "backends": {}}))
    with pytest.warns(RuntimeWarning, match="unknown calibration format 1"):
        assert cost.calibration_for("numpy")[1] == "shipped"


def test_calibration_json_round_trip_and_validation():
    cal = _shipped()
    assert cost.Calibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal
    for bad in ({"sec_per_byte": -1.0}, {"sec_per_call": float("nan")}, {"sec_per_byte": True}):
        with pytest.raises(ValueError, match="finite and >= 0"):
            cost.Calibration.from_json(cal.to_json() | bad)
    with pytest.raises(ValueError, match="malformed calibration entry"):
        cost.Calibration.from_json({"sec_per_byte": 1.0})
    assert "GFLOP/s" in cal.describe()


def test_shipped_calibrations_have_every_constant():
    shipped = cost.shipped_calibrations()
    assert {"numpy", "torch"} <= set(shipped)
    for cal in shipped.values():
        assert all(getattr(cal, name) > 0 for name in cost.CONSTANTS)
        assert set(cal.factor) <= set(STRATEGY_NAMES)


def test_cache_dir_environment(monkeypatch, tmp_path):
    with ac.config(cache_dir=None):
        monkeypatch.setenv("ARRAYCNN_CACHE_DIR", str(tmp_path / "env"))
        assert ac.settings.cache_dir() == tmp_path / "env"
        monkeypatch.delenv("ARRAYCNN_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert ac.settings.cache_dir() == tmp_path / "xdg" / "arraycnn"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert ac.settings.cache_dir() == tmp_path / "home" / ".cache" / "arraycnn"
    assert ac.settings.cache_dir() == tmp_path / "cache"  # the fixture's, restored


# --------------------------------------------------------------------------- workspace


def test_workspace_of_im2col_is_its_columns():
    g = ac.conv_geometry((3, 4, 10, 12), (6, 2, 3, 5), groups=2, padding="valid")
    columns = g.groups * g.cg * g.kh * g.kw * g.n * g.ho * g.wo
    call = strategy.Call(g, "forward", "numpy", "float64", 8)
    small = budget.SMALL_ARRAYS_BYTES
    assert _workspace("im2col", call, 3) == 8 * (columns + g.f * g.n * g.ho * g.wo) + small
    backward = dataclasses.replace(call, direction="backward")
    assert _workspace("im2col", backward, 3) >= 8 * 2 * columns  # columns and their gradient


WORKSPACE_CASES = [
    ((4, 8, 20, 20), (8, 8, 3, 3), {"padding": 1}),
    ((2, 4, 33, 31), (6, 2, 5, 5), {"padding": "same", "groups": 2, "stride": 2}),
    ((1, 2, 40, 40), (2, 2, 9, 9), {"dilation": 2}),
    ((8, 1, 28, 28), (16, 1, 5, 5), {}),
]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kw"), WORKSPACE_CASES)
def test_workspace_prediction_bounds_the_measured_peak(
    name, x_shape, w_shape, kw, rng, traced_peak
):
    """The traced peak of a planned call, minus its results, stays within the predicted
    workspace."""
    if oracles.unsupported(name, x_shape, w_shape, **kw):
        pytest.skip(oracles.unsupported(name, x_shape, w_shape, **kw))
    x, w = _data(rng, x_shape, w_shape, rank1=True)
    geom = ac.conv_geometry(x.shape, w.shape, **kw)
    gy = rng.standard_normal(geom.y_shape)
    s = STRATEGIES[name]
    for direction in ("forward", "backward"):
        planned = _priced(name, dispatch.describe(w, geom, xp=NUMPY, direction=direction), 1)
        p = planned.kernel
        assert not planned.chunked and p.geom == geom
        if direction == "forward":
            results, peak = traced_peak(lambda p=p: [s.forward(p, x, w, xp=NUMPY)])
        else:
            results, peak = traced_peak(lambda p=p: s.backward(p, gy, x, w, xp=NUMPY))
        measured = peak - sum(r.nbytes for r in results)
        assert measured <= planned.bytes, (direction, measured, planned.bytes)


def test_a_strategy_over_budget_even_for_one_sample_is_excluded():
    """63x63 kernel, 1024^2 float64 image: im2col's row bands need ~32 MiB (whole columns
    would need ~31 GiB); under a 20 MiB budget it is excluded, and forcing it raises."""
    x = np.zeros((1, 1, 1024, 1024))
    w = np.ones((1, 1, 63, 63))
    assert 20 * 2**20 < explain(x, w, padding="same")["strategies"]["im2col"]["workspace_bytes"]
    with ac.config(workspace_limit="20M"):
        info = explain(x, w, padding="same")
        im2col = info["strategies"]["im2col"]
        assert im2col["workspace_bytes"] < 2**30
        assert not im2col["eligible"] and "exceeds the budget 20.00 MiB" in im2col["reason"]
        assert info["choice"] not in (None, "im2col")
        assert ac.choose_strategy(x, w, padding="same") == info["choice"]
        with pytest.raises(MemoryError, match=r"strategy='im2col' \(forward\) needs a predicted"):
            ac.choose_strategy(x, w, padding="same", strategy="im2col")


def test_budget_environment_and_setters(monkeypatch):
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "1.5K")
    assert budget.workspace_limit() == 1536
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "2GiB")
    assert budget.workspace_limit() == 2 * 2**30
    ac.set_workspace_limit(12345)  # the setter overrides the environment
    assert budget.workspace_limit() == 12345
    with ac.config(workspace_limit="1M"):  # and config() the setter, for its block
        assert budget.workspace_limit() == 2**20
    assert budget.workspace_limit() == 12345
    ac.set_workspace_limit(None)
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "lots")
    with pytest.raises(ValueError, match="ARRAYCNN_WORKSPACE_LIMIT must be a number of bytes"):
        budget.workspace_limit()
    with pytest.raises(ValueError, match="limit must be a positive number of bytes, got -5"):
        ac.set_workspace_limit(-5)
    with pytest.raises(TypeError, match="limit must be a number of bytes, got bool"):
        ac.set_workspace_limit(True)
    with pytest.raises(TypeError, match="limit must be a number of bytes, got list"):
        ac.set_workspace_limit([1])


def test_default_budget_from_meminfo_and_fallback(monkeypatch):
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
        expected = int(budget.DEFAULT_FRACTION * kb * 1024)
        assert budget.workspace_limit() <= 1.1 * expected  # the least reading, memory moves
    if budget.address_space_room() is not None:
        pytest.skip("RLIMIT_AS is set: the memory stays readable without /proc")

    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(budget, "open", unreadable, raising=False)
    ac.clear_caches()  # forget the last reading
    assert budget.workspace_limit() == int(budget.DEFAULT_FRACTION * budget.FALLBACK_BYTES)


def test_chunk_is_the_largest_that_fits():
    g = ac.conv_geometry((10, 2, 8, 8), (3, 2, 3, 3), padding=1)
    call = strategy.Call(g, "forward", "numpy", "float32", 4)
    ws = {n: _workspace("im2col", call, n) for n in (1, 3, 4)}

    def chunk(limit: int) -> int:
        return chunking.price("im2col", call, rank=None, cal=_shipped(), budget=limit, reason="")

    assert chunk(ws[3]).chunk == 3 and chunk(ws[4] - 1).chunk == 3
    assert chunk(10**12).chunk == 10 and not chunk(10**12).chunked
    p = chunk(ws[3])
    assert (p.kernel.geom.n, p.rest.geom.n) == (3, 1)  # 3 + 3 + 3 + 1
    # one sample over the budget: one sample at a time, in the tallest bands of rows that fit
    banded = chunk(ws[1] - 1)
    assert banded.chunk == 1 and banded.chunked and 1 <= banded.rows < g.ho
    assert banded.bytes <= ws[1] - 1 and "bands of" in banded.reason
    taller = chunking.row_bands(call, _im2col_plan, banded.rows + 1)
    assert max(_priced_workspace(b.kernel) for b in taller) > ws[1] - 1
    rows = [r for b in banded.bands for r in range(b.out_rows.start, b.out_rows.stop)]
    assert rows == list(range(g.ho))  # the bands cover the output rows once, in order
    one_row = chunk(1).bytes  # excluded: the workspace of one output row of one sample
    assert chunk(1).chunk == 0 and "one output row of one sample exceeds" in chunk(1).reason
    assert chunk(one_row).chunk == 1 and chunk(one_row).rows == 1


def _im2col_plan(call):
    return STRATEGIES["im2col"].plan(call, None, None)


def _priced_workspace(kernel) -> int:
    return chunking.workspace_bytes(STRATEGIES["im2col"], kernel)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_forced_strategy_runs_in_chunks_and_matches_the_loops(
    name, xp, to_xp, rng, spy, array_operations
):
    # (array_operations: naive's compiled depthwise loops need a few planes whatever the
    # batch, so they never chunk; tests/test_numba_depthwise.py)
    x, w = _data(rng, (5, 2, 6, 6), (4, 1, 5, 5), rank1=True)
    stride = 1 if oracles.unsupported(name, x.shape, w.shape, stride=(1, 2), groups=2) else (1, 2)
    kw = {"stride": stride, "padding": ((2, 1), (0, 2)), "dilation": 1, "groups": 2}
    geom = ac.conv_geometry(x.shape, w.shape, **kw)
    gy = rng.standard_normal(geom.y_shape)
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    rank = 1 if name == "separable" else None
    for direction in ("forward", "backward"):
        two = _workspace(name, dispatch.describe(tw, geom, xp=xp, direction=direction), 2, rank)
        with ac.config(workspace_limit=two):  # chunks of 2, 2, 1
            p = dispatch.plan(name, tw, geom, xp=xp, x=tx, gy=tgy, direction=direction)
            assert (p.strategy, p.chunk, p.chunked) == (name, 2, True)
            assert "chunks of 2" in p.reason
            spy.clear()
            if direction == "forward":
                _check_forward(ac.conv2d(tx, tw, strategy=name, **kw), x, w, xp=xp, **kw)
            else:
                gx, gw, gb = ac.conv2d_backward(tgy, tx, tw, strategy=name, **kw)
                _check_backward(gx, gw, gy, x, w, xp=xp, **kw)
                assert_close(gb, gy.sum(axis=(0, 2, 3)), xp=xp, rtol=1e-12, atol=1e-12)
            assert spy == [(name, direction)] * 3


def _one_row(name: str, call: strategy.Call) -> int:
    """The workspace of one output row of one sample (the least a strategy can run in)."""
    return chunking.price(name, call, rank=None, cal=_shipped(), budget=1, reason="").bytes


def test_auto_with_a_tiny_budget_skips_bands_or_chunks(xp, to_xp, rng, favour):
    favour("im2col")
    x, w = _data(rng, (4, 2, 7, 7), (3, 2, 3, 3))
    geom = ac.conv_geometry(x.shape, w.shape, padding=1)
    call = dispatch.describe(to_xp(w), geom, xp=xp)
    im2col_row, naive_row = _one_row("im2col", call), _one_row("naive", call)
    assert naive_row < im2col_row
    with ac.config(workspace_limit=im2col_row - 1):  # im2col cannot run even one row
        info = explain(to_xp(x), to_xp(w), padding=1)
        assert not info["strategies"]["im2col"]["eligible"]
        assert info["choice"] not in (None, "im2col")
        _check_forward(ac.conv2d(to_xp(x), to_xp(w), padding=1), x, w, xp=xp, padding=1)
    with ac.config(workspace_limit=_workspace("im2col", call, 1) - 1):  # im2col, in bands
        p = dispatch.plan("auto", to_xp(w), geom, xp=xp, x=to_xp(x))
        assert (p.strategy, p.chunk) == ("im2col", 1) and 1 <= p.rows < geom.ho
        assert explain(to_xp(x), to_xp(w), padding=1)["rows"] == p.rows
        _check_forward(ac.conv2d(to_xp(x), to_xp(w), padding=1), x, w, xp=xp, padding=1)
    with ac.config(workspace_limit=_workspace("im2col", call, 2)):  # im2col, chunked
        p = dispatch.plan("auto", to_xp(w), geom, xp=xp, x=to_xp(x))
        assert (p.strategy, p.chunk) == ("im2col", 2) and "chunks of 2" in p.reason
        _check_forward(ac.conv2d(to_xp(x), to_xp(w), padding=1), x, w, xp=xp, padding=1)


def test_a_large_image_under_a_small_budget_runs_in_bands_on_every_strategy(rng):
    """A budget one sample does not fit: separable's own bands fit it whole, the others
    run in bands of output rows; every strategy agrees with SciPy."""
    x = rng.standard_normal((1, 1, 512, 512))
    w = rng.standard_normal((1, 1, 5, 1)) * rng.standard_normal((1, 1, 1, 5))
    expected = oracles.correlate_scipy(x, w)
    with ac.config(workspace_limit="1M"):
        info = explain(x, w)
        for name, row in info["strategies"].items():
            assert row["eligible"] and row["workspace_bytes"] <= 2**20, name
            y = ac.conv2d(x, w, strategy=name)
            model = oracles.ERROR_MODEL[name]["y"]
            scale = oracles.error_scales(x, w, model=model)[0]
            assert_close(y, expected, scale=scale, err_msg=name)
        assert info["strategies"]["separable"]["rows"] is None  # whole, in its own bands
        assert 1 <= info["strategies"]["im2col"]["rows"] < 512


def test_repeated_auto_calls_follow_budget_and_calibration_changes(rng, favour):
    x, w = _data(rng, (4, 2, 7, 7), (3, 2, 3, 3))
    geom = ac.conv_geometry(x.shape, w.shape, padding=1)
    favour("im2col")
    for _ in range(2):  # the second call is served by the memo
        assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x).chunk == 4
    two = _workspace("im2col", dispatch.describe(w, geom, xp=NUMPY), 2)
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x, budget=two)
    assert (p.strategy, p.chunk) == ("im2col", 2)  # a smaller budget: chunked
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x)
    assert (p.strategy, p.chunk) == ("im2col", 4)  # the default budget again: whole
    favour("naive")  # another calibration: another choice for the same call
    assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x).strategy == "naive"
    assert (
        dispatch.plan("auto", w, geom, xp=NUMPY, x=x, calibration=favour("fft")).strategy == "fft"
    )


def test_clear_caches_empties_the_plans_and_the_loaded_calibrations(rng, favour):
    x, w = _data(rng, (2, 2, 7, 7), (3, 2, 3, 3))
    geom = ac.conv_geometry(x.shape, w.shape, padding=1)
    favour("naive")
    first, cal = dispatch.plan("auto", w, geom, xp=NUMPY, x=x), cost.calibration_for("numpy")
    assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x) is first  # the memo serves it
    assert cost.calibration_for("numpy")[0] is cal[0]  # the parsed file, reused
    ac.clear_caches()
    assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x) is not first
    assert cost.calibration_for("numpy") == cal and cost.calibration_for("numpy")[0] is not cal[0]


def test_repeated_auto_calls_decide_separable_by_each_kernel(rng, favour):
    """The static part is reused, but each call's kernel decides separable: a rank-1
    kernel, then a full-rank and a NaN kernel of the same description."""
    favour("separable")
    x, w = _data(rng, (1, 1, 16, 16), (1, 1, 5, 5), rank1=True)
    geom = ac.conv_geometry(x.shape, w.shape, padding=2)
    for _ in range(2):
        assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x).strategy == "separable"
    full = rng.standard_normal(w.shape)
    assert dispatch.plan("auto", full, geom, xp=NUMPY, x=x).strategy != "separable"
    nan = w.copy()
    nan[0, 0, 2, 2] = np.nan
    assert dispatch.plan("auto", nan, geom, xp=NUMPY, x=x).strategy != "separable"
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x)
    assert (p.strategy, p.kernel.rank) == ("separable", 1)


def test_repeated_auto_calls_see_new_nonfinite_values(rng, favour):
    favour("fft")
    x, w = _data(rng, (1, 1, 9, 9), (1, 1, 3, 3))
    geom = ac.conv_geometry(x.shape, w.shape)
    assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x).strategy == "fft"
    x[0, 0, 4, 4] = np.nan  # same description, now non-finite: fft must not run
    p = dispatch.plan("auto", w, geom, xp=NUMPY, x=x)
    assert p.strategy != "fft" and "fft skipped: non-finite input" in p.reason


def test_nothing_fits_raises():
    x, w = np.ones((2, 1, 8, 8)), np.ones((1, 1, 3, 3))
    with ac.config(workspace_limit=16):
        with pytest.raises(MemoryError, match="no convolution strategy fits this call"):
            ac.conv2d(x, w)
        with pytest.raises(ValueError, match=r"needs a predicted workspace of \d+ bytes"):
            ac.conv2d(x, w, strategy="naive")
        with pytest.raises(ac.WorkspaceError, match="budget of 16 bytes") as info:
            ac.conv2d(x, w, strategy="fft")
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- exactness


def test_require_exact_excludes_fft_and_separable(favour, rng):
    x, w = _data(rng, (1, 1, 12, 12), (1, 1, 7, 7), rank1=True)
    geom = ac.conv_geometry(x.shape, w.shape)
    for name in ("fft", "separable"):
        favour(name)
        assert dispatch.plan("auto", w, geom, xp=NUMPY, x=x).strategy == name
        exact = dispatch.plan("auto", w, geom, xp=NUMPY, x=x, require_exact=True)
        assert exact.strategy in ("naive", "im2col")
        with pytest.raises(ValueError, match=f"strategy='{name}' is not exact"):
            dispatch.plan(name, w, geom, xp=NUMPY, require_exact=True)
    assert [n for n in STRATEGY_NAMES if ac.CAPABILITIES[n].exact_sums] == ["naive", "im2col"]


# --------------------------------------------------------------------------- NaN / Inf


NONFINITE_GEOMETRIES = [
    {"padding": 1},
    {"stride": 2, "padding": ((0, 2), (1, 0))},
    {"dilation": 2, "padding": "same", "groups": 2},
]


def _poisoned_input(rng, shape):
    x = rng.standard_normal(shape)
    x[0, 0, 2, 3] = np.nan
    x[1, 1, 5, 0] = np.inf
    x[1, 0, 0, 6] = -np.inf
    return x


@pytest.mark.parametrize("name", ["naive", "im2col", "separable", "auto"])
@pytest.mark.parametrize("kw", NONFINITE_GEOMETRIES)
def test_nonfinite_input_stays_in_its_receptive_fields(name, kw, xp, to_xp, rng, favour, on_device):
    favour("fft")  # auto must still avoid FFT (on the host: a device reads no finiteness)
    x = _poisoned_input(rng, (2, 2, 8, 8))
    _, w = _data(rng, x.shape, (2, 2 // kw.get("groups", 1), 5, 5), rank1=True)
    with np.errstate(invalid="ignore"):  # NumPy's FFT warns of the NaN it spreads
        y = to_numpy(ac.conv2d(to_xp(x), to_xp(w), strategy=name, **kw))
    mask = oracles.nonfinite_outputs(x, w, **kw)
    assert mask.any() and not mask.all()
    finite = np.where(np.isfinite(x), x, 0.0)
    expected = oracles.correlate_loops(finite, w, **kw)
    nan_positions = oracles.nonfinite_outputs(np.where(np.isnan(x), np.nan, 0.0), w, **kw)
    if on_device and name in ("auto", "separable"):  # FFT may run: NaN beyond the fields
        assert not np.isfinite(y[mask]).any()
        assert_close(y[np.isfinite(y)], expected[np.isfinite(y)], rtol=1e-9)
        return
    np.testing.assert_array_equal(~np.isfinite(y), mask)
    scale = oracles.error_scales(finite, w, model=oracles.ERROR_MODEL["separable"]["y"], **kw)[0]
    assert_close(np.where(mask, 0.0, y), np.where(mask, 0.0, expected), scale=scale, rtol=1e-9)
    assert np.isnan(y[nan_positions]).all()  # NaN stays NaN


@pytest.mark.parametrize("name", ["naive", "im2col", "separable", "auto"])
def test_nonfinite_output_gradient_stays_local(name, xp, to_xp, rng, favour, on_device):
    if on_device and name == "auto":
        pytest.skip("a device reads no finiteness: FFT may spread it (test_roundtrips)")
    favour("fft")
    kw = {"stride": 2, "padding": 1}
    x, w = _data(rng, (2, 2, 9, 9), (2, 2, 5, 5), rank1=True)
    geom = ac.conv_geometry(x.shape, w.shape, **kw)
    gy = rng.standard_normal(geom.y_shape)
    gy[0, 1, 1, 1] = np.nan  # interior outputs of filter 1: they meet no zero padding
    gy[1, 1, 2, 1] = np.inf
    results = ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), strategy=name, **kw)
    gx, gw, _ = (to_numpy(a) for a in results)
    mask = oracles.nonfinite_input_grads(gy, x.shape, w.shape, **kw)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(~np.isfinite(gx), mask)
    clean = np.where(np.isfinite(gy), gy, 0.0)
    ogx, ogw, _ = oracles.correlate_loops_backward(clean, x, w, **kw)
    _, sgx, sgw, _ = oracles.error_scales(x, w, gy=clean, model="kernel", **kw)
    assert_close(np.where(mask, 0.0, gx), np.where(mask, 0.0, ogx), scale=sgx)
    # filter 1's gw meets the non-finite gy at every tap (times nonzero x); filter 0's is clean
    assert not np.isfinite(gw[1]).any()
    assert_close(gw[0], ogw[0], scale=sgw[0])


def test_forced_fft_rejects_nonfinite_input(xp, to_xp, rng, on_device):
    if on_device:
        pytest.skip("a device reads no finiteness: FFT runs and spreads it (test_roundtrips)")
    x = _poisoned_input(rng, (2, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match="strategy='fft' cannot handle non-finite input: x"):
        ac.conv2d(to_xp(x), to_xp(w), strategy="fft")
    clean = rng.standard_normal((2, 2, 8, 8))
    gy = rng.standard_normal((2, 3, 6, 6))
    gy[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite input: gy contains NaN or Inf"):
        ac.conv2d_backward(to_xp(gy), to_xp(clean), to_xp(w), strategy="fft")


def test_nonfinite_weights(to_xp, xp, rng, favour, on_device):
    favour("separable")
    x = rng.standard_normal((1, 1, 9, 9))
    w = np.ones((2, 1, 5, 5))
    w[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="strategy='separable' cannot handle non-finite input: w"):
        ac.conv2d(to_xp(x), to_xp(w), strategy="separable")
    info = explain(to_xp(x), to_xp(w))
    reasons = {name: info["strategies"][name]["reason"] for name in ("separable", "fft")}
    if on_device:
        assert reasons["separable"].startswith("on a device auto does not read the kernel's rank")
    else:
        assert reasons["separable"] == "w holds NaN or Inf (the SVD is undefined)"
        assert reasons["fft"] == "non-finite input (w)"
    y = to_numpy(ac.conv2d(to_xp(x), to_xp(w)))
    assert np.isfinite(y[:, 0]).all() and np.isnan(y[:, 1]).all()


def test_auto_reads_finiteness_only_where_fft_would_win(monkeypatch, favour, rng):
    checked = []
    original = Values.finite

    def counting(self, name):
        checked.append(name)
        return original(self, name)

    monkeypatch.setattr(Values, "finite", counting)
    x, w = _data(rng, (1, 1, 8, 8), (1, 1, 3, 3))
    favour("naive")
    ac.conv2d(x, w)
    assert checked == []  # naive wins: no host sync for the check
    favour("fft")
    ac.conv2d(x, w)
    assert checked == ["x", "w"]


# --------------------------------------------------------------------------- explain


def test_explain_reports_everything(rng):
    x, w = _data(rng, (2, 3, 10, 10), (4, 3, 3, 3))
    with ac.config(workspace_limit="1G"):
        info = explain(x, w, padding=1, direction="backward")
    assert info["backend"] == "numpy" and info["dtype"] == "float64"
    assert info["direction"] == "backward" and info["geometry"]["ho"] == 10
    assert info["budget_bytes"] == 2**30 and info["calibration"] == "shipped"
    assert info["choice"] in STRATEGY_NAMES and info["why"]
    priced = {}
    for name, row in info["strategies"].items():
        keys = {"eligible", "reason", "predicted_seconds", "workspace_bytes", "chunk", "rows"}
        assert set(row) == keys and row["rows"] is None  # a 1G budget needs no bands
        if row["eligible"]:
            assert row["predicted_seconds"] > 0 and row["workspace_bytes"] > 0, name
            priced[name] = row["predicted_seconds"]
    assert info["choice"] == min(priced, key=priced.get)  # the cheapest predicted
    forced = explain(x, w, padding=1, strategy="naive")
    assert (forced["choice"], forced["why"]) == ("naive", "forced")
    with ac.config(workspace_limit=8):
        broke = explain(x, w, padding=1, strategy="im2col")
    assert broke["choice"] is None and "budget" in broke["why"]
