"""im2col: the input gradient as a transposed correlation, and the batch run in chunks.

Oracles: the explicit loops of :func:`oracles.correlate_loops` and
:func:`oracles.correlate_loops_backward` (float64, tiny inputs), errors held to the local
error model (:func:`oracles.error_scales`) with the per-dtype tolerances of
:mod:`arraycnn.testing`. Which path runs is checked by recording it, so a test fails if
the path it means to cover is not the one taken.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import oracles
import pytest
from spying import record_calls

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import chunking, cost, dispatch, im2col, naive
from arraycnn.conv.strategy import Call
from arraycnn.geometry import conv_geometry, row_band
from arraycnn.testing import assert_close

NUMPY = ac.resolve_backend("numpy")


@pytest.fixture
def paths(monkeypatch):
    """Records the path of every im2col input gradient computed: 'transposed' (the only
    path that builds the transposed kernel), 'rows' (stride-1 col2im over padded-width
    rows) or 'bands' (naive's col2im by tap bands)."""
    taken = record_calls(monkeypatch, im2col, {"transposed_kernel": "transposed"})
    labels = {"_input_grad_rows": "rows", "_input_grad_bands": "bands"}
    return record_calls(monkeypatch, naive, labels, taken)


def _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry):
    """im2col backward on the backend against the loops; returns nothing, asserts."""
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    g = conv_geometry(x_shape, w_shape, **geometry)
    gy = rng.standard_normal(g.y_shape)
    gx, gw = ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), strategy="im2col", **geometry)[:2]
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    _, sgx, sgw = oracles.error_scales(x, w, gy=gy, **geometry)[:3]
    for name, got, expected, scale in (("gx", gx, ex_gx, sgx), ("gw", gw, ex_gw, sgw)):
        assert_close(got, expected, scale=scale, xp=xp, device=device_of(to_xp(x)), err_msg=name)


def _budget_for(name: str, w, geom, samples: int, *, xp, direction: str = "forward") -> int:
    """The workspace budget under which ``name`` runs ``geom`` in chunks of ``samples``."""
    call = dispatch.describe(w, geom, xp=xp, direction=direction).with_n(samples)
    cal = ac.conv.cost.shipped_calibrations()["numpy"]
    return chunking.price(name, call, rank=None, cal=cal, budget=2**62, reason="").bytes


TRANSPOSED_GEOMETRIES = [
    # (x shape, w shape, geometry): stride 1, Fg <= Cg
    ((2, 3, 6, 5), (3, 3, 3, 3), {"padding": 1}),
    ((2, 4, 7, 6), (2, 4, 3, 2), {"padding": 0}),
    ((1, 4, 6, 7), (4, 2, 2, 3), {"padding": ((0, 1), (2, 1)), "groups": 2}),
    ((2, 3, 9, 8), (2, 3, 3, 3), {"padding": 2, "dilation": 2}),
    ((2, 2, 5, 5), (1, 2, 3, 3), {"padding": "full"}),
    ((1, 3, 6, 6), (3, 3, 4, 4), {"padding": "same"}),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), TRANSPOSED_GEOMETRIES)
def test_input_grad_as_transposed_correlation(xp, to_xp, rng, paths, x_shape, w_shape, geometry):
    _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry)
    assert paths == ["transposed"]


COL2IM_GEOMETRIES = [
    # (x shape, w shape, geometry, path)
    ((2, 2, 7, 7), (4, 2, 3, 3), {"padding": 1}, "rows"),  # Fg > Cg
    ((1, 2, 4, 4), (2, 2, 2, 2), {"padding": 3}, "rows"),  # padding beyond the kernel
    ((2, 2, 9, 8), (6, 2, 3, 2), {"padding": ((2, 0), (1, 3)), "dilation": (2, 3)}, "rows"),
    ((1, 4, 6, 7), (6, 2, 2, 3), {"padding": 1, "groups": 2}, "rows"),
    ((2, 1, 5, 6), (3, 1, 3, 3), {"padding": "same"}, "rows"),
    ((2, 3, 8, 7), (2, 3, 3, 3), {"padding": 1, "stride": 2}, "bands"),  # stride
    ((1, 2, 9, 9), (4, 2, 3, 2), {"padding": 2, "stride": (1, 2), "dilation": 2}, "bands"),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "path"), COL2IM_GEOMETRIES)
def test_input_grad_by_col2im_where_the_transposed_form_does_not_apply(
    xp, to_xp, rng, paths, monkeypatch, x_shape, w_shape, geometry, path
):
    """Rows at every width here (the tiny inputs are narrower than ROWS_MIN_WIDTH)."""
    monkeypatch.setattr(naive, "ROWS_MIN_WIDTH", 1)
    _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry)
    assert paths == [path]


def test_narrow_outputs_use_bands_and_wide_ones_rows():
    narrow = conv_geometry((2, 2, 14, 14), (4, 2, 3, 3), padding=1)
    wide = conv_geometry((1, 2, 8, 40), (4, 2, 3, 3), padding=1)
    strided = conv_geometry((1, 2, 8, 80), (4, 2, 3, 3), padding=1, stride=2)
    assert not naive.uses_rows(narrow) and naive.uses_rows(wide)
    assert not naive.uses_rows(strided)


WEIGHT_GRAD_ORIENTATIONS = [
    # (x shape, w shape, geometry, rows first): Cg·kh·kw against Fg
    ((2, 3, 6, 5), (2, 3, 3, 3), {"padding": 1}, True),  # 27 > 2
    ((2, 4, 5, 6), (6, 2, 2, 1), {"groups": 2, "stride": 2}, True),  # 4 > 3
    ((2, 1, 6, 6), (5, 1, 2, 2), {"padding": 1}, False),  # 4 < 5
    ((1, 2, 5, 5), (8, 1, 1, 3), {"groups": 2, "dilation": 2}, False),  # 3 < 4
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "first"), WEIGHT_GRAD_ORIENTATIONS)
def test_weight_grad_in_either_orientation(xp, to_xp, rng, x_shape, w_shape, geometry, first):
    """The weight gradient's product puts the longer side first; both give the loops'."""
    assert im2col.rows_first(conv_geometry(x_shape, w_shape, **geometry)) is first
    _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry)


def test_wide_output_takes_rows_by_default(xp, to_xp, rng, paths):
    _backward_case(xp, to_xp, rng, (1, 2, 4, 33), (3, 2, 2, 2), padding=((0, 1), (1, 0)))
    assert paths == ["rows"]


SHIFTED_GEOMETRIES = [
    # (x shape, w shape, geometry): stride 1 along the rows
    ((2, 3, 6, 5), (4, 3, 3, 3), {"padding": 1}),
    ((2, 4, 7, 6), (2, 4, 3, 2), {"padding": 0}),
    ((1, 4, 6, 7), (4, 2, 2, 3), {"padding": ((0, 1), (2, 1)), "groups": 2}),
    ((2, 3, 9, 8), (2, 3, 3, 3), {"padding": 2, "dilation": 2}),
    ((2, 2, 5, 5), (3, 2, 3, 3), {"padding": "full"}),
    ((1, 2, 9, 9), (4, 2, 3, 2), {"padding": 2, "stride": (1, 2), "dilation": (2, 1)}),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), SHIFTED_GEOMETRIES)
def test_correlations_on_shifted_rows_match_the_loops(xp, to_xp, rng, x_shape, w_shape, geometry):
    """A correlation on column-shifted rows (kh GEMMs with K = Cg kw), and the input
    gradient's transposed correlation on them, whatever the cost model would pick, against
    the loops."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (x_shape, w_shape, g.y_shape))
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    grad = im2col.transposed_geometry(g)
    bands = _im2col_plan(g, "forward", 8).bands
    y = im2col._correlate(tx, tw, g, bands, shifted=True, xp=xp)
    backward = dataclasses.replace(
        _im2col_plan(g, "backward", 8), grad_geom=grad, grad_shifted=True
    )
    gx, gw = im2col.backward(backward, tgy, tx, tw, xp=xp)
    sy, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    device = device_of(tx)
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=sy, xp=xp, device=device)
    assert_close(gx, ex_gx, scale=sgx, xp=xp, device=device, err_msg="gx")
    assert_close(gw, ex_gw, scale=sgw, xp=xp, device=device, err_msg="gw")


def test_transposed_geometry_gives_the_input_shape():
    """The transposed correlation's output is (N, C, H, W) for every stride-1 geometry
    whose padding stays within the kernel's extent; None otherwise."""
    for h, k, d, lo, hi in itertools.product((3, 6), (1, 2, 3), (1, 2), range(4), range(4)):
        if not oracles.fits((1, 2, h, h), (2, 2, k, k), padding=((lo, hi), (hi, lo)), dilation=d):
            continue
        g = conv_geometry((1, 2, h, h), (2, 2, k, k), padding=((lo, hi), (hi, lo)), dilation=d)
        t = im2col.transposed_geometry(g)
        if max(lo, hi) > d * (k - 1):
            assert t is None
        else:
            assert t is not None and t.y_shape == g.x_shape, (h, k, d, lo, hi)
    strided = conv_geometry((1, 2, 6, 6), (2, 2, 3, 3), stride=2, padding=1)
    assert im2col.transposed_geometry(strided) is None


CHUNKED_GEOMETRIES = [
    ((5, 2, 6, 5), (3, 2, 3, 3), {"padding": 1}),  # col2im input gradient (Fg > Cg)
    ((5, 3, 6, 6), (3, 3, 3, 3), {"padding": 1}),  # transposed input gradient
    ((7, 4, 7, 6), (4, 2, 2, 3), {"stride": (2, 1), "groups": 2}),
]


@pytest.mark.parametrize("name", ["im2col", "naive"])
@pytest.mark.parametrize("samples", [1, 2, 3])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), CHUNKED_GEOMETRIES)
def test_chunked_batch_forward_and_backward(
    xp, to_xp, rng, name, samples, x_shape, w_shape, geometry
):
    """The dispatcher's chunks of 1, 2, 3 samples (remainders included) against the loops:
    the outputs and input gradients concatenated, the weight gradients summed."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (x_shape, w_shape, g.y_shape))
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    with ac.config(workspace_limit=_budget_for(name, tw, g, samples, xp=xp)):
        assert dispatch.plan(name, tw, g, xp=xp).chunk == samples
        y = ac.conv2d(tx, tw, strategy=name, **geometry)
    limit = _budget_for(name, tw, g, samples, xp=xp, direction="backward")
    with ac.config(workspace_limit=limit):
        assert dispatch.plan(name, tw, g, xp=xp, direction="backward").chunk == samples
        gx, gw, _ = ac.conv2d_backward(tgy, tx, tw, strategy=name, **geometry)
    sy, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=sy, xp=xp)
    assert_close(gx, ex_gx, scale=sgx, xp=xp)
    assert_close(gw, ex_gw, scale=sgw, xp=xp)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_forward_keeps_dtype_and_device(xp, to_xp, rng, dtype):
    x = rng.standard_normal((3, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((2, 2, 3, 3)).astype(dtype)
    g = conv_geometry(x.shape, w.shape, padding=1)
    with ac.config(workspace_limit=_budget_for("im2col", to_xp(w), g, 1, xp=xp)):
        y = ac.conv2d(to_xp(x), to_xp(w), padding=1, strategy="im2col")
    assert_close(
        y,
        oracles.correlate_loops(x, w, padding=1),
        scale=oracles.error_scales(x, w, padding=1)[0],
        xp=xp,
        dtype=getattr(xp, dtype),
        device=device_of(to_xp(x)),
    )


def test_chunk_sizes():
    big = conv_geometry((32, 64, 56, 56), (64, 64, 3, 3), padding=1)
    per_sample = 64 * 9 * 56 * 56
    assert im2col.samples_per_chunk(big) == max(1, im2col.COLUMN_CHUNK_ELEMENTS // per_sample)
    assert im2col.samples_per_chunk(big, cached=False) == 32  # a GPU runs the batch whole
    small = conv_geometry((64, 1, 28, 28), (32, 1, 3, 3), padding=1)
    assert im2col.samples_per_chunk(small) == 64  # its columns fit in cache
    assert naive.samples_per_chunk(big) == max(1, (1 << 21) // ((64 + 64) * 56 * 56))
    assert naive.samples_per_chunk(big, cached=False) == 32


def test_backward_chunks_fit_the_input_gradients_columns():
    """The input gradient's transposed correlation unfolds gy (Fg·kh·kw·H·W per sample);
    with more filters than channels its columns are the larger, and set the chunk."""
    g = conv_geometry((64, 32, 14, 14), (64, 32, 3, 3), padding=1)
    assert im2col.samples_per_chunk(g) == 64  # the input's columns fit whole
    grad_per_sample = 64 * 9 * 14 * 14
    expected = im2col.COLUMN_CHUNK_ELEMENTS // grad_per_sample
    assert 1 < expected < 64
    for grads, chunk in (("xw", expected), ("x", expected), ("w", 64)):
        call = Call(g, "backward", "numpy", "float32", 4, grads=grads)
        p = im2col.plan(call)
        assert p.chunk == chunk, grads
        assert (p.grad_geom is not None) == ("x" in grads)
    assert im2col.plan(Call(g, "forward", "numpy", "float32", 4)).chunk == 64
    on_gpu = Call(g, "backward", "cupy", "float32", 4, True, grads="xw")
    assert im2col.plan(on_gpu).chunk == 64  # a GPU runs the batch whole


@pytest.mark.parametrize("name", ["im2col", "naive"])
def test_the_preferred_chunk_is_planned_and_run(name, monkeypatch, rng):
    """Where a CPU kernel prefers cache-sized chunks, the dispatcher's plan runs them (the
    budget allowing the whole batch), forward and backward, each chunk once."""
    x_shape, w_shape = ((40, 16, 32, 32), (8, 16, 3, 3))
    if name == "naive":
        x_shape, w_shape = ((40, 32, 32, 32), (96, 32, 3, 3))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    g = conv_geometry(x.shape, w.shape, padding=1)
    module = {"im2col": im2col, "naive": naive}[name]
    chunk = module.samples_per_chunk(g)
    assert 1 < chunk < g.n and g.n % chunk  # chunks with a remainder
    runs = []
    s = dispatch.STRATEGIES[name]

    def forward(p, *args, **kwargs):
        runs.append(p.geom.n)
        return s.forward(p, *args, **kwargs)

    def backward(p, *args, **kwargs):
        runs.append(p.geom.n)
        return s.backward(p, *args, **kwargs)

    monkeypatch.setitem(
        dispatch.STRATEGIES, name, dataclasses.replace(s, forward=forward, backward=backward)
    )
    with ac.config(workspace_limit="8G"):
        p = dispatch.plan(name, w, g, xp=NUMPY, x=x)
        assert (p.chunk, p.chunked) == (chunk, True) and "chunks" not in p.reason
        y = ac.conv2d(x, w, padding=1, strategy=name)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx, gw, _ = ac.conv2d_backward(gy, x, w, padding=1, strategy=name)
    pieces = [chunk] * (g.n // chunk) + [g.n % chunk]
    assert runs == pieces + pieces
    ref = oracles.correlate_torch(x, w, gy=gy, padding=1) or (
        oracles.correlate_scipy(x, w, padding=1),
        *oracles.correlate_scipy_backward(gy, x, w, padding=1)[:2],
    )
    scales = oracles.norm_scales(x, w, gy=gy, padding=1)
    for got, expected, scale, what in zip((y, gx, gw), ref[:3], scales[:3], ("y", "gx", "gw")):
        assert_close(got, expected, scale=scale, dtype=np.float32, err_msg=what)


def _im2col_plan(g, direction="backward", itemsize=4):
    return im2col.plan(Call(g, direction, "numpy", f"float{8 * itemsize}", itemsize))


def _banded_plan(g, direction: str, rows: int) -> chunking.Plan:
    """im2col on one sample at a time in bands of ``rows`` output rows."""
    call = Call(g, direction, "numpy", "float64", 8)
    bands = chunking.row_bands(call, im2col.plan, rows)
    first = next(b.kernel for b in bands if b.kernel is not None)
    return chunking.Plan("im2col", direction, g, 1, "bands", first, rows=rows, bands=bands)


def test_counts_follow_the_input_gradient_path(monkeypatch):
    """The transposed path counts its own unfold + GEMM (F·kh·kw·N·H·W columns); col2im
    its GEMM over padded-width rows (stride 1) or naive's blocked input gradient; all with
    the same weight-gradient GEMM."""
    t = conv_geometry((2, 8, 10, 10), (8, 8, 3, 3), padding=1)  # Fg = Cg: transposed
    c = conv_geometry((2, 4, 10, 10), (8, 4, 3, 3), padding=1)  # Fg > Cg, short rows: col2im
    monkeypatch.setattr(naive, "ROWS_MIN_WIDTH", 1)  # the 10-wide output adds rows
    assert im2col.uses_transposed_input_grad(t) and not im2col.uses_transposed_input_grad(c)
    bt = im2col.counts(_im2col_plan(t))  # float32: flops are float32-equivalents
    # two GEMMs of 2 F Cg kh kw N Ho Wo flops: gw and the transposed correlation
    assert bt.gemm_flops == pytest.approx(2 * (2 * 8 * 8 * 9 * 2 * 100))
    bc = im2col.counts(_im2col_plan(c))
    # gw, then col2im's GEMM over padded-width rows: 2 (kh kw Cg) Fg (N Ho Wp), Wp = 12
    assert bc.gemm_flops == pytest.approx(2 * 8 * 4 * 9 * 2 * 100 + 2 * (9 * 4) * 8 * (2 * 10 * 12))
    s = conv_geometry((2, 4, 10, 10), (8, 4, 3, 3), padding=1, stride=2)  # naive's bands
    bs = im2col.counts(_im2col_plan(s))
    bands = naive.input_grad_counts(s).gemm_flops
    assert bs.gemm_flops == pytest.approx(2 * 8 * 4 * 9 * 2 * 25 + bands)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "transposed"),
    [((4, 16, 24, 24), (16, 16, 3, 3), True), ((4, 2, 40, 40), (32, 2, 3, 3), False)],
)
def test_workspace_bound_covers_the_input_gradient(traced_peak, x_shape, w_shape, transposed):
    """The predicted backward workspace holds what the input gradient's path allocates
    (the traced peak): the transposed correlation's columns, or the gy frame,
    column gradient and sums of col2im over rows."""
    g = conv_geometry(x_shape, w_shape, padding=1)
    assert im2col.uses_transposed_input_grad(g) is transposed
    rng = np.random.default_rng(0)
    x, w, gy = (rng.standard_normal(shape) for shape in (g.x_shape, g.w_shape, g.y_shape))
    p = _im2col_plan(g, itemsize=8)
    predicted = chunking.workspace_bytes(im2col.STRATEGY, p)
    _, peak = traced_peak(lambda: im2col.backward(p, gy, x, w, xp=NUMPY))
    results = (g.n * g.c * g.h * g.w + g.f * g.cg * g.kh * g.kw) * 8
    assert peak - results <= predicted
    assert peak > 0.4 * predicted  # the bound is not vacuous


# --------------------------------------------------------------------------- row bands

BANDED_GEOMETRIES = [
    ((1, 1, 11, 9), (1, 1, 3, 3), {"padding": 1}),
    ((2, 2, 10, 7), (3, 2, 3, 2), {"padding": ((2, 0), (1, 1)), "stride": (2, 1)}),
    ((1, 2, 12, 8), (2, 2, 3, 3), {"padding": 2, "dilation": (3, 1)}),
    ((1, 4, 9, 6), (4, 2, 2, 3), {"padding": ((5, 4), (0, 1)), "groups": 2}),  # padding rows
    ((1, 1, 8, 8), (1, 1, 4, 4), {"padding": "same"}),
    ((3, 3, 9, 7), (3, 3, 3, 3), {"padding": 1}),  # transposed input gradient, in bands too
]


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), BANDED_GEOMETRIES)
def test_banded_forward_and_backward_match_the_loops(
    xp, to_xp, rng, rows, x_shape, w_shape, geometry
):
    """Bands of 1-3 output rows (remainders, bands of padding only) run by the chunking
    path against the loops: the forward, and the backward (overlapping input gradients
    added, gw summed over the bands)."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (x_shape, w_shape, g.y_shape))
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    forward = _banded_plan(g, "forward", rows)
    assert len(forward.bands) == -(-g.ho // rows) > 1
    assert all(b.kernel is None or b.kernel.geom.n == 1 for b in forward.bands)
    y = chunking.run_forward(forward, tx, tw, xp=xp)
    gx, gw = chunking.run_backward(_banded_plan(g, "backward", rows), tgy, tx, tw, xp=xp)
    sy, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    device = device_of(tx)
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=sy, xp=xp, device=device)
    assert_close(gx, ex_gx, scale=sgx, xp=xp, device=device, err_msg=f"gx {geometry} {rows}")
    assert_close(gw, ex_gw, scale=sgw, xp=xp, device=device, err_msg=f"gw {geometry} {rows}")


def test_band_geometries_cover_the_output_rows():
    """Each band yields its own rows (Ho = stop - start) from the input rows it names;
    bands over padding alone are None."""
    for x_shape, w_shape, geometry in BANDED_GEOMETRIES:
        g = conv_geometry(x_shape, w_shape, **geometry)
        for start in range(g.ho):
            for stop in range(start + 1, g.ho + 1):
                band = row_band(g, start, stop)
                if band is None:
                    continue
                part, rows = band
                assert part.ho == stop - start and (part.n, part.wo) == (g.n, g.wo)
                assert 0 <= rows.start < rows.stop <= g.h and part.h == rows.stop - rows.start
    only_padding = conv_geometry((1, 1, 4, 4), (1, 1, 2, 2), padding=((5, 0), (0, 0)))
    assert row_band(only_padding, 0, 2) is None
    assert row_band(only_padding, 0, only_padding.ho) is not None


def test_large_image_runs_in_bands():
    g = conv_geometry((1, 1, 4096, 4096), (1, 1, 3, 3), padding=1)
    rows = im2col.rows_per_band(g)
    assert 1 <= rows < g.ho and 9 * rows * g.wo <= im2col.COLUMN_CHUNK_ELEMENTS
    assert im2col.rows_per_band(g, cached=False) == g.ho  # a GPU runs it whole
    small = conv_geometry((1, 1, 256, 256), (1, 1, 3, 3), padding=1)
    assert im2col.rows_per_band(small) == small.ho
    p = _im2col_plan(g, "forward")
    assert p.rows == rows and p.chunk == 1
    assert cost.shipped_calibrations()["numpy"].seconds("im2col", im2col.counts(p)) > 0
