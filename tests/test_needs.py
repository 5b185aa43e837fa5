"""conv2d_backward(needs=...): only the gradients asked for, each as the full backward's.

Every strategy and every subset of ("x", "w", "b") against the loop oracle on small
geometries (strides, padding, groups, dilation), also when the call runs in batch chunks
or bands of rows; the torch graph asking only for what torch needs; the Conv2D layer
without its input gradient (a network's first layer) against torch autograd; the errors.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from oracles import (
    ERROR_MODEL,
    correlate_loops_backward,
    correlate_scipy_backward,
    error_scales,
    runnable,
)

import arraycnn as ac
from arraycnn.backend import device_of, resolve_backend, to_numpy
from arraycnn.conv import explain
from arraycnn.nn.activations import ReLU, Softmax
from arraycnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D
from arraycnn.nn.model import Sequential
from arraycnn.testing import assert_close

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

NAMES = ("x", "w", "b")
SUBSETS = [s for k in range(4) for s in itertools.combinations(NAMES, k)]

#: (x shape, w shape, geometry): stride, asymmetric padding, groups, dilation.
CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), {"padding": 1}),
    ((2, 4, 9, 8), (6, 2, 3, 2), {"stride": (1, 2), "padding": ((1, 0), (2, 1)), "groups": 2}),
    ((1, 2, 10, 9), (3, 2, 2, 3), {"stride": 2, "dilation": (2, 1)}),
    ((2, 4, 6, 6), (4, 1, 3, 3), {"padding": "same", "groups": 4}),  # depthwise
]


def _data(rng, x_shape, w_shape, geometry):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y_shape = ac.conv2d(x, w, **geometry).shape
    return x, w, rng.standard_normal(y_shape)


def _check(got, expected, scales, needs, *, xp, device, label):
    for name, value, want, scale in zip(NAMES, got, expected, scales):
        if name not in needs:
            assert value is None, f"{label}: {name} not asked for, got {type(value)}"
            continue
        assert_close(
            value, want, scale=scale, xp=xp, dtype=xp.float64, device=device, err_msg=label
        )


@pytest.mark.parametrize("x_shape, w_shape, geometry", CASES)
def test_every_strategy_and_subset_matches_the_loops(x_shape, w_shape, geometry, xp, to_xp, rng):
    x, w, gy = _data(rng, x_shape, w_shape, geometry)
    expected = correlate_loops_backward(gy, x, w, **geometry)
    tx, tw, tgy = to_xp(x), to_xp(w), to_xp(gy)
    for name in ac.available_strategies(xp):
        if not runnable([name], x_shape, w_shape, **geometry):  # a geometry it does not take
            with pytest.raises(ValueError, match=f"strategy='{name}' cannot run this call"):
                ac.conv2d_backward(tgy, tx, tw, strategy=name, needs=("w",), **geometry)
            continue
        models = ERROR_MODEL[name]
        scales = [
            error_scales(x, w, None, gy, model=models[key], **geometry)[k]
            for k, key in ((1, "gx"), (2, "gw"), (3, "gx"))
        ]
        for needs in SUBSETS:
            got = ac.conv2d_backward(tgy, tx, tw, strategy=name, needs=needs, **geometry)
            label = f"{name} needs={needs}"
            _check(got, expected, scales, needs, xp=xp, device=device_of(tx), label=label)


@pytest.mark.parametrize("needs", [("x",), ("w", "b"), ("x", "w")])
@pytest.mark.parametrize("name", ["naive", "im2col", "fft", "winograd"])
@pytest.mark.parametrize("limit", [300_000, 1_000_000])  # mostly bands of rows; batch chunks
def test_chunked_and_banded_calls_assemble_only_what_is_asked(name, needs, limit, rng):
    x, w, gy = _data(rng, (8, 3, 40, 40), (5, 3, 3, 3), {})
    expected = correlate_scipy_backward(gy, x, w)
    with ac.config(workspace_limit=limit):
        info = explain(x, w, direction="backward", gy=gy, strategy=name, needs=needs)
        assert info["chunk"] is not None, info["why"]
        assert info["chunk"] < 8 or info["rows"] is not None
        got = ac.conv2d_backward(gy, x, w, strategy=name, needs=needs)
    models = ERROR_MODEL[name]
    scales = [
        error_scales(x, w, None, gy, model=models[key])[k]
        for k, key in ((1, "gx"), (2, "gw"), (3, "gx"))
    ]
    xp = resolve_backend("numpy")
    _check(got, expected, scales, needs, xp=xp, device=device_of(x), label=f"{name} {needs}")


@pytest.mark.parametrize("name", ac.STRATEGY_NAMES)
def test_a_backward_without_the_input_gradient_is_planned_without_that_phase(name, rng):
    """The weight-only call is a call of its own: predicted cheaper, no more workspace."""
    x, w, gy = _data(rng, (16, 8, 20, 20), (16, 8, 3, 3), {"padding": 1})
    full, only_w = (
        explain(x, w, padding=1, direction="backward", gy=gy, needs=needs)["strategies"][name]
        for needs in (NAMES, ("w", "b"))
    )
    if name == "separable":  # its weight gradient is naive's: auto leaves it to naive
        assert not only_w["eligible"] and "weight gradient alone" in only_w["reason"]
        return
    assert only_w["eligible"] and full["eligible"]
    assert only_w["predicted_seconds"] < full["predicted_seconds"]
    assert only_w["workspace_bytes"] <= full["workspace_bytes"]


def test_auto_with_autotune_times_the_weight_only_call(rng):
    x, w, gy = _data(rng, (4, 3, 12, 12), (4, 3, 3, 3), {"padding": 1})
    with ac.config(autotune=True):
        _, gw, _ = ac.conv2d_backward(gy, x, w, padding=1, needs=("w",))
        gx, _, _ = ac.conv2d_backward(gy, x, w, padding=1, needs=("x",))
    expected = correlate_loops_backward(gy, x, w, padding=1)
    assert_close(gx, expected[0])
    assert_close(gw, expected[1])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "needs, error, match",
    [
        ("xw", TypeError, r"needs must be a collection .* got 'xw'"),
        (3, TypeError, r"needs must be a collection .* got 3"),
        (("x", 1), TypeError, r"needs must hold names \(str\) .* got \('x', 1\)"),
        (("x", "gy"), ValueError, r"needs names gradients from .* got \('x', 'gy'\)"),
        (["W"], ValueError, r"needs names gradients .* got \['W'\]"),
    ],
)
def test_bad_needs_are_refused(needs, error, match):
    x, w, gy = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    with pytest.raises(error, match=match):
        ac.conv2d_backward(gy, x, w, needs=needs)


def test_nothing_needed_gives_three_nones_after_checking_the_arguments():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    assert ac.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, needs=()) == (None, None, None)
    with pytest.raises(ValueError, match=r"gy must have the output shape"):
        ac.conv2d_backward(np.ones((1, 1, 3, 3)), x, w, needs=set())


def test_explain_needs_a_convolution_gradient():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"needs must name 'x' or 'w' .* got \('b',\)"):
        explain(x, w, direction="backward", needs=("b",))


# --------------------------------------------------------------------------- torch autograd


def _tensors(rng, *shapes, grad):
    return [
        torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=g)
        for shape, g in zip(shapes, grad)
    ]


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("grad", [(False, True, True), (True, False, False), (False, True, False)])
def test_torch_graph_gets_only_the_gradients_that_require_grad(grad, rng):
    geometry = {"stride": (1, 2), "padding": 1, "groups": 2}
    x, w, b = _tensors(rng, (2, 4, 7, 8), (6, 2, 3, 3), (6,), grad=grad)
    gy = torch.tensor(rng.standard_normal((2, 6, 7, 4)), dtype=torch.float64)
    ac.conv2d(x, w, b, **geometry).backward(gy)
    expected = correlate_loops_backward(
        gy.numpy(), x.detach().numpy(), w.detach().numpy(), **geometry
    )
    for t, want, needed in zip((x, w, b), expected, grad):
        if not needed:
            assert t.grad is None
        else:
            assert_close(t.grad.numpy(), want)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_second_derivative_through_a_weight_only_backward_matches_torch(rng):
    """A gradient penalty on w alone: the weight-only backward recorded in the graph, its
    own backward leaving out what it does not need; torch's conv2d as the oracle."""
    x0, w0 = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    results = []
    for conv in (ac.conv2d, torch.nn.functional.conv2d):
        x = torch.tensor(x0)  # no gradient: a network's input
        w = torch.tensor(w0, requires_grad=True)
        loss = (conv(x, w, padding=1) ** 2).sum()
        (gw,) = torch.autograd.grad(loss, w, create_graph=True)
        (gw**2).sum().backward()
        results.append((gw.detach().numpy(), w.grad.numpy()))
    for ours, theirs in zip(*results):
        assert_close(ours, theirs, scale=np.abs(theirs).max())


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_conv2d_backward_with_needs_is_differentiable(rng):
    (x, w), (gy,) = (
        _tensors(rng, (1, 2, 5, 5), (2, 2, 2, 2), grad=(True, True)),
        _tensors(rng, (1, 2, 4, 4), grad=(True,)),
    )
    for needs in (("w",), ("x", "b"), ("b",)):

        def f(gy, x, w, needs=needs):
            return tuple(g for g in ac.conv2d_backward(gy, x, w, needs=needs) if g is not None)

        assert torch.autograd.gradcheck(f, (gy, x, w))
        assert torch.autograd.gradgradcheck(f, (gy, x, w))


# --------------------------------------------------------------------------- the layer


def test_conv2d_layer_without_its_input_gradient(xp, rng):
    layer = Conv2D(4, 6, 3, stride=(2, 1), padding=1, groups=2)
    layer.build((4, 7, 8), xp=xp, dtype="float64", rng=np.random.default_rng(0))
    x = rng.standard_normal((2, 4, 7, 8))
    y = layer.forward(xp.asarray(x), training=True)
    gy = rng.standard_normal(tuple(y.shape))
    layer.input_grad = False
    assert layer.backward(xp.asarray(gy)) is None
    w = np.asarray(to_numpy(layer.params["w"]))
    expected = correlate_loops_backward(gy, x, w, stride=(2, 1), padding=1, groups=2)
    assert_close(layer.grads["w"], expected[1], xp=xp)
    assert_close(layer.grads["b"], expected[2], xp=xp)
    layer.input_grad = True
    assert_close(layer.backward(xp.asarray(gy)), expected[0], xp=xp)


class PlainSGD:
    """A stand-in optimizer (the contract only): ``p - lr * g``, no state."""

    def __init__(self, lr):
        self.lr = lr

    def step(self, params, grads):
        return {k: params[k] - self.lr * grads[k] for k in params}


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_training_a_model_whose_first_layer_skips_its_input_gradient_matches_torch(rng):
    """One full-batch SGD step of a hand-built model, first layer ``input_grad=False``:
    every parameter moves by ``-lr`` times torch autograd's gradient."""
    X, labels = rng.standard_normal((6, 2, 8, 8)), np.arange(6) % 3
    layers = [Conv2D(2, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(48, 3), Softmax()]
    model = Sequential(layers, backend="numpy", dtype="float64", seed=0)
    model.build((2, 8, 8))
    model.set_parameters({"0.b": rng.standard_normal(3)})  # non-zero biases
    model.layers[0].input_grad = False
    before = {k: np.array(v) for k, v in model.parameters().items()}
    lr = 0.1
    model.fit(
        X, labels, epochs=1, batch_size=6, optimizer=PlainSGD(lr), shuffle=False, progress=False
    )
    moved = {k: (before[k] - np.asarray(v)) / lr for k, v in model.parameters().items()}

    t = {k: torch.tensor(v, requires_grad=True) for k, v in before.items()}
    F = torch.nn.functional
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(X), t["0.w"], t["0.b"], padding=1)), 2)
    logits = torch.flatten(h, 1) @ t["4.w"] + t["4.b"]
    F.cross_entropy(logits, torch.tensor(labels)).backward()
    for key, grad in moved.items():
        want = t[key].grad.numpy()
        assert_close(grad, want, scale=np.abs(want).max(), err_msg=key)
