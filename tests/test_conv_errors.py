"""Bad input to conv2d / conv2d_backward / choose_strategy: clear errors naming the argument.

Every error is a ValueError or TypeError (RuntimeError for an unusable backend) raised at the
public boundary, with a message naming the argument and the offending values.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import arraycnn as ac
from arraycnn.backend import asarray, resolve_backend

X = np.ones((2, 3, 8, 8))
W = np.ones((4, 3, 3, 3))
GY = np.ones((2, 4, 6, 6))


def _backward(x, w, **kw):
    """conv2d_backward with a gy of the right shape where the geometry is valid."""
    try:
        y_shape = ac.conv_geometry(
            x.shape, w.shape, **{k: v for k, v in kw.items() if k != "strategy"}
        ).y_shape
    except (AttributeError, TypeError, ValueError):
        y_shape = GY.shape  # the error under test comes from x, w or the geometry
    return ac.conv2d_backward(np.ones(y_shape, dtype=getattr(x, "dtype", None)), x, w, **kw)


ENTRY_POINTS = {
    "conv2d": lambda x, w, **kw: ac.conv2d(x, w, **kw),
    "conv2d_backward": _backward,
    "choose_strategy": lambda x, w, **kw: ac.choose_strategy(x, w, **kw),
}


entry_points = pytest.mark.parametrize("call", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))


@entry_points
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "match"),
    [
        ((3, 8, 8), (4, 3, 3, 3), r"x must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)"),
        ((1, 2, 3, 8, 8), (4, 3, 3, 3), r"x must be 4-D .*got shape \(1, 2, 3, 8, 8\)"),
        ((2, 3, 8, 8), (3, 3, 3), r"w must be 4-D \(F, C/groups, kh, kw\), got shape \(3, 3, 3\)"),
        ((2, 3, 8, 8), (4, 3, 3, 3, 1), r"w must be 4-D .*got shape \(4, 3, 3, 3, 1\)"),
    ],
)
def test_wrong_rank(call, x_shape, w_shape, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones(x_shape), np.ones(w_shape))


@entry_points
def test_channel_mismatch(call):
    with pytest.raises(ValueError, match=r"channel mismatch: x has C=3 .*\(4, 2, 3, 3\).*groups=1"):
        call(X, np.ones((4, 2, 3, 3)))


@entry_points
def test_channel_mismatch_with_groups(call):
    x = np.ones((1, 6, 8, 8))
    with pytest.raises(ValueError, match=r"x has C=6 channels .*groups=2 expects C = 2 \* 2 = 4"):
        call(x, np.ones((4, 2, 3, 3)), groups=2)


@entry_points
def test_filters_not_divisible_by_groups(call):
    x = np.ones((1, 6, 8, 8))
    with pytest.raises(ValueError, match=r"w has F=5 filters, which is not divisible by groups=3"):
        call(x, np.ones((5, 2, 3, 3)), groups=3)


@entry_points
@pytest.mark.parametrize("groups", [0, -2])
def test_groups_not_positive(call, groups):
    with pytest.raises(ValueError, match=rf"groups must be positive, got {groups}"):
        call(X, W, groups=groups)


@entry_points
@pytest.mark.parametrize("groups", [1.0, "1", True])
def test_groups_not_an_int(call, groups):
    with pytest.raises(TypeError, match=r"groups must be an int"):
        call(X, W, groups=groups)


@entry_points
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {},
            r"dilated kernel \(9, 9\) \(kernel \(9, 9\), dilation \(1, 1\)\) is larger than "
            r"the padded input \(8, 8\)",
        ),
        ({"dilation": (1, 4)}, r"dilated kernel \(9, 33\) .* padded input \(8, 8\)"),
        ({"padding": ((0, 0), (1, 0))}, r"dilated kernel \(9, 9\) .* padded input \(8, 9\)"),
    ],
)
def test_kernel_larger_than_padded_input(call, kwargs, match):
    with pytest.raises(ValueError, match=match):
        call(X, np.ones((4, 3, 9, 9)), **kwargs)


@entry_points
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (0, 2)])
def test_stride_and_dilation_below_one(call, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be positive, got {re.escape(repr(value))}"):
        call(X, W, **{name: value})


@entry_points
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ((1, 2, 3), ValueError, r"must be an int or a pair of ints, got \(1, 2, 3\)"),
        (1.5, TypeError, r"must be an int, got float 1.5"),
        ("2", TypeError, r"must be an int, got str '2'"),
        (None, TypeError, r"must be an int, got NoneType None"),
    ],
)
def test_stride_and_dilation_of_wrong_type(call, name, value, error, match):
    with pytest.raises(error, match=rf"{name} {match}"):
        call(X, W, **{name: value})


@entry_points
@pytest.mark.parametrize("padding", [-1, (0, -1), ((0, 0), (-2, 1)), ((1, -1), (0, 0))])
def test_negative_padding(call, padding):
    with pytest.raises(ValueError, match=r"padding must be >= 0, got"):
        call(X, W, padding=padding)


@entry_points
@pytest.mark.parametrize("padding", ["causal", "", "half"])
def test_unknown_padding_string(call, padding):
    with pytest.raises(
        ValueError,
        match=rf"padding must be .*'valid', 'same', 'full'.*got "
        rf"{re.escape(repr(padding))}",
    ):
        call(X, W, padding=padding)


@entry_points
@pytest.mark.parametrize(
    ("padding", "error"),
    [
        (((1, 1), 2), ValueError),
        (((1, 1), (1, 1), (1, 1)), ValueError),
        (((1, 1, 1), (1, 1)), ValueError),
        (1.5, TypeError),
    ],
)
def test_malformed_padding(call, padding, error):
    with pytest.raises(error, match=r"padding must be"):
        call(X, W, padding=padding)


@entry_points
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_non_floating_x(call, dtype):
    with pytest.raises(
        TypeError, match=rf"x must have a floating dtype \(real or complex\), got {np.dtype(dtype)}"
    ):
        call(X.astype(dtype), W)


@entry_points
@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_non_floating_w(call, dtype):
    with pytest.raises(
        TypeError, match=rf"w must have a floating dtype \(real or complex\), got {np.dtype(dtype)}"
    ):
        call(X, W.astype(dtype))


@entry_points
def test_real_with_complex(call):
    with pytest.raises(
        TypeError, match=r"x \(float64\) and w \(complex128\) must have the same dtype"
    ):
        call(X, W.astype(np.complex128))


@entry_points
def test_dtypes_differ(call):
    with pytest.raises(
        TypeError, match=r"x \(float32\) and w \(float64\) must have the same dtype"
    ):
        call(X.astype(np.float32), W)


@entry_points
def test_byte_order_does_not_hide_a_dtype_mismatch(call):
    with pytest.raises(TypeError, match=r"x \(>f4\) and w \(float64\) must have the same dtype"):
        call(X.astype(">f4"), W)


@entry_points
def test_namespaces_differ(call):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"different namespaces \(.*x: .*numpy, w: .*torch"):
        call(X, torch.ones((4, 3, 3, 3), dtype=torch.float64))


@entry_points
@pytest.mark.parametrize("bad", [[[1.0]], 3.0, "x"])
def test_x_not_an_array(call, bad):
    with pytest.raises(TypeError, match=rf"x must be an array .*got {type(bad).__name__}"):
        call(bad, W)


def test_x_none_is_refused():
    """conv2d(None, w): a TypeError naming x (not an AttributeError from deep inside)."""
    with pytest.raises(TypeError, match=r"x must be an array"):
        ac.conv2d(None, W)


@entry_points
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "match"),
    [
        ((0, 3, 8, 8), (4, 3, 3, 3), r"x must not be empty, got shape \(0, 3, 8, 8\)"),
        ((2, 3, 0, 8), (4, 3, 3, 3), r"x must not be empty, got shape \(2, 3, 0, 8\)"),
        ((2, 0, 8, 8), (4, 0, 3, 3), r"x must not be empty"),
        ((2, 3, 8, 8), (0, 3, 3, 3), r"w must not be empty, got shape \(0, 3, 3, 3\)"),
        ((2, 3, 8, 8), (4, 3, 3, 0), r"w must not be empty, got shape \(4, 3, 3, 0\)"),
    ],
)
def test_empty_arrays(call, x_shape, w_shape, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones(x_shape), np.ones(w_shape))


@pytest.mark.parametrize("shape", [(3,), (4, 1), (1, 4, 1, 1), ()])
def test_bias_of_wrong_shape(shape):
    with pytest.raises(
        ValueError, match=rf"b must have shape \(F,\) = \(4,\), got {re.escape(str(shape))}"
    ):
        ac.conv2d(X, W, np.ones(shape))


def test_bias_of_wrong_dtype():
    with pytest.raises(TypeError, match=r"b \(float32\) must have the dtype of w \(float64\)"):
        ac.conv2d(X, W, np.ones(4, dtype=np.float32))


def test_bias_from_another_namespace():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"different namespaces .*b: .*torch"):
        ac.conv2d(X, W, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs", [{}, {"stride": 2}, {"padding": "same"}, {"dilation": 2, "padding": 1}]
)
def test_gy_of_wrong_shape(kwargs):
    expected = ac.conv_geometry(X.shape, W.shape, **kwargs).y_shape
    bad = (expected[0], expected[1], expected[2] + 1, expected[3])
    pattern = rf"gy must have the output shape \(N, F, Ho, Wo\) = {re.escape(str(expected))}, got "
    with pytest.raises(ValueError, match=pattern + re.escape(str(bad))):
        ac.conv2d_backward(np.ones(bad), X, W, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        ac.conv2d_backward(np.ones(expected[:3]), X, W, **kwargs)


def test_gy_of_wrong_dtype_or_namespace():
    with pytest.raises(
        TypeError, match=r"gy \(float32\) and x \(float64\) must have the same dtype"
    ):
        ac.conv2d_backward(GY.astype(np.float32), X, W)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"different namespaces .*gy: .*torch"):
        ac.conv2d_backward(torch.ones(GY.shape, dtype=torch.float64), X, W)


@entry_points
@pytest.mark.parametrize("strategy", ["fast", "direct", "cook", ""])
def test_unknown_strategy_lists_the_valid_names(call, strategy):
    pattern = (
        r"strategy must be one of 'auto', 'naive', 'separable', 'im2col', 'fft', 'winograd'; "
        rf"got {re.escape(repr(strategy))}"
    )
    with pytest.raises(ValueError, match=pattern):
        call(X, W, strategy=strategy)


@entry_points
@pytest.mark.parametrize("strategy", [None, 1, ["naive"]])
def test_strategy_not_a_string(call, strategy):
    pattern = rf"strategy must be a string, got {type(strategy).__name__}"
    with pytest.raises(TypeError, match=pattern):
        call(X, W, strategy=strategy)


@pytest.mark.parametrize("name", ["nunpy", "tensorflow", "NumPy", ""])
def test_unknown_backend_name(name):
    names = r"\('numpy', 'cupy', 'torch', 'jax', 'array_api_strict'\)"
    pattern = rf"backend must be one of {names}.*got {re.escape(repr(name))}"
    with pytest.raises(ValueError, match=pattern):
        resolve_backend(name)
    with pytest.raises(ValueError, match=pattern):
        asarray(X, backend=name)
    with pytest.raises(ValueError, match=pattern):
        ac.available_strategies(name)


def test_cupy_backend_without_a_device_says_why():
    """No CUDA here: either CuPy is not installed or no device is usable; the message says which."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        match = r"backend='cupy' needs the package 'cupy', which is not installed"
    else:  # pragma: no cover - CuPy installed (but no GPU on this machine)
        match = r"backend='cupy': CuPy is installed but (no CUDA device is usable|CUDA failed)"
    with pytest.raises(RuntimeError, match=match):
        resolve_backend("cupy")
    with pytest.raises(RuntimeError, match=match):
        asarray(X, backend="cupy")


def test_device_mismatch_is_refused():
    """torch 'meta' tensors give a second device without a GPU."""
    torch = pytest.importorskip("torch")
    x = torch.ones((2, 3, 8, 8), dtype=torch.float64)
    w_meta = torch.ones((4, 3, 3, 3), dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"x is on device cpu but w is on meta"):
        ac.conv2d(x, w_meta)
    with pytest.raises(ValueError, match=r"b is on device meta but w is on cpu"):
        ac.conv2d(x, x.new_ones((4, 3, 3, 3)), torch.ones(4, dtype=torch.float64, device="meta"))
    gy_meta = torch.ones((2, 4, 6, 6), dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"gy is on device meta but x is on cpu"):
        ac.conv2d_backward(gy_meta, x, x.new_ones((4, 3, 3, 3)))


@pytest.mark.parametrize("strategy", ["naive", "im2col"])
def test_results_stay_on_the_input_device(strategy):
    """On torch 'meta' tensors (shapes only) the result keeps the device and shape.

    Only the strategies that make no data-dependent host decision: separable (its rank) and
    fft (a finiteness check) read values, which meta tensors do not have.
    """
    torch = pytest.importorskip("torch")
    x = torch.ones((2, 3, 8, 8), dtype=torch.float32, device="meta")
    w = torch.ones((4, 3, 3, 3), dtype=torch.float32, device="meta")
    y = ac.conv2d(x, w, padding="same", stride=2, strategy=strategy)
    assert y.device.type == "meta" and tuple(y.shape) == (2, 4, 4, 4) and y.dtype == torch.float32
    gx, gw, gb = ac.conv2d_backward(y, x, w, padding="same", stride=2, strategy=strategy)
    assert [g.device.type for g in (gx, gw, gb)] == ["meta"] * 3
    assert [tuple(g.shape) for g in (gx, gw, gb)] == [(2, 3, 8, 8), (4, 3, 3, 3), (4,)]


def test_errors_come_before_any_computation_on_array_api_strict():
    """The same validation on a strict namespace (no NumPy fallback in the messages)."""
    xs = pytest.importorskip("array_api_strict")
    x = xs.ones((2, 3, 8, 8))
    strict = r"(array_api_strict\.)?"
    pattern = rf"x \({strict}float32\) and w \({strict}float64\) must have the same dtype"
    with pytest.raises(TypeError, match=pattern):
        ac.conv2d(xs.astype(x, xs.float32), xs.ones((4, 3, 3, 3)))
    with pytest.raises(
        TypeError, match=rf"w must have a floating dtype \(real or complex\), got {strict}int64"
    ):
        ac.conv2d(x, xs.ones((4, 3, 3, 3), dtype=xs.int64))
    with pytest.raises(ValueError, match=r"channel mismatch"):
        ac.conv2d(x, xs.ones((4, 2, 3, 3)))
