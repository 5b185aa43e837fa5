"""FFT forward: the circular placement of the kernel, overlap-save tiles, their plan, and
the cost and workspace predictions that follow them.

Oracles: ``scipy.signal.correlate2d`` summed over each group's channels
(:func:`oracles.correlate_scipy`) and the explicit loops of :func:`oracles.correlate_loops`;
errors are held to the FFT's error model (whole-map norms, :func:`oracles.norm_scales`)
with the per-dtype tolerances of :mod:`arraycnn.testing`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import oracles
import pytest
import scipy.fft

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.budget import SMALL_ARRAYS_BYTES
from arraycnn.conv import chunking, cost, dispatch, fft, strategy
from arraycnn.testing import assert_close

DTYPES = ["float32", "float64"]
NUMPY = ac.resolve_backend("numpy")


def _tiles_of_at_most(geom, length: int) -> fft.TilePlan:
    """Tiles of at most ``length`` on both axes (no cost rule)."""
    rows = fft.axis_tiles(geom.ho, geom.kh_dilated, geom.stride[0], length)
    cols = fft.axis_tiles(geom.wo, geom.kw_dilated, geom.stride[1], length)
    return fft.TilePlan(rows, cols)


def _plan(geom, x, length: int | None = None) -> fft.FFTPlan:
    """The forward's plan on ``length``-tiles, untiled for None."""
    tiles = None if length is None else _tiles_of_at_most(geom, length)
    return fft.FFTPlan(geom, "forward", x.dtype.itemsize, geom.n, tiles)


def _forward(xp, to_xp, x, w, length=None, **kw):
    """The FFT forward of x, w (NumPy arrays) on the backend, tiled by ``length``."""
    geom = ac.conv_geometry(x.shape, w.shape, **kw)
    return fft.forward(_plan(geom, x, length), to_xp(x), to_xp(w), xp=xp)


def _price(dtype: str = "float32"):
    """The shipped model's price of FFT counts in elements, as the plan's tile rule sees it."""
    cal = cost.shipped_calibrations()["numpy"]
    itemsize = np.dtype(dtype).itemsize
    return lambda counts: cal.seconds("fft", counts.in_bytes(itemsize))


def _check_forward(xp, to_xp, rng, x_shape, w_shape, dtype="float64", length=None, **kw):
    """The FFT forward against scipy.signal, on the FFT's error scale."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = _forward(xp, to_xp, x, w, length, **kw)
    assert_close(
        y,
        oracles.correlate_scipy(x, w, **kw),
        scale=oracles.norm_scales(x, w, **kw)[0],
        xp=xp,
        dtype=getattr(xp, dtype),
        device=device_of(to_xp(x)),
        err_msg=f"{x_shape} {w_shape} {kw} tiles of {length}",
    )


# --------------------------------------------------------------------------- placement


@pytest.fixture(params=["dft", "fft"])
def row_transform(request, monkeypatch):
    """The kernel's transform over the rows: the DFT matrix product or the padded FFT."""
    monkeypatch.setattr(fft, "DFT_MAX_ROWS", 10**6 if request.param == "dft" else 0)
    return request.param


@pytest.mark.parametrize("size", [1, 2, 5, 9])
@pytest.mark.parametrize("kernel", [1, 2, 4, 7])
def test_placement_keeps_kernel_and_outputs_inside_the_length(size, kernel):
    """The flipped kernel [start, start + kd) and the kept outputs first + [0, M] are
    positions below L, without wrap; one of start and first is 0."""
    for lo, hi, stride in itertools.product(range(0, 9), range(0, 9), (1, 2, 3)):
        out = oracles.out_size(size, kernel, stride, lo, hi, 1)
        if out < 1:
            continue
        length = fft.forward_length(size, out, kernel, stride, lo)
        start, first = fft._placement(size, kernel, lo)
        assert min(start, first) == 0
        assert start + kernel <= length
        assert first + (out - 1) * stride < length
        # output 0 is the circular index of the first padded-input window
        assert first - start == kernel - 1 - lo


@pytest.mark.parametrize(("length", "start", "step", "taps"), [(8, 0, 1, 3), (9, 2, 2, 4)])
def test_dft_matrix_is_the_fft_of_the_placed_rows(rng, length, start, step, taps):
    """D @ rows equals the FFT over axis -2 of the rows placed at start + step r."""
    rows = rng.standard_normal((2, taps, 5)) + 1j * rng.standard_normal((2, taps, 5))
    placed = np.zeros((2, length, 5), dtype=complex)
    placed[:, start : start + step * (taps - 1) + 1 : step, :] = rows
    dft = fft._dft_matrix(np, np.float64, np.complex128, "cpu", (length, start, step, taps))
    assert dft.shape == (length, taps)
    np.testing.assert_allclose(dft @ rows, np.fft.fft(placed, axis=-2), atol=1e-12)


def test_dft_matrix_is_cached_per_placement_until_the_caches_are_cleared():
    key = (np, np.float32, np.complex64, "cpu", (12, 1, 1, 3))
    first = fft._cached_dft_matrix(*key)
    assert fft._cached_dft_matrix(*key) is first and first.dtype == np.complex64
    ac.clear_caches()
    assert fft._cached_dft_matrix(*key) is not first


@pytest.mark.parametrize("size", [1, 2, 5, 9])
@pytest.mark.parametrize("kernel", [1, 2, 4, 7])
def test_forward_length_is_exact_and_never_longer_than_the_padded_input(size, kernel):
    """Every padding, stride and dilated length: the untiled length is <= next_fast_len(Hp)
    and at least what the circular product needs (checked by the forward tests below)."""
    for lo, hi, stride in itertools.product(range(0, 9), range(0, 9), (1, 2, 3)):
        out = oracles.out_size(size, kernel, stride, lo, hi, 1)
        if out < 1:
            continue
        length = fft.forward_length(size, out, kernel, stride, lo)
        last = (out - 1) * stride
        assert length >= max(size + lo, last + kernel - lo, last + 1, kernel)
        assert length <= scipy.fft.next_fast_len(size + lo + hi, real=True)


@pytest.mark.parametrize("size", [1, 2, 5, 9])
@pytest.mark.parametrize("kernel", [1, 2, 4, 7])
def test_backward_length_is_exact_and_never_longer_than_the_padded_input(size, kernel):
    """Every padding and stride: the backward length is <= next_fast_len(Hp), and no kept
    position of either gradient receives a wrapped term (the conditions in its Notes, checked
    here against the supports themselves; the backward tests below check the results)."""
    for lo, hi, stride in itertools.product(range(0, 9), range(0, 9), (1, 2, 3)):
        out = oracles.out_size(size, kernel, stride, lo, hi, 1)
        if out < 1:
            continue
        length = fft.backward_length(size, lo, out, kernel, stride)
        assert length <= scipy.fft.next_fast_len(size + lo + hi, real=True)
        upsampled = (out - 1) * stride + 1
        full = range(upsampled + kernel - 1)  # gx's full convolution
        kept = range(lo, lo + size)
        assert kept.stop <= length
        assert not any(j != i and j % length == i for i in kept for j in full)
        support = range(-(upsampled - 1), size)  # gw's correlation lags
        lags = range(-lo, kernel - lo)
        assert not any(j != i and (j - i) % length == 0 for i in lags for j in support)


def test_backward_at_lengths_below_the_padded_input_matches_the_loops(xp, to_xp, rng):
    """The lecture layer's case in small (9 x 9, 5 x 5, "same": 12 where Hp is 13), and
    paddings beyond the kernel, asymmetric, strides, dilation and groups: both gradients
    against the loops, with either row transform of the kernel and of gw's inverse."""
    g = ac.conv_geometry((2, 3, 9, 9), (4, 3, 5, 5), padding=2)
    assert fft.fast_shape(g) == (12, 12) and (g.hp, g.wp) == (13, 13)
    paddings = [2, ((0, 3), (4, 0)), ((5, 1), (0, 6)), "same"]
    for rows in (10**6, 0):  # DFT_MAX_ROWS: the DFT product, or the FFT of every row
        for padding, stride, dilation in itertools.product(paddings, (1, (2, 3)), (1, (1, 2))):
            geometry = {"padding": padding, "stride": stride, "dilation": dilation}
            if not oracles.fits((2, 4, 9, 7), (6, 2, 5, 3), **geometry):
                continue
            args = {**geometry, "groups": 2}
            x, w = rng.standard_normal((2, 4, 9, 7)), rng.standard_normal((6, 2, 5, 3))
            y = oracles.correlate_loops(x, w, **args)
            gy = rng.standard_normal(y.shape)
            geom = ac.conv_geometry(x.shape, w.shape, **args)
            previous, fft.DFT_MAX_ROWS = fft.DFT_MAX_ROWS, rows
            try:
                grads = fft._backward(to_xp(gy), to_xp(x), to_xp(w), geom, "xw", xp=xp)
            finally:
                fft.DFT_MAX_ROWS = previous
            expected = oracles.correlate_loops_backward(gy, x, w, **args)[:2]
            scales = oracles.norm_scales(x, w, gy=gy, **args)[1:3]
            for got, want, scale in zip(grads, expected, scales):
                assert_close(got, want, scale=scale, err_msg=f"{args} rows {rows}")


def test_untiled_forward_matches_the_loops_on_tiny_geometries(xp, to_xp, rng, row_transform):
    """Padding larger than the kernel, asymmetric, stride, dilation, groups, 'same' with
    stride (end padding larger): the kernel at the origin (or at p - kd + 1) and the
    outputs at kd - 1 - p (or 0) are exact, with either row transform of the kernel."""
    paddings = [0, 2, ((0, 3), (4, 0)), ((5, 1), (0, 6)), "same", "full"]
    for h, w, kh, kw in [(1, 1, 1, 1), (5, 7, 3, 2), (6, 4, 2, 4), (2, 9, 1, 3)]:
        for padding, stride, dilation in itertools.product(paddings, (1, 2, (3, 1)), (1, (2, 1))):
            geometry = {"padding": padding, "stride": stride, "dilation": dilation}
            if not oracles.fits((2, 4, h, w), (6, 2, kh, kw), **geometry):
                continue
            args = {**geometry, "groups": 2}
            x = rng.standard_normal((2, 4, h, w))
            wt = rng.standard_normal((6, 2, kh, kw))
            y = _forward(xp, to_xp, x, wt, **args)
            expected = oracles.correlate_loops(x, wt, **args)
            scale = oracles.norm_scales(x, wt, **args)[0]
            assert_close(y, expected, scale=scale, err_msg=str(args))


@pytest.mark.parametrize("dtype", DTYPES)
def test_untiled_forward_with_the_matrix_product(xp, to_xp, rng, dtype):
    """Enough images and channels per group for the per-frequency matrix product."""
    assert fft._use_matmul(8, 20, 8)
    _check_forward(xp, to_xp, rng, (8, 40, 13, 11), (16, 20, 3, 2), dtype, padding=1, groups=2)


IN_PLACE_CASES = [
    # (x_shape, w_shape, geometry): one input channel per group, so the product is in place
    ((1, 1, 21, 19), (1, 1, 5, 4), {"padding": 2}),  # into the input spectrum
    ((3, 1, 21, 19), (1, 1, 5, 4), {"padding": "same"}),  # into the input spectrum
    ((1, 1, 21, 19), (4, 1, 3, 5), {"padding": 1}),  # into the kernel spectrum
    ((1, 2, 17, 20), (6, 1, 3, 3), {"padding": 1, "groups": 2}),  # kernel spectrum, groups
    ((2, 2, 17, 20), (6, 1, 3, 3), {"padding": 1, "groups": 2}),  # broadcast product
    ((1, 1, 30, 30), (1, 1, 20, 18), {"padding": 9}),  # kernel rows by the padded FFT
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kw"), IN_PLACE_CASES)
def test_untiled_in_place_products_leave_the_inputs_alone(
    xp, to_xp, rng, dtype, x_shape, w_shape, kw
):
    """Every branch of the one-input-channel product is exact, twice in a row (scratch
    input reused), and neither x nor w is written."""
    for _ in range(2):
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        tx, tw = to_xp(x), to_xp(w)
        y = ac.conv2d(tx, tw, strategy="fft", **kw)
        assert_close(
            y,
            oracles.correlate_scipy(x, w, **kw),
            scale=oracles.norm_scales(x, w, **kw)[0],
            xp=xp,
            dtype=getattr(xp, dtype),
            err_msg=f"{x_shape} {w_shape} {kw}",
        )
        np.testing.assert_array_equal(ac.to_numpy(tx), x)
        np.testing.assert_array_equal(ac.to_numpy(tw), w)


def test_untiled_scratch_input_stays_zero_padded(rng):
    """The padded input is a scratch buffer keyed by the input size: a larger input of the
    same FFT shape in between does not leave values in a smaller one's padding."""
    w = rng.standard_normal((1, 1, 5, 5))
    kw = {"padding": 2}
    for shape in [(1, 1, 40, 37), (1, 1, 42, 38), (1, 1, 40, 37)]:
        x = rng.standard_normal(shape)
        assert fft.forward_shape(ac.conv_geometry(x.shape, w.shape, **kw)) == (45, 40)
        y = _forward(NUMPY, np.asarray, x, w, **kw)
        assert_close(
            y, oracles.correlate_scipy(x, w, **kw), scale=oracles.norm_scales(x, w, **kw)[0]
        )


# --------------------------------------------------------------------------- tiles

TILED_CASES = [
    # (x_shape, w_shape, geometry, tile length)
    ((1, 1, 150, 130), (1, 1, 3, 3), {"padding": 1}, 32),
    ((1, 1, 200, 120), (1, 1, 7, 5), {"padding": "same"}, 40),
    ((2, 3, 101, 117), (4, 3, 5, 5), {"padding": ((4, 0), (1, 6))}, 48),
    ((1, 4, 128, 96), (6, 2, 3, 5), {"padding": "full", "groups": 2}, 30),
    ((2, 2, 111, 100), (3, 2, 3, 3), {"padding": 2, "dilation": (2, 3)}, 36),
    ((1, 2, 140, 160), (2, 2, 5, 4), {"padding": "same", "stride": 2}, 45),
    ((1, 3, 99, 121), (2, 3, 9, 9), {"padding": 4, "stride": (1, 3)}, 64),
    ((3, 2, 100, 100), (2, 2, 3, 3), {"padding": "valid"}, 16),
    ((1, 6, 100, 90), (6, 1, 3, 3), {"padding": 1, "groups": 6}, 25),
    # 9 tiles, 20 input and 8 output channels per group: the batched matrix product
    ((1, 40, 100, 100), (16, 20, 3, 3), {"padding": 1, "groups": 2}, 40),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kw", "length"), TILED_CASES)
def test_tiled_forward_matches_scipy(xp, to_xp, rng, dtype, x_shape, w_shape, kw, length):
    geom = ac.conv_geometry(x_shape, w_shape, **kw)
    assert _tiles_of_at_most(geom, length).tiles > 1
    _check_forward(xp, to_xp, rng, x_shape, w_shape, dtype, length, **kw)


def test_tiled_and_untiled_agree_for_every_tile_length(rng, row_transform):
    """One geometry, tile lengths from the smallest possible to one tile per axis, with
    either row transform of the kernel."""
    x = rng.standard_normal((2, 3, 70, 53))
    w = rng.standard_normal((4, 3, 4, 3))
    kw = {"padding": ((3, 1), (0, 5)), "stride": (1, 2), "dilation": (2, 1)}
    expected = oracles.correlate_scipy(x, w, **kw)
    scale = oracles.norm_scales(x, w, **kw)[0]
    for length in (7, 8, 11, 16, 23, 40, 80, 200, None):
        y = _forward(NUMPY, np.asarray, x, w, length, **kw)
        assert_close(y, expected, scale=scale, err_msg=f"{length}")


def test_tile_scratch_is_reused_and_stays_exact(rng):
    """The tile batch is a scratch buffer: calls with new data (and another geometry in
    between) still see zero padding."""
    kw = {"padding": 3}
    w = rng.standard_normal((2, 1, 5, 5))
    for shape in [(1, 1, 90, 80), (1, 1, 60, 61), (1, 1, 90, 80)]:
        x = rng.standard_normal(shape)
        y = _forward(NUMPY, np.asarray, x, w, 24, **kw)
        assert_close(
            y, oracles.correlate_scipy(x, w, **kw), scale=oracles.norm_scales(x, w, **kw)[0]
        )


# --------------------------------------------------------------------------- the plan


def test_large_image_is_tiled_and_conv2d_runs_the_plan(monkeypatch, rng):
    """A 2048² image with a 7x7 kernel: the plan tiles it, and conv2d runs those tiles."""
    x = rng.standard_normal((1, 1, 2048, 2048)).astype(np.float32)
    w = rng.standard_normal((1, 1, 7, 7)).astype(np.float32)
    g = ac.conv_geometry(x.shape, w.shape, padding=3)
    tiles = dispatch.plan("fft", w, g, xp=NUMPY, x=x).kernel.tiles
    assert tiles is not None and tiles.tiles > 1
    for axis, out in ((tiles.rows, g.ho), (tiles.cols, g.wo)):
        assert axis.count * axis.block >= out > (axis.count - 1) * axis.block
        assert axis.length >= axis.block + g.kh_dilated - 1
        assert axis.length < fft.forward_shape(g)[0]
    seen = []
    original = fft._forward_tiled

    def spy(x, w, geom, used, *, xp):
        seen.append(used)
        return original(x, w, geom, used, xp=xp)

    monkeypatch.setattr(fft, "_forward_tiled", spy)
    y = ac.conv2d(x, w, padding=3, strategy="fft")
    assert seen == [tiles]
    # spot check one window away from the tile boundaries and one across them
    xpad = np.pad(x[0, 0].astype(np.float64), 3)
    b = tiles.rows.block
    for p, q in [(5, 9), (b - 1, b), (2047, 0)]:
        want = float(np.sum(xpad[p : p + 7, q : q + 7] * w[0, 0]))
        assert abs(float(y[0, 0, p, q]) - want) <= 1e-4 * (1 + abs(want))


@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [
        ((1, 1, 32, 32), (1, 1, 3, 3)),
        ((32, 16, 16, 16), (32, 16, 3, 3)),
        ((1, 1, 64, 64), (1, 1, 31, 31)),
    ],
)
def test_small_inputs_stay_untiled(x_shape, w_shape):
    g = ac.conv_geometry(x_shape, w_shape, padding=w_shape[-1] // 2)
    assert fft.tile_plan(g, _price()) is None
    w = np.ones(w_shape, dtype=np.float32)
    assert dispatch.plan("fft", w, g, xp=NUMPY).kernel.tiles is None


def test_tile_plan_is_host_arithmetic():
    g = ac.conv_geometry((1, 1, 3000, 1000), (1, 1, 9, 9), padding="same")
    first = fft.tile_plan(g, _price())
    assert first is not None and fft.tile_plan(g, _price()) == first
    assert all(isinstance(v, int) for a in (first.rows, first.cols) for v in dataclasses.astuple(a))


def test_the_tiles_beat_the_untiled_path_in_the_model():
    g = ac.conv_geometry((1, 1, 4096, 4096), (1, 1, 15, 15), padding=7)
    price = _price()
    tiles = fft.tile_plan(g, price)
    tiled, untiled = (fft.forward_counts(g, fft._work(g, t)) for t in (tiles, None))
    assert price(tiled) < fft.TILE_GAIN * price(untiled)


# --------------------------------------------------------------------------- counts and bytes


def test_counts_follow_the_forward_work():
    """fft_flops: 2.5 L log2 L per transform and NumPy's flops per plane, times each
    batch's share; calls grow with the tile windows; the channel product is GEMM work only
    as a matrix product."""
    for x_shape, w_shape in [((1, 1, 2048, 2048), (1, 1, 7, 7)), ((8, 4, 32, 32), (8, 4, 3, 3))]:
        g = ac.conv_geometry(x_shape, w_shape, padding=w_shape[-1] // 2)
        p = dispatch.plan("fft", np.ones(w_shape, dtype=np.float32), g, xp=NUMPY).kernel
        work = fft._work(g, p.tiles)
        points = work.shape[0] * work.shape[1]
        per_plane = 2.5 * points * math.log2(points) + strategy.NUMPY_SPECTRAL.plane_flops
        flops = sum(n * s for n, s in work.transforms) * per_plane
        counts = fft.counts(p)  # float32: one float32-equivalent flop per flop
        assert counts.fft_flops == pytest.approx(flops)
        assert counts.calls >= work.windows
        assert (counts.gemm_flops > 0) == work.matmul


def test_tiled_transforms_are_smaller_than_untiled():
    g = ac.conv_geometry((1, 1, 4096, 4096), (1, 1, 7, 7), padding=3)
    tiles = fft.tile_plan(g, _price())
    assert tiles is not None
    tiled, untiled = (fft.FFTPlan(g, "forward", 4, 1, t) for t in (tiles, None))
    assert fft.counts(tiled).fft_flops < fft.counts(untiled).fft_flops


WORKSPACE_CASES = [
    ((1, 1, 300, 280), (1, 1, 7, 7), {"padding": 3}, 64),
    ((2, 3, 150, 170), (4, 3, 5, 5), {"padding": "same", "stride": 2}, 48),
    ((1, 8, 120, 120), (8, 8, 3, 3), {"padding": 1}, 40),
    ((12, 4, 90, 90), (6, 2, 3, 3), {"padding": 1, "groups": 2}, 32),
    ((1, 1, 300, 280), (1, 1, 7, 7), {"padding": 3}, None),
    ((2, 3, 60, 70), (5, 3, 9, 9), {"padding": ((8, 0), (2, 9)), "dilation": 2}, None),
    ((16, 4, 40, 40), (8, 4, 3, 3), {"padding": 1}, None),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kw", "length"), WORKSPACE_CASES)
def test_workspace_prediction_bounds_the_measured_peak(
    rng, traced_peak, x_shape, w_shape, kw, length
):
    """As in test_dispatch: the traced peak of a forward minus its result stays within the
    dispatcher's predicted workspace, tiled (scratch tiles allocated in the call) and
    untiled, and the prediction is not vacuous."""
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    p = _plan(ac.conv_geometry(x.shape, w.shape, **kw), x, length)
    y, peak = traced_peak(lambda: fft.forward(p, x, w, xp=NUMPY))
    measured = peak - y.nbytes
    predicted = chunking.workspace_bytes(fft.STRATEGY, p)
    assert measured <= predicted, (measured, predicted)
    assert predicted <= 4 * measured + SMALL_ARRAYS_BYTES, (measured, predicted)


# --------------------------------------------------------------------------- spectra in pieces


@pytest.mark.parametrize("piece_bytes", [1, 3000, 1 << 30])
def test_spectra_in_pieces_are_exact_and_never_escape(rng, monkeypatch, piece_bytes):
    """NumPy transforms run in pieces of the batch into scratch (one sample a piece, a few,
    all but the first): the gradients match SciPy's and stay as they were after another
    call with other data reuses the scratch."""
    monkeypatch.setattr(fft, "TRANSFORM_PIECE_BYTES", piece_bytes)
    kw = {"padding": 2, "stride": 1}
    w = rng.standard_normal((4, 3, 5, 5))
    results = []
    for _ in range(2):
        x, gy = rng.standard_normal((7, 3, 9, 10)), rng.standard_normal((7, 4, 9, 10))
        y = ac.conv2d(x, w, strategy="fft", **kw)
        gx, gw, _ = ac.conv2d_backward(gy, x, w, strategy="fft", **kw)
        results.append((x, gy, y, y.copy(), gx, gx.copy(), gw, gw.copy()))
    for x, gy, y, y0, gx, gx0, gw, gw0 in results:
        np.testing.assert_array_equal(y, y0)  # the later call wrote nothing into them
        np.testing.assert_array_equal(gx, gx0)
        np.testing.assert_array_equal(gw, gw0)
        expected_gx, expected_gw, _ = oracles.correlate_scipy_backward(gy, x, w, **kw)
        scale_x, scale_w = oracles.norm_scales(x, w, None, gy, **kw)[1:3]
        scale_y = oracles.norm_scales(x, w, **kw)[0]
        assert_close(y, oracles.correlate_scipy(x, w, **kw), scale=scale_y)
        assert_close(gx, expected_gx, scale=scale_x)
        assert_close(gw, expected_gw, scale=scale_w)
