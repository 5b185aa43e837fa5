"""Complex data: ``conv2d`` / ``conv2d_backward`` (NCHW) and ``correlate2d`` / ``convolve2d``.

Oracles: explicit loops over the taps in complex128 (torch's conventions: the forward
multiplies without conjugation; the gradients are ``dL/dRe + i dL/dIm`` of a real loss,
so ``gx`` gathers ``gy * conj(w)`` and ``gw`` sums ``conj(x) * gy``), torch's own complex
``conv2d`` and autograd (which those conventions are checked against), and
``scipy.signal`` for the filters. Error scale: the same loops on ``|x|`` and ``|w|`` plus
the product of the whole maps' norms (FFT and separable round relative to those).
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import scipy.signal

import arraycnn as ac
from arraycnn.backend import to_numpy
from arraycnn.filters import convolve2d, correlate2d
from arraycnn.testing import assert_close

STRATEGIES = ("auto", *ac.available_strategies())
GEOMETRIES = [
    {"stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    {"stride": 2, "padding": 1, "dilation": 1, "groups": 2},
    {"stride": (1, 2), "padding": ((2, 0), (1, 1)), "dilation": 2, "groups": 1},
]


def _complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding):
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple(_pair(p) for p in padding)


def _tap(a, p, q, geom, ho, wo):
    """a[..., p*dh + sh*i, q*dw + sw*j] for the ho x wo outputs: the window of tap (p, q)."""
    (sh, sw), (dh, dw) = _pair(geom["stride"]), _pair(geom["dilation"])
    return a[
        ..., p * dh : p * dh + sh * (ho - 1) + 1 : sh, q * dw : q * dw + sw * (wo - 1) + 1 : sw
    ]


def _loops(x, w, geom):
    """(padded x, y, ho, wo): the complex correlation by explicit loops over f, c and taps."""
    (pt, pb), (pl, pr) = _pads(geom["padding"])
    (sh, sw), (dh, dw) = _pair(geom["stride"]), _pair(geom["dilation"])
    xpad = np.pad(x.astype(np.complex128), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _, hp, wp = xpad.shape
    f, cg, kh, kw = w.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    fg = f // geom["groups"]
    y = np.zeros((n, f, ho, wo), np.complex128)
    for k in range(f):
        for c in range(cg):
            channel = (k // fg) * cg + c
            for p in range(kh):
                for q in range(kw):
                    y[:, k] += w[k, c, p, q] * _tap(xpad[:, channel], p, q, geom, ho, wo)
    return xpad, y, ho, wo


def conv_loops(x, w, geom):
    return _loops(x, w, geom)[1]


def conv_loops_backward(gy, x, w, geom):
    """torch's convention: gx from gy * conj(w), gw from conj(x) * gy, gb = sum gy."""
    (pt, _), (pl, _) = _pads(geom["padding"])
    xpad, _, ho, wo = _loops(x, w, geom)
    f, cg, kh, kw = w.shape
    fg = f // geom["groups"]
    gxpad, gw = np.zeros_like(xpad), np.zeros(w.shape, np.complex128)
    for k in range(f):
        for c in range(cg):
            channel = (k // fg) * cg + c
            for p in range(kh):
                for q in range(kw):
                    _tap(gxpad[:, channel], p, q, geom, ho, wo)[...] += (
                        np.conj(w[k, c, p, q]) * gy[:, k]
                    )
                    window = _tap(xpad[:, channel], p, q, geom, ho, wo)
                    gw[k, c, p, q] = np.sum(np.conj(window) * gy[:, k])
    gx = gxpad[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]
    return gx, gw, gy.sum(axis=(0, 2, 3))


#: The real dtype of a complex dtype's embedding (conv2d computes complex data as one real
#: convolution), which is what a strategy's dtype limits apply to.
REAL = {"complex64": "float32", "complex128": "float64"}


def _scale(x, w, geom):
    direct = conv_loops(np.abs(x), np.abs(w), geom).real
    return direct + np.linalg.norm(x) * np.linalg.norm(w)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=["plain", "strided-groups", "dilated-asym"])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_conv2d_complex_matches_loops(strategy, geom, dtype, xp, to_xp, rng):
    x, w = _complex(rng, (2, 4, 7, 8), dtype), _complex(rng, (6, 4 // geom["groups"], 3, 2), dtype)
    b = _complex(rng, (6,), dtype)
    if not oracles.runnable([strategy], x.shape, w.shape, REAL[dtype], **geom):
        with pytest.raises(ValueError, match=f"strategy='{strategy}' cannot run this call"):
            ac.conv2d(to_xp(x), to_xp(w), to_xp(b), **geom, strategy=strategy)
        return
    expected = conv_loops(x, w, geom) + b[None, :, None, None]
    y = ac.conv2d(to_xp(x), to_xp(w), to_xp(b), **geom, strategy=strategy)
    assert_close(y, expected, xp=xp, dtype=getattr(xp, dtype), scale=_scale(x, w, geom) + 1)

    gy = _complex(rng, expected.shape, dtype)
    gx, gw, gb = ac.conv2d_backward(to_xp(gy), to_xp(x), to_xp(w), **geom, strategy=strategy)
    ex, ew, eb = conv_loops_backward(gy, x, w, geom)
    gy_norm = np.linalg.norm(gy)
    assert_close(gx, ex, dtype=getattr(xp, dtype), scale=gy_norm * np.linalg.norm(w))
    assert_close(gw, ew, dtype=getattr(xp, dtype), scale=gy_norm * np.linalg.norm(x))
    assert_close(gb, eb, dtype=getattr(xp, dtype), scale=np.abs(gy).sum())


def test_conv2d_backward_complex_needs(rng):
    x, w = _complex(rng, (1, 2, 5, 5)), _complex(rng, (3, 2, 2, 2))
    gy = _complex(rng, (1, 3, 4, 4))
    gx, gw, gb = ac.conv2d_backward(gy, x, w, needs=("b",))
    assert gx is None and gw is None
    assert_close(gb, gy.sum(axis=(0, 2, 3)))
    gx, gw, gb = ac.conv2d_backward(gy, x, w, needs=("w",))
    assert gx is None and gb is None
    geom = GEOMETRIES[0]
    assert_close(gw, conv_loops_backward(gy, x, w, geom)[1], scale=np.linalg.norm(gy) * 5)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=["plain", "strided-groups", "dilated-asym"])
def test_conventions_are_torchs(geom, rng):
    """The loops' conventions are torch's complex conv2d and autograd; arraycnn's conv2d on
    torch tensors differentiates the same under torch autograd."""
    torch = pytest.importorskip("torch")
    x, w = _complex(rng, (2, 4, 7, 8)), _complex(rng, (6, 4 // geom["groups"], 3, 2))
    padding = _pads(geom["padding"])
    xpad = np.pad(x, ((0, 0), (0, 0), *padding))
    options = {k: geom[k] for k in ("stride", "dilation", "groups")}
    flat = {**geom, "padding": 0}
    gy = None
    grads = []
    for run in ("torch", "arraycnn"):
        xt = torch.tensor(xpad if run == "torch" else x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        if run == "torch":
            y = torch.nn.functional.conv2d(xt, wt, **options)
            assert_close(y.detach(), conv_loops(xpad, w, flat), scale=_scale(xpad, w, flat))
        else:
            y = ac.conv2d(xt, wt, **geom)
        gy = _complex(rng, tuple(y.shape)) if gy is None else gy
        y.backward(torch.tensor(gy))
        gx = xt.grad.numpy()
        if run == "torch":
            (pt, _), (pl, _) = padding
            gx = gx[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]
        grads.append((gx, wt.grad.numpy()))
    ex, ew, _ = conv_loops_backward(gy, x, w, geom)
    scale = np.linalg.norm(gy) * (np.linalg.norm(w) + np.linalg.norm(x))
    for gx, gw in grads:
        assert_close(gx, ex, scale=scale)
        assert_close(gw, ew, scale=scale)


def test_choose_strategy_complex():
    x, w = np.ones((1, 2, 16, 16), np.complex64), np.ones((3, 2, 3, 3), np.complex64)
    assert ac.choose_strategy(x, w) in ac.available_strategies()
    assert ac.choose_strategy(x, w, strategy="fft") == "fft"


# --------------------------------------------------------------------------- filters

SCIPY = {"correlate2d": scipy.signal.correlate2d, "convolve2d": scipy.signal.convolve2d}
OURS = {"correlate2d": correlate2d, "convolve2d": convolve2d}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("func", sorted(OURS))
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_complex_filters_match_scipy(strategy, func, boundary, xp, to_xp, rng):
    image, kernel = _complex(rng, (6, 7)), _complex(rng, (3, 4))
    fill = 0.5 - 2j
    for mode in ("full", "same", "valid"):
        for a, k in ((image, kernel), (kernel, image)):  # the second swaps in "valid"
            if mode != "valid" and a is kernel:
                continue
            expected = SCIPY[func](a, k, mode, boundary, fill)
            got = OURS[func](to_xp(a), to_xp(k), mode, boundary, fill, strategy=strategy)
            scale = SCIPY[func](np.abs(a), np.abs(k), mode, boundary, abs(fill)).real
            scale = scale + np.linalg.norm(a) * np.linalg.norm(k) + abs(fill) * np.abs(k).sum()
            assert_close(got, expected, xp=xp, dtype=xp.complex128, scale=scale, err_msg=mode)


@pytest.mark.parametrize("func", sorted(OURS))
def test_complex_with_real_and_integer_inputs(func, xp, to_xp, rng):
    """Result dtypes are NumPy's promotion; a real input meets the complex one as SciPy's."""
    image, kernel = rng.integers(-5, 6, (5, 5)), _complex(rng, (2, 3), np.complex64)
    got = OURS[func](to_xp(image), to_xp(kernel), "same", fillvalue=1j)
    assert got.dtype == xp.complex128  # int64 with complex64
    expected = SCIPY[func](image, kernel, "same", fillvalue=1j)
    assert_close(got, expected, scale=np.abs(image).max() * np.abs(kernel).sum() + 3)
    got = OURS[func](to_xp(image.astype(np.float32)), to_xp(kernel), "full")
    assert got.dtype == xp.complex64
    expected = SCIPY[func](image.astype(np.float32), kernel, "full")
    assert_close(got, expected, scale=np.abs(image).max() * np.abs(kernel).sum())


def test_complex_fillvalue_needs_a_complex_result():
    with pytest.raises(ValueError, match="could not cast `fillvalue` directly to the output"):
        convolve2d(np.ones((3, 3)), np.ones((2, 2)), fillvalue=1 + 0j)
    with pytest.raises(ValueError, match="could not cast `fillvalue` directly to the output"):
        correlate2d(np.ones((3, 3), np.int8), np.ones((2, 2), np.int8), fillvalue=np.array([2j]))


# --------------------------------------------------------------------------- array_like


@pytest.mark.parametrize("func", sorted(OURS))
def test_lists_tuples_and_scalars_as_numpy_converts_them(func):
    a, k = [[1, 2, 3], [4, 5, 6]], ((1.5, -1), (2, 0))
    expected = SCIPY[func](a, k, "same", "wrap")
    got = OURS[func](a, k, "same", "wrap")
    assert isinstance(got, np.ndarray) and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    got = OURS[func]([[1, 2], [3, 4]], [[2]])  # int64 lists give int64, as in SciPy
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[2, 4], [6, 8]])
    with pytest.raises(ValueError, match=r"in1 must be 2-D .* got shape \(\)"):
        OURS[func](3, [[4]])


def test_a_list_joins_the_other_inputs_namespace():
    torch = pytest.importorskip("torch")
    image = torch.arange(12.0, dtype=torch.float64).reshape(3, 4)
    got = correlate2d(image, [[1, -1]], "valid")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    expected = scipy.signal.correlate2d(image.numpy(), [[1, -1]], "valid")
    np.testing.assert_array_equal(to_numpy(got), expected)


# --------------------------------------------------------------------------- exact auto


@pytest.mark.parametrize("favoured", ["fft", "separable"])
@pytest.mark.parametrize("func", sorted(OURS))
def test_auto_is_exact_on_integer_valued_floats(favoured, func, favour, rng):
    """With auto's cost model favouring an inexact strategy, integer-valued float64 inputs
    whose sums are exact in float64 still get SciPy's exact direct sums (NumPy inputs)."""
    favour(favoured)
    image = rng.integers(-1000, 1000, (40, 40)).astype(np.float64)
    kernel = np.outer(rng.integers(1, 50, 7), rng.integers(1, 50, 7)).astype(np.float64)
    for mode in ("full", "same"):
        expected = SCIPY[func](image, kernel, mode)
        np.testing.assert_array_equal(OURS[func](image, kernel, mode), expected)
    complex_image = image + 1j * image[::-1]
    expected = SCIPY[func](complex_image, kernel, "same", fillvalue=3 - 2j)
    got = OURS[func](complex_image, kernel, "same", fillvalue=3 - 2j)
    np.testing.assert_array_equal(got, expected)


def test_auto_is_free_for_non_integer_floats(favour, rng):
    """The rule reads integer-valued inputs only: a fractional kernel leaves auto's choice
    to the cost model (here the favoured FFT, whose rounding is within tolerance)."""
    favour("fft")
    image, kernel = rng.standard_normal((40, 40)), rng.standard_normal((7, 7))
    expected = scipy.signal.convolve2d(image, kernel, "same")
    got = convolve2d(image, kernel, "same")
    scale = np.linalg.norm(image) * np.linalg.norm(kernel)
    assert_close(got, expected, scale=scale)
    assert not np.array_equal(got, expected)  # FFT rounding, not direct sums
