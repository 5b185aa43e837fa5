"""``arraycnn train``: digits and (tiny, test-written) MNIST runs, outputs and bad options."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from arraycnn.cli import main
from arraycnn.datasets import load_digits, train_test_split
from arraycnn.nn.model import load_model


def write_fake_mnist(directory, rng, n_train=48, n_test=24):
    """Four gzipped IDX files with random pixels (the real format, tiny)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, shape in [
        ("train-images-idx3-ubyte", (n_train, 28, 28)),
        ("train-labels-idx1-ubyte", (n_train,)),
        ("t10k-images-idx3-ubyte", (n_test, 28, 28)),
        ("t10k-labels-idx1-ubyte", (n_test,)),
    ]:
        array = rng.integers(0, 256 if len(shape) == 3 else 10, shape).astype(np.uint8)
        header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        (directory / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return directory


def test_train_digits_writes_model_curve_and_history(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--limit",
            "700",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    text = capsys.readouterr().out
    assert "epoch 3/3" in text and "test accuracy" in text
    assert (out / "training_digits.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "history_digits.json").read_text())
    assert record["epochs_run"] == 3 and len(record["history"]["val_accuracy"]) == 3
    assert record["test_accuracy"] > 0.8  # three epochs of Adam on digits
    # the saved model reproduces the reported accuracy on the same deterministic split
    X, y = load_digits()
    _, (X_test, y_test) = train_test_split(X, y, test_fraction=0.2, seed=0)
    model = load_model(out / "model_digits.npz")
    accuracy = float(np.mean(np.asarray(model.predict(X_test)) == y_test))
    assert accuracy == pytest.approx(record["test_accuracy"])
    assert f"{accuracy:.4f}" in text


def test_train_mnist_from_idx_files(tmp_path, rng, capsys):
    data_dir = write_fake_mnist(tmp_path / "mnist", rng)
    out = tmp_path / "out"
    status = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--optimizer",
            "sgd",
            "--lr",
            "0.01",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert "test accuracy" in capsys.readouterr().out
    record = json.loads((out / "history_mnist.json").read_text())
    assert record["optimizer"] == "sgd" and record["lr"] == 0.01
    assert (out / "model_mnist.npz").is_file() and (out / "training_mnist.png").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--batch-size", "-3"], "--batch-size must be >= 1, got -3"),
        (["--optimizer", "nesterov"], "--optimizer"),
    ],
)
def test_bad_options_exit_with_status_2(tmp_path, capsys, options, message):
    status = main(["train", "--dataset", "digits", "--out", str(tmp_path), *options])
    assert status == 2
    assert message in capsys.readouterr().err


def test_unknown_dataset_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "cifar"])
    assert "invalid choice" in capsys.readouterr().err


def test_missing_mnist_directory_without_network_names_the_problem(tmp_path, monkeypatch):
    from arraycnn import datasets

    def no_fetch(directory, **kwargs):
        raise RuntimeError(f"MNIST not available in {directory}")

    monkeypatch.setattr(datasets, "fetch_mnist", no_fetch)
    with pytest.raises(RuntimeError, match="MNIST not available"):
        main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--quiet"])


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_train_digits_on_other_backends_with_a_forced_strategy(tmp_path, capsys, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    status = main(
        [
            "train",
            "--dataset",
            "digits",
            "--backend",
            backend,
            "--strategy",
            "im2col",
            "--epochs",
            "1",
            "--limit",
            "200",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    record = json.loads((tmp_path / "history_digits.json").read_text())
    assert record["backend"] == backend and record["epochs_run"] == 1
    model = load_model(tmp_path / "model_digits.npz")
    assert model.layers[0].get_config()["strategy"] == "im2col"
