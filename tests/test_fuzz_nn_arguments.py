"""Fuzzing the nn arguments (Hypothesis): one argument of a valid call is replaced by a
hostile value; the outcome must be a correct result or a ``TypeError`` / ``ValueError`` /
``WorkspaceError`` raised by arraycnn whose message names the argument.

Covered: ``Sequential.fit`` keywords, labels ``y`` and samples ``X`` of fit / evaluate /
predict, layer constructors (then ``build`` and one forward pass), ``Sequential`` itself,
optimizer hyperparameters and ``train_test_split``. A "correct result" is checked where it is
cheap to know: a fit that runs leaves finite parameters and one history entry per epoch; a
layer that builds returns the output shape its forward pass produces.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from arraycnn.backend import to_numpy
from arraycnn.budget import WorkspaceError
from arraycnn.datasets import train_test_split
from arraycnn.nn import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    Sequential,
    Softmax,
    get_optimizer,
)

#: Each call takes milliseconds: twice the profile's examples per test.
FUZZ = settings(max_examples=2 * settings().max_examples)

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10),
    st.sampled_from([2**31, 10**12, 2**62, 2**70, -(2**70)]),  # valid but huge, or overflowing
    st.floats(),  # NaN and infinities included
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(
        [np.float64(2.0), np.int64(-1), np.int64(3), np.bool_(True), object(), (2, 2), 1j]
    ),
)


def refused_naming(exc: BaseException, *names: str) -> None:
    """``exc`` is an arraycnn error whose message names one of ``names`` (in any case:
    ``Conv2D`` the layer, ``conv2d`` the function it calls)."""
    assert isinstance(exc, (TypeError, ValueError, WorkspaceError)), repr(exc)
    message = str(exc).lower()
    assert any(name.lower() in message for name in names), (names, str(exc))
    event(f"refused: {type(exc).__name__}")


def tiny_data(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 4, 4)).astype(np.float32), np.arange(n) % 3


def tiny_model(**kwargs) -> Sequential:
    return Sequential([Flatten(), Dense(16, 3), Softmax()], seed=0, **kwargs)


def finite_parameters(model: Sequential) -> bool:
    return all(np.isfinite(np.asarray(to_numpy(p))).all() for p in model.parameters().values())


# ------------------------------------------------------------------------------ fit keywords

FIT_KEYWORDS = [
    "epochs",
    "batch_size",
    "loss",
    "optimizer",
    "validation_data",
    "shuffle",
    "seed",
    "progress",
    "callback",
]


@FUZZ
@given(keyword=st.sampled_from(FIT_KEYWORDS), value=HOSTILE)
def test_fit_keywords(keyword, value):
    if keyword == "epochs" and isinstance(value, (int, np.integer)) and value > 3:
        value = 3  # a valid epoch count: keep the run short
    X, y = tiny_data()
    model = tiny_model()
    args = {"epochs": 1, "batch_size": 4, "progress": False, keyword: value}
    try:
        history = model.fit(X, y, **args)
    except Exception as exc:
        refused_naming(exc, keyword.replace("validation_data", "validation"))
        return
    assert len(history.epochs) == int(args["epochs"]) and finite_parameters(model)
    event("trained")


# ------------------------------------------------------------------------------ labels, samples

LABELS = st.one_of(
    HOSTILE,
    st.lists(st.sampled_from([0, 1, 2, 0.0, 2.0, np.int8(1), True]), min_size=8, max_size=8),
    st.lists(st.floats(), min_size=8, max_size=8),
    st.lists(st.integers(-5, 5), min_size=7, max_size=9),
    st.lists(st.sampled_from([0, 1, 2, 2.0, 1.5, -0.0, "a", None]), min_size=8, max_size=8),
    st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=4), min_size=8, max_size=8),
)


@FUZZ
@given(y=LABELS, method=st.sampled_from(["fit", "evaluate"]))
def test_labels(y, method):
    X, _ = tiny_data()
    model = tiny_model()
    try:
        if method == "fit":
            model.fit(X, y, epochs=1, batch_size=4, progress=False)
        else:
            scores = model.evaluate(X, y)
            assert 0.0 <= scores["accuracy"] <= 1.0 and math.isfinite(scores["loss"])
    except Exception as exc:
        refused_naming(exc, "y", "X and y", "labels")
        return
    labels = np.asarray(y)
    if labels.ndim == 1:  # accepted 1-D labels are whole numbers in [0, 3)
        assert np.all(labels == np.floor(labels)) and labels.min() >= 0 and labels.max() < 3
    event("accepted")


SAMPLES = st.one_of(
    HOSTILE,
    st.builds(
        lambda shape, fill: np.full(shape, fill, dtype=np.float32),
        st.sampled_from([(8, 1, 4, 4), (8, 16), (8, 1, 4, 5), (0, 1, 4, 4), (8,), ()]),
        st.sampled_from([0.5, np.nan, np.inf]),
    ),
    st.sampled_from([np.full((8, 1, 4, 4), "a"), np.zeros((8, 1, 4, 4), dtype=complex)]),
)


@FUZZ
@given(X=SAMPLES, method=st.sampled_from(["fit", "evaluate", "predict"]))
def test_samples(X, method):
    _, y = tiny_data()
    model = tiny_model()
    try:
        if method == "fit":
            model.fit(X, y, epochs=1, batch_size=4, progress=False)
        elif method == "evaluate":
            model.evaluate(X, y)
        else:
            assert tuple(model.predict(X).shape) == (np.asarray(X).shape[0],)
    except Exception as exc:
        refused_naming(exc, "X")
        return
    event("accepted")


# ------------------------------------------------------------------------------ layers

#: (constructor, valid keyword arguments, input sample shape)
LAYER_CASES = {
    "Dense": (Dense, {"in_features": 16, "out_features": 3, "bias": True, "init": "he"}, (16,)),
    "Conv2D": (
        Conv2D,
        {
            "in_channels": 2,
            "out_channels": 4,
            "kernel_size": 3,
            "stride": 1,
            "padding": 1,
            "dilation": 1,
            "groups": 2,
            "bias": True,
            "strategy": "auto",
            "init": "glorot",
        },
        (2, 6, 6),
    ),
    "MaxPool2D": (MaxPool2D, {"kernel_size": 2, "stride": None, "padding": 0}, (2, 6, 6)),
    "AvgPool2D": (
        AvgPool2D,
        {"kernel_size": 2, "stride": 2, "padding": 1, "count_include_pad": False},
        (2, 6, 6),
    ),
    "Dropout": (Dropout, {"rate": 0.5}, (6,)),
    "LeakyReLU": (LeakyReLU, {"negative_slope": 0.1}, (6,)),
    "Softmax": (Softmax, {"axis": -1}, (6,)),
}


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(LAYER_CASES)))
def test_layer_arguments(data, name):
    cls, kwargs, shape = LAYER_CASES[name]
    argument = data.draw(st.sampled_from(sorted(kwargs)))
    kwargs = {**kwargs, argument: data.draw(HOSTILE)}
    try:
        layer = cls(**kwargs)
    except Exception as exc:
        refused_naming(exc, argument)
        return
    try:
        out_shape = layer.build(shape, rng=np.random.default_rng(0))
        x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
        y = layer.forward(x, training=True)
    except Exception as exc:
        refused_naming(exc, name, argument)
        return
    assert tuple(y.shape) == (2, *out_shape)
    event("built")


# ------------------------------------------------------------------------------ the model


@FUZZ
@given(keyword=st.sampled_from(["backend", "dtype", "seed"]), value=HOSTILE)
def test_sequential_arguments(keyword, value):
    try:
        model = tiny_model(**{keyword: value})
    except Exception as exc:
        refused_naming(exc, keyword)
        return
    model.build((1, 4, 4))
    event("built")


HYPERPARAMETERS = {
    "sgd": ["lr", "weight_decay"],
    "momentum": ["lr", "momentum", "nesterov", "weight_decay"],
    "adagrad": ["lr", "eps", "initial_accumulator_value", "weight_decay"],
    "rmsprop": ["lr", "rho", "eps", "weight_decay"],
    "adam": ["lr", "beta1", "beta2", "eps", "weight_decay"],
    "adamw": ["lr", "beta1", "beta2", "eps", "weight_decay"],
}


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(HYPERPARAMETERS)))
def test_optimizer_hyperparameters(data, name):
    keyword = data.draw(st.sampled_from(HYPERPARAMETERS[name]))
    try:
        optimizer = get_optimizer(name, **{keyword: data.draw(HOSTILE)})
    except Exception as exc:
        refused_naming(exc, keyword)
        return
    p = optimizer.step({"w": np.array([1.0, -1.0])}, {"w": np.array([0.5, 0.0])})["w"]
    assert p.shape == (2,)
    event("accepted")


@FUZZ
@given(keyword=st.sampled_from(["test_fraction", "seed"]), value=HOSTILE)
def test_split_arguments(keyword, value):
    X, y = np.arange(20.0).reshape(20, 1), np.arange(20) % 2  # (20,) -> (20, 1)
    try:
        (X_train, _), (X_test, _) = train_test_split(X, y, **{keyword: value})
    except Exception as exc:
        refused_naming(exc, keyword)
        return
    assert len(X_train) > 0 and len(X_test) > 0 and len(X_train) + len(X_test) == 20
    event("split")


def test_the_baselines_are_valid():
    """Every unmodified call above succeeds (so the fuzz tests can tell)."""
    X, y = tiny_data()
    tiny_model().fit(X, y, epochs=1, batch_size=4, progress=False)
    for cls, kwargs, shape in LAYER_CASES.values():
        cls(**kwargs).build(shape, rng=np.random.default_rng(0))
    for name in HYPERPARAMETERS:
        get_optimizer(name)
    train_test_split(np.zeros((20, 1)), np.arange(20) % 2)


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
