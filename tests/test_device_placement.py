"""Sequential(device=...): parameters, optimizer state, passes and results on the model's device.

array-api-strict's ``Device("device1")`` stands in for a GPU on the CPU: arrays on two devices
refuse to mix, so an allocation that forgets ``device=`` fails loudly. torch on the CPU takes
the same path with ``device="cpu"`` (and ``torch.device("cuda")``, where a GPU is present).
Oracles: the same seed and data on the NumPy backend (float64), and the model's own parameters
read to the host.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from arraycnn.backend import device_of, is_accelerator, namespace_of, resolve_backend, to_numpy
from arraycnn.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from arraycnn.nn.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from arraycnn.nn.model import Sequential, load_model
from arraycnn.nn.optim import OPTIMIZERS, Adam
from arraycnn.testing import assert_close

strict = pytest.importorskip("array_api_strict")

DEVICE1 = strict.Device("device1")
DEFAULT = strict.Device("CPU_DEVICE")


def small_cnn(backend: str = "array_api_strict", device=None, dtype: str = "float64"):
    """(1, 6, 6) -> Conv2D (2, 6, 6) -> MaxPool2D (2, 3, 3) -> Flatten (18,) -> Dense (3,)."""
    layers = [
        Conv2D(1, 2, 3, padding=1),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(18, 3),
        Softmax(),
    ]
    return Sequential(layers, backend=backend, dtype=dtype, seed=0, device=device)


def labeled_data(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, 1, 6, 6)), np.arange(n) % 3


def state_arrays(optimizer) -> dict[str, object]:
    """Every array of an optimizer's per-key state (moments, accumulators), keyed 'key/slot'."""
    return {
        f"{key}/{slot}": value
        for key, state in optimizer.state.items()
        for slot, value in state.items()
        if slot not in ("t", "shape")
    }


def host_parameters(model: Sequential) -> dict[str, np.ndarray]:
    return {key: np.asarray(to_numpy(p)) for key, p in model.parameters().items()}


def fit_twice(model: Sequential, X, y) -> None:
    model.fit(X, y, epochs=2, batch_size=5, optimizer=Adam(lr=0.01), progress=False)


# --------------------------------------------------------------------------- array-api-strict


def test_parameters_and_optimizer_state_live_on_device1():
    model = small_cnn(device=DEVICE1)
    assert model.device == DEVICE1
    X, y = labeled_data()
    fit_twice(model, X, y)
    params = model.parameters()
    assert set(params) == {"0.w", "0.b", "4.w", "4.b"}
    assert {key: device_of(p) for key, p in params.items()} == dict.fromkeys(params, DEVICE1)
    slots = state_arrays(model.optimizer)
    assert len(slots) == 2 * len(params)  # Adam: m and v per parameter
    assert {key: device_of(a) for key, a in slots.items()} == dict.fromkeys(slots, DEVICE1)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_layer_and_optimizer_keeps_its_arrays_on_device1(optimizer):
    layers = [
        Conv2D(1, 2, 3, padding=1),
        LeakyReLU(),
        AvgPool2D(2),
        Flatten(),
        Dropout(0.5),
        Dense(18, 3),
        Tanh(),
        Dense(3, 1),
        Sigmoid(),
    ]
    model = Sequential(layers, backend="array_api_strict", seed=0, device=DEVICE1)
    X, _ = labeled_data(8)
    y = np.arange(8) % 2
    model.fit(
        X,
        y,
        epochs=1,
        batch_size=4,
        loss="binary_crossentropy",
        optimizer=optimizer,
        progress=False,
    )
    arrays = {**model.parameters(), **state_arrays(model.optimizer)}
    assert {key: device_of(a) for key, a in arrays.items()} == dict.fromkeys(arrays, DEVICE1)
    assert device_of(model.predict(X)) == DEVICE1


@pytest.mark.parametrize("where", ["host", "device1"])
def test_fit_on_device1_matches_numpy_backend(where):
    """Host (NumPy) data moved per batch, or device1 data batched there: the same training as
    the NumPy backend's, and the model's results stay on device1."""
    X, y = labeled_data()
    reference = small_cnn(backend="numpy")
    fit_twice(reference, X, y)
    model = small_cnn(device=DEVICE1)
    data = X if where == "host" else strict.asarray(X, device=DEVICE1)
    labels = y if where == "host" else strict.asarray(y, device=DEVICE1)
    fit_twice(model, data, labels)
    expected = host_parameters(reference)
    for key, p in model.parameters().items():
        assert_close(p, expected[key], xp=strict, device=DEVICE1, err_msg=key)
    proba = model.predict_proba(data, batch_size=5)
    assert_close(proba, to_numpy(reference.predict_proba(X)), xp=strict, device=DEVICE1)
    predicted = model.predict(data, batch_size=5)
    assert device_of(predicted) == DEVICE1
    np.testing.assert_array_equal(to_numpy(predicted), to_numpy(reference.predict(X)))
    scores = model.evaluate(data, labels, batch_size=5)
    assert scores == pytest.approx(reference.evaluate(X, y), rel=1e-9)


def test_validation_data_and_zero_samples_on_device1():
    X, y = labeled_data()
    model = small_cnn(device=DEVICE1)
    on_device = strict.asarray(X, device=DEVICE1)
    history = model.fit(
        X, y, epochs=1, batch_size=6, validation_data=(on_device, y), progress=False
    )
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(X, y)["loss"])
    empty = model.predict_proba(on_device[:0, ...])
    assert empty.shape == (0, 3) and device_of(empty) == DEVICE1


@pytest.mark.parametrize("device", [None, DEVICE1], ids=["default", "device1"])
def test_save_on_device1_loads_onto_any_device(tmp_path, device):
    X, y = labeled_data()
    model = small_cnn(device=DEVICE1)
    fit_twice(model, X, y)
    path = model.save(tmp_path / "model.npz")
    loaded = load_model(path, backend="array_api_strict", device=device)
    expected_device = DEFAULT if device is None else DEVICE1
    assert loaded.device == expected_device
    saved = host_parameters(model)
    for key, p in loaded.parameters().items():
        assert device_of(p) == expected_device
        np.testing.assert_array_equal(to_numpy(p), saved[key], err_msg=key)
    data = strict.asarray(X, device=expected_device)
    np.testing.assert_array_equal(to_numpy(loaded.predict(data)), to_numpy(model.predict(X)))
    back = load_model(loaded.save(tmp_path / "again.npz"), backend="numpy")
    np.testing.assert_array_equal(to_numpy(back.predict(X)), to_numpy(model.predict(X)))


# --------------------------------------------------------------------------- bad input


def on_default_device(a: np.ndarray):
    return strict.asarray(a, device=DEFAULT)


#: The end of the message for data on the default device given to a model on device1.
MISMATCH = re.escape(f"is on device {DEFAULT} but the model is on device {DEVICE1}")


@pytest.mark.parametrize("call", ["fit", "predict", "predict_proba", "evaluate"])
def test_data_on_another_device_is_refused_before_anything_runs(call):
    X, y = labeled_data()
    model = small_cnn(device=DEVICE1)
    run = {
        "fit": lambda: model.fit(on_default_device(X), y, epochs=1, batch_size=4, progress=False),
        "predict": lambda: model.predict(on_default_device(X)),
        "predict_proba": lambda: model.predict_proba(on_default_device(X)),
        "evaluate": lambda: model.evaluate(on_default_device(X), y),
    }[call]
    with pytest.raises(ValueError, match="^X " + MISMATCH):
        run()
    assert not model.built  # refused at the boundary: not even built


def test_labels_and_validation_data_on_another_device_are_refused():
    X, y = labeled_data()
    model = small_cnn(device=DEVICE1)
    with pytest.raises(ValueError, match="^y " + MISMATCH):
        model.fit(X, on_default_device(y), epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="^y " + MISMATCH):
        model.evaluate(X, on_default_device(y))
    assert not model.built
    with pytest.raises(ValueError, match="^validation X " + MISMATCH):
        model.fit(
            X,
            y,
            epochs=1,
            batch_size=4,
            validation_data=(on_default_device(X), y),
            progress=False,
        )
    assert model.optimizer is None  # nothing trained


def test_device1_data_for_a_default_device_model_is_refused():
    model = small_cnn()
    assert model.device == DEFAULT
    with pytest.raises(ValueError, match=r"device1'\) but the model is on device .*CPU_DEVICE"):
        model.predict(strict.asarray(labeled_data()[0], device=DEVICE1))


@pytest.mark.parametrize(
    ("backend", "device"),
    [("array_api_strict", "device1"), ("numpy", "gpu"), ("torch", "no-such-device")],
)
def test_a_device_the_backend_does_not_have_is_refused(backend, device):
    if backend == "torch":
        pytest.importorskip("torch")
    with pytest.raises(ValueError, match=f"device '{device}' is not a device of backend"):
        Sequential([Flatten()], backend=backend, device=device)


# --------------------------------------------------------------------------- torch


def test_torch_cpu_takes_the_same_path(tmp_path):
    torch = pytest.importorskip("torch")
    X, y = labeled_data()
    reference = small_cnn(backend="numpy")
    fit_twice(reference, X, y)
    for data in (X, torch.asarray(X, device="cpu")):
        model = small_cnn(backend="torch", device="cpu")
        assert model.device == torch.device("cpu")
        fit_twice(model, data, y)
        devices = {device_of(p) for p in model.parameters().values()}
        devices |= {device_of(a) for a in state_arrays(model.optimizer).values()}
        assert devices == {torch.device("cpu")}
        proba = model.predict_proba(data)
        assert_close(proba, to_numpy(reference.predict_proba(X)), device=torch.device("cpu"))
    loaded = load_model(model.save(tmp_path / "m.npz"), backend="torch", device="cpu")
    assert_close(loaded.predict_proba(X), to_numpy(proba), device=torch.device("cpu"))


def test_torch_data_on_another_device_is_refused():
    torch = pytest.importorskip("torch")
    model = small_cnn(backend="torch", device="cpu")
    meta = torch.empty((4, 1, 6, 6), dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"^X is on device meta but the model is on device cpu"):
        model.predict(meta)


def test_the_device_kind_comes_from_the_namespace_and_the_device_object():
    torch = pytest.importorskip("torch")
    space = resolve_backend("torch")
    assert is_accelerator(space, torch.device("cuda"))  # a device object needs no GPU
    assert is_accelerator(space, "cuda:1")
    assert not is_accelerator(space, torch.device("cpu"))
    assert not is_accelerator(space, "meta")
    assert not is_accelerator(resolve_backend("array_api_strict"), DEVICE1)  # a CPU stand-in
    assert not is_accelerator(resolve_backend("numpy"), "cpu")


def _torch_cuda_usable() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _torch_cuda_usable(), reason="torch has no usable CUDA device")
def test_torch_cuda_takes_the_same_path():  # pragma: no cover - needs a GPU
    import torch

    X, y = labeled_data()
    model = small_cnn(backend="torch", device=torch.device("cuda"), dtype="float32")
    assert is_accelerator(namespace_of(model.xp.empty(0, device=model.device)), model.device)
    fit_twice(model, X, y)
    fit_twice(model, torch.asarray(X, dtype=torch.float32, device=model.device), y)
    assert {device_of(p) for p in model.parameters().values()} == {model.device}
    assert device_of(model.predict(X)) == model.device
    with pytest.raises(ValueError, match=r"^X is on device cpu but the model is on device cuda"):
        model.predict(torch.asarray(X, dtype=torch.float32, device="cpu"))
