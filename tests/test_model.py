"""Sequential: training step against finite differences, fit / evaluate / predict, the fused
softmax head, persistence across backends, Ctrl-C, progress output and every error path.
"""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

from arraycnn.backend import to_numpy
from arraycnn.budget import WorkspaceError
from arraycnn.nn.activations import ReLU, Sigmoid, Softmax
from arraycnn.nn.layers import Conv2D, Dense, Flatten, Layer, MaxPool2D
from arraycnn.nn.model import History, Sequential, load_model
from arraycnn.nn.optim import SGD, Adam
from arraycnn.nn.progress import LINE_WIDTH, epoch_line
from arraycnn.testing import assert_close, check_grad


class PlainSGD:
    """A stand-in optimizer (the contract only): ``p - lr * g``, no state."""

    def __init__(self, lr):
        self.lr = lr

    def step(self, params, grads):
        return {k: params[k] - self.lr * grads[k] for k in params}


def small_cnn(backend="numpy", dtype="float64", seed=0, head=True):
    layers = [
        Conv2D(1, 3, 3, padding=1),  # (1, 6, 6) -> (3, 6, 6)
        ReLU(),
        MaxPool2D(2),  # -> (3, 3, 3)
        Flatten(),  # -> (27,)
        Dense(27, 4),
    ]
    if head:
        layers.append(Softmax())
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed)


def host_forward_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Independent float64 oracle of small_cnn without its Softmax: explicit loops."""
    w, b = params["0.w"], params["0.b"]
    n = x.shape[0]
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, 3, 6, 6))
    for f in range(3):
        for i in range(6):
            for j in range(6):
                conv[:, f, i, j] = (xpad[:, 0, i : i + 3, j : j + 3] * w[f, 0]).sum(axis=(1, 2))
        conv[:, f] += b[f]
    act = np.maximum(conv, 0.0)
    pooled = act.reshape(n, 3, 3, 2, 3, 2).max(axis=(3, 5))  # (N,3,6,6) -> (N,3,3,3)
    flat = pooled.reshape(n, 27)  # (N, 3, 3, 3) -> (N, 27)
    return flat @ params["4.w"] + params["4.b"]


def host_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def toy_images(rng, n=12):
    X = rng.standard_normal((n, 1, 6, 6))
    y = np.arange(n) % 4
    return X, y


# ------------------------------------------------------------------------------ the training step


def test_one_sgd_step_follows_the_finite_difference_gradient(xp, rng):
    """fit(1 epoch, full batch, SGD) moves every parameter by -lr * dL/dp of the mean loss."""
    X, y = toy_images(rng)
    model = small_cnn(backend=xp)
    model.build((1, 6, 6))
    before = {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in model.parameters().items()}
    lr = 0.5
    model.fit(
        X, y, epochs=1, batch_size=len(X), optimizer=PlainSGD(lr), shuffle=False, progress=False
    )
    after = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    assert set(before) == {"0.w", "0.b", "4.w", "4.b"}
    check_sgd_step(before, after, lr, X, y)


def check_sgd_step(before: dict, after: dict, lr: float, X: np.ndarray, y: np.ndarray) -> None:
    """Every parameter of small_cnn moved by -lr * dL/dp of the mean loss over (X, y), the
    gradient from finite differences of the loop forward."""
    for key in before:
        claimed = (before[key] - after[key]) / lr

        def loss_of(p, key=key):
            params = dict(before, **{key: p})
            return host_cross_entropy(host_forward_logits(params, X), y)

        check_grad(loss_of, before[key], claimed, directions=3)


def test_fused_softmax_head_is_stable_for_huge_logits(rng):
    X, y = toy_images(rng)
    model = small_cnn()
    model.build((1, 6, 6))
    params = model.parameters()
    model.set_parameters({"4.w": params["4.w"] * 1e4})  # logits of order 1e4
    big = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    result = model.evaluate(X, y, loss="categorical_crossentropy")
    expected = host_cross_entropy(host_forward_logits(big, X), y)
    assert np.isfinite(result["loss"]) and expected > 100.0
    assert result["loss"] == pytest.approx(expected, rel=1e-12)
    proba = to_numpy(model.predict_proba(X))  # predict_proba still returns the Softmax output
    assert_close(np.asarray(proba).sum(axis=1), np.ones(len(X)))


def test_loss_is_computed_on_probabilities_without_a_softmax_head(rng):
    """No Softmax: CategoricalCrossEntropy(from_logits=True) takes the Dense output as logits."""
    X, y = toy_images(rng)
    model = small_cnn(head=False)
    model.build((1, 6, 6))
    params = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    result = model.evaluate(X, y)
    assert result["loss"] == pytest.approx(
        host_cross_entropy(host_forward_logits(params, X), y), rel=1e-12
    )


# ---------------------------------------------------------------- fit / evaluate / predict


def separable_data(rng, n=96):
    """Two classes: a bright blob in the top-left or the bottom-right of a 6×6 image."""
    X = 0.1 * rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 2, n)
    X[y == 0, 0, :3, :3] += 1.0
    X[y == 1, 0, 3:, 3:] += 1.0
    return X, y


def two_class_cnn(backend="numpy", seed=1, device=None):
    return Sequential(
        [Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(36, 2), Softmax()],
        backend=backend,
        seed=seed,
        device=device,
    )


def test_fit_learns_and_history_is_complete(rng, capsys):
    X, y = separable_data(rng)
    model = two_class_cnn()
    history = model.fit(
        X,
        y,
        epochs=4,
        batch_size=16,
        optimizer=Adam(lr=0.02),
        validation_data=(X[:32], y[:32]),
        seed=0,
    )
    assert isinstance(history, History) and history.epochs == [1, 2, 3, 4]
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time"}
    assert all(len(v) == 4 for v in h.values())
    assert h["loss"][-1] < h["loss"][0]
    assert h["accuracy"][-1] >= 0.95 and h["val_accuracy"][-1] >= 0.95
    assert all(t > 0 for t in h["epoch_time"])
    assert history.steps == 4 * 6
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 4 and "val_acc " in lines[-1]  # stdout is not a terminal
    assert all(len(line) <= 80 for line in lines)


def test_progress_false_prints_nothing(rng, capsys):
    X, y = separable_data(rng, n=16)
    two_class_cnn().fit(X, y, epochs=1, batch_size=8, optimizer="sgd", progress=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("kwargs", "prints"),
    [
        ({"verbose": 0}, False),
        ({"verbose": 1}, True),
        ({"verbose": 2}, True),
        ({"verbose": False}, False),
        ({"verbose": 0, "progress": False}, False),
        ({"verbose": 2, "progress": True}, True),
        ({}, True),
    ],
)
def test_verbose_is_keras_alias_of_progress(rng, capsys, kwargs, prints):
    X, y = separable_data(rng, n=16)
    two_class_cnn().fit(X, y, epochs=2, batch_size=8, optimizer="sgd", **kwargs)
    lines = capsys.readouterr().out.splitlines()
    expected = ["epoch 1/2", "epoch 2/2"] if prints else []
    assert [line.split("  ")[0] for line in lines] == expected


def test_history_is_keras_like(rng):
    X, y = separable_data(rng, n=16)
    history = two_class_cnn().fit(
        X, y, epochs=3, batch_size=8, optimizer="sgd", verbose=0, validation_data=(X, y)
    )
    assert history.epoch == [0, 1, 2] and history.epochs == [1, 2, 3]
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    for values in history.history.values():
        assert len(values) == 3 and all(isinstance(v, float) for v in values)


def test_epoch_line_fits_80_columns_at_its_documented_limits():
    worst = {
        "loss": 9.99994,
        "accuracy": 1.0,
        "val_loss": 9.99994,
        "val_accuracy": 1.0,
        "epoch_time": 999.94,
    }
    line = epoch_line(999, 999, worst)
    assert LINE_WIDTH == 80 and len(line) <= 80
    assert line.startswith("epoch 999/999  loss 9.9999  acc 1.0000  val_loss 9.9999")
    assert line.endswith("val_acc 1.0000  999.9s")


def test_evaluate_and_predict_agree_with_an_independent_forward(rng):
    """Dense-only model: compare with x @ w + b and a host softmax."""
    X = rng.standard_normal((20, 1, 2, 3))
    y = rng.integers(0, 3, 20)
    model = Sequential([Flatten(), Dense(6, 3), Softmax()], dtype="float64", seed=2)
    model.build((1, 2, 3))
    p = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    logits = X.reshape(20, 6) @ p["1.w"] + p["1.b"]  # (N, 1, 2, 3) -> (N, 6)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba = e / e.sum(axis=1, keepdims=True)
    assert_close(model.predict_proba(X, batch_size=7), proba)
    labels = to_numpy(model.predict(X, batch_size=7))
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    result = model.evaluate(X, y, batch_size=6)
    assert result["accuracy"] == pytest.approx(float((proba.argmax(axis=1) == y).mean()))
    assert result["loss"] == pytest.approx(host_cross_entropy(logits, y), rel=1e-12)
    onehot = np.eye(3)[y]
    assert model.evaluate(X, onehot)["loss"] == pytest.approx(result["loss"], rel=1e-12)


def test_fit_on_backend_arrays_and_numpy_arrays(xp, to_xp, rng, device):
    """X in the model's namespace is batched on the device (xp.take); NumPy X moves per step."""
    X, y = separable_data(rng, n=40)
    for data in (X, to_xp(X)):
        model = two_class_cnn(backend=xp, device=device)
        history = model.fit(
            data, y, epochs=2, batch_size=8, optimizer=Adam(lr=0.02), seed=0, progress=False
        )
        assert len(history.epochs) == 2
        labels = model.predict(data)
        assert labels.shape == (40,)
        assert (
            type(labels).__module__.split(".")[0]
            == type(model.xp.asarray(0)).__module__.split(".")[0]
        )


def test_binary_output_with_sigmoid_and_bce(rng):
    X, y = separable_data(rng, n=64)
    model = Sequential(
        [Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(32, 1), Sigmoid()], dtype="float64", seed=0
    )
    history = model.fit(
        X,
        y,
        epochs=6,
        batch_size=16,
        loss="binary_crossentropy",
        optimizer=Adam(lr=0.05),
        progress=False,
    )
    assert history.history["accuracy"][-1] >= 0.95
    proba = np.asarray(to_numpy(model.predict_proba(X)))
    assert proba.shape == (64, 1)
    np.testing.assert_array_equal(to_numpy(model.predict(X)), (proba[:, 0] > 0.5).astype(int))
    expected_loss = -np.mean(y * np.log(proba[:, 0]) + (1 - y) * np.log(1 - proba[:, 0]))
    assert model.evaluate(X, y)["loss"] == pytest.approx(expected_loss, rel=1e-9)


def test_callback_stops_training(rng):
    X, y = separable_data(rng, n=16)
    seen = []

    def stop_after_two(epoch, metrics):
        seen.append((epoch, sorted(metrics)))
        return epoch == 2

    history = two_class_cnn().fit(
        X, y, epochs=5, batch_size=8, optimizer="sgd", progress=False, callback=stop_after_two
    )
    assert history.epochs == [1, 2] and len(seen) == 2
    assert seen[0][1] == ["accuracy", "epoch_time", "loss"]


# ------------------------------------------------------------------------------ Ctrl-C


class InterruptAt(Layer):
    """Identity layer that sends SIGINT to this process on its n-th training forward."""

    def __init__(self, at: int = 3):
        super().__init__()
        self.at = at
        self.calls = 0

    def forward(self, x, *, training=False):
        if training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)
        return x

    def backward(self, gy):
        return gy

    def get_config(self):
        return {"at": self.at}


def test_ctrl_c_finishes_the_step_keeps_weights_and_returns_history(rng, capsys):
    X, y = separable_data(rng, n=32)
    model = Sequential(
        [InterruptAt(at=6), Flatten(), Dense(36, 2), Softmax()], dtype="float64", seed=0
    )
    model.build((1, 6, 6))
    start = np.asarray(to_numpy(model.parameters()["2.w"])).copy()
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    history = model.fit(X, y, epochs=5, batch_size=8, optimizer=PlainSGD(0.1), shuffle=False)
    assert history.interrupted
    assert history.steps == 6  # the interrupted step was completed: 4 in epoch 1, 2 in epoch 2
    assert history.epochs == [1]  # the incomplete epoch is not recorded
    assert not np.array_equal(np.asarray(to_numpy(model.parameters()["2.w"])), start)
    assert "interrupted" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored


# ------------------------------------------------------------------------------ save / load


def test_save_load_roundtrip_across_backends(tmp_path, rng):
    X, y = separable_data(rng, n=24)
    model = two_class_cnn()
    model.fit(X, y, epochs=1, batch_size=8, optimizer=Adam(lr=0.01), progress=False)
    path = model.save(tmp_path / "sub" / "model.npz")
    assert sorted(os.listdir(path.parent)) == ["model.npz"]  # no temporary file left behind
    expected = np.asarray(to_numpy(model.predict_proba(X)))
    for backend in ("numpy", "array_api_strict", "torch"):
        loaded = load_model(path, backend=backend)
        assert loaded.backend == backend
        assert [type(layer).__name__ for layer in loaded.layers] == [
            type(layer).__name__ for layer in model.layers
        ]
        assert_close(loaded.predict_proba(X), expected, rtol=1e-6, atol=1e-7)
    assert load_model(path, dtype="float64").predict_proba(X).dtype == np.float64


def test_save_overwrites_atomically(tmp_path, rng):
    X, _y = separable_data(rng, n=8)
    path = tmp_path / "m.npz"
    first, second = two_class_cnn(seed=1), two_class_cnn(seed=2)
    first.build((1, 6, 6))
    second.build((1, 6, 6))
    first.save(path)
    second.save(path)
    assert_close(load_model(path).predict_proba(X), to_numpy(second.predict_proba(X)))


def test_loading_a_file_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.*not an arraycnn model"):
        load_model(text)
    plain = tmp_path / "arrays.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"arrays\.npz.*not an arraycnn model"):
        load_model(plain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.npz")


def test_save_before_build_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        two_class_cnn().save(tmp_path / "m.npz")


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def data(rng):
    return separable_data(rng, n=16)


def test_shape_that_does_not_fit_the_first_layer(data):
    X, y = data
    model = Sequential([Conv2D(3, 4, 3), ReLU(), Flatten(), Dense(64, 2)])
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2D\).*expected.*got"):
        model.fit(X, y, epochs=1, batch_size=4, progress=False)
    built = two_class_cnn()
    built.build((1, 6, 6))
    with pytest.raises(ValueError, match=r"expected samples of shape \(1, 6, 6\).*got \(1, 5, 6\)"):
        built.predict(X[:, :, :5, :])


def test_bad_labels_lengths_and_values(data):
    X, y = data
    model = two_class_cnn()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\).*\[0, 7\]"):
        model.fit(X, np.where(y == 1, 7, 0), epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="labels must be in"):
        model.fit(X, y - 1, epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=r"same length.*16 samples and 15 labels"):
        model.fit(X, y[:-1], epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=r"one-hot targets of shape \(N, 2\)"):
        model.fit(X, np.eye(3)[y], epochs=1, batch_size=4, progress=False)


def test_nan_in_data(data):
    X, y = data
    X = X.copy()
    X[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        two_class_cnn().fit(X, y, epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="y contains NaN"):
        two_class_cnn().evaluate(X[:2] * 0, np.array([0.0, np.nan]))


def test_nan_in_backend_data(xp, to_xp, data, device):
    X, y = data
    X = X.copy()
    X[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        model = two_class_cnn(backend=xp, device=device)
        model.fit(to_xp(X), y, epochs=1, batch_size=4, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"epochs": 1.5}, TypeError, "epochs must be an int"),
        ({"loss": "hinge"}, ValueError, "loss: unknown loss 'hinge'"),
        ({"optimizer": "adamax"}, ValueError, "optimizer: unknown optimizer 'adamax'"),
        ({"validation_data": (np.zeros((2, 1, 6, 6)),)}, TypeError, "validation_data"),
    ],
)
def test_bad_fit_arguments(data, kwargs, error, match):
    X, y = data
    args = {"epochs": 1, "batch_size": 4, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        two_class_cnn().fit(X, y, **args)


def test_data_from_another_namespace_is_refused(data):
    torch = pytest.importorskip("torch")
    X, _y = data
    with pytest.raises(TypeError, match="X is a torch array but the model runs on numpy"):
        two_class_cnn().predict(torch.from_numpy(X))
    with pytest.raises(TypeError, match="X must be a NumPy array"):
        two_class_cnn().predict([[1.0]])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="layers must not be empty"):
        Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\] \(int\) is not a layer"):
        Sequential([ReLU(), 3])
    with pytest.raises(ValueError, match="dtype must be"):
        Sequential([ReLU()], dtype="int32")
    with pytest.raises(ValueError, match="backend must be one of"):
        Sequential([ReLU()], backend="tensorflow")


def test_summary_lists_layers_and_parameters():
    model = two_class_cnn()
    assert "not built" in model.summary()
    model.build((1, 6, 6))
    text = model.summary()
    assert "0 Conv2D" in text and "(4, 6, 6)" in text and "(2,)" in text
    assert model.count_parameters() == 4 * 9 + 4 + 36 * 2 + 2
    assert str(model.count_parameters()) in text.splitlines()[-1]


def test_optimizer_names_and_weight_decay_work(data):
    X, y = data
    model = two_class_cnn()
    model.fit(X, y, epochs=1, batch_size=4, optimizer="adam", progress=False)
    model.fit(X, y, epochs=1, batch_size=4, optimizer=SGD(lr=0.1, weight_decay=0.1), progress=False)
    assert model.evaluate(X, y)["accuracy"] >= 0.5


# ------------------------------------------------------------------------------ labels, arguments


def test_float_labels_that_are_whole_numbers_are_labels(data):
    X, y = data
    model = two_class_cnn()
    model.build((1, 6, 6))
    as_ints = model.evaluate(X, y)
    as_floats = model.evaluate(X, y.astype(np.float64))
    assert as_floats == as_ints


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_float_labels_that_are_not_whole_numbers_are_refused(data, method):
    X, y = data
    labels = y.astype(np.float64)
    labels[5] = 0.5
    model = two_class_cnn()
    args = {"epochs": 1, "batch_size": 4, "progress": False} if method == "fit" else {}
    with pytest.raises(ValueError, match=r"y: float labels must be whole numbers.*0\.5 at index 5"):
        getattr(model, method)(X, labels, **args)
    with pytest.raises(ValueError, match=r"validation y: float labels must be whole numbers"):
        model.fit(X, y, epochs=1, batch_size=4, progress=False, validation_data=(X, labels))


def test_one_output_takes_float_targets(rng):
    """One sigmoid output: 1-D floats are (soft) binary targets, not labels."""
    X = rng.standard_normal((8, 3))
    targets = np.array([0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.6])
    model = Sequential([Dense(3, 1), Sigmoid()], dtype="float64", seed=0)
    model.build((3,))
    p = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    z = X @ p["0.w"][:, 0] + p["0.b"][0]
    q = 1 / (1 + np.exp(-z))
    expected = -np.mean(targets * np.log(q) + (1 - targets) * np.log(1 - q))
    assert model.evaluate(X, targets)["loss"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, r"seed must be a non-negative int or None, got -1"),
        ({"seed": 1.5}, TypeError, r"seed must be a non-negative int or None, got float 1\.5"),
        ({"seed": True}, TypeError, r"seed must be a non-negative int or None, got bool"),
        ({"shuffle": 1}, TypeError, r"shuffle must be True or False, got int 1"),
        ({"shuffle": "no"}, TypeError, r"shuffle must be True or False, got str 'no'"),
        ({"progress": "yes"}, TypeError, r"progress must be True or False, got str 'yes'"),
        ({"verbose": 3}, ValueError, r"verbose must be 0, 1 or 2 .*got 3"),
        ({"verbose": -1}, ValueError, r"verbose must be 0, 1 or 2 .*got -1"),
        ({"verbose": "auto"}, TypeError, r"verbose must be 0, 1 or 2 .*got str 'auto'"),
        ({"verbose": 1.0}, TypeError, r"verbose must be 0, 1 or 2 .*got float 1.0"),
        ({"verbose": 1}, ValueError, r"verbose=1 disagrees with progress=False"),
        ({"callback": 3}, TypeError, r"callback must be callable .*got int 3"),
        ({"callback": "stop"}, TypeError, r"callback must be callable .*got str 'stop'"),
        ({"batch_size": True}, TypeError, r"batch_size must be an int, got bool"),
        (
            {"validation_data": (np.zeros((0, 1, 6, 6)), np.zeros(0))},
            ValueError,
            r"validation X is empty \(0 samples\)",
        ),
    ],
)
def test_bad_fit_arguments_are_refused_before_the_first_epoch(data, kwargs, error, match):
    X, y = data
    model = two_class_cnn()
    model.build((1, 6, 6))
    before = {k: np.asarray(to_numpy(v)).copy() for k, v in model.parameters().items()}
    args = {"epochs": 1, "batch_size": 4, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        model.fit(X, y, **args)
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(to_numpy(value), before[key])  # nothing was trained


def test_model_seed_is_validated():
    with pytest.raises(ValueError, match=r"seed must be a non-negative int or None, got -3"):
        Sequential([ReLU()], seed=-3)
    with pytest.raises(TypeError, match=r"seed must be a non-negative int or None, got str '1'"):
        Sequential([ReLU()], seed="1")
    assert Sequential([ReLU()], seed=np.int64(4)).seed == 4


def test_zero_samples_predict_empty_and_evaluate_refuses(xp):
    model = two_class_cnn(backend=xp)
    empty = np.zeros((0, 1, 6, 6), dtype=np.float32)
    labels = model.predict(empty)
    assert tuple(labels.shape) == (0,) and labels.dtype == xp.int64
    assert tuple(model.predict_proba(empty).shape) == (0, 2)
    with pytest.raises(ValueError, match=r"X is empty \(0 samples\)"):
        model.evaluate(empty, np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"X is empty \(0 samples\)"):
        model.fit(empty, np.zeros(0, dtype=np.int64), epochs=1, batch_size=4, progress=False)


def test_build_shape_is_validated():
    with pytest.raises(TypeError, match=r"Sequential.build: input_shape must be a tuple of ints"):
        two_class_cnn().build((1, 6.5, 6))
    with pytest.raises(ValueError, match=r"Sequential.build: input_shape must have positive"):
        two_class_cnn().build((1, 0, 6))


# ------------------------------------------------------------------------------ sizes


def test_fit_refuses_a_batch_larger_than_the_memory_before_training():
    """40 MB of Dense output per sample: a batch of a million needs 36 TiB."""
    X, y = np.zeros((10**6, 1), dtype=np.float32), np.zeros(10**6, dtype=np.int64)
    model = Sequential([Dense(1, 10**7)], seed=0)
    message = (
        r"fit: a batch of 1000000 samples \(38\.15 MiB each: the input and every layer's "
        r"output\) with 228\.88 MiB of gradients and optimizer state needs 40000244000000 bytes "
        r"\(36\.38 TiB\), more than the memory available of .*; use batch_size <= \d+"
    )
    with pytest.raises(WorkspaceError, match=message):
        model.fit(X, y, epochs=1, batch_size=10**6, progress=False)
    assert model.optimizer is None  # refused before training started


class Huge(Layer):
    """Declares (build) an output of 10**12 values per sample; never runs."""

    def build(self, input_shape, *, xp=None, device=None, dtype=None, rng=None):
        self.input_shape, self.output_shape = tuple(input_shape), (10**12,)
        return self.output_shape

    def forward(self, x, *, training=False):
        raise AssertionError("Huge.forward must not run: its batch cannot fit")


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_pass_where_not_even_one_sample_fits_is_refused(method):
    X, y = np.zeros((4, 3), dtype=np.float32), np.zeros(4, dtype=np.int64)
    model = Sequential([Dense(3, 2), Huge()], seed=0)
    call = {
        "fit": lambda: model.fit(X, y, epochs=1, batch_size=2, progress=False),
        "evaluate": lambda: model.evaluate(X, y),
        "predict": lambda: model.predict(X),
    }[method]
    with pytest.raises(WorkspaceError, match=rf"{method}: a batch of .*not even one sample fits"):
        call()


def test_inference_batches_larger_than_the_data_are_fine(rng):
    X = rng.standard_normal((5, 3))
    model = Sequential([Dense(3, 2), Softmax()], dtype="float64", seed=0)
    model.build((3,))
    p = {k: np.asarray(to_numpy(v)) for k, v in model.parameters().items()}
    logits = X @ p["0.w"] + p["0.b"]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert_close(model.predict_proba(X, batch_size=10**12), expected)


def test_build_refuses_parameters_larger_than_the_memory_naming_the_layer():
    with pytest.raises(
        WorkspaceError,
        match=r"layer 2 \(Dense\): Dense: the parameters .* needs 4000004000000 bytes",
    ):
        Sequential([Flatten(), ReLU(), Dense(10**6, 10**6)]).build((10**6,))


def test_a_diverging_loss_warns(data):
    X, y = data
    model = two_class_cnn()
    model.build((1, 6, 6))
    model.set_parameters({"4.b": np.array([np.nan, 0.0], dtype=np.float32)})
    with pytest.warns(RuntimeWarning, match=r"the training loss is nan in epoch 1 .*diverged"):
        model.fit(X, y, epochs=2, batch_size=4, optimizer="sgd", progress=False)


# ------------------------------------------------------------------------------ float16


def test_float16_model_trains_with_adam_without_nan(xp, rng):
    """Dead ReLU units get exactly zero gradients; in float16 Adam's eps is 0, so 0 / 0 made
    those weights NaN after one step. The optimizer now works in float32 for half precision."""
    if not hasattr(xp, "float16"):
        pytest.skip(f"{xp.__name__} has no float16")
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = Sequential(
        [Dense(4, 16), ReLU(), Dense(16, 2), Softmax()], backend=xp, dtype="float16", seed=0
    )
    model.build((4,))
    model.set_parameters({"0.b": model.xp.asarray([-100.0] * 4 + [0.0] * 12, dtype=model.dtype)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        history = model.fit(X, y, epochs=8, batch_size=16, optimizer=Adam(0.01), progress=False)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    for key, value in model.parameters().items():
        assert value.dtype == model.dtype
        assert np.isfinite(np.asarray(to_numpy(value), dtype=np.float64)).all(), key
    assert model.optimizer.state["0.w"]["m"].dtype == xp.float32


def test_float16_is_refused_where_the_backend_has_none():
    with pytest.raises(ValueError, match=r"dtype 'float16' is not available on backend"):
        Sequential([ReLU()], backend="array_api_strict", dtype="float16")
