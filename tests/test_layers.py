"""Layers and initialisers: gradients by finite differences (input and every parameter, every
backend), shapes, configs, seeded initialisation, dropout, error paths, and an end-to-end
comparison with torch autograd (Conv2D -> ReLU -> MaxPool2D -> Flatten -> Dense)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arraycnn.backend import namespace_of, to_numpy
from arraycnn.nn.activations import ReLU
from arraycnn.nn.init import (
    INITIALIZERS,
    fans,
    get_initializer,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    zeros,
)
from arraycnn.nn.layers import (
    LAYERS,
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
)
from arraycnn.nn.losses import CategoricalCrossEntropy
from arraycnn.testing import assert_close, check_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None


def layer_gradient_errors(layer, x, xp, to_xp, rng, *, directions=3, device=None):
    """Build ``layer`` in float64 on ``xp``, run forward/backward with a random ``gy`` and check
    the input gradient and every parameter gradient against central finite differences.

    Returns the largest relative discrepancy per argument name ("x", "w", "b").
    """
    out_shape = layer.build(
        x.shape[1:], xp=xp, device=device, dtype="float64", rng=np.random.default_rng(3)
    )
    y = layer.forward(to_xp(x))
    assert tuple(y.shape) == (x.shape[0], *out_shape)
    assert namespace_of(y).__name__ == xp.__name__ and y.dtype == xp.float64
    gy = rng.standard_normal(tuple(y.shape))
    gx = layer.backward(to_xp(gy))
    assert tuple(gx.shape) == x.shape
    grads = {k: to_numpy(g) for k, g in layer.grads.items()}
    assert grads.keys() == layer.params.keys()

    def objective(v):
        return float(np.sum(gy * to_numpy(layer.forward(to_xp(v)))))

    errors = {"x": check_grad(objective, x, to_numpy(gx), directions=directions)}
    for name, p in list(layer.params.items()):
        p0 = to_numpy(p).copy()

        def objective_param(v, name=name):
            layer.params[name] = to_xp(v)
            return float(np.sum(gy * to_numpy(layer.forward(to_xp(x)))))

        errors[name] = check_grad(objective_param, p0, grads[name], directions=directions)
        layer.params[name] = to_xp(p0)
    return errors


def _distinct(rng, shape):
    """Values 0.1 apart, none near 0: no ties in max pooling, FD never crosses a kink."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.95  # |x| >= 0.05


CONV_CASES = [
    (lambda: Conv2D(2, 3, 3), (2, 2, 5, 5)),
    (lambda: Conv2D(4, 4, (3, 2), stride=2, padding=1, groups=2), (2, 4, 6, 5)),
    (lambda: Conv2D(2, 2, 3, dilation=2, padding="same", bias=False), (1, 2, 7, 7)),
    (lambda: Conv2D(1, 2, 2, padding=((1, 0), (0, 1)), strategy="naive"), (2, 1, 4, 4)),
]
POOL_CASES = [
    (lambda: MaxPool2D(2), (2, 2, 4, 6)),
    (lambda: MaxPool2D(3, stride=1, padding=1), (1, 2, 5, 5)),
    (lambda: AvgPool2D(3, 2, 1), (2, 1, 6, 5)),
    (lambda: AvgPool2D(2, padding=1, count_include_pad=False), (1, 2, 5, 4)),
]
OTHER_CASES = [
    (lambda: Flatten(), (3, 2, 3, 2)),
    (lambda: Dense(6, 4), (5, 6)),
    (lambda: Dense(6, 3, bias=False, init="he_uniform"), (2, 6)),
]


@pytest.mark.parametrize(("make", "shape"), CONV_CASES + POOL_CASES + OTHER_CASES)
def test_layer_gradients_by_finite_differences(make, shape, xp, to_xp, rng, device):
    layer = make()
    x = _distinct(rng, shape)
    errors = layer_gradient_errors(layer, x, xp, to_xp, rng, device=device)
    assert set(errors) == {"x", *layer.params}


@pytest.mark.parametrize(("make", "shape"), CONV_CASES + POOL_CASES + OTHER_CASES)
def test_float32_forward_and_backward_keep_dtype(make, shape, xp, to_xp, rng, device):
    layer = make()
    rng0 = np.random.default_rng(0)
    out_shape = layer.build(shape[1:], xp=xp, device=device, rng=rng0)  # float32 default
    for p in layer.params.values():
        assert p.dtype == xp.float32
    x = to_xp(rng.standard_normal(shape).astype(np.float32))
    y = layer.forward(x, training=True)
    assert y.dtype == xp.float32 and tuple(y.shape) == (shape[0], *out_shape)
    gx = layer.backward(xp.ones_like(y))
    assert gx.dtype == xp.float32 and tuple(gx.shape) == shape
    assert all(layer.grads[k].dtype == xp.float32 for k in layer.params)


@pytest.mark.parametrize(("make", "shape"), CONV_CASES + POOL_CASES + OTHER_CASES)
def test_config_round_trip(make, shape):
    layer = make()
    config = json.loads(json.dumps(layer.get_config()))
    rebuilt = LAYERS[type(layer).__name__](**config)
    assert rebuilt.get_config() == layer.get_config()
    assert rebuilt.build(shape[1:], rng=np.random.default_rng(0)) == layer.build(
        shape[1:], rng=np.random.default_rng(0)
    )


def test_dropout_config_round_trip():
    config = json.loads(json.dumps(Dropout(0.25).get_config()))
    assert LAYERS["Dropout"](**config).get_config() == {"rate": 0.25}


def test_base_layer_contract():
    layer = Layer()
    assert (layer.params, layer.grads, layer.built) == ({}, {}, False)
    assert layer.build((2, 3)) == (2, 3) and layer.built
    assert layer.get_config() == {} and repr(layer) == "Layer()"
    with pytest.raises(NotImplementedError):
        layer.forward(np.zeros((1, 2, 3)))
    with pytest.raises(NotImplementedError):
        layer.backward(np.zeros((1, 2, 3)))


def test_build_dtype_names(xp):
    layer = Dense(2, 2)
    layer.build((2,), xp=xp, dtype="float64", rng=np.random.default_rng(0))
    assert layer.params["w"].dtype == xp.float64 and layer.params["b"].dtype == xp.float64
    with pytest.raises(ValueError, match=r"dtype 'float99' is not a dtype of"):
        Dense(2, 2).build((2,), xp=xp, dtype="float99", rng=np.random.default_rng(0))


def test_registry_lists_every_layer_and_activation():
    expected = {
        "Conv2D",
        "MaxPool2D",
        "AvgPool2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Identity",
        "ReLU",
        "LeakyReLU",
        "Sigmoid",
        "Tanh",
        "Softmax",
    }
    assert expected <= set(LAYERS)
    assert all(issubclass(cls, Layer) for cls in LAYERS.values())
    assert not any(name.startswith("_") for name in LAYERS)


def test_conv_output_shape_follows_the_formula():
    layer = Conv2D(3, 8, 5, stride=2, padding=1)
    assert layer.build((3, 28, 28), rng=np.random.default_rng(0)) == (8, 13, 13)
    assert layer.params["w"].shape == (8, 3, 5, 5) and layer.params["b"].shape == (8,)
    assert MaxPool2D(2).build((8, 13, 13)) == (8, 6, 6)
    assert AvgPool2D(3, stride=1, padding=1).build((8, 13, 13)) == (8, 13, 13)
    assert Flatten().build((8, 6, 6)) == (288,)


# ---------------------------------------------------------------------------------------------
# initialisers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "std_of"),
    [
        (he_normal, lambda fi, fo: np.sqrt(2 / fi)),
        (he_uniform, lambda fi, fo: np.sqrt(6 / fi) / np.sqrt(3)),
        (glorot_normal, lambda fi, fo: np.sqrt(2 / (fi + fo))),
        (glorot_uniform, lambda fi, fo: np.sqrt(6 / (fi + fo)) / np.sqrt(3)),
    ],
)
@pytest.mark.parametrize("shape", [(300, 500), (64, 16, 5, 5)])
def test_initializer_scale(init, std_of, shape):
    w = init(shape, rng=np.random.default_rng(0), dtype="float64")
    fan_in, fan_out = fans(shape)
    expected = std_of(fan_in, fan_out)
    n = w.size  # >= 25 600 draws: the sample std is within 2 % with overwhelming probability
    assert abs(w.std() / expected - 1) < 0.02, (w.std(), expected)
    assert abs(w.mean()) < 5 * expected / np.sqrt(n)
    if "uniform" in init.__name__:
        bound = expected * np.sqrt(3)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound


def test_fans_of_dense_and_conv_weights():
    assert fans((784, 10)) == (784, 10)
    assert fans((8, 3, 3, 2)) == (18, 48)  # (F, C/groups, kh, kw)


def test_conv_layer_uses_grouped_fan_out():
    layer = Conv2D(4, 8, 3, groups=4, init="glorot_uniform")
    layer.build((4, 6, 6), dtype="float64", rng=np.random.default_rng(0))
    fan_in, fan_out = 1 * 9, (8 // 4) * 9
    reference = glorot_uniform(
        (8, 1, 3, 3), rng=np.random.default_rng(0), dtype="float64", fan_in=fan_in, fan_out=fan_out
    )
    np.testing.assert_array_equal(layer.params["w"], reference)
    assert np.abs(reference).max() <= np.sqrt(6 / (fan_in + fan_out))


def test_initialisation_is_seeded_and_backend_independent(xp):
    a = Dense(5, 3).build((5,), xp=xp, dtype="float64", rng=np.random.default_rng(42))
    layer_a, layer_b = Dense(5, 3), Dense(5, 3)
    layer_a.build((5,), xp=xp, dtype="float64", rng=np.random.default_rng(42))
    layer_b.build((5,), xp="numpy", dtype="float64", rng=np.random.default_rng(42))
    assert a == (3,)
    assert namespace_of(layer_a.params["w"]).__name__ == xp.__name__
    np.testing.assert_array_equal(to_numpy(layer_a.params["w"]), layer_b.params["w"])
    np.testing.assert_array_equal(to_numpy(layer_a.params["b"]), np.zeros(3))
    other = Dense(5, 3)
    other.build((5,), dtype="float64", rng=np.random.default_rng(43))
    assert not np.array_equal(other.params["w"], layer_b.params["w"])


def test_zeros_and_dtypes(xp):
    z = zeros((2, 3), xp=xp, dtype=xp.float64)
    assert z.dtype == xp.float64 and not np.any(to_numpy(z))
    assert he_normal((2, 3), rng=np.random.default_rng(0), xp=xp).dtype == xp.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: he_normal((3, 4), rng=0), TypeError, r"rng must be a numpy.random.Generator"),
        (lambda: he_normal((3, 4, 5), rng=np.random.default_rng()), ValueError, r"fan_in="),
        (lambda: he_normal((3, 0), rng=np.random.default_rng()), ValueError, r"positive sizes"),
        (lambda: he_normal("ab", rng=np.random.default_rng()), TypeError, r"tuple of ints"),
        (
            lambda: he_normal((3, 4), rng=np.random.default_rng(), fan_in=0),
            ValueError,
            r"fan_in and fan_out must be positive",
        ),
        (
            lambda: he_normal((3, 4), rng=np.random.default_rng(), dtype="int32"),
            TypeError,
            r"real floating dtype",
        ),
        (
            lambda: he_normal((3, 4), rng=np.random.default_rng(), dtype="float99"),
            ValueError,
            r"dtype 'float99' is not a dtype of",
        ),
        (lambda: get_initializer("kaiming"), ValueError, r"init must be one of 'he', "),
        (lambda: get_initializer(None), TypeError, r"init must be a name"),
        (
            lambda: he_normal(0, rng=np.random.default_rng()),
            ValueError,
            r"positive sizes, got \(0,\)",
        ),
    ],
)
def test_initializer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_initializer_names():
    assert get_initializer("HE") is he_normal and get_initializer("glorot") is glorot_uniform
    assert set(INITIALIZERS) >= {"he_normal", "he_uniform", "glorot_normal", "zeros"}


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


def _built_dropout(rate, xp, seed=7, device=None):
    layer = Dropout(rate)
    layer.build((100, 100), xp=xp, device=device, rng=np.random.default_rng(seed))
    return layer


def test_dropout_training_masks_and_scales(xp, to_xp, rng, device):
    layer = _built_dropout(0.3, xp, device=device)
    x = rng.uniform(1.0, 2.0, size=(4, 100, 100))  # never zero
    y = to_numpy(layer.forward(to_xp(x), training=True))
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01  # 40 000 Bernoulli draws
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    gy = rng.standard_normal(x.shape)
    gx = to_numpy(layer.backward(to_xp(gy)))
    # y = x * m / (1 - rate) and gx = gy * m / (1 - rate): both equal their input times y / x
    np.testing.assert_allclose(gx, gy * (y / x), rtol=1e-14, atol=0)


def test_dropout_is_identity_in_inference_and_at_rate_zero(xp, to_xp, rng, device):
    x = to_xp(rng.standard_normal((2, 100, 100)))
    dropouts = (_built_dropout(0.5, xp, device=device), _built_dropout(0.0, xp, device=device))
    for layer, training in zip(dropouts, (False, True), strict=True):
        assert layer.forward(x, training=training) is x
        gy = to_xp(rng.standard_normal((2, 100, 100)))
        assert layer.backward(gy) is gy


def test_dropout_masks_are_reproducible_and_change_per_call(xp, to_xp, device):
    x = to_xp(np.ones((1, 100, 100)))
    a, b = _built_dropout(0.5, xp, device=device), _built_dropout(0.5, xp, device=device)
    first_a, first_b = (to_numpy(d.forward(x, training=True)) for d in (a, b))
    np.testing.assert_array_equal(first_a, first_b)
    second_a = to_numpy(a.forward(x, training=True))
    assert not np.array_equal(first_a, second_a)
    other = to_numpy(_built_dropout(0.5, xp, seed=8, device=device).forward(x, training=True))
    assert not np.array_equal(first_a, other)


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"Dropout: rate must be in \[0, 1\), got 1.0"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got -0.1"):
        Dropout(-0.1)
    with pytest.raises(TypeError, match=r"Dropout: rate must be a float, got str"):
        Dropout("0.5")
    with pytest.raises(TypeError, match=r"Dropout: rng must be a numpy.random.Generator"):
        Dropout(0.5).build((3,), rng=None)
    with pytest.raises(RuntimeError, match=r"Dropout has no random source yet"):
        Dropout(0.5).forward(np.ones((1, 3)), training=True)
    with pytest.raises(RuntimeError, match=r"Dropout.backward called before forward"):
        Dropout(0.5).backward(np.ones((1, 3)))


# ---------------------------------------------------------------------------------------------
# error paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (Conv2D(1, 4, 3), (3, 28, 28), r"Conv2D: expected .* in_channels = 1, got \(3, 28, 28\)"),
        (Conv2D(1, 4, 3), (28, 28), r"Conv2D: expected input shape \(C, H, W\)"),
        (Conv2D(1, 4, 5), (1, 3, 3), r"Conv2D: input shape \(1, 3, 3\) does not fit"),
        (Dense(784, 10), (800,), r"Dense: expected input shape \(784,\) .*got \(800,\)"),
        (Dense(784, 10), (1, 28, 28), r"got \(1, 28, 28\) \(add a Flatten layer before Dense\)"),
        (MaxPool2D(2), (4, 4), r"MaxPool2D: expected input shape \(C, H, W\), got \(4, 4\)"),
        (MaxPool2D(4), (1, 3, 8), r"MaxPool2D: input shape \(1, 3, 8\) does not fit"),
        (AvgPool2D(4), (1, 3, 8), r"AvgPool2D: input shape \(1, 3, 8\) does not fit"),
        (Flatten(), (), r"Flatten: expected at least one axis per sample"),
        (Flatten(), (0, 3), r"Flatten: input_shape must have positive sizes"),
    ],
    ids=str,
)
def test_build_rejects_shapes_that_do_not_fit(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.build(shape, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("layer", "dtype", "match"),
    [
        (Conv2D(1, 4, 3, stride=2, strategy="winograd"), None, r"stride \(2, 2\): Winograd"),
        (Conv2D(1, 4, 3, dilation=2, strategy="winograd"), None, r"dilation \(2, 2\)"),
        (Conv2D(1, 4, 1, strategy="winograd"), None, r"a 1x1 kernel has no taps to save"),
        (Conv2D(1, 4, 3, strategy="winograd"), "float16", r"dtype float16: Winograd runs in"),
    ],
    ids=str,
)
def test_build_refuses_a_forced_strategy_that_cannot_run_the_layer(layer, dtype, match):
    """At build, not at the first forward: the message names the strategy and the reason."""
    with pytest.raises(ValueError, match=r"Conv2D: strategy='winograd' cannot run this layer: "):
        layer.build((1, 8, 8), dtype=dtype, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=match):
        layer.build((1, 8, 8), dtype=dtype, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Conv2D(0, 4, 3), ValueError, r"Conv2D: in_channels must be positive"),
        (lambda: Conv2D(1.5, 4, 3), TypeError, r"Conv2D: in_channels must be an int"),
        (lambda: Conv2D(3, 4, 3, groups=2), ValueError, r"groups=2 must divide in_channels=3"),
        (lambda: Conv2D(2, 4, 0), ValueError, r"kernel_size must be positive"),
        (lambda: Conv2D(2, 4, 3, stride=0), ValueError, r"stride must be positive"),
        (lambda: Conv2D(2, 4, 3, padding="bogus"), ValueError, r"padding must be"),
        (lambda: Conv2D(2, 4, 3, strategy="cook"), ValueError, r"strategy must be one of"),
        (lambda: Conv2D(2, 4, 3, init="kaiming"), ValueError, r"init must be one of"),
        (lambda: Conv2D(2, 4, 3, bias=1), TypeError, r"Conv2D: bias must be True or False"),
        (lambda: Dense(0, 4), ValueError, r"Dense: in_features must be positive"),
        (lambda: Dense(3, True), TypeError, r"Dense: out_features must be an int"),
        (lambda: Dense(3, 4, init="nope"), ValueError, r"init must be one of"),
        (lambda: MaxPool2D(0), ValueError, r"kernel_size must be positive"),
        (lambda: MaxPool2D(2, padding=2), ValueError, r"at most half the kernel_size"),
        (lambda: AvgPool2D(2, stride=(1, 0)), ValueError, r"stride must be positive"),
        (lambda: AvgPool2D(2, count_include_pad=0), TypeError, r"count_include_pad must be"),
    ],
)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_state_errors():
    with pytest.raises(RuntimeError, match=r"Conv2D has no parameters yet: call build first"):
        Conv2D(1, 1, 1).forward(np.ones((1, 1, 2, 2)))
    with pytest.raises(RuntimeError, match=r"Dense has no parameters yet"):
        Dense(2, 1).forward(np.ones((1, 2)))
    for layer in (Conv2D(1, 1, 1), Dense(2, 1), MaxPool2D(2), AvgPool2D(2), Flatten()):
        with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}.backward called before"):
            layer.backward(np.ones((1, 1)))
    with pytest.raises(TypeError, match=r"Conv2D: rng must be|rng must be a numpy"):
        Conv2D(1, 1, 1).build((1, 4, 4), rng=None)


def test_forward_input_errors():
    dense = Dense(3, 2)
    dense.build((3,), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Dense: expected input \(N, 3\), got shape \(2, 4\)"):
        dense.forward(np.ones((2, 4), dtype=np.float32))
    conv = Conv2D(1, 1, 1)
    conv.build((1, 2, 2), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Conv2D: expected a 4-D batch \(N, C, H, W\)"):
        conv.forward(np.ones((1, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Flatten: expected a batch \(N, ...\)"):
        Flatten().forward(np.ones(3))


# ---------------------------------------------------------------------------------------------
# end to end against torch autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_small_network_matches_torch_autograd(rng):
    """Conv2D -> ReLU -> MaxPool2D -> Flatten -> Dense with cross-entropy, float64."""
    x = rng.standard_normal((4, 2, 8, 8))
    labels = np.array([0, 2, 1, 2])
    stack = [
        Conv2D(2, 3, 3, padding=1),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(3 * 4 * 4, 3),
    ]
    shape = x.shape[1:]
    build_rng = np.random.default_rng(0)
    for layer in stack:
        shape = layer.build(shape, dtype="float64", rng=build_rng)
    conv, dense = stack[0], stack[4]
    conv.params["b"] = rng.standard_normal(3)  # non-zero biases exercise the bias gradients
    dense.params["b"] = rng.standard_normal(3)

    outputs = [x]
    for layer in stack:
        outputs.append(layer.forward(outputs[-1], training=True))
    loss, g = CategoricalCrossEntropy()(outputs[-1], labels)
    for layer in reversed(stack):
        g = layer.backward(g)

    tw = torch.tensor(conv.params["w"], requires_grad=True)
    tb = torch.tensor(conv.params["b"], requires_grad=True)
    dw = torch.tensor(dense.params["w"].T.copy(), requires_grad=True)  # torch's (out, in)
    db = torch.tensor(dense.params["b"], requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    t_out = [tx]
    t_out.append(F.conv2d(tx, tw, tb, padding=1))
    t_out.append(F.relu(t_out[-1]))
    t_out.append(F.max_pool2d(t_out[-1], 2))
    t_out.append(torch.flatten(t_out[-1], 1))
    t_out.append(F.linear(t_out[-1], dw, db))
    t_loss = F.cross_entropy(t_out[-1], torch.tensor(labels))
    t_loss.backward()

    for ours, theirs in zip(outputs[1:], t_out[1:]):
        assert_close(ours, theirs.detach().numpy(), scale=np.abs(theirs.detach().numpy()).max())
    assert_close(loss, t_loss.detach().numpy())
    assert_close(g, tx.grad.numpy(), scale=np.abs(tx.grad.numpy()).max())
    for ours, theirs in [
        (conv.grads["w"], tw.grad),
        (conv.grads["b"], tb.grad),
        (dense.grads["w"], dw.grad.T),
        (dense.grads["b"], db.grad),
    ]:
        assert_close(ours, theirs.numpy(), scale=np.abs(theirs.numpy()).max())


def _report() -> None:  # pragma: no cover - `python tests/test_layers.py` prints the table
    """Largest finite-difference discrepancy per layer and argument, NumPy float64."""
    from arraycnn.backend import resolve_backend
    from arraycnn.nn.activations import LeakyReLU, Sigmoid, Softmax, Tanh

    xp = resolve_backend("numpy")
    rng = np.random.default_rng(0)
    activation_cases = [(lambda c=c: c(), (3, 4, 5)) for c in (ReLU, Sigmoid, Tanh, Softmax)]
    activation_cases.append((lambda: LeakyReLU(0.1), (3, 4, 5)))
    for make, shape in CONV_CASES + POOL_CASES + OTHER_CASES + activation_cases:
        layer = make()
        errors = layer_gradient_errors(
            layer, _distinct(rng, shape), xp, xp.asarray, rng, directions=8
        )
        cells = "  ".join(f"{k}: {v:.1e}" for k, v in errors.items())
        print(f"{layer!r:<95} {cells}")


if __name__ == "__main__":  # pragma: no cover
    _report()


# ---------------------------------------------------------------------------------------------
# sizes before allocation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (
            Dense(10**6, 10**6),
            (10**6,),
            r"Dense: the parameters .* of float32 needs 4000004000000 bytes \(3\.64 TiB\), more "
            r"than the memory available",
        ),
        (
            Conv2D(4096, 4096, 100),
            (4096, 128, 128),
            r"Conv2D: the parameters \{'w': \(4096, 4096, 100, 100\), 'b': \(4096,\)\} of "
            r"float32 needs 671088656384 bytes",
        ),
        (
            Conv2D(1, 1, 1, padding=10**6),
            (1, 1, 1),
            r"Conv2D: one sample's output \(1, 2000001, 2000001\) of float32 needs",
        ),
        (
            MaxPool2D(1),
            (1000, 10**5, 10**5),
            r"MaxPool2D: one sample's output \(1000, 100000, 100000\) of float32 needs",
        ),
    ],
)
def test_build_refuses_parameters_and_outputs_larger_than_the_memory(
    layer, shape, match, traced_peak
):
    from arraycnn.budget import WorkspaceError

    def refuse():
        with pytest.raises(WorkspaceError, match=match):
            layer.build(shape, rng=np.random.default_rng(0))

    _, peak = traced_peak(refuse)
    assert peak < 256 * 1024  # nothing of the layer's size was allocated
    assert layer.params == {} and not layer.built


def test_the_workspace_budget_does_not_limit_parameters():
    """The workspace budget bounds a convolution's temporaries, not what a layer holds."""
    import arraycnn

    with arraycnn.config(workspace_limit="1M"):
        layer = Dense(1024, 1024)
        assert layer.build((1024,), rng=np.random.default_rng(0)) == (1024,)
    assert layer.params["w"].nbytes == 4 * 1024**2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("init", [he_normal, glorot_uniform])
def test_initialisers_draw_in_the_target_dtype(init, dtype, traced_peak):
    """A (1024, 1024) weight costs its own bytes on the host, not a float64 draw and a cast."""
    w, peak = traced_peak(lambda: init((1024, 1024), rng=np.random.default_rng(0), dtype=dtype))
    own = 1024 * 1024 * np.dtype(dtype).itemsize
    assert w.dtype == np.dtype(dtype)
    assert own <= peak < 1.25 * own


def test_float16_weights_are_drawn_in_float32_and_rounded_once():
    w = he_normal((200, 100), rng=np.random.default_rng(0), dtype="float16")
    draws = np.random.default_rng(0).standard_normal((200, 100), dtype=np.float32)
    expected = (draws * np.float32(np.sqrt(2 / 200))).astype(np.float16)  # N(0, 2 / fan_in)
    assert w.dtype == np.float16
    np.testing.assert_array_equal(w, expected)
