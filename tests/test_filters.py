"""correlate2d / convolve2d against scipy.signal (the independent oracle), on every backend.

Oracles: ``scipy.signal.correlate2d`` / ``convolve2d`` (direct sums in C) for the "fill",
"wrap" and "symm" boundaries; for arraycnn's own "reflect", ``numpy.pad(mode="reflect")``
followed by SciPy's "valid" correlation (the construction is checked against SciPy on
"symm" with ``numpy.pad(mode="symmetric")``). Error scale of every output: the same
operation on absolute values, ``|in1| (x) |in2|``, with ``|fillvalue|``; for Winograd the
"tile" model of ``tests/oracles.py`` on the "valid" convolution a filter call amounts to
(:func:`as_valid_conv`), and a forced Winograd on a kernel it does not take must raise.
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arraycnn as ac
from arraycnn.backend import device_of, resolve_backend, to_numpy
from arraycnn.filters import BOUNDARIES, MODES, convolve2d, correlate2d, extend
from arraycnn.testing import assert_close

SCIPY = {"correlate2d": scipy.signal.correlate2d, "convolve2d": scipy.signal.convolve2d}
OURS = {"correlate2d": correlate2d, "convolve2d": convolve2d}
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int16", "int32", "int64", "uint8")
EXACT_STRATEGIES = ("auto", "naive", "im2col")
ALL_STRATEGIES = ("auto", *ac.available_strategies())

IMAGE = [
    [4, 1, 2, 9, 8, 6],
    [9, 5, 9, 5, 8, 5],
    [1, 5, 9, 7, 6, 4],
    [2, 9, 8, 3, 7, 1],
    [8, 1, 6, 4, 2, 2],
    [1, 0, 5, 7, 8, 2],
]
MEAN_VALID = [
    [5, 5.78, 7, 6.44],
    [6.33, 6.67, 6.89, 5.11],
    [5.44, 5.78, 5.78, 4],
    [4.44, 4.78, 5.56, 4],
]


# --------------------------------------------------------------------------- oracles


def reflect_pads(mode, kernel_shape, func):
    """Extension of in1 per mode, written from SciPy's documented centring (test side)."""
    pads = []
    for k in kernel_shape:
        if mode == "full":
            pads.append((k - 1, k - 1))
        elif mode == "same":
            small, large = (k - 1) // 2, k // 2
            pads.append((large, small) if func == "convolve2d" else (small, large))
        else:
            pads.append((0, 0))
    return pads


def oracle_2d(func, x, k, mode, boundary, fill):
    """SciPy's answer for one 2-D image (float64 or integer NumPy)."""
    boundary = BOUNDARIES[boundary]
    if boundary != "reflect":
        return SCIPY[func](x, k, mode=mode, boundary=boundary, fillvalue=fill)
    padded = np.pad(x, reflect_pads(mode, k.shape, func), mode="reflect")
    return SCIPY[func](padded, k, mode="valid")


def oracle(func, x, k, mode, boundary, fill):
    """Oracle over a batch (..., H, W): one SciPy call per image."""
    flat = x.reshape(-1, *x.shape[-2:])
    outs = [oracle_2d(func, img, k, mode, boundary, fill) for img in flat]
    return np.stack(outs).reshape(*x.shape[:-2], *outs[0].shape)


def error_scale(func, x, k, mode, boundary, fill):
    """``|in1| (x) |in2|``: the rounding-error scale of every output, float64."""
    return oracle(
        func,
        np.abs(x.astype(np.float64)),
        np.abs(k.astype(np.float64)),
        mode,
        boundary,
        abs(float(fill)),
    )


#: numpy.pad modes of the boundaries (arraycnn's "reflect" is NumPy's).
NP_PAD = {"wrap": "wrap", "symm": "symmetric", "reflect": "reflect"}


def as_valid_conv(func, x, k, mode, boundary, fill):
    """The "valid" conv2d (one input channel) a filter call amounts to, on magnitudes.

    Returns ``(images (N, 1, He, We), kernels (F, 1, kh, kw), flip)``, float64: each image
    of ``|in1|`` extended per ``boundary`` (``|fillvalue|`` for "fill"), ``|in2|`` flipped
    for convolve2d; where "valid" swaps the roles (in2 the larger), ``|in2|`` is the one
    image and each image of ``|in1|`` a kernel, and for correlate2d the output comes out
    flipped (``flip``). One of N, F is 1.
    """
    flat = np.abs(x.astype(np.float64)).reshape(-1, *x.shape[-2:])  # (..., H, W) -> (N, H, W)
    kernel = np.abs(k.astype(np.float64))
    if mode == "valid" and not all(a >= b for a, b in zip(x.shape[-2:], k.shape)):
        kernels = flat[:, ::-1, ::-1] if func == "convolve2d" else flat
        return kernel[None, None], kernels[:, None], func == "correlate2d"
    pads = ((0, 0), *reflect_pads(mode, k.shape, func))
    canonical = BOUNDARIES[boundary]
    if canonical == "fill":
        images = np.pad(flat, pads, constant_values=abs(float(fill)))
    else:
        images = np.pad(flat, pads, mode=NP_PAD[canonical])
    kernel = kernel[::-1, ::-1] if func == "convolve2d" else kernel
    return images[:, None], kernel[None, None], False


def tile_scale(func, x, k, mode, boundary, fill):
    """Winograd's error scale of every output (shaped like the result): the "tile" model
    (oracles.tile_scales, at least the ``|in1| (x) |in2|`` of a plain sum)."""
    images, kernels, flip = as_valid_conv(func, x, k, mode, boundary, fill)
    (scale,) = oracles.error_scales(images, kernels, model="tile")  # (N, F, Ho, Wo)
    scale = scale.reshape(*x.shape[:-2], *scale.shape[-2:])  # N or F is 1
    return scale[..., ::-1, ::-1] if flip else scale


def winograd_refuses(func, x, k, mode, dtype) -> str | None:
    """Why a forced Winograd cannot run this filter call (None if it can)."""
    images, kernels, _ = as_valid_conv(func, x, k, mode, "fill", 0)
    return oracles.unsupported("winograd", images.shape, kernels.shape, dtype)


def move(a, xp):
    return ac.asarray(a, backend=xp)


# --------------------------------------------------------------------------- Hypothesis


@st.composite
def filter_cases(draw):
    """Image (batch) and kernel sizes, mode, boundary, fill, dtype, function, strategy."""
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    kh, kw = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    batch = draw(st.sampled_from([(), (), (2,), (2, 1)]))
    mode = draw(st.sampled_from(MODES))
    boundary = draw(st.sampled_from(["fill", "wrap", "symm", "reflect"]))
    fill = draw(st.sampled_from([0, 0, 1.5, -2]))
    dtype = draw(st.sampled_from(FLOAT_DTYPES + INT_DTYPES))
    func = draw(st.sampled_from(sorted(OURS)))
    kinds = EXACT_STRATEGIES if dtype in INT_DTYPES else ALL_STRATEGIES
    strategy = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    return (batch, (h, w), (kh, kw), mode, boundary, fill, dtype, func, strategy, seed)


def make_inputs(batch, hw, khw, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype in INT_DTYPES:
        low = 0 if dtype.startswith("u") else -9
        x = rng.integers(low, 10, (*batch, *hw)).astype(dtype)
        k = rng.integers(low, 4, khw).astype(dtype)
    else:
        x = rng.standard_normal((*batch, *hw)).astype(dtype)
        k = rng.standard_normal(khw).astype(dtype)
    return x, k


def valid_shapes_ok(hw, khw):
    return all(a >= b for a, b in zip(hw, khw)) or all(a <= b for a, b in zip(hw, khw))


def expected_for(func, x, k, mode, boundary, fill, dtype):
    """Oracle value and dtype; integer fills are SciPy's truncation."""
    if dtype in INT_DTYPES:
        fill = int(fill)  # SciPy truncates toward zero: 1.5 -> 1
        if dtype.startswith("u"):
            fill = abs(fill)
        return oracle(func, x, k, mode, boundary, fill), fill
    return oracle(func, x.astype(np.float64), k.astype(np.float64), mode, boundary, fill), fill


@settings(  # xp is a stateless namespace: sharing it across examples is fine
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ]
)
@given(case=filter_cases())
def test_matches_scipy(case, xp):
    batch, hw, khw, mode, boundary, fill, dtype, func, strategy, seed = case
    if mode == "valid" and not valid_shapes_ok(hw, khw):
        hw = khw  # keep the example, on compatible shapes (the error path is tested below)
    x, k = make_inputs(batch, hw, khw, dtype, seed)
    expected, fill = expected_for(func, x, k, mode, boundary, fill, dtype)
    x_xp, k_xp = move(x, xp), move(k, xp)
    if strategy == "winograd" and winograd_refuses(func, x, k, mode, dtype):
        with pytest.raises(ValueError, match="strategy='winograd' cannot run this call"):
            OURS[func](x_xp, k_xp, mode, boundary, fill, strategy=strategy)
        return
    got = OURS[func](x_xp, k_xp, mode, boundary, fill, strategy=strategy)
    out_dtype = getattr(xp, dtype)
    if dtype in INT_DTYPES:
        assert got.dtype == out_dtype
        assert device_of(got) == device_of(x_xp)
        np.testing.assert_array_equal(to_numpy(got), expected.astype(dtype), strict=True)
        return
    scale = error_scale(func, x, k, mode, boundary, fill)
    if strategy in ("fft", "auto"):
        # FFT rounding is relative to the whole image, not to each window (module doc of
        # arraycnn.conv.fft); "auto" may choose the FFT.
        scale = np.maximum(scale, scale.max())
    if strategy == "winograd":
        scale = tile_scale(func, x, k, mode, boundary, fill)
    assert_close(got, expected, xp=xp, dtype=out_dtype, device=device_of(x_xp), scale=scale)


# --------------------------------------------------------------------------- fixed examples


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_lecture_mean_filter(strategy, xp):
    image = move(np.asarray(IMAGE, dtype=np.float64), xp)
    mean = move(np.full((3, 3), 1 / 9), xp)
    got = to_numpy(correlate2d(image, mean, "valid", strategy=strategy))
    np.testing.assert_array_equal(np.round(got, 2), MEAN_VALID)
    flipped = to_numpy(convolve2d(image, mean, "valid", strategy=strategy))
    np.testing.assert_array_equal(np.round(flipped, 2), MEAN_VALID)


def test_lecture_integer_sums_are_exact(xp):
    image = np.asarray(IMAGE, dtype=np.int64)
    ones = np.ones((3, 3), dtype=np.int64)
    got = correlate2d(move(image, xp), move(ones, xp), "valid")
    assert got.dtype == xp.int64
    np.testing.assert_array_equal(to_numpy(got), scipy.signal.correlate2d(image, ones, "valid"))
    np.testing.assert_array_equal(np.round(to_numpy(got) / 9, 2), MEAN_VALID)


@pytest.fixture(scope="module")
def photo():
    """scikit-learn's bundled china.jpg, grayscale float64, cropped to 96 x 128."""
    datasets = pytest.importorskip("sklearn.datasets")
    rgb = datasets.load_sample_image("china.jpg").astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])  # (427, 640, 3) -> (427, 640)
    return gray[150:246, 200:328]


def gaussian_kernel(size=7, sigma=1.5):
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)  # rank 1


SOBEL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


@pytest.mark.parametrize("kernel_name", ["gaussian", "sobel"])
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_photo_against_scipy(photo, kernel_name, strategy, xp):
    kernel = gaussian_kernel() if kernel_name == "gaussian" else SOBEL
    assert np.linalg.matrix_rank(kernel) == 1
    for func, mode, boundary in [
        ("convolve2d", "same", "symm"),
        ("correlate2d", "full", "fill"),
        ("correlate2d", "valid", "wrap"),
    ]:
        expected = SCIPY[func](photo, kernel, mode=mode, boundary=boundary)
        scale = SCIPY[func](np.abs(photo), np.abs(kernel), mode=mode, boundary=boundary)
        if strategy in ("fft", "auto"):
            scale = np.maximum(scale, scale.max())
        got = OURS[func](move(photo, xp), move(kernel, xp), mode, boundary, strategy=strategy)
        assert_close(got, expected, xp=xp, dtype=xp.float64, scale=scale, err_msg=func)


def test_photo_integer_sobel_is_exact(photo, xp):
    gray = np.round(photo).astype(np.uint8)
    sobel = SOBEL.astype(np.int8)
    for func in ("correlate2d", "convolve2d"):
        expected = SCIPY[func](gray, sobel, mode="same", boundary="symm")
        got = OURS[func](move(gray, xp), move(sobel, xp), "same", "symm")
        assert got.dtype == xp.int16  # numpy.result_type(uint8, int8)
        np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


# --------------------------------------------------------------------------- semantics


def test_extension_matches_numpy_pad(xp):
    """wrap / symm / reflect extensions, wider than the image too, equal numpy.pad's."""
    numpy_mode = {"wrap": "wrap", "symm": "symmetric", "reflect": "reflect"}
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 3), (2, 5), (4, 3)]:
        x = rng.standard_normal((2, h, w))
        for pads in [((0, 0), (1, 2)), ((3, 1), (0, 4)), ((9, 7), (6, 11))]:
            for boundary, np_mode in numpy_mode.items():
                got = extend(move(x, xp), pads, boundary, xp=xp)
                expected = np.pad(x, ((0, 0), *pads), mode=np_mode)
                np.testing.assert_array_equal(to_numpy(got), expected, err_msg=boundary)
            got = extend(move(x, xp), pads, "fill", 2.5, xp=xp)
            np.testing.assert_array_equal(
                to_numpy(got), np.pad(x, ((0, 0), *pads), constant_values=2.5)
            )


def test_reflect_oracle_construction_agrees_with_scipy_symm():
    """The reflect oracle (numpy.pad + SciPy valid) built the same way reproduces SciPy symm."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7))
    for k in (rng.standard_normal((4, 3)), rng.standard_normal((8, 9))):
        for func in SCIPY:
            for mode in ("full", "same"):
                padded = np.pad(x, reflect_pads(mode, k.shape, func), mode="symmetric")
                np.testing.assert_allclose(
                    SCIPY[func](padded, k, mode="valid"),
                    SCIPY[func](x, k, mode=mode, boundary="symm"),
                    rtol=1e-12,
                    atol=1e-12,
                )


@pytest.mark.parametrize("func", sorted(OURS))
def test_same_mode_centring_with_even_and_odd_kernels(func, xp):
    """Where "same" puts the odd extra row/column differs between the two functions."""
    rng = np.random.default_rng(8)
    x = rng.integers(-9, 10, (5, 6))
    for kh, kw in [(2, 2), (2, 3), (4, 1), (3, 4), (6, 7), (8, 8)]:
        k = rng.integers(-3, 4, (kh, kw))
        for boundary in ("fill", "wrap", "symm"):
            expected = SCIPY[func](x, k, "same", boundary, 2)
            got = OURS[func](move(x, xp), move(k, xp), "same", boundary, 2)
            np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("pad", "fill"),
        ("circular", "wrap"),
        ("symmetric", "symm"),
    ],
)
def test_boundary_aliases(alias, canonical, xp):
    rng = np.random.default_rng(2)
    x, k = rng.integers(-5, 5, (5, 6)), rng.integers(-2, 3, (3, 4))
    got = correlate2d(move(x, xp), move(k, xp), "same", alias, 3)
    expected = scipy.signal.correlate2d(x, k, "same", alias, 3)
    np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


@pytest.mark.parametrize("func", sorted(OURS))
def test_valid_swaps_like_scipy(func, xp):
    """in2 larger than in1 in "valid": SciPy's swap (and flip for correlate2d), batched too."""
    rng = np.random.default_rng(3)
    small, large = rng.integers(-5, 5, (3, 2, 3)), rng.integers(-5, 5, (6, 5))
    got = OURS[func](move(small, xp), move(large, xp), "valid")
    expected = np.stack([SCIPY[func](s, large, "valid") for s in small])
    assert tuple(got.shape) == (3, 5, 3)
    np.testing.assert_array_equal(to_numpy(got), expected, strict=True)
    # equal shapes: no swap, one output
    same = rng.integers(-5, 5, (6, 5))
    got = OURS[func](move(same, xp), move(large, xp), "valid")
    np.testing.assert_array_equal(to_numpy(got), SCIPY[func](same, large, "valid"))


def test_integer_results_wrap_like_scipy(xp):
    """SciPy sums in the result's integer type; casting the exact sum through int64 wraps alike."""
    x = np.array([[100, 100, 120], [90, -128, 127]], dtype=np.int8)
    k = np.array([[2, 2], [1, 3]], dtype=np.int8)
    for func in SCIPY:
        expected = SCIPY[func](x, k, "full")
        got = OURS[func](move(x, xp), move(k, xp), "full")
        assert got.dtype == xp.int8
        np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


@pytest.mark.parametrize("func", sorted(SCIPY))
@pytest.mark.parametrize(
    ("in1_dtype", "in2_dtype"), [(">f8", "<f8"), ("<f4", ">f4"), (">i4", ">i2")]
)
def test_big_endian_inputs_like_scipy(func, in1_dtype, in2_dtype):
    """NumPy arrays in either byte order: SciPy's values and result dtype (native order)."""
    rng = np.random.default_rng(6)
    x = rng.integers(-9, 10, (7, 9)).astype(in1_dtype)
    k = rng.integers(-3, 4, (3, 2)).astype(in2_dtype)
    expected = SCIPY[func](x, k, "same", "symm")
    got = OURS[func](x, k, "same", "symm")
    assert got.dtype == expected.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, expected)


def test_large_integers_exact_below_2_53(xp):
    rng = np.random.default_rng(4)
    x = rng.integers(-(2**40), 2**40, (9, 9), dtype=np.int64)
    k = rng.integers(-(2**6), 2**6, (3, 3), dtype=np.int64)  # sum|k| < 2**12: sums < 2**52
    expected = scipy.signal.correlate2d(x, k, "same", "wrap")
    got = correlate2d(move(x, xp), move(k, xp), "same", "wrap")
    np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


def test_integer_auto_never_takes_the_fft(xp):
    """A shape where float auto picks the FFT; the integer answer must still be exact."""
    rng = np.random.default_rng(5)
    x = rng.integers(-(2**30), 2**30, (64, 64), dtype=np.int64)
    k = rng.integers(-(2**10), 2**10, (21, 21), dtype=np.int64)
    as_float = (move(x[None, None] * 1.0, xp), move(k[None, None] * 1.0, xp))
    assert ac.choose_strategy(*as_float, padding="valid") == "fft"
    expected = scipy.signal.correlate2d(x, k, "valid")
    got = correlate2d(move(x, xp), move(k, xp), "valid")
    np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


def test_mixed_dtypes_follow_scipy(xp):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    k = np.ones((2, 2), dtype=np.float32)
    got = correlate2d(move(x, xp), move(k, xp))
    expected = scipy.signal.correlate2d(x, k)
    assert got.dtype == xp.float64 and expected.dtype == np.float64
    assert_close(got, expected, xp=xp, dtype=xp.float64)
    b = np.array([[True, False], [True, True]])
    got = correlate2d(move(b, xp), move(x.astype(np.int16), xp))
    assert got.dtype == xp.int16
    np.testing.assert_array_equal(to_numpy(got), scipy.signal.correlate2d(b, x.astype(np.int16)))


def test_float16_computed_in_float32():
    x = np.random.default_rng(6).standard_normal((6, 7)).astype(np.float16)
    k = np.array([[0.5, -1.0], [0.25, 2.0]], dtype=np.float16)
    got = convolve2d(x, k, "same", "symm")
    assert got.dtype == np.float16
    x64, k64 = x.astype(np.float64), k.astype(np.float64)
    expected = scipy.signal.convolve2d(x64, k64, "same", "symm")
    scale = scipy.signal.convolve2d(np.abs(x64), np.abs(k64), "same", "symm")
    assert_close(got, expected, dtype=np.float16, scale=scale)


def test_integer_fillvalue_truncates_like_scipy(xp):
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    k = np.ones((2, 2), dtype=np.int64)
    for fill in (1.7, -1.7, True, np.float64(2.5), np.array([3])):
        expected = scipy.signal.correlate2d(x, k, fillvalue=fill)
        got = correlate2d(move(x, xp), move(k, xp), fillvalue=fill)
        np.testing.assert_array_equal(to_numpy(got), expected, strict=True)


def test_fillvalue_from_any_namespace_and_ignored_off_fill(xp):
    x = np.arange(6.0).reshape(2, 3)
    k = np.ones((2, 2))
    got = correlate2d(move(x, xp), move(k, xp), fillvalue=move(np.array([[2.5]]), xp))
    assert_close(got, scipy.signal.correlate2d(x, k, fillvalue=2.5), xp=xp)
    got = correlate2d(move(x, xp), move(k, xp), boundary="wrap", fillvalue=[1, 2])
    assert_close(got, scipy.signal.correlate2d(x, k, boundary="wrap", fillvalue=[1, 2]), xp=xp)


# --------------------------------------------------------------------------- error paths


@pytest.fixture
def pair(xp):
    rng = np.random.default_rng(7)
    return move(rng.standard_normal((5, 6)), xp), move(rng.standard_normal((3, 3)), xp)


@pytest.mark.parametrize("func", sorted(OURS))
def test_wrong_ndim(func, xp):
    f = OURS[func]
    with pytest.raises(ValueError, match=r"in1 must be 2-D .* got shape \(5,\)"):
        f(move(np.ones(5), xp), move(np.ones((2, 2)), xp))
    with pytest.raises(ValueError, match=r"in2 must be 2-D \(kh, kw\), got shape \(1, 2, 2\)"):
        f(move(np.ones((5, 5)), xp), move(np.ones((1, 2, 2)), xp))
    with pytest.raises(ValueError, match=r"in1 must not be empty, got shape \(0, 5\)"):
        f(move(np.ones((0, 5)), xp), move(np.ones((2, 2)), xp))


def test_bad_mode(pair):
    with pytest.raises(ValueError, match=r"mode must be one of .*'full'.*got 'Full'"):
        correlate2d(*pair, mode="Full")
    with pytest.raises(TypeError, match="mode must be one of"):
        convolve2d(*pair, mode=1)


def test_bad_boundary(pair):
    with pytest.raises(ValueError, match=r"boundary must be one of .*got 'mirror'"):
        correlate2d(*pair, boundary="mirror")
    with pytest.raises(TypeError, match="boundary must be one of"):
        convolve2d(*pair, boundary=None)


def test_bad_strategy(pair):
    with pytest.raises(ValueError, match="strategy must be one of"):
        correlate2d(*pair, strategy="magic")


def test_non_scalar_fillvalue(pair, xp):
    """SciPy's error types and the phrases its own tests match."""
    with pytest.raises(ValueError, match=r"`fillvalue` must be scalar or an array with one"):
        correlate2d(*pair, fillvalue=[1, 2])
    with pytest.raises(ValueError, match=r"one element, got an array of shape \(2,\)"):
        correlate2d(*pair, fillvalue=move(np.array([1.0, 2.0]), xp))
    with pytest.raises(ValueError, match=r"`fillvalue` cannot be an empty array"):
        correlate2d(*pair, fillvalue=move(np.zeros(0), xp))
    with pytest.raises(ValueError, match=r"could not cast `fillvalue` directly to the output"):
        correlate2d(*pair, fillvalue=1j)
    with pytest.raises(ValueError, match="fillvalue must be a number, got str"):
        convolve2d(*pair, fillvalue="a")


def test_integer_fillvalue_errors(xp):
    x, k = move(np.ones((3, 3), np.int8), xp), move(np.ones((2, 2), np.int8), xp)
    with pytest.raises(ValueError, match="fillvalue must be finite for an integer result"):
        correlate2d(x, k, fillvalue=float("nan"))
    with pytest.raises(ValueError, match=r"fillvalue 300 is out of range .*int8"):
        correlate2d(x, k, fillvalue=300)


def test_forced_inexact_strategies_on_non_finite_input_name_the_filter_argument(xp):
    """The errors name in1, in2 and fillvalue (not the convolution's own x and w)."""
    image, kernel = np.ones((6, 6)), np.ones((3, 3))
    bad_image, bad_kernel = image.copy(), kernel.copy()
    bad_image[2, 3], bad_kernel[1, 1] = np.nan, np.inf
    with pytest.raises(
        ValueError,
        match=r"strategy='fft' cannot handle non-finite input: "
        r"in1 holds NaN or Inf",
    ):
        correlate2d(move(bad_image, xp), move(kernel, xp), strategy="fft")
    with pytest.raises(ValueError, match=r"in2 and fillvalue hold NaN or Inf and the FFT"):
        convolve2d(move(image, xp), move(bad_kernel, xp), fillvalue=np.nan, strategy="fft")
    with pytest.raises(
        ValueError,
        match=r"strategy='separable' .*: in2 holds NaN or Inf and "
        r"the SVD of the kernel is undefined",
    ):
        correlate2d(move(bad_image, xp), move(bad_kernel, xp), "same", strategy="separable")
    with pytest.raises(ValueError, match=r"in1 holds NaN"):  # swapped: in2 is the image
        correlate2d(move(bad_kernel, xp), move(image, xp), "valid", strategy="fft")
    y = correlate2d(move(bad_image, xp), move(kernel, xp), "valid", strategy="separable")
    assert np.isnan(to_numpy(y)).sum() == 9  # separable needs a finite kernel only
    with pytest.raises(ValueError, match=r"in1 holds NaN or Inf and Winograd would spread"):
        correlate2d(move(bad_image, xp), move(kernel, xp), strategy="winograd")
    with pytest.raises(ValueError, match=r"in2 and fillvalue hold NaN or Inf and Winograd"):
        convolve2d(move(image, xp), move(bad_kernel, xp), fillvalue=np.nan, strategy="winograd")


def test_forced_winograd_on_integer_filters_says_it_is_not_exact():
    image, kernel = np.arange(36, dtype=np.int32).reshape(6, 6), np.ones((3, 3), np.int32)
    with pytest.raises(ValueError, match=r"strategy='winograd' is not exact .*tile transforms"):
        correlate2d(image, kernel, strategy="winograd")


@pytest.mark.parametrize("func", sorted(OURS))
def test_valid_with_incompatible_shapes(func, xp):
    x, k = move(np.ones((5, 3)), xp), move(np.ones((3, 5)), xp)
    with pytest.raises(ValueError, match=r"mode='valid' needs one input at least as large"):
        OURS[func](x, k, "valid")


def test_bool_with_bool(xp):
    b = move(np.ones((3, 3), dtype=bool), xp)
    with pytest.raises(
        ValueError, match="in1 and in2 are both bool, which has no arithmetic result dtype"
    ):
        correlate2d(b, b)


@pytest.mark.parametrize("strategy", ["fft", "separable"])
def test_inexact_strategy_on_integers(strategy, xp):
    x, k = move(np.ones((6, 6), np.int32), xp), move(np.ones((3, 3), np.int32), xp)
    with pytest.raises(ValueError, match=rf"strategy='{strategy}' is not exact for integer"):
        correlate2d(x, k, strategy=strategy)


def test_integers_too_large(xp):
    x = move(np.full((4, 4), 2**50, dtype=np.int64), xp)
    k = move(np.full((3, 3), 2, dtype=np.int64), xp)
    with pytest.raises(ValueError, match=r"integer inputs too large for exact sums.*2\*\*53"):
        convolve2d(x, k)


def test_mixed_namespaces():
    torch_xp = pytest.importorskip("torch")
    t = torch_xp.ones((2, 2), dtype=torch_xp.float64)
    with pytest.raises(TypeError, match="different namespaces"):
        correlate2d(np.ones((4, 4)), t)
    strict = resolve_backend("array_api_strict")
    with pytest.raises(TypeError, match="different namespaces"):
        convolve2d(strict.ones((4, 4)), np.ones((2, 2)))


def test_object_and_ragged_inputs_are_refused():
    with pytest.raises(ValueError, match=r"in1 has dtype object, which is not a number type"):
        correlate2d(np.array([[1, None]], dtype=object), np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"in2 must be an array or nested sequences of numbers"):
        convolve2d(np.ones((2, 2)), [[1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match=r"in2 must be 2-D \(kh, kw\), got shape \(\)"):
        convolve2d(np.ones((2, 2)), 3)
