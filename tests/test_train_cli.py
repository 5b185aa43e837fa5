"""``arraycnn train``: digits and (tiny, test-written) MNIST runs, outputs and bad options."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys

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


def test_train_on_two_workers(tmp_path, capsys):
    """--workers 2: each batch's halves on two threads; the run learns like one thread."""
    out = tmp_path / "out"
    argv = ["train", "--epochs", "3", "--batch-size", "32", "--limit", "700", "--workers", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "history_digits.json").read_text())
    assert record["test_accuracy"] > 0.8


def test_train_on_two_worker_processes(tmp_path, capsys):
    """--parallel processes: the shards on a worker process; the run learns as one thread."""
    out = tmp_path / "out"
    argv = ["train", "--epochs", "3", "--batch-size", "32", "--limit", "700", "--workers", "2"]
    assert main([*argv, "--parallel", "processes", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "history_digits.json").read_text())
    assert record["test_accuracy"] > 0.8


def test_worker_processes_need_the_numpy_backend(tmp_path, capsys):
    argv = ["train", "--backend", "array_api_strict", "--workers", "2", "--parallel", "processes"]
    line = usage_error(capsys, [*argv, "--out", str(tmp_path)])
    assert line.endswith(
        "argument --parallel: processes need --backend numpy, got 'array_api_strict'"
    )


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


def usage_error(capsys, argv) -> str:
    """The one error line of a usage error (exit status 2, argparse's form, no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: arraycnn") and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"arraycnn {argv[0]}: error: ")
    return lines[-1]


def cupy_is_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
        (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["--batch-size", "-3"], "argument --batch-size: must be >= 1, got -3"),
        (["--limit", "0"], "argument --limit: must be >= 1, got 0"),
        (["--limit", "-5"], "argument --limit: must be >= 1, got -5"),
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--lr", "-0.1"], "argument --lr: expected a finite number > 0, got '-0.1'"),
        (["--optimizer", "nesterov"], "argument --optimizer: unknown optimizer 'nesterov'"),
        (["--backend", "tensorflow"], "argument --backend: unknown backend 'tensorflow'"),
        (["--strategy", "cook"], "argument --strategy: strategy must be one of 'auto'"),
        (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["--workers", "0"], "argument --workers: workers must be a positive int or a negative"),
        (["--workers", "two"], "argument --workers: expected an integer, got 'two'"),
        (["--workers", "-100000"], "argument --workers: must be >= -"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, capsys, options, message):
    line = usage_error(capsys, ["train", "--out", str(tmp_path), *options])
    assert message in line
    assert list(tmp_path.iterdir()) == []  # nothing was written


@pytest.mark.skipif(cupy_is_importable(), reason="CuPy is installed here")
def test_a_backend_that_is_not_installed_is_a_usage_error(tmp_path, capsys):
    line = usage_error(capsys, ["train", "--backend", "cupy", "--out", str(tmp_path)])
    assert "argument --backend: backend='cupy' needs the package 'cupy'" in line


def test_an_out_that_is_a_file_or_unwritable_is_a_usage_error(tmp_path, capsys):
    existing = tmp_path / "taken.txt"
    existing.write_text("not a directory")
    line = usage_error(capsys, ["train", "--epochs", "1", "--out", str(existing)])
    assert f"argument --out: {str(existing)!r} exists and is not a directory" in line
    beneath = existing / "sub"  # a directory cannot be made under a file
    line = usage_error(capsys, ["train", "--epochs", "1", "--out", str(beneath)])
    assert f"argument --out: cannot write into {str(beneath)!r}" in line
    (tmp_path / "out" / "model_digits.npz").mkdir(parents=True)
    line = usage_error(capsys, ["train", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert "model_digits.npz' is a directory" in line
    assert existing.read_text() == "not a directory"


def test_mnist_with_bad_labels_is_a_usage_error(tmp_path, rng, capsys):
    data_dir = write_fake_mnist(tmp_path / "mnist", rng)
    labels = np.full(48, 11, dtype=np.uint8)
    header = bytes([0, 0, 8, 1]) + struct.pack(">I", 48)
    (data_dir / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    line = usage_error(capsys, argv)
    assert "argument --data-dir:" in line and "labels must be 0-9, got 11 at index 0" in line


def test_mnist_that_cannot_be_fetched_is_one_line_and_status_1(tmp_path, monkeypatch, capsys):
    from arraycnn import datasets

    def no_fetch(directory, **kwargs):
        raise RuntimeError(f"MNIST not available in {directory}")

    monkeypatch.setattr(datasets, "fetch_mnist", no_fetch)
    argv = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"arraycnn train: error: MNIST not available in {tmp_path / 'none'}"


def test_the_entry_point_reports_a_bad_option_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "arraycnn", "train", "--limit", "-5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "arraycnn train: error: argument --limit: must be >= 1, got -5"
    )
    assert "Traceback" not in done.stderr


def test_ctrl_c_saves_the_model_and_exits_130(tmp_path):
    """SIGINT after the first epoch: training stops after the current step, the model and
    the history of the completed epochs are written, the exit status is 130."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "arraycnn", "train", "--epochs", "500", "--out", str(out)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ARRAYCNN_CACHE_DIR": str(tmp_path / "cache")},
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("epoch 1/500"):
                break
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    record = json.loads((out / "history_digits.json").read_text())
    assert record["interrupted"] and record["epochs_run"] >= 1
    model = load_model(out / "model_digits.npz")
    assert model.count_parameters() == 76522


def test_demo_options_are_checked(capsys):
    assert "expected four positive integers" in usage_error(capsys, ["demo", "--shape", "1,2"])
    assert "argument --kernel" in usage_error(capsys, ["demo", "--kernel", "0"])
    assert "argument --padding" in usage_error(capsys, ["demo", "--padding", "-1"])
    line = usage_error(capsys, ["demo", "--shape", "1,1,4,4", "--kernel", "9", "--padding", "0"])
    assert "the options do not make a convolution" in line


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
