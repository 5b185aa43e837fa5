"""GPU check, step mnist: one epoch of the lecture MNIST network
(arraycnn.examples.lecture_mnist, "modern": two 5x5 conv blocks, dense 128, dropout, softmax;
batches of 64, Adam 1e-3) on CuPy against the same network in torch.nn on CUDA.

Data: MNIST from ``--data-dir`` (default ``$ARRAYCNN_MNIST_DIR`` or ``data/mnist``) when its
files are there (nothing is downloaded: the GPU machine has no network); else synthetic data of
MNIST's shapes (60 000 + 10 000 images of 28 x 28 in [0, 1], each a noisy copy of one of ten
seeded class templates, so that an epoch of training must reach a high accuracy).
``results["data"]`` says which.

Both sides take host (NumPy) data moved to the device batch by batch, and evaluate the test set
at the end of the epoch (inside the timed epoch, as ``Sequential.fit`` does). Each side first
trains a separate warm-up network on a few batches (kernel compilation, cuDNN and arraycnn
autotuning), timed apart; arraycnn a second one, whose pace per step is recorded. Where that
pace predicts that a full arraycnn epoch would overrun
the step's budget, both sides train on the same smaller prefix of the training set
(``train_samples``, ``reduced_for_budget``). The goal: the arraycnn epoch within 2x of torch's.

Usage: python .ci/gpu_mnist.py --json mnist.json [--seconds 75]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
from gpu_common import (  # .ci/, the script's folder, is on sys.path
    STANDIN,
    Deadline,
    Report,
    array_backend,
    error_text,
    free_device_memory,
    skip,
    torch_device,
)

GOAL_RATIO = 2.0
BATCH, LR, SEED, WARMUP_BATCHES = 64, 1e-3, 0, 16


def synthetic_mnist(train: int = 60_000, test: int = 10_000, seed: int = 0):
    """MNIST-shaped data: X float32 (N, 1, 28, 28) in [0, 1], y int64 (N,) in [0, 10)."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 1, 28, 28), dtype=np.float32)  # one pattern per class

    def split(n: int):
        y = rng.integers(0, 10, n)
        noise = rng.random((n, 1, 28, 28), dtype=np.float32)
        return (0.5 * templates[y] + 0.5 * noise).astype(np.float32), y.astype(np.int64)

    return split(train), split(test)


def load_data(data_dir: str, limit: int | None):
    """(train, test, description): real MNIST when its files are in ``data_dir``, else
    synthetic data of its shapes."""
    from arraycnn.datasets import load_mnist

    try:
        (xt, yt), test = load_mnist(data_dir, download=False)
        what = f"MNIST from {data_dir}"
    except (FileNotFoundError, OSError, ValueError) as exc:
        (xt, yt), test = synthetic_mnist()
        what = f"synthetic, MNIST-shaped (no MNIST files: {error_text(exc)})"
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    return (xt, yt), test, what


def train_arraycnn(backend: str, train, test, architecture: str) -> dict[str, Any]:
    """One epoch of ``Sequential.fit`` (validation on ``test`` included); its figures."""
    from arraycnn.examples.lecture_mnist import build_model
    from arraycnn.nn.optim import Adam

    model = build_model(backend=backend, seed=SEED, architecture=architecture)
    started = time.perf_counter()
    history = model.fit(
        *train,
        epochs=1,
        batch_size=BATCH,
        loss="categorical_crossentropy",
        optimizer=Adam(lr=LR),
        validation_data=test,
        seed=SEED,
        progress=False,
    )
    seconds = time.perf_counter() - started
    h = history.history
    return {
        "seconds": round(seconds, 3),
        "fit_epoch_time": round(h["epoch_time"][-1], 3),
        "train_loss": h["loss"][-1],
        "train_accuracy": h.get("accuracy", [None])[-1],
        "test_accuracy": h["val_accuracy"][-1],
        "steps": history.steps,
    }


def train_torch(torch: Any, device: str, train, test, architecture: str) -> dict[str, Any]:
    """One epoch of the same network in torch.nn on ``device`` (test set evaluated after it):
    host batches moved per step, loss and accuracy summed on the device, read once."""
    from arraycnn.examples.lecture_mnist import torch_network

    torch.manual_seed(SEED)
    net = torch_network(architecture).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    (xt, yt), (xs, ys) = train, test
    xt, yt, xs, ys = (torch.from_numpy(a) for a in (xt, yt, xs, ys))
    order = torch.from_numpy(np.random.default_rng(SEED).permutation(xt.shape[0]))
    if device != "cpu":
        torch.cuda.synchronize()
    started = time.perf_counter()
    net.train()
    total = torch.zeros((), device=device)
    for lo in range(0, xt.shape[0], BATCH):
        idx = order[lo : lo + BATCH]
        xb, yb = xt[idx].to(device), yt[idx].to(device)
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        total += loss.detach() * idx.shape[0]
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for lo in range(0, xs.shape[0], 1000):
            xb, yb = xs[lo : lo + 1000].to(device), ys[lo : lo + 1000].to(device)
            correct += (net(xb).argmax(1) == yb).sum()
    train_loss, correct = float(total) / xt.shape[0], int(correct)  # the one read, synchronises
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "train_loss": train_loss,
        "test_accuracy": correct / xs.shape[0],
        "steps": -(-xt.shape[0] // BATCH),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="the step's report")
    parser.add_argument("--seconds", type=float, default=75.0, help="the step's budget")
    parser.add_argument(
        "--data-dir", default=os.environ.get("ARRAYCNN_MNIST_DIR", "data/mnist"), help="MNIST"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N training images")
    parser.add_argument("--architecture", default="modern", choices=("modern", "lecture"))
    args = parser.parse_args(argv)
    deadline = Deadline(args.seconds)

    backend, backend_reason = array_backend()
    if backend is None:
        return skip(args.json, backend_reason)
    torch, device, torch_reason = torch_device()

    train, test, what = load_data(args.data_dir, args.limit)
    report = Report(
        args.json,
        status="running",
        standin=STANDIN,
        backend=backend,
        torch_device=device,
        data=what,
        architecture=args.architecture,
        batch_size=BATCH,
        lr=LR,
        torch_skipped=torch_reason,
    )
    warm = WARMUP_BATCHES * BATCH
    warm_train, warm_test = (train[0][:warm], train[1][:warm]), (test[0][:BATCH], test[1][:BATCH])
    net = args.architecture
    sides = {"arraycnn": lambda data, tests: train_arraycnn(backend, data, tests, net)}
    if torch is not None:
        sides["torch"] = lambda data, tests: train_torch(torch, device, data, tests, net)
    try:
        pace = 0.0  # seconds per step, both sides
        for side, run in sides.items():
            started = time.perf_counter()
            run(warm_train, warm_test)  # compilation and autotuning
            report.update(**{f"{side}_warmup_seconds": round(time.perf_counter() - started, 3)})
            started = time.perf_counter()
            run(warm_train, warm_test)  # again, warm: the pace of a step
            per_step = (time.perf_counter() - started) / WARMUP_BATCHES
            report.update(**{f"{side}_seconds_per_step": round(per_step, 5)})
            pace += per_step
        free_device_memory()
        # both epochs at the warm pace, with room for the test set's passes
        fits = int(0.6 * deadline.left() / pace) * BATCH
        if fits < train[0].shape[0]:
            train = (train[0][: max(fits, BATCH)], train[1][: max(fits, BATCH)])
            report.update(reduced_for_budget=True)
        report.update(train_samples=int(train[0].shape[0]), test_samples=int(test[0].shape[0]))
        for side, run in sides.items():  # the same samples on both sides
            report.update(**{side: run(train, test)})
            free_device_memory()
    except Exception as exc:
        report.update(status="error", error=error_text(exc))
        print(f"error: {error_text(exc)}")
        return 1
    mine = report.data["arraycnn"]["seconds"]
    theirs = report.data.get("torch", {}).get("seconds")
    ratio = round(mine / theirs, 3) if theirs else None
    report.update(
        status="done",
        arraycnn_over_torch=ratio,
        goal={
            "what": f"the arraycnn epoch within {GOAL_RATIO}x of torch's on the same samples",
            "met": None if ratio is None else ratio <= GOAL_RATIO,
        },
    )
    print(
        f"arraycnn ({backend}) {mine} s, torch ({device or 'skipped'}) {theirs} s, "
        f"ratio {ratio}; data: {what}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
