"""Activations: functions vs hand formulas and torch, layer gradients by finite differences,
stability at |x| = 1e4, error paths."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.special import expit
from scipy.special import softmax as scipy_softmax

from arraycnn.backend import namespace_of, to_numpy
from arraycnn.nn.activations import (
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    identity,
    leaky_relu,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from arraycnn.nn.layers import LAYERS
from arraycnn.testing import assert_close, check_grad

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def _away_from_zero(rng, shape):
    """Values with |x| in [0.05, 3]: finite differences never cross the kink of (leaky) ReLU."""
    return rng.uniform(0.05, 3.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# (function call, NumPy/SciPy oracle)
FUNCTIONS = [
    (identity, lambda x: x),
    (relu, lambda x: np.maximum(x, 0.0)),
    (lambda x: leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    (sigmoid, expit),
    (tanh, np.tanh),
    (softmax, lambda x: scipy_softmax(x, axis=-1)),
    (lambda x: softmax(x, axis=1), lambda x: scipy_softmax(x, axis=1)),
]


@pytest.mark.parametrize(("fn", "oracle"), FUNCTIONS)
def test_functions_match_formulas(fn, oracle, xp, to_xp, rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    assert_close(fn(to_xp(x)), oracle(x), xp=xp, dtype=xp.float64, scale=1.0)
    x32 = x.astype(np.float32)
    assert_close(fn(to_xp(x32)), oracle(x), xp=xp, dtype=xp.float32, scale=1.0)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_functions_match_torch(rng):
    x = rng.standard_normal((4, 7)) * 5
    t = torch.tensor(x)
    assert_close(sigmoid(x), torch.sigmoid(t).numpy(), scale=1.0)
    assert_close(leaky_relu(x, 0.3), torch.nn.functional.leaky_relu(t, 0.3).numpy(), scale=5.0)
    assert_close(softmax(x, axis=0), torch.softmax(t, dim=0).numpy(), scale=1.0)
    assert_close(tanh(x), torch.tanh(t).numpy(), scale=1.0)


def test_sigmoid_and_softmax_are_stable_for_huge_inputs(xp, to_xp):
    x = np.array([[-1e4, -750.0, -40.0, 0.0, 40.0, 750.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = to_numpy(sigmoid(to_xp(x)))
            s = to_numpy(softmax(to_xp(x)))
            s_layer = to_numpy(Sigmoid().forward(to_xp(x)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(s))
    np.testing.assert_array_equal(y[0, [0, 1, 5, 6]], [0.0, 0.0, 1.0, 1.0])
    assert y[0, 3] == 0.5
    assert_close(y[0, 2], np.exp(-40.0) / (1 + np.exp(-40.0)))  # tiny, not flushed to 0
    np.testing.assert_array_equal(s_layer, y)
    assert_close(s, [[0, 0, 0, 0, 0, 0, 1.0]], atol=0.0)


# ---------------------------------------------------------------------------------------------
# layers: backward by finite differences on every backend
# ---------------------------------------------------------------------------------------------

LAYER_CASES = [Identity(), ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), Softmax(), Softmax(axis=1)]


@pytest.mark.parametrize("layer", LAYER_CASES, ids=repr)
def test_layer_backward_finite_differences(layer, xp, to_xp, rng):
    x = _away_from_zero(rng, (3, 4, 2))
    assert layer.build(x.shape[1:], xp=xp) == x.shape[1:]
    gy = rng.standard_normal(x.shape)
    layer.forward(to_xp(x), training=True)
    gx = layer.backward(to_xp(gy))
    assert namespace_of(gx).__name__ == xp.__name__ and gx.dtype == xp.float64
    assert layer.params == {} and layer.grads == {}

    def objective(v):
        return float(np.sum(gy * to_numpy(layer.forward(to_xp(v)))))

    check_grad(objective, x, to_numpy(gx))


@pytest.mark.parametrize("layer", LAYER_CASES, ids=repr)
def test_layer_forward_equals_function(layer, rng):
    x = rng.standard_normal((2, 5))
    fn = {
        "Identity": identity,
        "ReLU": relu,
        "LeakyReLU": lambda v: leaky_relu(v, 0.1),
        "Sigmoid": sigmoid,
        "Tanh": tanh,
        "Softmax": lambda v: softmax(v, axis=layer.get_config().get("axis", -1)),
    }[type(layer).__name__]
    np.testing.assert_array_equal(layer.forward(x), fn(x))


@pytest.mark.parametrize("layer", LAYER_CASES, ids=repr)
def test_config_round_trip_and_registry(layer):
    config = json.loads(json.dumps(layer.get_config()))
    cls = LAYERS[type(layer).__name__]
    assert cls is type(layer)
    assert cls(**config).get_config() == layer.get_config()


def test_relu_propagates_nan_as_torch(xp, to_xp):
    layer = ReLU()
    y = layer.forward(to_xp(np.array([[np.nan, -1.0, 2.0]])))
    np.testing.assert_array_equal(to_numpy(y), [[np.nan, 0.0, 2.0]])
    gx = layer.backward(to_xp(np.ones((1, 3))))
    np.testing.assert_array_equal(to_numpy(gx), [[1.0, 0.0, 1.0]])  # torch passes gy at NaN


def test_relu_gradient_at_zero_is_zero():
    layer = ReLU()
    layer.forward(np.array([[0.0, -1.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# error paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [relu, leaky_relu, sigmoid, tanh, softmax])
def test_integer_input_is_refused(fn):
    with pytest.raises(TypeError, match=r"x must have a real floating dtype, got int64"):
        fn(np.arange(3))


@pytest.mark.parametrize("fn", [identity, relu, sigmoid])
def test_non_array_is_refused(fn):
    with pytest.raises(TypeError, match=r"x must be an array"):
        fn([1.0, 2.0])


@pytest.mark.parametrize(
    ("slope", "error", "match"),
    [
        ("0.1", TypeError, r"negative_slope must be a real number, got str"),
        (True, TypeError, r"negative_slope must be a real number, got bool"),
        (float("nan"), ValueError, r"negative_slope must be finite"),
    ],
)
def test_bad_negative_slope(slope, error, match):
    with pytest.raises(error, match=match):
        LeakyReLU(slope)
    with pytest.raises(error, match=match):
        leaky_relu(np.zeros(2), slope)


def test_softmax_axis_errors():
    with pytest.raises(TypeError, match=r"Softmax: axis must be an int, got float"):
        Softmax(axis=1.0)
    with pytest.raises(ValueError, match=r"Softmax: axis 3 is out of range for 3-D input"):
        Softmax(axis=3).build((4, 5))
    with pytest.raises(ValueError, match=r"softmax: axis -3 is out of range for 2-D input"):
        softmax(np.zeros((2, 3)), axis=-3)
    with pytest.raises(TypeError, match=r"softmax: axis must be an int, got str"):
        softmax(np.zeros((2, 3)), axis="last")


@pytest.mark.parametrize("layer", LAYER_CASES, ids=repr)
def test_backward_before_forward(layer):
    fresh = type(layer)(**layer.get_config())
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}.backward called before"):
        fresh.backward(np.zeros((1, 2)))


def test_build_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"ReLU: input_shape must have positive sizes"):
        ReLU().build((0, 3))
    with pytest.raises(TypeError, match=r"Tanh: input_shape must be a tuple of ints"):
        Tanh().build(5)
