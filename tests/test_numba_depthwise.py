"""naive's compiled depthwise loops: NumPy arrays with numba installed
(:mod:`arraycnn.conv._numba_depthwise`, chosen by :func:`arraycnn.conv.naive.uses_compiled`).

Oracles: the explicit loops of :func:`oracles.correlate_loops` and
:func:`oracles.correlate_loops_backward` (float64, tiny inputs), errors held to the local
error model (:func:`oracles.error_scales`) with the per-dtype tolerances of
:mod:`arraycnn.testing`; the non-finite masks of :func:`oracles.nonfinite_outputs` and
:func:`oracles.nonfinite_input_grads`. Which path runs is recorded, so a test fails if the
compiled loops are not the ones that ran. Skipped where numba is not installed (the
README's install; CI installs the ``numba`` extra).
"""

from __future__ import annotations

import sys

import numpy as np
import oracles
import pytest
from geometries import fitting_cases
from hypothesis import given
from spying import record_calls

import arraycnn as ac
from arraycnn.conv import naive
from arraycnn.conv.strategy import Call
from arraycnn.geometry import conv_geometry
from arraycnn.testing import assert_close

pytest.importorskip("numba")

#: The compiled kernels' wrappers in naive, and the array operations' depthwise kernels.
LABELS = {
    "_compiled_forward": "forward",
    "_compiled_input_grad": "input",
    "_compiled_weight_grad": "weight",
    "_depthwise_forward": "array forward",
    "_depthwise_input_grad": "array input",
    "_depthwise_weight_grad": "array weight",
}


@pytest.fixture
def paths(monkeypatch):
    """Records each depthwise kernel that runs (compiled: 'forward', 'input', 'weight'; the
    array operations: 'array ...')."""
    return record_calls(monkeypatch, naive, LABELS)


def _against_the_loops(rng, x_shape, w_shape, dtype="float64", **geometry) -> None:
    """naive on NumPy, forward and backward, against the loops (float64)."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (x_shape, w_shape, g.y_shape))
    x, w, gy = (a.astype(dtype) for a in (x, w, gy))
    y = ac.conv2d(x, w, strategy="naive", **geometry)
    gx, gw, _ = ac.conv2d_backward(gy, x, w, strategy="naive", **geometry)
    sy, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    expected = oracles.correlate_loops(x, w, **geometry)
    dt = getattr(np, dtype)
    assert_close(y, expected, scale=sy, dtype=dt, err_msg="y")
    assert_close(gx, ex_gx, scale=sgx, dtype=dt, err_msg="gx")
    assert_close(gw, ex_gw, scale=sgw, dtype=dt, err_msg="gw")


GEOMETRIES = [
    # (x shape, w shape, geometry): one input channel per group, Fg <= 4
    ((2, 3, 7, 6), (3, 1, 3, 3), {"padding": 1, "groups": 3}),
    ((2, 4, 6, 7), (8, 1, 3, 3), {"padding": 1, "groups": 4}),  # channel multiplier 2
    ((3, 1, 6, 5), (4, 1, 3, 3), {"padding": 1}),  # one channel, multiplier 4
    ((2, 3, 8, 7), (3, 1, 3, 3), {"padding": 1, "stride": 2, "groups": 3}),  # gx upsampled
    ((1, 2, 10, 9), (2, 1, 4, 5), {"padding": 1, "stride": 3, "groups": 2}),
    ((2, 2, 9, 7), (4, 1, 3, 3), {"stride": (2, 3), "padding": ((0, 2), (1, 0)), "groups": 2}),
    # stride 2: the image's column phases in pairs, an even or odd left padding, a last
    # element without its pair; a 1-row kernel leaves a row phase without taps
    ((1, 2, 7, 9), (2, 1, 3, 3), {"stride": 2, "padding": ((1, 0), (2, 0)), "groups": 2}),
    ((1, 2, 8, 8), (4, 1, 1, 3), {"stride": 2, "padding": ((0, 1), (1, 1)), "groups": 2}),
    # column dilation: the row-by-row loops; row dilation alone: the flattened planes
    ((1, 2, 9, 9), (4, 1, 3, 2), {"padding": 2, "stride": (1, 2), "dilation": 2, "groups": 2}),
    ((1, 3, 9, 8), (6, 1, 3, 2), {"padding": ((2, 0), (1, 3)), "dilation": (2, 1), "groups": 3}),
    ((2, 2, 8, 9), (2, 1, 2, 3), {"padding": 0, "dilation": 2, "groups": 2}),
    ((1, 2, 4, 4), (4, 1, 2, 2), {"padding": 3, "groups": 2}),  # padding beyond the kernel
    ((2, 3, 11, 10), (3, 1, 5, 5), {"padding": "same", "groups": 3}),  # 2 x 2 blocks of taps
    ((1, 2, 12, 13), (2, 1, 7, 4), {"padding": 3, "groups": 2}),  # blocks 3 and 1 wide
    ((1, 2, 5, 5), (2, 1, 3, 3), {"padding": "full", "groups": 2}),
    ((1, 3, 5, 5), (3, 1, 1, 1), {"groups": 3}),  # 1 x 1
    ((1, 1, 1, 9), (1, 1, 1, 3), {}),  # one row
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), GEOMETRIES)
def test_compiled_loops_match_the_loops(rng, paths, x_shape, w_shape, geometry, dtype):
    g = conv_geometry(x_shape, w_shape, **geometry)
    assert naive.uses_compiled(g, "numpy", dtype)
    _against_the_loops(rng, x_shape, w_shape, dtype, **geometry)
    assert paths == ["forward", "input", "weight"]


@given(fitting_cases(max_size=9, max_kernel=5).filter(lambda c: c.w_shape[1] == 1))
def test_compiled_loops_match_the_loops_on_any_depthwise_geometry(case):
    assert naive.uses_compiled(conv_geometry(case.x_shape, case.w_shape, **case.kwargs),
                               "numpy", "float64")  # fmt: skip
    _against_the_loops(np.random.default_rng(case.seed), case.x_shape, case.w_shape, **case.kwargs)


@pytest.mark.parametrize("grads", [("x",), ("w",), ("x", "b")])
def test_compiled_backward_computes_only_what_is_needed(rng, paths, grads):
    geometry = {"padding": 1, "stride": 2, "groups": 3}
    g = conv_geometry((2, 3, 7, 7), (6, 1, 3, 3), **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (g.x_shape, g.w_shape, g.y_shape))
    gx, gw, _ = ac.conv2d_backward(gy, x, w, strategy="naive", needs=grads, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    _, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    assert (gx is None) == ("x" not in grads) and (gw is None) == ("w" not in grads)
    if gx is not None:
        assert_close(gx, ex_gx, scale=sgx)
    if gw is not None:
        assert_close(gw, ex_gw, scale=sgw)
    assert paths == [{"x": "input", "w": "weight"}[n] for n in ("x", "w") if n in grads]


NONFINITE_GEOMETRIES = [
    {"padding": 1, "groups": 2},  # flattened planes
    {"padding": 2, "groups": 2, "dilation": (1, 2)},  # row by row
    {"padding": 1, "stride": 2, "groups": 2},
]


@pytest.mark.parametrize("kw", NONFINITE_GEOMETRIES)
@pytest.mark.parametrize("kernel", [3, 5])
def test_nonfinite_values_stay_in_their_fields(rng, paths, kw, kernel):
    """A 5 x 5 kernel has blocks of taps past its edge: they must read zeros, never the
    input (0 * inf is NaN). NaN and Inf reach exactly the outputs (and input gradients)
    whose field holds them."""
    x = rng.standard_normal((2, 2, 9, 10))
    x[0, 0, 2, 3], x[1, 1, 5, 0], x[1, 0, 0, 9] = np.nan, np.inf, -np.inf
    w = rng.standard_normal((4, 1, kernel, kernel))
    y = ac.conv2d(x, w, strategy="naive", **kw)
    mask = oracles.nonfinite_outputs(x, w, **kw)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(~np.isfinite(y), mask)
    clean = oracles.correlate_loops(np.where(np.isfinite(x), x, 0.0), w, **kw)
    scale = oracles.error_scales(np.where(np.isfinite(x), x, 0.0), w, **kw)[0]
    assert_close(np.where(mask, 0.0, y), np.where(mask, 0.0, clean), scale=scale)

    gy = rng.standard_normal(y.shape)
    gy[0, 1, 1, 1], gy[1, 3, -1, 0] = np.nan, np.inf
    gx, _, _ = ac.conv2d_backward(gy, np.nan_to_num(x), w, strategy="naive", needs=("x",), **kw)
    gx_mask = oracles.nonfinite_input_grads(gy, x.shape, w.shape, **kw)
    assert gx_mask.any() and not gx_mask.all()
    np.testing.assert_array_equal(~np.isfinite(gx), gx_mask)
    assert paths == ["forward", "input"]


@pytest.mark.parametrize("kw", NONFINITE_GEOMETRIES)
def test_weight_gradient_meets_an_infinity_only_through_its_taps(rng, paths, kw):
    """An Inf in the last column is read by the right taps only: the others' weight
    gradients stay finite (the dot products over padded-width rows meet it through gy's
    zero padding, 0 * inf = NaN, and must be redone)."""
    x = rng.standard_normal((2, 2, 8, 9))
    x[1, 0, 4, -1] = np.inf
    w = rng.standard_normal((4, 1, 3, 3))
    gy = rng.standard_normal(conv_geometry(x.shape, w.shape, **kw).y_shape)
    _, gw, _ = ac.conv2d_backward(gy, x, w, strategy="naive", needs=("w",), **kw)
    with np.errstate(invalid="ignore"):
        _, expected, _ = oracles.correlate_loops_backward(gy, x, w, **kw)
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()
    np.testing.assert_array_equal(np.isfinite(gw), finite)
    clean = np.where(np.isfinite(x), x, 0.0)
    _, _, scale, _ = oracles.error_scales(clean, w, gy=gy, **kw)
    assert_close(np.where(finite, gw, 0.0), np.where(finite, expected, 0.0), scale=scale)
    assert paths == ["weight"]


def test_non_contiguous_and_byte_swapped_inputs(rng, paths):
    geometry = {"padding": 1, "groups": 3}
    big = rng.standard_normal((2, 3, 14, 7))
    x = big[:, :, ::2, :]  # (2, 3, 7, 7), every other row
    w = rng.standard_normal((3, 1, 3, 3)).astype(">f8")
    y = ac.conv2d(x, w.astype("<f8"), strategy="naive", **geometry)
    y_swapped = ac.conv2d(x.astype(">f8"), w, strategy="naive", **geometry)
    expected = oracles.correlate_loops(x, w, **geometry)
    scale = oracles.error_scales(x, w, **geometry)[0]
    assert_close(y, expected, scale=scale)
    assert_close(y_swapped.astype("<f8"), expected, scale=scale)
    assert paths == ["forward", "forward"]


@pytest.mark.parametrize(
    ("backend", "dtype", "w_shape", "stride"),
    [
        ("torch", "float32", (8, 1, 3, 3), 1),  # another namespace
        ("numpy", "float16", (8, 1, 3, 3), 1),  # another dtype
        ("numpy", "complex64", (8, 1, 3, 3), 1),
        ("numpy", "float32", (8, 2, 3, 3), 1),  # two channels per group
        ("numpy", "float32", (40, 1, 3, 3), 2),  # multiplier 5
    ],
)
def test_other_calls_keep_the_array_operations(backend, dtype, w_shape, stride):
    g = conv_geometry((2, 8 * w_shape[1], 9, 9), w_shape, stride=stride, padding=1, groups=8)
    assert not naive.uses_compiled(g, backend, dtype)
    plan = naive.plan(Call(g, "forward", backend, dtype, np.dtype(dtype).itemsize))
    assert not plan.compiled


def test_half_precision_takes_the_array_operations(rng, paths):
    x = rng.standard_normal((2, 3, 6, 6)).astype("float16")
    w = rng.standard_normal((3, 1, 3, 3)).astype("float16")
    y = ac.conv2d(x, w, strategy="naive", padding=1, groups=3)
    expected = oracles.correlate_loops(x, w, padding=1, groups=3)
    scale = oracles.error_scales(x, w, padding=1, groups=3)[0]
    assert_close(y, expected, scale=scale, dtype=np.float16)
    assert paths == ["array forward"]


def test_switched_off_by_the_environment(rng, paths, array_operations):
    _against_the_loops(rng, (2, 3, 7, 6), (3, 1, 3, 3), padding=1, groups=3)
    assert paths == ["array forward", "array input", "array weight"]


def test_a_numba_that_does_not_load_is_reported_once(rng, paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "arraycnn.conv._numba_depthwise", None)  # import fails
    monkeypatch.delattr("arraycnn.conv._numba_depthwise", raising=False)
    ac.clear_caches()
    with pytest.warns(RuntimeWarning, match="numba is installed but does not load"):
        assert naive.compiled_kernels() is None
    _against_the_loops(rng, (2, 3, 7, 6), (3, 1, 3, 3), padding=1, groups=3)
    assert paths == ["array forward", "array input", "array weight"]


def test_compiled_plans_take_the_whole_batch_in_a_few_planes():
    def plan(n, direction, grads="xw"):
        g = conv_geometry((n, 64, 56, 56), (64, 1, 3, 3), padding=1, groups=64)
        return naive.plan(Call(g, direction, "numpy", "float32", 4, grads=grads))

    for direction in ("forward", "backward"):
        small, big = plan(1, direction), plan(64, direction)
        assert small.compiled and big.compiled and big.chunk == 64
        assert naive.workspace(small) == naive.workspace(big) < 64 * 56 * 56 * 4
        assert naive.counts(big).gemm_flops == pytest.approx(64 * naive.counts(small).gemm_flops)
    x_only, w_only, both = (naive.counts(plan(8, "backward", gr)) for gr in ("x", "w", "xw"))
    assert x_only.gemm_flops + w_only.gemm_flops == pytest.approx(both.gemm_flops)
    assert 0 < x_only.gemm_flops and 0 < w_only.gemm_flops
