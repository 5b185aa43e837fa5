"""naive's depthwise path (one input channel per group, stride 1): broadcast multiply-adds
over padded-width rows instead of GEMMs with K = 1. These are the array operations every
namespace runs; on NumPy with numba installed the compiled loops take their place
(tests/test_numba_depthwise.py), so this file turns those off (``ARRAYCNN_NUMBA=0``).

Oracles: the explicit loops of :func:`oracles.correlate_loops` and
:func:`oracles.correlate_loops_backward` (float64, tiny inputs), errors held to the local
error model (:func:`oracles.error_scales`) with the per-dtype tolerances of
:mod:`arraycnn.testing`. Which path runs is checked by recording it, so a test fails if the
path it means to cover is not the one taken.
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from spying import record_calls

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.conv import naive
from arraycnn.conv.strategy import Call
from arraycnn.geometry import conv_geometry
from arraycnn.testing import assert_close

pytestmark = pytest.mark.usefixtures("array_operations")


@pytest.fixture
def paths(monkeypatch):
    """Records each depthwise kernel that runs: 'forward', 'input' or 'weight'."""
    labels = {
        "_depthwise_forward": "forward",
        "_depthwise_input_grad": "input",
        "_depthwise_weight_grad": "weight",
    }
    return record_calls(monkeypatch, naive, labels)


def _against_the_loops(xp, to_xp, rng, x_shape, w_shape, **geometry) -> None:
    """naive's forward and backward on the backend against the loops (float64)."""
    g = conv_geometry(x_shape, w_shape, **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (x_shape, w_shape, g.y_shape))
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    y = ac.conv2d(tx, tw, strategy="naive", **geometry)
    gx, gw, _ = ac.conv2d_backward(tgy, tx, tw, strategy="naive", **geometry)
    sy, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    device = device_of(tx)
    expected = oracles.correlate_loops(x, w, **geometry)
    assert_close(y, expected, scale=sy, xp=xp, device=device, err_msg="y")
    assert_close(gx, ex_gx, scale=sgx, xp=xp, device=device, err_msg="gx")
    assert_close(gw, ex_gw, scale=sgw, xp=xp, device=device, err_msg="gw")


DEPTHWISE_GEOMETRIES = [
    # (x shape, w shape, geometry): groups = C, stride 1
    ((2, 3, 7, 6), (3, 1, 3, 3), {"padding": 1, "groups": 3}),
    ((2, 4, 6, 7), (8, 1, 3, 3), {"padding": 1, "groups": 4}),  # channel multiplier 2
    ((1, 3, 9, 8), (6, 1, 3, 2), {"padding": ((2, 0), (1, 3)), "dilation": (2, 1), "groups": 3}),
    ((2, 2, 8, 9), (2, 1, 2, 3), {"padding": 0, "dilation": 2, "groups": 2}),
    ((1, 2, 4, 4), (4, 1, 2, 2), {"padding": 3, "groups": 2}),  # padding beyond the kernel
    ((2, 3, 5, 6), (3, 1, 4, 4), {"padding": "same", "groups": 3}),
    ((1, 2, 5, 5), (2, 1, 3, 3), {"padding": "full", "groups": 2}),
    ((3, 1, 6, 5), (4, 1, 3, 3), {"padding": 1}),  # one channel, multiplier 4
    ((1, 3, 5, 5), (3, 1, 1, 1), {"groups": 3}),  # 1x1: the frame is the input
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), DEPTHWISE_GEOMETRIES)
def test_depthwise_path_matches_the_loops(xp, to_xp, rng, paths, x_shape, w_shape, geometry):
    assert naive.uses_depthwise(conv_geometry(x_shape, w_shape, **geometry))
    _against_the_loops(xp, to_xp, rng, x_shape, w_shape, **geometry)
    assert paths == ["forward", "input", "weight"]


FALLBACK_GEOMETRIES = [
    # (x shape, w shape, geometry): Cg = 1 outside the depthwise path
    ((2, 3, 8, 7), (3, 1, 3, 3), {"padding": 1, "stride": 2, "groups": 3}),  # stride
    ((1, 2, 9, 9), (4, 1, 3, 2), {"padding": 2, "stride": (1, 2), "dilation": 2, "groups": 2}),
    ((2, 2, 6, 6), (12, 1, 3, 3), {"padding": 1, "groups": 2}),  # multiplier 6
]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), FALLBACK_GEOMETRIES)
def test_other_single_channel_groups_take_the_tap_gemms(
    xp, to_xp, rng, paths, x_shape, w_shape, geometry
):
    assert not naive.uses_depthwise(conv_geometry(x_shape, w_shape, **geometry))
    _against_the_loops(xp, to_xp, rng, x_shape, w_shape, **geometry)
    assert paths == []


@pytest.mark.parametrize("grads", [("x",), ("w",), ("x", "b")])
def test_depthwise_backward_computes_only_what_is_needed(xp, to_xp, rng, paths, grads):
    geometry = {"padding": 1, "groups": 3}
    g = conv_geometry((2, 3, 6, 6), (6, 1, 3, 3), **geometry)
    x, w, gy = (rng.standard_normal(shape) for shape in (g.x_shape, g.w_shape, g.y_shape))
    gx, gw, _ = ac.conv2d_backward(
        to_xp(gy), to_xp(x), to_xp(w), strategy="naive", needs=grads, **geometry
    )
    ex_gx, ex_gw, _ = oracles.correlate_loops_backward(gy, x, w, **geometry)
    _, sgx, sgw, _ = oracles.error_scales(x, w, gy=gy, **geometry)
    assert (gx is None) == ("x" not in grads) and (gw is None) == ("w" not in grads)
    if gx is not None:
        assert_close(gx, ex_gx, scale=sgx, xp=xp, device=device_of(to_xp(x)))
    if gw is not None:
        assert_close(gw, ex_gw, scale=sgw, xp=xp, device=device_of(to_xp(x)))
    assert paths == [{"x": "input", "w": "weight"}[n] for n in ("x", "w") if n in grads]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_depthwise_keeps_dtype_and_repeated_calls_agree(xp, to_xp, rng, dtype):
    """Scratch frames are reused across calls of one geometry: a second call with other
    values is still exact (the padding stays zero), in the input's dtype and device."""
    geometry = {"padding": 2, "dilation": 2, "groups": 4}
    for _ in range(2):
        x = rng.standard_normal((2, 4, 7, 7)).astype(dtype)
        w = rng.standard_normal((4, 1, 3, 3)).astype(dtype)
        y = ac.conv2d(to_xp(x), to_xp(w), strategy="naive", **geometry)
        assert_close(
            y,
            oracles.correlate_loops(x, w, **geometry),
            scale=oracles.error_scales(x, w, **geometry)[0],
            xp=xp,
            dtype=getattr(xp, dtype),
            device=device_of(to_xp(x)),
        )


def test_depthwise_counts_have_no_gemm_and_price_both_gradients():
    g = conv_geometry((4, 8, 16, 16), (8, 1, 3, 3), padding=1, groups=8)
    for direction in ("forward", "backward"):
        c = naive.counts(naive.plan(Call(g, direction, "numpy", "float32", 4)))
        assert c.gemm_flops == 0 and c.bytes > 0 and c.calls > 0
    both = naive.counts(naive.plan(Call(g, "backward", "numpy", "float32", 4, grads="xw")))
    only_x = naive.counts(naive.plan(Call(g, "backward", "numpy", "float32", 4, grads="x")))
    only_w = naive.counts(naive.plan(Call(g, "backward", "numpy", "float32", 4, grads="w")))
    assert only_x.bytes < both.bytes and only_w.bytes < both.bytes


def test_depthwise_chunk_fits_its_frames():
    big = conv_geometry((16, 64, 56, 56), (64, 1, 3, 3), padding=1, groups=64)
    per_sample = (64 * 59 + 2 * 64 * 56) * 58
    assert naive.samples_per_chunk(big) == max(1, (1 << 21) // per_sample)
    assert naive.samples_per_chunk(big, cached=False) == 16
    backward = naive.plan(Call(big, "backward", "numpy", "float32", 4))
    assert 0 < naive.workspace(backward) < np.inf
