"""conv2d / conv2d_backward: the lecture's worked example, output-size rules, capabilities.

The random-geometry properties live in test_conv_properties.py, the error paths in
test_conv_errors.py.
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest

import arraycnn as ac
from arraycnn.backend import device_of
from arraycnn.testing import assert_close

DTYPES = ["float32", "float64"]

# The lecture's worked example: a 6x6 image and the 3x3 mean filter, no padding.
IMAGE = [
    [4, 1, 2, 9, 8, 6],
    [9, 5, 9, 5, 8, 5],
    [1, 5, 9, 7, 6, 4],
    [2, 9, 8, 3, 7, 1],
    [8, 1, 6, 4, 2, 2],
    [1, 0, 5, 7, 8, 2],
]
# ... and its output as printed in the lecture, to two decimals.
LECTURE_OUTPUT = [
    [5, 5.78, 7, 6.44],
    [6.33, 6.67, 6.89, 5.11],
    [5.44, 5.78, 5.78, 4],
    [4.44, 4.78, 5.56, 4],
]
# The window sums behind it (by hand: e.g. 4+1+2+9+5+9+1+5+9 = 45 -> 5).
WINDOW_SUMS = [
    [45, 52, 63, 58],
    [57, 60, 62, 46],
    [49, 52, 52, 36],
    [40, 43, 50, 36],
]


def _strategies(xp) -> list[str]:
    return [*ac.available_strategies(xp), "auto"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lecture_mean_filter_every_strategy(xp, to_xp, dtype):
    x = to_xp(np.asarray(IMAGE, dtype=dtype)[None, None])  # (1, 1, 6, 6)
    w = to_xp(np.full((1, 1, 3, 3), 1 / 9, dtype=dtype))
    exact = np.asarray(WINDOW_SUMS, dtype=np.float64)[None, None] / 9
    scale = exact  # all terms are positive: sum |x||w| = y
    for name in _strategies(xp):
        y = ac.conv2d(x, w, padding="valid", strategy=name)
        assert_close(y, exact, scale=scale, xp=xp, dtype=getattr(xp, dtype), device=device_of(x))
        two_decimals = np.round(ac.to_numpy(y)[0, 0].astype(np.float64), 2)
        np.testing.assert_array_equal(two_decimals, LECTURE_OUTPUT, err_msg=name)


def test_lecture_window_sums_are_the_definition():
    """The hand-written sums above are the explicit-loop oracle's (guards the table itself)."""
    x = np.asarray(IMAGE, dtype=np.float64)[None, None]
    y = oracles.correlate_loops(x, np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(y[0, 0], WINDOW_SUMS)


# The lecture's output-size rules, hand-computed:
# (input, kernel, stride, padding, output)
SIZE_RULES = [
    # no padding: i - k + 1
    (6, 3, 1, 0, 4),
    (5, 4, 1, 0, 2),
    (7, 7, 1, 0, 1),
    (5, 1, 1, 0, 5),
    # half padding p = k // 2, odd k: output i
    (5, 3, 1, 1, 5),
    (6, 5, 1, 2, 6),
    (4, 7, 1, 3, 4),
    # full padding p = k - 1: i + k - 1
    (5, 3, 1, 2, 7),
    (4, 4, 1, 3, 7),
    (1, 6, 1, 5, 6),
    # strided: floor((i + 2p - k) / s) + 1
    (5, 3, 2, 0, 2),
    (5, 3, 2, 1, 3),
    (6, 3, 2, 1, 3),
    (7, 3, 2, 1, 4),
    (8, 2, 3, 0, 3),
    (9, 4, 3, 2, 4),
]


@pytest.mark.parametrize(("i", "k", "s", "p", "o"), SIZE_RULES)
def test_lecture_output_size_rules(i, k, s, p, o):
    assert ac.output_size(i, k, stride=s, pad_lo=p, pad_hi=p, dilation=1) == o
    geom = ac.conv_geometry((2, 3, i, i + 1), (4, 3, k, k), stride=s, padding=p)
    assert (geom.ho, geom.wo) == (o, (i + 1 + 2 * p - k) // s + 1)
    assert geom.y_shape == (2, 4, geom.ho, geom.wo)


@pytest.mark.parametrize(("i", "k", "s", "p", "o"), SIZE_RULES)
def test_output_shapes_follow_the_rules(xp, to_xp, i, k, s, p, o):
    x = to_xp(np.ones((1, 2, i, i), dtype=np.float32))
    w = to_xp(np.ones((3, 2, k, k), dtype=np.float32))
    for name in ("naive", "im2col"):
        y = ac.conv2d(x, w, stride=s, padding=p, strategy=name)
        assert tuple(y.shape) == (1, 3, o, o)


def test_named_paddings_give_the_lecture_sizes():
    """'valid' = no padding, 'same' = half padding (stride 1), 'full' = full padding."""
    for i, k in [(6, 3), (5, 5), (9, 1), (7, 4)]:
        x_shape, w_shape = (1, 1, i, i), (1, 1, k, k)
        assert ac.conv_geometry(x_shape, w_shape, padding="valid").ho == i - k + 1
        assert ac.conv_geometry(x_shape, w_shape, padding="same").ho == i
        assert ac.conv_geometry(x_shape, w_shape, padding="full").ho == i + k - 1


# "same" with stride and dilation, TensorFlow's rule, hand-computed:
# output ceil(i / s); total = max((o - 1) s + d (k - 1) + 1 - i, 0); (total // 2, rest).
# (input, kernel, stride, dilation, output, (pad_lo, pad_hi))
SAME_TABLE = [
    (5, 3, 1, 1, 5, (1, 1)),
    (6, 4, 1, 1, 6, (1, 2)),  # even kernel: the odd pixel at the end
    (5, 3, 2, 1, 3, (1, 1)),
    (6, 3, 2, 1, 3, (0, 1)),
    (7, 2, 2, 1, 4, (0, 1)),
    (6, 2, 2, 1, 3, (0, 0)),
    (10, 3, 3, 1, 4, (1, 1)),
    (4, 1, 3, 1, 2, (0, 0)),
    (5, 3, 1, 2, 5, (2, 2)),  # dilated kernel spans 5
    (7, 3, 2, 3, 4, (3, 3)),  # spans 7: (4-1)*2 + 7 - 7 = 6
    (1, 5, 2, 1, 1, (2, 2)),
    (8, 5, 3, 1, 3, (1, 2)),  # (3-1)*3 + 5 - 8 = 3
]


@pytest.mark.parametrize(("i", "k", "s", "d", "o", "pads"), SAME_TABLE)
def test_same_padding_table(i, k, s, d, o, pads):
    geom = ac.conv_geometry(
        (1, 1, i, 6), (1, 1, k, 1), stride=(s, 1), dilation=(d, 1), padding="same"
    )
    assert geom.ho == o
    assert geom.padding[0] == pads
    assert geom.wo == 6 and geom.padding[1] == (0, 0)


@pytest.mark.parametrize(("i", "k", "s", "d", "o", "pads"), SAME_TABLE)
def test_same_padding_values(xp, to_xp, rng, i, k, s, d, o, pads):
    """conv2d(padding="same") equals the loop oracle with the table's explicit padding."""
    x = rng.standard_normal((1, 2, i, i + 1))
    w = rng.standard_normal((2, 2, k, k))
    col_pads = oracles.explicit_padding("same", (i, i + 1), (k, k), s, d)[1]
    expected = oracles.correlate_loops(x, w, stride=s, dilation=d, padding=(pads, col_pads))
    geometry = {"stride": s, "dilation": d, "padding": (pads, col_pads)}
    scales = {m: oracles.error_scales(x, w, model=m, **geometry)[0] for m in oracles.MODELS}
    assert expected.shape[2] == o
    tx, tw = to_xp(x), to_xp(w)
    names = ac.available_strategies(xp)
    for name in oracles.runnable(names, x.shape, w.shape, stride=s, dilation=d, padding="same"):
        y = ac.conv2d(tx, tw, stride=s, dilation=d, padding="same", strategy=name)
        s_ = scales[oracles.ERROR_MODEL[name]["y"]]
        assert_close(
            y, expected, scale=s_, xp=xp, dtype=xp.float64, device=device_of(tx), err_msg=name
        )


def test_padding_forms_are_equivalent(rng):
    """int, pair, ((t, b), (l, r)) and the names describe the same padded input."""
    x = rng.standard_normal((1, 1, 7, 8))
    w = rng.standard_normal((1, 1, 3, 3))
    forms = [
        (1, (1, 1), ((1, 1), (1, 1)), "same"),
        (0, (0, 0), ((0, 0), (0, 0)), "valid"),
        (2, (2, 2), ((2, 2), (2, 2)), "full"),
    ]
    for group in forms:
        expected = oracles.correlate_loops(x, w, padding=group[0])
        for padding in group:
            assert_close(ac.conv2d(x, w, padding=padding, strategy="naive"), expected)
    asym = ac.conv2d(x, w, padding=((0, 2), (3, 1)), strategy="im2col")
    assert_close(asym, oracles.correlate_loops(x, w, padding=((0, 2), (3, 1))))
    assert asym.shape == (1, 1, 7, 10)


def test_padding_strings_are_case_insensitive():
    x = np.ones((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    assert ac.conv2d(x, w, padding="SAME").shape == (1, 1, 5, 5)
    assert ac.conv2d(x, w, padding="Full").shape == (1, 1, 7, 7)


def test_bias_is_added_per_output_channel(xp, to_xp):
    x = to_xp(np.zeros((2, 1, 4, 4)))
    w = to_xp(np.ones((3, 1, 2, 2)))
    b = to_xp(np.asarray([1.0, -2.0, 0.5]))
    for name in _strategies(xp):
        y = ac.conv2d(x, w, b, strategy=name)
        expected = np.broadcast_to(np.asarray([1.0, -2.0, 0.5])[None, :, None, None], (2, 3, 3, 3))
        assert_close(y, expected, xp=xp, dtype=xp.float64, device=device_of(x), err_msg=name)


def test_backward_of_the_lecture_example(xp, to_xp):
    """gy = ones: gw[i, j] = sum of the 4x4 block at offset (i, j); gx counts the windows."""
    image = np.asarray(IMAGE, dtype=np.float64)
    x = to_xp(image[None, None])
    w = to_xp(np.full((1, 1, 3, 3), 1 / 9))
    gy = to_xp(np.ones((1, 1, 4, 4)))
    windows = np.zeros((6, 6))  # how many 3x3 windows contain each pixel
    for p in range(4):
        for q in range(4):
            windows[p : p + 3, q : q + 3] += 1
    block_sums = [[image[i : i + 4, j : j + 4].sum() for j in range(3)] for i in range(3)]
    for name in _strategies(xp):
        gx, gw, gb = ac.conv2d_backward(gy, x, w, strategy=name)
        want = {"xp": xp, "dtype": xp.float64, "device": device_of(x), "err_msg": name}
        assert_close(gx, windows[None, None] / 9, scale=np.abs(windows / 9), **want)
        assert_close(gw, np.asarray(block_sums)[None, None], **want)
        assert_close(gb, [16.0], **want)


def test_every_strategy_has_an_error_model():
    """The tests hold each strategy to the scale of its error model (oracles.ERROR_MODEL)."""
    assert set(oracles.ERROR_MODEL) == set(ac.STRATEGY_NAMES)
    for models in oracles.ERROR_MODEL.values():
        assert set(models) == {"y", "gx", "gw"} and set(models.values()) <= set(oracles.MODELS)


def test_available_strategies():
    assert ac.available_strategies() == list(ac.STRATEGY_NAMES)
    assert set(ac.STRATEGY_NAMES) == {"naive", "separable", "im2col", "fft", "winograd"}
    for name in ("numpy", "array_api_strict"):
        assert ac.available_strategies(name) == list(ac.STRATEGY_NAMES)


def test_choose_strategy_names_a_runnable_strategy(xp, to_xp, rng):
    for k in (1, 3, 7):
        x = to_xp(rng.standard_normal((2, 3, 12, 12)))
        w = to_xp(rng.standard_normal((4, 3, k, k)))
        chosen = ac.choose_strategy(x, w, padding="same")
        assert chosen in ac.available_strategies(xp)
        assert ac.choose_strategy(x, w, strategy=chosen.upper()) == chosen


def test_rank_one_kernel_auto_agrees(rng):
    """A separable (rank-1) 7x7 kernel through 'auto' still matches the oracle."""
    x = rng.standard_normal((1, 2, 20, 20))
    u, v = rng.standard_normal((2, 7)), rng.standard_normal((2, 7))
    w = (u[:, :, None] * v[:, None, :])[None]  # (1, 2, 7, 7), rank one per slice
    y = ac.conv2d(x, w, padding="same")
    model = oracles.ERROR_MODEL[ac.choose_strategy(x, w, padding="same")]["y"]
    (scale,) = oracles.error_scales(x, w, model=model, padding="same")
    assert_close(y, oracles.correlate_scipy(x, w, padding="same"), scale=scale)


@pytest.mark.parametrize("name", [n for n in ac.STRATEGY_NAMES if ac.CAPABILITIES[n].exact_sums])
def test_exact_sums_strategies_are_exact_on_integer_data(name):
    """capabilities: exact_sums=True means integer-valued data gives the exact integers."""
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, (2, 3, 9, 9)).astype(np.float64)
    w = rng.integers(-4, 5, (4, 3, 3, 3)).astype(np.float64)
    gy = rng.integers(-3, 4, (2, 4, 7, 7)).astype(np.float64)
    y = ac.conv2d(x, w, strategy=name)
    gx, gw, _ = ac.conv2d_backward(gy, x, w, strategy=name)
    np.testing.assert_array_equal(y, oracles.correlate_loops(x, w))
    expected_gx, expected_gw, _ = oracles.correlate_loops_backward(gy, x, w)
    np.testing.assert_array_equal(gx, expected_gx)
    np.testing.assert_array_equal(gw, expected_gw)


@pytest.mark.parametrize("name", [n for n in ac.STRATEGY_NAMES if ac.CAPABILITIES[n].nan_local])
def test_nan_local_strategies_keep_nan_in_its_windows(name):
    """capabilities: nan_local=True means a NaN reaches only the outputs whose window has it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 9, 9))
    x[1, 0, 4, 6] = np.nan
    w = rng.standard_normal((2, 2, 3, 3))
    y = ac.conv2d(x, w, padding=1, stride=(1, 2), strategy=name)
    expected = oracles.correlate_loops(x, w, padding=1, stride=(1, 2))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    # padded pixel (5, 7): output rows 3-5, and of the columns 2q..2q+2 only q = 3; F = 2
    assert np.isnan(expected).sum() == 2 * 3 * 1


@pytest.mark.parametrize("strategy", [*ac.STRATEGY_NAMES, "auto"])
@pytest.mark.parametrize(("x_order", "w_order", "gy_order"), [(">", "<", ">"), ("<", ">", "<")])
def test_mixed_byte_orders(rng, strategy, x_order, w_order, gy_order):
    """NumPy arrays of either byte order mix, as in NumPy's arithmetic: the values of the
    oracle, the results in native order."""
    geometry = {"padding": ((1, 0), (2, 1))}  # stride 1: every strategy takes it
    x = rng.standard_normal((2, 3, 7, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 4, 6, 9))
    y = ac.conv2d(
        x.astype(f"{x_order}f8"), w.astype(f"{w_order}f8"), b.astype(f"{gy_order}f8"),
        strategy=strategy, **geometry,
    )  # fmt: skip
    grads = ac.conv2d_backward(
        gy.astype(f"{gy_order}f8"), x.astype(f"{x_order}f8"), w.astype(f"{w_order}f8"),
        strategy=strategy, **geometry,
    )  # fmt: skip
    expected = [oracles.correlate_loops(x, w, b, **geometry)]
    expected += oracles.correlate_loops_backward(gy, x, w, **geometry)
    scales = oracles.error_scales(x, w, b, gy=gy, **geometry)
    for got, want, scale in zip([y, *grads], expected, scales):
        assert got.dtype.isnative and got.dtype == np.float64
        assert_close(got, want, scale=scale)


@pytest.mark.parametrize("stride", [(1, 2), 1])
def test_non_contiguous_inputs(xp, to_xp, rng, stride):
    """Strided and permuted views give the same results as the oracle on their values."""
    big = rng.standard_normal((2, 6, 11, 3))
    w_big = rng.standard_normal((3, 4, 2, 5))
    tx = xp.permute_dims(to_xp(big), (0, 3, 1, 2))[:, :, ::2, 1:]  # (2, 3, 3, 10)
    tw = xp.permute_dims(to_xp(w_big), (1, 0, 3, 2))[:, :, ::2, :]  # (4, 3, 3, 2)
    assert tuple(tx.shape) == (2, 3, 3, 10) and tuple(tw.shape) == (4, 3, 3, 2)
    x = np.transpose(big, (0, 3, 1, 2))[:, :, ::2, 1:]
    w = np.transpose(w_big, (1, 0, 3, 2))[:, :, ::2, :]
    kwargs = {"padding": ((1, 0), (0, 2)), "stride": stride}
    # Ho = 3 + 1 - 3 + 1, Wo = (10 + 2 - 2) // stride + 1
    gy = rng.standard_normal((2, 4, 2, 6 if stride == (1, 2) else 11))
    expected = (
        oracles.correlate_loops(x, w, **kwargs),
        *oracles.correlate_loops_backward(gy, x, w, **kwargs)[:2],
    )
    for name in oracles.runnable(ac.available_strategies(xp), x.shape, w.shape, **kwargs):
        models = oracles.ERROR_MODEL[name]
        scales = {
            m: oracles.error_scales(x, w, None, gy, model=m, **kwargs) for m in oracles.MODELS
        }
        got = (
            ac.conv2d(tx, tw, strategy=name, **kwargs),
            *ac.conv2d_backward(to_xp(gy), tx, tw, strategy=name, **kwargs)[:2],
        )
        for k, (a, e, label) in enumerate(zip(got, expected, ("y", "gx", "gw"))):
            assert_close(
                a,
                e,
                scale=scales[models[label]][k],
                xp=xp,
                dtype=xp.float64,
                device=device_of(tx),
                err_msg=f"{label} {name}",
            )
