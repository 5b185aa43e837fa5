"""The seeds' examples, each on a tiny budget (seconds): they run, learn, and write their files."""

from __future__ import annotations

import gzip
import itertools
import json
import struct

import numpy as np
import pytest

from arraycnn.backend import to_numpy
from arraycnn.examples import keras_digits_grid, lecture_mnist, notebook_one_image
from arraycnn.nn.model import load_model
from arraycnn.testing import check_grad


def write_fake_mnist(directory, rng, n_train=48, n_test=24):
    """Four gzipped IDX files with random pixels: the format of the real set, tiny."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, shape in [
        ("train-images-idx3-ubyte", (n_train, 28, 28)),
        ("train-labels-idx1-ubyte", (n_train,)),
        ("t10k-images-idx3-ubyte", (n_test, 28, 28)),
        ("t10k-labels-idx1-ubyte", (n_test,)),
    ]:
        high = 256 if len(shape) == 3 else 10
        array = rng.integers(0, high, shape).astype(np.uint8)
        header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        (directory / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return directory


# ------------------------------------------------------------------------------ notebook


def test_notebook_loss_falls_over_50_steps():
    result = notebook_one_image.main(["--steps", "50", "--quiet"])
    losses = result["losses"]
    assert len(losses) == 50
    assert losses[-1] < 0.01 * losses[0]
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 45  # falls (almost) every step
    assert result["y_hat"] < 0.01  # label 0


def test_notebook_kernel_gradient_matches_finite_differences():
    model = notebook_one_image.build_model(seed=3)
    image, label = notebook_one_image.make_image(3), np.array([0])
    kernel = np.asarray(to_numpy(model.parameters()["0.w"]), dtype=np.float64)
    grad = np.asarray(to_numpy(notebook_one_image.kernel_gradient(model, image, label)))
    f = notebook_one_image.loss_of_kernel(model, image, label)
    check_grad(f, kernel, grad, directions=4)
    # the check has power: a kernel gradient flipped by 180 degrees (convolution instead of
    # cross-correlation, a classic hand-written mistake) is rejected
    flipped = grad[..., ::-1, ::-1]
    with pytest.raises(AssertionError, match="finite"):
        check_grad(f, kernel, flipped, directions=4)


# ------------------------------------------------------------------------------ lecture MNIST


def test_lecture_mnist_runs_a_few_steps_and_saves(tmp_path, rng):
    data_dir = write_fake_mnist(tmp_path / "mnist", rng)
    out = tmp_path / "out"
    summary = lecture_mnist.main(
        [
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--limit",
            "32",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert summary["framework"] == "arraycnn" and summary["epochs"] == 1
    assert summary["train_samples"] == 32 and summary["test_samples"] == 24
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0
    assert np.isfinite(summary["train_loss"][0])
    assert summary["epochs_to_99"] is None  # random labels: no 99 %
    saved = json.loads((out / "lecture_mnist_arraycnn.json").read_text())
    assert saved["test_accuracy"] == summary["test_accuracy"]
    model = load_model(out / "lecture_mnist.npz")
    assert model.input_shape == (1, 28, 28) and model.output_shape == (10,)


def test_lecture_mnist_architecture_shapes():
    model = lecture_mnist.build_model(seed=0)
    assert model.build((1, 28, 28)) == (10,)
    names = [type(layer).__name__ for layer in model.layers]
    assert names.count("Conv2D") == 2 and names.count("MaxPool2D") == 2
    assert names[-1] == "Softmax"


def test_lecture_mnist_torch_comparison_runs(tmp_path, rng):
    pytest.importorskip("torch")
    data_dir = write_fake_mnist(tmp_path / "mnist", rng)
    summary = lecture_mnist.main(
        [
            "--framework",
            "torch",
            "--threads",
            "1",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--limit",
            "32",
            "--quiet",
        ]
    )
    assert summary["framework"] == "torch" and summary["epochs"] == 1
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0


def test_lecture_architecture_option(tmp_path, rng):
    model = lecture_mnist.build_model(architecture="lecture", seed=0)
    assert model.build((1, 28, 28)) == (10,)
    assert model.count_parameters() == (9 + 1) + (784 * 30 + 30) + (30 * 20 + 20) + (20 * 10 + 10)
    with pytest.raises(ValueError, match="architecture must be one of"):
        lecture_mnist.build_model(architecture="resnet")
    data_dir = write_fake_mnist(tmp_path / "mnist", rng)
    summary = lecture_mnist.main(
        ["--architecture", "lecture", "--data-dir", str(data_dir), "--epochs", "1", "--quiet"]
    )
    assert summary["architecture"] == "lecture" and summary["epochs"] == 1


def test_first_epoch_at_target():
    assert lecture_mnist.first_epoch_at(0.99, [0.97, 0.991, 0.989]) == 2
    assert lecture_mnist.first_epoch_at(0.99, [0.97]) is None


# ------------------------------------------------------------------------------ Keras grid


def test_keras_digits_grid_writes_heatmaps(tmp_path):
    result = keras_digits_grid.main(
        [
            "--out",
            str(tmp_path),
            "--lrs",
            "0.5",
            "--lambdas",
            "0,1e-3",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--limit",
            "250",
            "--quiet",
        ]
    )
    png = tmp_path / "digits_grid.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "digits_grid.json").read_text())
    train = np.asarray(saved["train_accuracy"])
    assert train.shape == (1, 2) and np.all((train >= 0) & (train <= 1))
    assert saved["lrs"] == [0.5] and saved["lambdas"] == [0.0, 1e-3]
    assert result["train_samples"] + result["test_samples"] == 250
    assert train.max() > 0.3  # something was learnt in two epochs (chance is 0.1)
