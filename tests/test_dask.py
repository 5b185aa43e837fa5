"""arraycnn on dask arrays: lazy results equal to independent oracles, chunk by chunk.

Oracles: ``scipy.signal.correlate2d`` / ``convolve2d`` for the filters ("reflect", which
SciPy lacks, as SciPy's "valid" filter of ``numpy.pad(mode="reflect")``), torch
(``conv2d``, pooling and their autograd gradients, float64) for the layers, the in-memory
``Sequential`` (itself tested against Keras-style references in test_model.py) for
inference. Every case runs on chunkings that are uneven, smaller than the kernel, or one
chunk.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import oracles
import pytest
import scipy.signal
from test_filters import reflect_pads

import arraycnn as ac
from arraycnn.testing import assert_close

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm", "reflect")
#: (H, W) chunks of a 23 x 19 image: uneven, smaller than every kernel, one chunk.
CHUNKINGS = {
    "uneven": ((9, 4, 10), (7, 12)),
    "tiny": (2, 3),
    "one": (23, 19),
}


@pytest.fixture(autouse=True)
def _synchronous_scheduler():
    """Tiny chunks compute fastest in the calling thread (the cluster test uses processes)."""
    with dask.config.set(scheduler="synchronous"):
        yield


def _reflect_oracle(image, kernel, mode, *, convolve):
    """SciPy's "valid" filter of the image extended with numpy.pad(mode="reflect")."""
    pads = reflect_pads(mode, kernel.shape, "convolve2d" if convolve else "correlate2d")
    extended = np.pad(image, pads, mode="reflect")
    scipy_filter = scipy.signal.convolve2d if convolve else scipy.signal.correlate2d
    return scipy_filter(extended, kernel, "valid")


def _oracle(image, kernel, mode, boundary, *, convolve, fillvalue=0.0):
    if boundary == "reflect":
        return _reflect_oracle(image, kernel, mode, convolve=convolve)
    scipy_filter = scipy.signal.convolve2d if convolve else scipy.signal.correlate2d
    return scipy_filter(image, kernel, mode, boundary, fillvalue)


def _filter(convolve):
    return ac.convolve2d if convolve else ac.correlate2d


# ---------------------------------------------------------------------------------- filters


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("convolve", [False, True], ids=["correlate2d", "convolve2d"])
@pytest.mark.parametrize("kernel_hw", [(5, 5), (4, 6)], ids=["5x5", "4x6"])
def test_filters_equal_scipy_for_every_mode_boundary_and_chunking(
    convolve, mode, boundary, chunking, kernel_hw
):
    rng = np.random.default_rng(1)
    image, kernel = rng.standard_normal((23, 19)), rng.standard_normal(kernel_hw)
    lazy = _filter(convolve)(
        da.from_array(image, chunks=CHUNKINGS[chunking]), kernel, mode, boundary, fillvalue=0.75
    )
    assert isinstance(lazy, da.Array)
    expected = _oracle(image, kernel, mode, boundary, convolve=convolve, fillvalue=0.75)
    assert_close(lazy.compute(), expected)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.parametrize("convolve", [False, True], ids=["correlate2d", "convolve2d"])
def test_a_kernel_larger_than_the_image_extends_past_the_whole_image(convolve, mode, boundary):
    rng = np.random.default_rng(2)
    image, kernel = rng.standard_normal((4, 3)), rng.standard_normal((9, 8))
    lazy = _filter(convolve)(da.from_array(image, chunks=(3, 2)), kernel, mode, boundary)
    assert_close(lazy.compute(), _oracle(image, kernel, mode, boundary, convolve=convolve))


@pytest.mark.parametrize("boundary", ["fill", "symm"])
@pytest.mark.parametrize("convolve", [False, True], ids=["correlate2d", "convolve2d"])
def test_complex_images_kernels_and_fill_values_equal_scipy(convolve, boundary):
    rng = np.random.default_rng(7)
    image = rng.standard_normal((13, 11)) + 1j * rng.standard_normal((13, 11))
    kernel = rng.standard_normal((3, 4)) - 0.5j * rng.standard_normal((3, 4))
    lazy = _filter(convolve)(
        da.from_array(image, chunks=(5, 4)), kernel, "same", boundary, fillvalue=1 + 2j
    )
    expected = _oracle(image, kernel, "same", boundary, convolve=convolve, fillvalue=1 + 2j)
    assert_close(lazy.compute(), expected)


@pytest.mark.parametrize("convolve", [False, True], ids=["correlate2d", "convolve2d"])
def test_valid_with_the_kernel_larger_swaps_roles_as_scipy(convolve):
    rng = np.random.default_rng(3)
    image, kernel = rng.standard_normal((4, 5)), rng.standard_normal((9, 8))
    lazy = _filter(convolve)(da.from_array(image, chunks=(2, 3)), kernel, "valid")
    assert_close(lazy.compute(), _oracle(image, kernel, "valid", "fill", convolve=convolve))


def test_a_batch_of_images_chunked_along_the_batch_filters_each_image():
    rng = np.random.default_rng(4)
    images, kernel = rng.standard_normal((5, 2, 17, 13)), rng.standard_normal((3, 3))
    lazy = ac.correlate2d(da.from_array(images, chunks=(2, 1, 6, 5)), kernel, "same", "symm")
    expected = np.stack(
        [
            [scipy.signal.correlate2d(images[i, j], kernel, "same", "symm") for j in range(2)]
            for i in range(5)
        ]
    )
    assert lazy.chunks[:2] == ((2, 2, 1), (1, 1))
    assert_close(lazy.compute(), expected)


@pytest.mark.parametrize("strategy", ["naive", "separable", "im2col", "fft", "winograd"])
def test_float32_filters_follow_the_strategy_asked_for(strategy):
    rng = np.random.default_rng(5)
    image = rng.standard_normal((40, 33)).astype(np.float32)
    gauss = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    kernel = np.outer(gauss, gauss).astype(np.float32)
    lazy = ac.correlate2d(
        da.from_array(image, chunks=(11, 16)), kernel, "same", "wrap", strategy=strategy
    )
    expected = scipy.signal.correlate2d(image.astype(np.float64), kernel, "same", "wrap")
    assert lazy.dtype == np.float32
    # Winograd's tiles round at the scale of sum |x||w| (its error model's lower bound),
    # not of |y|: near-zero outputs of this signed image need that scale
    local = scipy.signal.correlate2d(np.abs(image).astype(np.float64), kernel, "same", "wrap")
    scale = local if strategy == "winograd" else None
    assert_close(lazy.compute(), expected.astype(np.float32), scale=scale)


def test_integer_images_are_filtered_exactly_in_their_result_dtype():
    rng = np.random.default_rng(6)
    image = rng.integers(-50, 50, (21, 18)).astype(np.int16)
    kernel = rng.integers(-3, 4, (3, 4)).astype(np.int16)
    lazy = ac.convolve2d(da.from_array(image, chunks=(5, 7)), kernel, "full", fillvalue=2)
    expected = scipy.signal.convolve2d(image, kernel, "full", fillvalue=2)
    assert lazy.dtype == expected.dtype
    np.testing.assert_array_equal(lazy.compute(), expected)


def test_output_chunks_follow_the_input_and_small_chunks_are_merged_to_the_halo():
    image = np.random.default_rng(7).standard_normal((32, 30))
    kernel = np.ones((5, 5))
    follows = ac.correlate2d(da.from_array(image, chunks=(8, 10)), kernel, "same")
    assert follows.chunks == ((8, 8, 8, 8), (10, 10, 10))
    merged = ac.correlate2d(da.from_array(image, chunks=(2, 3)), kernel, "same")
    assert all(c >= 4 for axis in merged.chunks for c in axis)  # the halo is k - 1 = 4
    assert_close(merged.compute(), scipy.signal.correlate2d(image, kernel, "same"))


def test_filtering_is_lazy_until_computed():
    touched = []

    def source(block):
        if block.size > 1:  # dask's meta inference calls it on 0- and 1-element arrays
            touched.append(block.shape)
        return block

    image = da.from_array(np.arange(400.0).reshape(20, 20), chunks=7).map_blocks(source)
    lazy = ac.convolve2d(image, np.ones((3, 3)), "same", "reflect")
    assert touched == []
    lazy.compute(scheduler="sync")
    assert touched != []


def test_a_dask_kernel_is_computed_and_gives_the_same_result():
    rng = np.random.default_rng(8)
    image, kernel = rng.standard_normal((15, 12)), rng.standard_normal((3, 2))
    lazy = ac.correlate2d(da.from_array(image, chunks=4), da.from_array(kernel), "same", "wrap")
    assert_close(lazy.compute(), scipy.signal.correlate2d(image, kernel, "same", "wrap"))


def test_unknown_chunk_sizes_are_refused_naming_them():
    x = da.from_array(np.arange(64.0), chunks=16)
    image = da.stack(
        [x[x > 3], x[x > 3]], allow_unknown_chunksizes=True
    )  # (2, nan): boolean indexing forgets the sizes
    with pytest.raises(ValueError, match=r"in1 has unknown chunk sizes \(NaN\) along axis 1"):
        ac.correlate2d(image, np.ones((3, 3)))


def test_a_non_numeric_dtype_is_refused_naming_it():
    image = da.from_array(np.full((6, 6), "a", dtype=object), chunks=3)
    with pytest.raises(TypeError, match="in1 is a dask array of unsupported dtype object"):
        ac.correlate2d(image, np.ones((3, 3)))


def test_the_in_memory_argument_errors_come_before_any_graph():
    image = da.from_array(np.ones((8, 8)), chunks=4)
    with pytest.raises(ValueError, match="mode must be one of"):
        ac.correlate2d(image, np.ones((3, 3)), mode="big")
    with pytest.raises(ValueError, match="boundary must be one of"):
        ac.convolve2d(image, np.ones((3, 3)), boundary="mirror")
    with pytest.raises(ValueError, match="needs one input at least as large"):
        ac.correlate2d(da.from_array(np.ones((4, 9)), chunks=2), np.ones((6, 3)), "valid")
    with pytest.raises(ValueError, match="in1 must be 2-D"):
        ac.correlate2d(da.from_array(np.ones(8), chunks=4), np.ones((3, 3)))


def test_a_kernel_of_another_array_type_than_the_chunks_is_refused():
    torch = pytest.importorskip("torch")
    image = da.from_array(np.ones((8, 8)), chunks=4)
    with pytest.raises(TypeError, match=r"in2 is a torch\.Tensor, but the chunks"):
        ac.correlate2d(image, torch.ones((3, 3), dtype=torch.float64))


def test_import_arraycnn_does_not_import_dask():
    code = (
        "import sys, arraycnn, arraycnn.nn; "
        "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------ conv2d, pooling

#: (kernel, stride, dilation, padding, groups) of the conv2d cases.
CONV_GEOMETRIES = [
    (3, 1, 1, 0, 1),
    (3, 2, 1, 1, 1),
    (3, 2, 2, ((2, 1), (0, 3)), 1),
    (2, 3, 1, 0, 1),
    (5, 1, 1, 6, 1),  # padding wider than the window: edge outputs read padding only
    (3, (1, 2), (2, 1), (1, 2), 2),
]
#: (N, C, H, W) chunks of a (4, 2, 13, 15) input: along N, along H/W (uneven, tiny), C too.
CONV_CHUNKS = {
    "N": (1, 2, 13, 15),
    "HW": (4, 2, (7, 6), (2, 13)),
    "tiny": (3, 1, 2, 3),
}


def _torch_conv(x, w, b, stride, dilation, padding, groups):
    """torch's conv2d (float64) and its autograd gradients with gy, explicit padding."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    elif isinstance(padding[0], int):
        padding = ((padding[0], padding[0]), (padding[1], padding[1]))
    (top, bottom), (left, right) = padding
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = tf.conv2d(
        tf.pad(xt, (left, right, top, bottom)),
        wt,
        bt,
        stride=stride,
        dilation=dilation,
        groups=groups,
    )
    return y, (xt, wt, bt)


@pytest.mark.parametrize("chunking", list(CONV_CHUNKS))
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: str(g).replace(" ", ""))
def test_conv2d_and_its_gradients_equal_torch(geometry, chunking):
    k, stride, dilation, padding, groups = geometry
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 2, 13, 15))
    w, b = rng.standard_normal((4, 2 // groups, k, k)), rng.standard_normal(4)
    y_ref, inputs = _torch_conv(x, w, b, stride, dilation, padding, groups)
    gy = rng.standard_normal(tuple(y_ref.shape))
    y_ref.backward(gradient=y_ref.new_tensor(gy))
    grads_ref = [t.grad.numpy() for t in inputs]

    dx = da.from_array(x, chunks=CONV_CHUNKS[chunking])
    options = {"stride": stride, "dilation": dilation, "padding": padding, "groups": groups}
    # auto may pick any strategy per block: each value is held to the coarsest error model
    by_model = [oracles.error_scales(x, w, b, gy, model=m, **options) for m in oracles.MODELS]
    scales = [np.maximum.reduce(per_result) for per_result in zip(*by_model)]  # y, gx, gw, gb
    y = ac.conv2d(dx, w, b, **options)
    assert isinstance(y, da.Array) and y.chunks[0] == dx.chunks[0]
    assert_close(y.compute(), y_ref.detach().numpy(), scale=scales[0])
    dgy = da.from_array(gy, chunks=(2, 4, 3, 4))
    grads = ac.conv2d_backward(dgy, dx, w, **options)
    assert all(isinstance(g, da.Array) for g in grads)
    assert grads[0].chunks[2:] == dx.chunks[2:]
    for got, expected, scale in zip(grads, grads_ref, scales[1:]):
        assert_close(got.compute(), expected, scale=scale)


def test_conv2d_backward_computes_only_the_gradients_asked_for():
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((2, 1, 9, 9)), rng.standard_normal((3, 1, 3, 3))
    gy = da.from_array(rng.standard_normal((2, 3, 7, 7)), chunks=(1, 3, 4, 4))
    gx, gw, gb = ac.conv2d_backward(gy, da.from_array(x, chunks=(1, 1, 5, 5)), w, needs=("w",))
    assert gx is None and gb is None
    y_ref, (_, wt, _) = _torch_conv(x, w, np.zeros(3), 1, 1, 0, 1)
    y_ref.backward(gradient=y_ref.new_tensor(gy.compute()))
    assert_close(gw.compute(), wt.grad.numpy())


def test_conv2d_errors_name_the_argument():
    x = da.from_array(np.ones((2, 3, 8, 8)), chunks=(1, 3, 4, 4))
    with pytest.raises(ValueError, match="channel mismatch"):
        ac.conv2d(x, np.ones((4, 2, 3, 3)))
    with pytest.raises(TypeError, match="float32"):
        ac.conv2d(x, np.ones((4, 3, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="gy must have the output shape"):
        ac.conv2d_backward(da.ones((2, 4, 5, 5)), x, np.ones((4, 3, 3, 3)))
    ints = da.from_array(np.ones((2, 3, 8, 8), dtype=object), chunks=4)
    with pytest.raises(TypeError, match="x is a dask array of unsupported dtype object"):
        ac.conv2d(ints, np.ones((4, 3, 3, 3)))


#: (kernel, stride, padding) of the pooling cases.
POOL_GEOMETRIES = [(2, None, 0), (3, 1, 1), (3, 2, 1), (2, 3, 0), ((3, 2), (2, 1), (1, 0))]


@pytest.mark.parametrize("chunking", list(CONV_CHUNKS))
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=lambda g: str(g).replace(" ", ""))
@pytest.mark.parametrize(
    "kind", ["max", "avg", "avg_exclude_pad"], ids=["max", "avg", "avg-exclude-pad"]
)
def test_pooling_and_its_gradient_equal_torch(kind, geometry, chunking):
    torch = pytest.importorskip("torch")
    kernel, stride, padding = geometry
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 2, 13, 15))
    xt = torch.tensor(x, requires_grad=True)
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    if kind == "max":
        forward, backward, extra = ac.max_pool2d, ac.max_pool2d_backward, {}
        y_ref = torch.nn.functional.max_pool2d(xt, kernel, stride or kernel, pad)
    else:
        extra = {"count_include_pad": kind == "avg"}
        forward, backward = ac.avg_pool2d, ac.avg_pool2d_backward
        y_ref = torch.nn.functional.avg_pool2d(xt, kernel, stride or kernel, pad, **extra)
    gy = rng.standard_normal(tuple(y_ref.shape))
    y_ref.backward(gradient=y_ref.new_tensor(gy))

    dx = da.from_array(x, chunks=CONV_CHUNKS[chunking])
    y = forward(dx, kernel, stride=stride, padding=padding, **extra)
    assert isinstance(y, da.Array)
    assert_close(y.compute(), y_ref.detach().numpy())
    dgy = da.from_array(gy, chunks=(3, 1, 2, 5))
    gx = backward(dgy, dx, kernel, stride=stride, padding=padding, **extra)
    assert gx.chunks == dx.chunks
    assert_close(gx.compute(), xt.grad.numpy())


def test_pooling_refuses_an_integer_dask_array_naming_x():
    x = da.from_array(np.ones((1, 1, 4, 4), dtype=np.int32), chunks=2)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        ac.max_pool2d(x, 2)


# ------------------------------------------------------------------------------ inference


def _digits_model():
    from arraycnn.nn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Softmax

    model = Sequential(
        [Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(36, 10), Softmax()], seed=0
    )
    model.build((1, 8, 8))
    return model


def test_predict_over_a_dask_array_is_lazy_and_equals_the_in_memory_model():
    model = _digits_model()
    X = np.random.default_rng(12).standard_normal((37, 1, 8, 8)).astype(np.float32)
    dX = da.from_array(X, chunks=(10, 1, 4, 8))
    proba, labels = model.predict_proba(dX, batch_size=4), model.predict(dX)
    assert isinstance(proba, da.Array) and isinstance(labels, da.Array)
    assert proba.chunks == ((10, 10, 10, 7), (10,))
    assert labels.dtype == np.int64 and labels.shape == (37,)
    assert_close(proba.compute(), model.predict_proba(X))
    np.testing.assert_array_equal(labels.compute(), model.predict(X))


def test_predict_refuses_unknown_chunk_sizes():
    model = _digits_model()
    flat = da.from_array(np.ones(128, dtype=np.float32), chunks=32)
    X = da.stack([flat[flat > 0]] * 2, axis=1, allow_unknown_chunksizes=True)  # (nan, 2)
    with pytest.raises(ValueError, match=r"X has unknown chunk sizes \(NaN\) along axis 0"):
        model.predict(X)
