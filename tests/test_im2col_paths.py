"""im2col: the input gradient as a transposed correlation, and the batch run in chunks.

Oracles: the explicit loops of :func:`oracles.correlate_loops` and
:func:`oracles.correlate_loops_backward` (float64, tiny inputs), errors held to the local
error model (:func:`oracles.error_scales`) with the per-dtype tolerances of
:mod:`arraycnn.testing`. Which path runs is checked by recording it, so a test fails if
the path it means to cover is not the one taken.
"""

from __future__ import annotations

import itertools

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import cost, im2col, memory, naive
from arraycnn.geometry import conv_geometry
from arraycnn.testing import assert_close


@pytest.fixture
def paths(monkeypatch):
    """Records the path of every im2col input gradient computed: 'transposed' (the only
    path that builds the transposed kernel), 'rows' (stride-1 col2im over padded-width
    rows) or 'bands' (naive's col2im by tap bands)."""
    taken: list[str] = []
    kernel, rows, bands = im2col.transposed_kernel, naive._input_grad_rows, naive._input_grad_bands

    def spy_kernel(w, geom, *, xp):
        taken.append("transposed")
        return kernel(w, geom, xp=xp)

    def spy_rows(gy, w, geom, *, xp):
        taken.append("rows")
        return rows(gy, w, geom, xp=xp)

    def spy_bands(gy, w, geom, *, xp):
        taken.append("bands")
        return bands(gy, w, geom, xp=xp)

    monkeypatch.setattr(im2col, "transposed_kernel", spy_kernel)
    monkeypatch.setattr(naive, "_input_grad_rows", spy_rows)
    monkeypatch.setattr(naive, "_input_grad_bands", spy_bands)
    return taken


@pytest.fixture
def small_chunks(monkeypatch):
    """Batches run in chunks of about ``samples`` samples (columns per chunk reduced)."""

    def apply(geometry_per_sample: int, samples: int) -> None:
        monkeypatch.setattr(im2col, "WHOLE_BATCH_ELEMENTS", 0)
        monkeypatch.setattr(im2col, "COLUMN_CHUNK_ELEMENTS", geometry_per_sample * samples)

    return apply


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


def test_wide_output_takes_rows_by_default(xp, to_xp, rng, paths):
    _backward_case(xp, to_xp, rng, (1, 2, 4, 33), (3, 2, 2, 2), padding=((0, 1), (1, 0)))
    assert paths == ["rows"]


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


@pytest.mark.parametrize("samples", [1, 2, 3])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), CHUNKED_GEOMETRIES)
def test_chunked_batch_forward_and_backward(
    xp, to_xp, rng, small_chunks, samples, x_shape, w_shape, geometry
):
    """Chunks of 1, 2, 3 samples (remainders included) against the loops."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    per_sample = g.groups * g.cg * g.kh * g.kw * g.ho * g.wo
    small_chunks(per_sample, samples)
    assert len(im2col.batch_chunks(g)) == -(-g.n // samples)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y = ac.conv2d(to_xp(x), to_xp(w), strategy="im2col", **geometry)
    scale = oracles.error_scales(x, w, **geometry)[0]
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=scale, xp=xp)
    _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_forward_keeps_dtype_and_device(xp, to_xp, rng, small_chunks, dtype):
    x = rng.standard_normal((3, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((2, 2, 3, 3)).astype(dtype)
    small_chunks(2 * 9 * 25, 1)
    y = ac.conv2d(to_xp(x), to_xp(w), padding=1, strategy="im2col")
    scale = oracles.error_scales(x, w, padding=1)[0]
    assert_close(
        y,
        oracles.correlate_loops(x, w, padding=1),
        scale=scale,
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
    chunks = im2col.batch_chunks(big)
    assert chunks[0][0] == 0 and chunks[-1][1] == 32
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))


def test_cost_counts_follow_the_input_gradient_path(monkeypatch):
    """The transposed path counts its own unfold + GEMM (F·kh·kw·N·H·W columns); col2im
    its GEMM over padded-width rows (stride 1) or naive's blocked input gradient; all with
    the same weight-gradient GEMM."""
    t = conv_geometry((2, 8, 10, 10), (8, 8, 3, 3), padding=1)  # Fg = Cg: transposed
    c = conv_geometry((2, 4, 10, 10), (8, 4, 3, 3), padding=1)  # Fg > Cg: col2im
    assert im2col.uses_transposed_input_grad(t) and not im2col.uses_transposed_input_grad(c)
    bt = cost.op_counts("im2col", t, direction="backward")
    # two GEMMs of 2 F Cg kh kw N Ho Wo flops: gw and the transposed correlation
    assert bt.gemm_flops == pytest.approx(2 * (2 * 8 * 8 * 9 * 2 * 100))
    monkeypatch.setattr(naive, "ROWS_MIN_WIDTH", 1)  # the 10-wide output adds rows
    bc = cost.op_counts("im2col", c, direction="backward")
    # gw, then col2im's GEMM over padded-width rows: 2 (kh kw Cg) Fg (N Ho Wp), Wp = 12
    assert bc.gemm_flops == pytest.approx(2 * 8 * 4 * 9 * 2 * 100 + 2 * (9 * 4) * 8 * (2 * 10 * 12))
    s = conv_geometry((2, 4, 10, 10), (8, 4, 3, 3), padding=1, stride=2)  # naive's bands
    bs = cost.op_counts("im2col", s, direction="backward")
    bands = cost._naive_input_grad(s).gemm_flops
    assert bs.gemm_flops == pytest.approx(2 * 8 * 4 * 9 * 2 * 25 + bands)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "transposed"),
    [((4, 16, 24, 24), (16, 16, 3, 3), True), ((4, 8, 24, 24), (16, 8, 3, 3), False)],
)
def test_workspace_bound_covers_the_input_gradient(x_shape, w_shape, transposed):
    """The predicted backward workspace holds what the input gradient's path allocates
    (measured with tracemalloc): the transposed correlation's columns, or the gy frame,
    column gradient and sums of col2im over rows."""
    import tracemalloc

    g = conv_geometry(x_shape, w_shape, padding=1)
    assert im2col.uses_transposed_input_grad(g) is transposed
    rng = np.random.default_rng(0)
    x = rng.standard_normal(g.x_shape)
    w = rng.standard_normal(g.w_shape)
    gy = rng.standard_normal(g.y_shape)
    predicted = memory.workspace_bytes("im2col", g, itemsize=8, direction="backward")
    from arraycnn.conv import workspace

    workspace.clear()
    tracemalloc.start()
    try:
        im2col.backward(gy, x, w, g, xp=np)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        workspace.clear()
    results = (g.n * g.c * g.h * g.w + g.f * g.cg * g.kh * g.kw) * 8
    assert peak - results <= predicted
    assert peak > 0.4 * predicted  # the bound is not vacuous (it is ~1.8x here)


# --------------------------------------------------------------------------- row bands

BANDED_GEOMETRIES = [
    ((1, 1, 11, 9), (1, 1, 3, 3), {"padding": 1}),
    ((2, 2, 10, 7), (3, 2, 3, 2), {"padding": ((2, 0), (1, 1)), "stride": (2, 1)}),
    ((1, 2, 12, 8), (2, 2, 3, 3), {"padding": 2, "dilation": (3, 1)}),
    ((1, 4, 9, 6), (4, 2, 2, 3), {"padding": ((5, 4), (0, 1)), "groups": 2}),  # padding rows
    ((1, 1, 8, 8), (1, 1, 4, 4), {"padding": "same"}),
]


@pytest.fixture
def rows_of(monkeypatch):
    """rows_of(geom, rows): the forward of ``geom`` runs in bands of ``rows`` output rows."""

    def apply(geom, rows: int) -> None:
        per_row = geom.groups * geom.cg * geom.kh * geom.kw * geom.wo
        monkeypatch.setattr(im2col, "COLUMN_CHUNK_ELEMENTS", per_row * rows)
        monkeypatch.setattr(im2col, "WHOLE_BATCH_ELEMENTS", 0)
        assert im2col.rows_per_band(geom) == (rows if 2 * rows < geom.ho else geom.ho)

    return apply


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), BANDED_GEOMETRIES)
def test_banded_forward_matches_the_loops(
    xp, to_xp, rng, rows_of, rows, x_shape, w_shape, geometry
):
    """Bands of 1-3 output rows (remainders, bands of padding only) against the loops,
    forward and backward."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    rows_of(g, rows)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y = ac.conv2d(to_xp(x), to_xp(w), strategy="im2col", **geometry)
    scale = oracles.error_scales(x, w, **geometry)[0]
    assert_close(
        y,
        oracles.correlate_loops(x, w, **geometry),
        scale=scale,
        xp=xp,
        device=device_of(to_xp(x)),
        err_msg=f"{geometry} rows {rows}",
    )
    _backward_case(xp, to_xp, rng, x_shape, w_shape, **geometry)  # gw summed over the bands


def test_band_geometries_cover_the_output_rows():
    """Each band yields its own rows (Ho = stop - start) from the input rows it names;
    bands over padding alone are None."""
    for x_shape, w_shape, geometry in BANDED_GEOMETRIES:
        g = conv_geometry(x_shape, w_shape, **geometry)
        for start in range(g.ho):
            for stop in range(start + 1, g.ho + 1):
                band = im2col.band_geometry(g, start, stop)
                if band is None:
                    continue
                part, rows = band
                assert part.ho == stop - start and part.wo == g.wo
                assert 0 <= rows.start < rows.stop <= g.h and part.h == rows.stop - rows.start
    only_padding = conv_geometry((1, 1, 4, 4), (1, 1, 2, 2), padding=((5, 0), (0, 0)))
    assert im2col.band_geometry(only_padding, 0, 2) is None
    assert im2col.band_geometry(only_padding, 0, only_padding.ho) is not None


def test_large_image_runs_in_bands():
    g = conv_geometry((1, 1, 4096, 4096), (1, 1, 3, 3), padding=1)
    rows = im2col.rows_per_band(g)
    assert 1 <= rows < g.ho and 9 * rows * g.wo <= im2col.COLUMN_CHUNK_ELEMENTS
    assert im2col.rows_per_band(g, cached=False) == g.ho  # a GPU runs it whole
    small = conv_geometry((1, 1, 256, 256), (1, 1, 3, 3), padding=1)
    assert im2col.rows_per_band(small) == small.ho


# --------------------------------------------------------------------------- naive's chunks


@pytest.mark.parametrize("samples", [1, 2])
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), CHUNKED_GEOMETRIES)
def test_naive_chunked_batch_forward_and_backward(
    xp, to_xp, rng, monkeypatch, samples, x_shape, w_shape, geometry
):
    """naive in chunks of 1 or 2 samples (im2col's chunk constants) against the loops."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    monkeypatch.setattr(im2col, "WHOLE_BATCH_ELEMENTS", 0)
    monkeypatch.setattr(im2col, "COLUMN_CHUNK_ELEMENTS", (g.f + g.c) * g.ho * g.wo * samples)
    assert len(naive.batch_chunks(g)) == -(-g.n // samples)
    assert len(naive.batch_chunks(g, cached=False)) == 1
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    gy = rng.standard_normal(g.y_shape)
    y = ac.conv2d(to_xp(x), to_xp(w), strategy="naive", **geometry)
    gx, gw = ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), strategy="naive", **geometry)[:2]
    sy, sgx, sgw = oracles.error_scales(x, w, gy=gy, **geometry)[:3]
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    assert_close(y, oracles.correlate_loops(x, w, **geometry), scale=sy, xp=xp)
    assert_close(gx, ex_gx, scale=sgx, xp=xp)
    assert_close(gw, ex_gw, scale=sgw, xp=xp)
