"""Dispatcher v2: choices follow the cost model, workspace budget and chunking, exactness,
non-finite input, calibration loading, explain().

Oracles are explicit loops over output positions and taps in float64 NumPy (tiny inputs).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

import arraycnn as ac
from arraycnn.backend import to_numpy
from arraycnn.conv import cost, dispatch, memory
from arraycnn.testing import assert_close

STRATEGIES = ("naive", "separable", "im2col", "fft")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Every test: its own cache dir, default budget and autotune settings."""
    monkeypatch.setenv("ARRAYCNN_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("ARRAYCNN_AUTOTUNE", "ARRAYCNN_WORKSPACE_LIMIT"):
        monkeypatch.delenv(var, raising=False)
    ac.conv.set_autotune(None)
    ac.conv.set_workspace_limit(None)
    yield
    ac.conv.set_autotune(None)
    ac.conv.set_workspace_limit(None)


# --------------------------------------------------------------------------- oracles


def _pads(geom):
    (top, bottom), (left, right) = geom.padding
    return top, bottom, left, right


def oracle_forward(x, w, geom):
    """y[n, f, p, q] = sum_{c, i, j} w[f, c, i, j] xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]."""
    top, bottom, left, right = _pads(geom)
    xpad = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    y = np.zeros(geom.y_shape)
    for n in range(geom.n):
        for f in range(geom.f):
            g = f // geom.fg
            for p in range(geom.ho):
                for q in range(geom.wo):
                    total = 0.0
                    for c in range(geom.cg):
                        for i in range(geom.kh):
                            for j in range(geom.kw):
                                xv = xpad[n, g * geom.cg + c, p * sh + i * dh, q * sw + j * dw]
                                total += float(w[f, c, i, j]) * xv
                    y[n, f, p, q] = total
    return y


def oracle_backward(gy, x, w, geom):
    """gx, gw of sum(gy * y) by scattering every term of the forward sum."""
    top, bottom, left, right = _pads(geom)
    xpad = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    gxpad = np.zeros_like(xpad)
    gw = np.zeros(geom.w_shape)
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    for n in range(geom.n):
        for f in range(geom.f):
            g = f // geom.fg
            for p in range(geom.ho):
                for q in range(geom.wo):
                    go = float(gy[n, f, p, q])
                    for c in range(geom.cg):
                        for i in range(geom.kh):
                            for j in range(geom.kw):
                                r, s = p * sh + i * dh, q * sw + j * dw
                                gxpad[n, g * geom.cg + c, r, s] += go * float(w[f, c, i, j])
                                gw[f, c, i, j] += go * xpad[n, g * geom.cg + c, r, s]
    gx = gxpad[:, :, top : top + geom.h, left : left + geom.w]
    return gx, gw


def nonfinite_forward_mask(x, w, geom):
    """Receptive-field rule: output non-finite iff its window (all taps) meets NaN/Inf."""
    top, bottom, left, right = _pads(geom)
    bad = np.pad(~np.isfinite(x), ((0, 0), (0, 0), (top, bottom), (left, right)))
    wbad = ~np.isfinite(w)
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    mask = np.zeros(geom.y_shape, dtype=bool)
    for n in range(geom.n):
        for f in range(geom.f):
            g = f // geom.fg
            for p in range(geom.ho):
                for q in range(geom.wo):
                    hit = wbad[f].any()
                    for i in range(geom.kh):
                        for j in range(geom.kw):
                            chans = bad[n, g * geom.cg : (g + 1) * geom.cg]
                            hit |= chans[:, p * sh + i * dh, q * sw + j * dw].any()
                    mask[n, f, p, q] = hit
    return mask


def nonfinite_input_grad_mask(gy, geom):
    """gx[n, c, h, w] non-finite iff a non-finite gy reaches (h, w) through some tap."""
    top, _, left, _ = _pads(geom)
    mask = np.zeros((geom.n, geom.c, geom.hp, geom.wp), dtype=bool)
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    for n, f, p, q in zip(*np.nonzero(~np.isfinite(gy))):
        g = f // geom.fg
        for i in range(geom.kh):
            for j in range(geom.kw):
                mask[n, g * geom.cg : (g + 1) * geom.cg, p * sh + i * dh, q * sw + j * dw] = True
    return mask[:, :, top : top + geom.h, left : left + geom.w]


def _scale(x, w, geom):
    """sum |x| |w| per output: the rounding-error scale of a sum of products."""
    return oracle_forward(np.abs(x), np.abs(w), geom)


def _data(rng, x_shape, w_shape, *, rank1=False):
    x = rng.standard_normal(x_shape)
    if rank1:
        f, cg, kh, kw = w_shape
        w = rng.standard_normal((f, cg, kh, 1)) * rng.standard_normal((f, cg, 1, kw))
    else:
        w = rng.standard_normal(w_shape)
    return x, w


def _geom(x, w, **kw):
    return ac.conv_geometry(x.shape, w.shape, **kw)


def _favouring(name):
    """A calibration under which strategy ``name`` is predicted 1e6 times cheaper."""
    scale = {s: (1e-6 if s == name else 1.0) for s in STRATEGIES}
    return dataclasses.replace(cost.FIRST_ESTIMATES, scale=scale, source=f"favours {name}")


@pytest.fixture
def favour(monkeypatch):
    """favour(name): make the dispatcher's cost model predict ``name`` cheapest."""

    def apply(name):
        cal = _favouring(name)
        monkeypatch.setattr(cost, "calibration_for", lambda backend: (cal, "test"))

    return apply


@pytest.fixture
def spy(monkeypatch):
    """Record which strategy kernels run: returns the list of (name, direction) calls."""
    calls = []
    for name, module in dispatch.KERNELS.items():
        for direction in ("forward", "backward"):
            original = getattr(module, direction)

            def wrapper(*args, _orig=original, _name=name, _dir=direction, **kwargs):
                calls.append((_name, _dir))
                return _orig(*args, **kwargs)

            monkeypatch.setattr(module, direction, wrapper)
    return calls


# --------------------------------------------------------------------------- parsing


def test_parse_strategy_errors():
    with pytest.raises(TypeError, match="strategy must be a string, got int"):
        dispatch.parse_strategy(3)
    with pytest.raises(ValueError, match=r"strategy must be one of .*got 'winograd'"):
        dispatch.parse_strategy("winograd")
    assert dispatch.parse_strategy("FFT") == "fft"


def test_direction_error():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="direction must be 'forward' or 'backward', got 'up'"):
        dispatch.explain(x, w, direction="up")
    with pytest.raises(ValueError, match="direction must be"):
        cost.op_counts("naive", _geom(x, w), direction="sideways")


def test_unknown_strategy_in_cost_and_memory():
    g = _geom(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        cost.op_counts("magic", g)
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        memory.workspace_bytes("magic", g, itemsize=4)


# --------------------------------------------------------------------------- cost model


@pytest.mark.parametrize("name", STRATEGIES)
def test_auto_follows_the_cost_model(name, favour, spy, rng):
    favour(name)
    x, w = _data(rng, (2, 2, 9, 9), (2, 2, 5, 5), rank1=True)  # separable is worthwhile
    geom = _geom(x, w, padding=1)
    assert ac.choose_strategy(x, w, padding=1) == name
    y = ac.conv2d(x, w, padding=1)
    assert spy == [(name, "forward")]
    assert_close(y, oracle_forward(x, w, geom), scale=_scale(x, w, geom), rtol=1e-9, atol=1e-9)
    spy.clear()
    gy = rng.standard_normal(geom.y_shape)
    ac.conv2d_backward(gy, x, w, padding=1)
    assert spy == [(name, "backward")]


def test_separable_needs_a_low_rank_kernel(favour, rng):
    favour("separable")
    x, w = _data(rng, (1, 1, 9, 9), (1, 1, 5, 5))  # full rank 5: 5 * 10 > 0.5 * 25
    assert ac.choose_strategy(x, w) != "separable"
    info = dispatch.explain(x, w)
    assert "rank 5 too high" in info["strategies"]["separable"]["reason"]
    x2, w2 = _data(rng, (1, 1, 9, 9), (1, 1, 2, 2), rank1=True)  # 1 * (2 + 2) taps, not < 4
    info = dispatch.explain(x2, w2)
    assert "too small" in info["strategies"]["separable"]["reason"]


def test_predicted_costs_and_counts():
    xp = ac.resolve_backend("numpy")
    w = np.ones((4, 3, 3, 3))
    geom = ac.conv_geometry((2, 3, 16, 16), w.shape, padding=1)
    costs = dispatch.predicted_costs(w, geom, xp=xp)
    assert set(costs) == set(STRATEGIES)  # ones: rank 1, 1 * (3 + 3) < 3 * 3 taps
    assert all(c > 0 for c in costs.values())
    back = dispatch.predicted_costs(w, geom, xp=xp, direction="backward")
    assert all(back[k] > costs[k] for k in costs)  # the backward does strictly more work
    # float64 doubles bytes and flops of the same geometry
    c32 = cost.op_counts("im2col", geom, itemsize=4)
    c64 = cost.op_counts("im2col", geom, itemsize=8)
    assert c64.bytes == 2 * c32.bytes and c64.gemm_flops == 2 * c32.gemm_flops
    # im2col's one GEMM: 2 F (Cg kh kw) (N Ho Wo) flops
    assert c32.gemm_flops == 2 * 4 * 27 * (2 * 16 * 16)


def test_calibration_user_file_wins_over_shipped(tmp_path):
    assert cost.calibration_for("numpy")[1] in ("shipped", "first-estimates")
    mine = dataclasses.replace(cost.FIRST_ESTIMATES, sec_per_call=1.0, source="mine")
    path = cost.save_user_calibration("numpy", mine)
    assert path == tmp_path / "cache" / "calibration.json"
    cal, source = cost.calibration_for("numpy")
    assert source == "user" and cal == mine
    # a backend absent from the file keeps its shipped constants
    assert cost.calibration_for("torch")[1] != "user"


def test_calibration_corrupt_file_warns_and_falls_back(tmp_path):
    path = tmp_path / "cache" / "calibration.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="corrupt calibration file"):
        _, source = cost.calibration_for("numpy")
    assert source != "user"
    path.write_text(json.dumps({"format": 1, "backends": {"numpy": {"sec_per_byte": -1}}}))
    with pytest.warns(RuntimeWarning, match="malformed calibration entry"):
        assert cost.calibration_for("numpy")[1] != "user"


def test_calibration_rejects_negative_constants():
    data = cost.FIRST_ESTIMATES.to_json() | {"sec_per_byte": -1.0}
    with pytest.raises(ValueError, match="finite and >= 0"):
        cost.Calibration.from_json(data)
    assert cost.Calibration.from_json(cost.FIRST_ESTIMATES.to_json()) == cost.FIRST_ESTIMATES


def test_calibration_from_before_the_spectral_cells_count_still_loads():
    """A file written before ``sec_per_spectral_cell`` existed loads with 0 for it, and its
    predictions are those of the counts it was fitted with."""
    old = {k: v for k, v in cost.FIRST_ESTIMATES.to_json().items() if k != "sec_per_spectral_cell"}
    cal = cost.Calibration.from_json(old)
    assert cal.sec_per_spectral_cell == 0.0
    geom = ac.conv_geometry((8, 16, 12, 12), (16, 16, 5, 5))
    counts = cost.op_counts("fft", geom, direction="backward")
    assert counts.spectral_cells > 0
    without = dataclasses.replace(counts, spectral_cells=0.0)
    assert cal.seconds("fft", counts, "backward") == cal.seconds("fft", without, "backward")


def test_spectral_products_count_their_cells():
    """Per-frequency products (m x k) @ (k x n): 8 m k n real flops and 8 m n cells each."""
    counts = cost._spectral(3, 5, 7, batch=11)
    assert counts.spectral_flops == 8 * 11 * 3 * 5 * 7
    assert counts.spectral_cells == 8 * 11 * 3 * 7
    assert counts.calls == 1


def test_cache_dir_environment(monkeypatch, tmp_path):
    assert cost.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("ARRAYCNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cost.cache_dir() == tmp_path / "xdg" / "arraycnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cost.cache_dir() == tmp_path / "home" / ".cache" / "arraycnn"


# --------------------------------------------------------------------------- memory


def test_workspace_formula_im2col_columns():
    g = ac.conv_geometry((3, 4, 10, 12), (6, 2, 3, 5), groups=2, padding="valid")
    columns = g.groups * g.cg * g.kh * g.kw * g.n * g.ho * g.wo
    fwd = memory.workspace_bytes("im2col", g, itemsize=8)
    assert fwd == 8 * (columns + g.f * g.n * g.ho * g.wo) + memory.SMALL_ARRAYS_BYTES
    bwd = memory.workspace_bytes("im2col", g, itemsize=8, direction="backward")
    assert bwd >= 8 * 2 * columns  # columns and their gradient


WORKSPACE_CASES = [
    ((4, 8, 20, 20), (8, 8, 3, 3), {"padding": 1}),
    ((2, 4, 33, 31), (6, 2, 5, 5), {"padding": "same", "groups": 2, "stride": 2}),
    ((1, 2, 40, 40), (2, 2, 9, 9), {"dilation": 2}),
    ((8, 1, 28, 28), (16, 1, 5, 5), {}),
]


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kw"), WORKSPACE_CASES)
def test_workspace_prediction_bounds_the_measured_peak(name, x_shape, w_shape, kw, rng):
    """NumPy reports its allocations to tracemalloc: the traced peak of a call, minus its
    results, stays within the predicted workspace (scratch buffers dropped first)."""
    import tracemalloc

    from arraycnn.conv import workspace

    x, w = _data(rng, x_shape, w_shape, rank1=True)
    geom = _geom(x, w, **kw)
    gy = rng.standard_normal(geom.y_shape)
    xp = ac.resolve_backend("numpy")
    for direction in ("forward", "backward"):
        workspace.clear()
        tracemalloc.start()
        try:
            if direction == "forward":
                results = [dispatch.KERNELS[name].forward(x, w, geom, xp=xp)]
            else:
                results = list(dispatch.KERNELS[name].backward(gy, x, w, geom, xp=xp))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            workspace.clear()
        measured = peak - sum(r.nbytes for r in results)
        predicted = memory.workspace_bytes(name, geom, itemsize=8, direction=direction, rank=1)
        assert measured <= predicted, (direction, measured, predicted)


def test_big_kernel_never_picks_im2col():
    """63x63 kernel, 1024^2 float64 image: im2col would need ~31 GiB."""
    ac.conv.set_workspace_limit("8G")
    x = np.zeros((1, 1, 1024, 1024))
    w = np.ones((1, 1, 63, 63))
    info = dispatch.explain(x, w, padding="same")
    im2col = info["strategies"]["im2col"]
    assert im2col["workspace_bytes"] > 30 * 2**30
    assert not im2col["eligible"] and "exceeds the budget 8.00 GiB" in im2col["reason"]
    assert info["choice"] in ("fft", "separable", "naive")
    assert ac.choose_strategy(x, w, padding="same") == info["choice"]
    with pytest.raises(MemoryError, match=r"strategy='im2col' \(forward\) needs a predicted"):
        ac.choose_strategy(x, w, padding="same", strategy="im2col")


def test_budget_environment_and_setter(monkeypatch):
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "1.5K")
    assert memory.workspace_limit() == 1536
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "2GiB")
    assert memory.workspace_limit() == 2 * 2**30
    ac.conv.set_workspace_limit(12345)  # the setter overrides the environment
    assert memory.workspace_limit() == 12345
    ac.conv.set_workspace_limit(None)
    monkeypatch.setenv("ARRAYCNN_WORKSPACE_LIMIT", "lots")
    with pytest.raises(ValueError, match="ARRAYCNN_WORKSPACE_LIMIT must be a number of bytes"):
        memory.workspace_limit()
    with pytest.raises(ValueError, match="limit must be a positive number of bytes, got -5"):
        ac.conv.set_workspace_limit(-5)
    with pytest.raises(TypeError, match="limit must be a number of bytes, got bool"):
        ac.conv.set_workspace_limit(True)
    with pytest.raises(TypeError, match="limit must be a number of bytes, got list"):
        ac.conv.set_workspace_limit([1])


def test_default_budget_from_meminfo_and_fallback(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_cache", None)
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
        expected = int(memory.DEFAULT_FRACTION * kb * 1024)
        assert abs(memory.workspace_limit() - expected) < 0.1 * expected  # memory moves

    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(memory, "_meminfo_cache", None)
    monkeypatch.setattr(memory, "open", unreadable, raising=False)
    assert memory.workspace_limit() == int(memory.DEFAULT_FRACTION * memory.FALLBACK_BYTES)


def test_chunk_size_is_the_largest_that_fits():
    g = ac.conv_geometry((10, 2, 8, 8), (3, 2, 3, 3), padding=1)
    per = [
        memory.workspace_bytes("im2col", dataclasses.replace(g, n=n), itemsize=4) for n in (3, 4)
    ]
    assert memory.chunk_size("im2col", g, per[0], itemsize=4) == 3
    assert memory.chunk_size("im2col", g, per[1] - 1, itemsize=4) == 3
    assert memory.chunk_size("im2col", g, 10**12, itemsize=4) == 10
    one = memory.workspace_bytes("im2col", dataclasses.replace(g, n=1), itemsize=4)
    assert memory.chunk_size("im2col", g, one - 1, itemsize=4) == 0


@pytest.mark.parametrize("name", STRATEGIES)
def test_forced_strategy_runs_in_chunks_and_matches_oracle(name, xp, to_xp, rng, spy):
    x, w = _data(rng, (5, 2, 6, 6), (4, 1, 5, 5), rank1=True)
    kw = {"stride": (1, 2), "padding": ((2, 1), (0, 2)), "dilation": 1, "groups": 2}
    geom = _geom(x, w, **kw)
    gy = rng.standard_normal(geom.y_shape)
    rank = 1 if name == "separable" else 0

    def limit_for_two(direction):
        two = memory.workspace_bytes(
            name, dataclasses.replace(geom, n=2), itemsize=8, direction=direction, rank=rank
        )
        ac.conv.set_workspace_limit(two)  # chunks of 2, 2, 1

    for direction in ("forward", "backward"):
        limit_for_two(direction)
        plan = dispatch.plan_call(
            name, to_xp(w), geom, xp=xp, x=to_xp(x), gy=to_xp(gy), direction=direction
        )
        assert (plan.strategy, plan.chunk, plan.chunked) == (name, 2, True)
    limit_for_two("forward")
    spy.clear()
    y = ac.conv2d(to_xp(x), to_xp(w), strategy=name, **kw)
    assert spy == [(name, "forward")] * 3
    assert_close(y, oracle_forward(x, w, geom), xp=xp, scale=_scale(x, w, geom), rtol=1e-9)
    limit_for_two("backward")
    spy.clear()
    gx, gw, gb = ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), strategy=name, **kw)
    assert spy == [(name, "backward")] * 3
    ogx, ogw = oracle_backward(gy, x, w, geom)
    assert_close(gx, ogx, xp=xp, scale=np.abs(ogx).max() + 1, rtol=1e-9)
    assert_close(gw, ogw, xp=xp, scale=np.abs(ogw).max() + 1, rtol=1e-9)
    assert_close(gb, gy.sum(axis=(0, 2, 3)), xp=xp, rtol=1e-12, atol=1e-12)


def test_auto_with_tiny_budget_skips_or_chunks(xp, to_xp, rng, favour):
    favour("im2col")
    x, w = _data(rng, (4, 2, 7, 7), (3, 2, 3, 3))
    geom = _geom(x, w, padding=1)
    # budget below im2col's one-sample workspace but above naive's for one sample
    im2col_one = memory.workspace_bytes("im2col", dataclasses.replace(geom, n=1), itemsize=8)
    naive_one = memory.workspace_bytes("naive", dataclasses.replace(geom, n=1), itemsize=8)
    assert naive_one < im2col_one
    ac.conv.set_workspace_limit(im2col_one - 1)
    info = dispatch.explain(to_xp(x), to_xp(w), padding=1)
    assert not info["strategies"]["im2col"]["eligible"]
    assert info["choice"] != "im2col" and info["chunk"] < 4
    y = ac.conv2d(to_xp(x), to_xp(w), padding=1)
    assert_close(y, oracle_forward(x, w, geom), xp=xp, scale=_scale(x, w, geom), rtol=1e-9)
    # budget for 2 samples of im2col: auto keeps im2col, chunked
    ac.conv.set_workspace_limit(
        memory.workspace_bytes("im2col", dataclasses.replace(geom, n=2), itemsize=8)
    )
    plan = dispatch.plan_call("auto", to_xp(w), geom, xp=xp, x=to_xp(x))
    assert (plan.strategy, plan.chunk) == ("im2col", 2)
    assert "chunks of 2" in plan.reason


def test_repeated_auto_calls_follow_budget_and_calibration_changes(rng, favour):
    x, w = _data(rng, (4, 2, 7, 7), (3, 2, 3, 3))
    geom = _geom(x, w, padding=1)
    xp = ac.resolve_backend("numpy")
    favour("im2col")
    for _ in range(2):  # the second call reuses the first one's analysis
        plan = dispatch.plan_call("auto", w, geom, xp=xp, x=x)
        assert (plan.strategy, plan.chunk) == ("im2col", 4)
    # a smaller budget after the memoised call: chunked, as a fresh analysis says
    two = memory.workspace_bytes("im2col", dataclasses.replace(geom, n=2), itemsize=8)
    plan = dispatch.plan_call("auto", w, geom, xp=xp, x=x, budget=two)
    assert (plan.strategy, plan.chunk) == ("im2col", 2)
    favour("naive")  # another calibration: another choice for the same signature
    assert dispatch.plan_call("auto", w, geom, xp=xp, x=x).strategy == "naive"


def test_repeated_auto_calls_decide_separable_by_each_kernel(rng, favour):
    """The w-independent analysis is reused, but each call's kernel decides separable:
    a rank-1 kernel, then a full-rank and a NaN kernel of the same signature."""
    favour("separable")
    x, w = _data(rng, (1, 1, 16, 16), (1, 1, 5, 5), rank1=True)
    xp = ac.resolve_backend("numpy")
    geom = _geom(x, w, padding=2)
    for _ in range(2):
        assert dispatch.plan_call("auto", w, geom, xp=xp, x=x).strategy == "separable"
    full = rng.standard_normal(w.shape)
    plan = dispatch.plan_call("auto", full, geom, xp=xp, x=x)
    assert plan.strategy != "separable"
    nan = w.copy()
    nan[0, 0, 2, 2] = np.nan
    assert dispatch.plan_call("auto", nan, geom, xp=xp, x=x).strategy != "separable"
    assert dispatch.plan_call("auto", w, geom, xp=xp, x=x).strategy == "separable"
    info = dispatch.explain(full, full, padding=2)  # a 5x5 image, rank-5 kernel
    assert "too high" in info["strategies"]["separable"]["reason"]


def test_repeated_auto_calls_see_new_nonfinite_values(rng, favour):
    favour("fft")
    x, w = _data(rng, (1, 1, 9, 9), (1, 1, 3, 3))
    xp = ac.resolve_backend("numpy")
    geom = _geom(x, w)
    assert dispatch.plan_call("auto", w, geom, xp=xp, x=x).strategy == "fft"
    x[0, 0, 4, 4] = np.nan  # same signature, now non-finite: fft must not run
    plan = dispatch.plan_call("auto", w, geom, xp=xp, x=x)
    assert plan.strategy != "fft" and "non-finite" in plan.reason


def test_nothing_fits_raises():
    ac.conv.set_workspace_limit(16)
    x, w = np.ones((2, 1, 8, 8)), np.ones((1, 1, 3, 3))
    with pytest.raises(MemoryError, match="no convolution strategy fits this call"):
        ac.conv2d(x, w)
    with pytest.raises(ValueError, match=r"needs a predicted workspace of \d+ bytes"):
        ac.conv2d(x, w, strategy="naive")
    try:
        ac.conv2d(x, w, strategy="fft")
    except ac.conv.WorkspaceError as exc:
        assert "budget of 16 bytes" in str(exc)
        assert isinstance(exc, MemoryError) and isinstance(exc, ValueError)


# --------------------------------------------------------------------------- exactness


def test_require_exact_excludes_fft_and_separable(favour, rng):
    xp = ac.resolve_backend("numpy")
    x, w = _data(rng, (1, 1, 12, 12), (1, 1, 7, 7), rank1=True)
    geom = _geom(x, w)
    for name in ("fft", "separable"):
        favour(name)
        assert dispatch.select_strategy("auto", w, geom, xp=xp) == name
        exact = dispatch.select_strategy("auto", w, geom, xp=xp, require_exact=True)
        assert exact in ("naive", "im2col")
        with pytest.raises(ValueError, match=f"strategy='{name}' is not exact"):
            dispatch.select_strategy(name, w, geom, xp=xp, require_exact=True)
    assert ac.capabilities.exact_strategies() == ("naive", "im2col")


def test_select_strategy_v1_signature():
    xp = ac.resolve_backend("numpy")
    w = np.ones((2, 1, 3, 3))
    geom = ac.conv_geometry((1, 1, 8, 8), w.shape)
    assert dispatch.select_strategy("auto", w, geom, xp=xp) in STRATEGIES
    assert dispatch.select_strategy("im2col", w, geom, xp=xp) == "im2col"
    assert ac.available_strategies() == list(STRATEGIES)


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
def test_nonfinite_input_stays_in_its_receptive_fields(name, kw, xp, to_xp, rng, favour):
    favour("fft")  # auto must still avoid FFT
    x = _poisoned_input(rng, (2, 2, 8, 8))
    w = rng.standard_normal((2, 2 // kw.get("groups", 1), 5, 5))
    w = w[..., :1] * w[..., :1, :]  # rank 1 so that separable is eligible
    geom = _geom(x, w, **kw)
    y = to_numpy(ac.conv2d(to_xp(x), to_xp(w), strategy=name, **kw))
    mask = nonfinite_forward_mask(x, w, geom)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(~np.isfinite(y), mask)
    finite = np.where(np.isfinite(x), x, 0.0)
    expected = oracle_forward(finite, w, geom)
    scale = _scale(finite, w, geom)
    assert_close(np.where(mask, 0.0, y), np.where(mask, 0.0, expected), scale=scale, rtol=1e-9)
    nan_positions = nonfinite_forward_mask(np.where(np.isnan(x), np.nan, 0.0), w, geom)
    assert np.isnan(y[nan_positions]).all()  # NaN stays NaN


@pytest.mark.parametrize("name", ["naive", "im2col", "separable", "auto"])
def test_nonfinite_output_gradient_stays_local(name, xp, to_xp, rng, favour):
    favour("fft")
    kw = {"stride": 2, "padding": 1}
    x = rng.standard_normal((2, 2, 9, 9))
    w = rng.standard_normal((2, 2, 5, 5))
    w = w[..., :1] * w[..., :1, :]
    geom = _geom(x, w, **kw)
    gy = rng.standard_normal(geom.y_shape)
    gy[0, 1, 1, 1] = np.nan  # interior outputs of filter 1: they meet no zero padding
    gy[1, 1, 2, 1] = np.inf
    gx, gw, _ = (
        to_numpy(a) for a in ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), strategy=name, **kw)
    )
    mask = nonfinite_input_grad_mask(gy, geom)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(~np.isfinite(gx), mask)
    ogx, ogw = oracle_backward(np.where(np.isfinite(gy), gy, 0.0), x, w, geom)
    assert_close(np.where(mask, 0.0, gx), np.where(mask, 0.0, ogx), scale=np.abs(ogx).max() + 1)
    # filter 1's gw meets the non-finite gy at every tap (times nonzero x); filter 0's is clean
    assert not np.isfinite(gw[1]).any()
    assert_close(gw[0], ogw[0], scale=np.abs(ogw).max() + 1)


def test_forced_fft_rejects_nonfinite_input(xp, to_xp, rng):
    x = _poisoned_input(rng, (2, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match="strategy='fft' cannot handle non-finite input: x"):
        ac.conv2d(to_xp(x), to_xp(w), strategy="fft")
    clean = rng.standard_normal((2, 2, 8, 8))
    gy = rng.standard_normal((2, 3, 6, 6))
    gy[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite input: gy contains NaN or Inf"):
        ac.conv2d_backward(to_xp(gy), to_xp(clean), to_xp(w), strategy="fft")


def test_nonfinite_weights(to_xp, xp, rng, favour):
    favour("separable")
    x = rng.standard_normal((1, 1, 9, 9))
    w = np.ones((2, 1, 5, 5))
    w[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="strategy='separable' cannot handle non-finite input: w"):
        ac.conv2d(to_xp(x), to_xp(w), strategy="separable")
    info = dispatch.explain(to_xp(x), to_xp(w))
    assert info["strategies"]["separable"]["reason"] == "w holds NaN/Inf (no SVD)"
    assert info["strategies"]["fft"]["reason"] == "non-finite input (w)"
    y = to_numpy(ac.conv2d(to_xp(x), to_xp(w)))
    assert np.isfinite(y[:, 0]).all() and np.isnan(y[:, 1]).all()


def test_auto_checks_finiteness_only_when_fft_would_win(monkeypatch, favour, rng):
    favour("naive")
    checked = []
    original = dispatch._Inputs.finite

    def counting(self, name):
        checked.append(name)
        return original(self, name)

    monkeypatch.setattr(dispatch._Inputs, "finite", counting)
    x, w = _data(rng, (1, 1, 8, 8), (1, 1, 3, 3))
    ac.conv2d(x, w)
    assert checked == []  # naive wins: no host sync for the check
    favour("fft")
    ac.conv2d(x, w)
    assert checked == ["x", "w"]


# --------------------------------------------------------------------------- explain


def test_explain_reports_everything(rng):
    x, w = _data(rng, (2, 3, 10, 10), (4, 3, 3, 3))
    info = dispatch.explain(x, w, padding=1, direction="backward")
    assert info["backend"] == "numpy" and info["dtype"] == "float64"
    assert info["direction"] == "backward" and info["geometry"]["ho"] == 10
    assert info["budget_bytes"] == memory.workspace_limit()
    assert info["choice"] in STRATEGIES and info["why"]
    for name, row in info["strategies"].items():
        assert set(row) == {"eligible", "reason", "predicted_seconds", "workspace_bytes", "chunk"}
        if row["eligible"]:
            assert row["predicted_seconds"] > 0 and row["workspace_bytes"] > 0, name
    forced = dispatch.explain(x, w, padding=1, strategy="naive")
    assert (forced["choice"], forced["why"]) == ("naive", "forced")
    ac.conv.set_workspace_limit(8)
    broke = dispatch.explain(x, w, padding=1, strategy="im2col")
    assert broke["choice"] is None and "budget" in broke["why"]
