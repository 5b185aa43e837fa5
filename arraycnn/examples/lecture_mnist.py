"""The lecture's MNIST CNN, modernised to reach >= 99 % test accuracy on the NumPy backend.

The lecture builds one 3×3 convolution with a single feature map (leaky ReLU), a flatten, dense
layers of 30 and 20 units and a softmax output, trained with Adam (lr 1e-3) on 10 000 images;
one feature map is a narrow bottleneck for a 99 % target. What we changed (and why):

* two convolution blocks, 16 and 32 filters of 5×5 with "same" padding, each followed by ReLU
  and 2×2 max pooling (more feature maps; 16/32 filters rather than the common 32/64, whose
  training steps cost several times more on the CPU);
* one dense layer of 128 ReLU units with dropout 0.25, then a 10-way softmax;
* all 60 000 training images (the lecture used 10 000), mini-batches of 64, Adam lr 1e-3,
  softmax fused with the cross-entropy (stable, as Keras does).

The test set (10 000 images) is evaluated after every epoch; the first epoch at or above the
target (99 %) is reported with the wall time up to it.

``--framework torch`` trains the same network with ``torch.nn`` on the CPU (same layers,
initial-weight distributions, optimizer, batch size and shuffling order) for comparison.

Run::

    python -m arraycnn.examples.lecture_mnist --data-dir data/mnist --epochs 5
    python -m arraycnn.examples.lecture_mnist --framework torch --threads 2

``--threads`` sets both frameworks' CPU threads: torch's ``torch.set_num_threads``, arraycnn's
``fit(..., workers=)`` (each batch's shards on that many threads, :mod:`arraycnn.nn.parallel`;
with ``--parallel processes`` on that many worker processes, :mod:`arraycnn.nn.processes`,
which share no GIL: the faster on NumPy)::

    python -m arraycnn.examples.lecture_mnist --data-dir data/mnist --until 0.99 --threads 2 \
        --parallel processes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 0.99


ARCHITECTURES = ("modern", "lecture")


def build_model(
    *,
    backend: Any = "numpy",
    seed: int = 0,
    strategy: str = "auto",
    dropout: float = 0.25,
    architecture: str = "modern",
):
    """The lecture CNN as an arraycnn ``Sequential`` (input (1, 28, 28)).

    ``architecture="modern"`` (default) is the network that reaches 99 %; ``"lecture"`` is the
    lecture's own: conv 3×3 with one feature map ("same") + leaky ReLU, dense 30 and 20 with
    leaky ReLU, softmax.

    Examples
    --------
    >>> model = build_model(seed=0)
    >>> model.build((1, 28, 28)), model.count_parameters()
    ((10,), 215370)
    >>> build_model(architecture="lecture").build((1, 28, 28))
    (10,)
    """
    from arraycnn.nn.activations import LeakyReLU, ReLU, Softmax
    from arraycnn.nn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
    from arraycnn.nn.model import Sequential

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if architecture == "lecture":
        lecture = [
            Conv2D(1, 1, 3, padding=1, strategy=strategy),  # (1, 28, 28) -> (1, 28, 28)
            LeakyReLU(),
            Flatten(),  # -> (784,)
            Dense(784, 30),
            LeakyReLU(),
            Dense(30, 20),
            LeakyReLU(),
            Dense(20, 10),
            Softmax(),
        ]
        return Sequential(lecture, backend=backend, seed=seed)
    layers = [
        Conv2D(1, 16, 5, padding=2, strategy=strategy),  # (1, 28, 28) -> (16, 28, 28)
        ReLU(),
        MaxPool2D(2),  # -> (16, 14, 14)
        Conv2D(16, 32, 5, padding=2, strategy=strategy),  # -> (32, 14, 14)
        ReLU(),
        MaxPool2D(2),  # -> (32, 7, 7)
        Flatten(),  # -> (1568,)
        Dense(32 * 7 * 7, 128),
        ReLU(),
        *([Dropout(dropout)] if dropout else []),
        Dense(128, 10),
        Softmax(),
    ]
    return Sequential(layers, backend=backend, seed=seed)


def first_epoch_at(target: float, accuracies: list[float]) -> int | None:
    """The first epoch (1-based) whose accuracy reaches ``target``, or None.

    Examples
    --------
    >>> first_epoch_at(0.99, [0.97, 0.991, 0.995]), first_epoch_at(0.99, [0.97])
    (2, None)
    """
    for epoch, acc in enumerate(accuracies, start=1):
        if acc >= target:
            return epoch
    return None


def _summary(framework: str, history: dict[str, list[float]], extra: dict) -> dict:
    times = history["epoch_time"]
    reached = first_epoch_at(TARGET, history["val_accuracy"])
    return {
        "framework": framework,
        "epochs": len(times),
        "test_accuracy": history["val_accuracy"],
        "train_loss": history["loss"],
        "epoch_seconds": times,
        "seconds_per_epoch": float(np.mean(times)) if times else None,
        "epochs_to_99": reached,
        "seconds_to_99": float(sum(times[:reached])) if reached else None,
        "final_test_accuracy": history["val_accuracy"][-1] if times else None,
        **extra,
    }


def _stop_at(target: float | None):
    if target is None:
        return None
    return lambda epoch, metrics: metrics["val_accuracy"] >= target


def train_arraycnn(
    data,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    backend,
    strategy,
    progress=True,
    until=None,
    architecture="modern",
    workers=1,
    parallel="threads",
):
    """Train with arraycnn on ``workers`` threads or processes (``fit(..., workers=,
    parallel=)``); returns (model, summary dict).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    >>> model, summary = train_arraycnn(((X, y), (X[:8], y[:8])), epochs=1, batch_size=16,
    ...     lr=1e-3, seed=0, backend="numpy", strategy="auto", progress=False)
    >>> summary["framework"], summary["epochs"], len(summary["test_accuracy"])
    ('arraycnn', 1, 1)
    """
    from arraycnn.nn.optim import Adam

    (X_train, y_train), (X_test, y_test) = data
    model = build_model(backend=backend, seed=seed, strategy=strategy, architecture=architecture)
    history = model.fit(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        loss="categorical_crossentropy",
        optimizer=Adam(lr=lr),
        validation_data=(X_test, y_test),
        seed=seed,
        progress=progress,
        callback=_stop_at(until),
        workers=workers,
        parallel=parallel,
    )
    extra = {"backend": model.backend, "interrupted": history.interrupted, "threads": workers}
    extra["parallel"] = parallel
    summary = _summary("arraycnn", history.history, extra)
    return model, summary


def torch_network(architecture: str = "modern"):
    """The same network in ``torch.nn`` (logits out: the loss applies the softmax),
    initialised with the distributions arraycnn uses: He normal convolutions, Glorot
    uniform dense layers, zero biases. Seed torch first for a reproducible draw.

    Examples
    --------
    >>> net = torch_network()  # doctest: +SKIP
    >>> sum(p.numel() for p in net.parameters())  # doctest: +SKIP
    215370
    """
    from torch import nn

    if architecture == "lecture":
        layers = [
            nn.Conv2d(1, 1, 3, padding=1),
            nn.LeakyReLU(),
            nn.Flatten(),
            nn.Linear(784, 30),
            nn.LeakyReLU(),
            nn.Linear(30, 20),
            nn.LeakyReLU(),
            nn.Linear(20, 10),
        ]
    else:
        layers = [
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, 10),
        ]
    for module in layers:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return nn.Sequential(*layers)


def train_torch(
    data, *, epochs, batch_size, lr, seed, threads, progress=True, until=None, architecture="modern"
):
    """The same network and schedule with torch.nn on the CPU; returns a summary dict.

    Examples
    --------
    >>> data = load_data("data/mnist", limit=1000, test_limit=1000)  # doctest: +SKIP
    >>> summary = train_torch(data, epochs=1, batch_size=64, lr=1e-3, seed=0,
    ...                       threads=1)  # doctest: +SKIP
    >>> summary["framework"]  # doctest: +SKIP
    'torch'
    """
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    (X_train, y_train), (X_test, y_test) = data
    net = torch_network(architecture)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)
    Xs, ys = torch.from_numpy(X_test), torch.from_numpy(y_test)
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {"loss": [], "val_accuracy": [], "epoch_time": []}
    n = Xt.shape[0]
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        net.train()
        order = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
        net.eval()
        with torch.no_grad():
            correct = sum(
                int((net(Xs[lo : lo + 1000]).argmax(1) == ys[lo : lo + 1000]).sum())
                for lo in range(0, Xs.shape[0], 1000)
            )
        history["loss"].append(total / n)
        history["val_accuracy"].append(correct / Xs.shape[0])
        history["epoch_time"].append(time.perf_counter() - started)
        if progress:
            print(
                f"epoch {epoch}/{epochs}  loss {total / n:.4f}  "
                f"test accuracy {correct / Xs.shape[0]:.4f}  {history['epoch_time'][-1]:.1f} s",
                flush=True,
            )
        if until is not None and history["val_accuracy"][-1] >= until:
            break
    return _summary("torch", history, {"threads": threads, "torch": torch.__version__})


def load_data(data_dir: str | os.PathLike, limit: int | None = None, test_limit: int | None = None):
    """MNIST from ``data_dir`` (fetched there and verified by fetch_mnist if absent).

    Examples
    --------
    >>> (X_train, y_train), (X_test, y_test) = load_data("data/mnist", limit=1000)  # doctest: +SKIP
    >>> X_train.shape  # doctest: +SKIP
    (1000, 1, 28, 28)
    """
    from arraycnn.datasets import load_mnist

    (X_train, y_train), (X_test, y_test) = load_mnist(data_dir, download=True)
    if limit is not None:
        X_train, y_train = X_train[:limit], y_train[:limit]
    if test_limit is not None:
        X_test, y_test = X_test[:test_limit], y_test[:test_limit]
    return (X_train, y_train), (X_test, y_test)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of this example.

    Examples
    --------
    >>> args = parse_args(["--framework", "torch", "--epochs", "2"])
    >>> args.framework, args.epochs, args.batch_size
    ('torch', 2, 64)
    """
    parser = argparse.ArgumentParser(
        description="Reproduces the lecture's MNIST CNN, modernised (two convolution blocks of "
        "16 and 32 filters, a dense layer of 128 with dropout, Adam) to reach 99 % test "
        "accuracy on the NumPy backend; reports the test accuracy after every epoch and the "
        "time to the first epoch at 99 %. --framework torch trains the same network with "
        "torch.nn for comparison; --architecture lecture trains the lecture's original network.",
    )
    parser.add_argument(
        "--framework",
        choices=("arraycnn", "torch"),
        default="arraycnn",
        help="library that trains the network (default: %(default)s)",
    )
    parser.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        default="modern",
        help="modern (reaches 99 %%) or the lecture's original network (default: %(default)s)",
    )
    parser.add_argument(
        "--backend", default="numpy", help="arraycnn backend (default: %(default)s)"
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        help="convolution strategy, arraycnn only (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default="data/mnist",
        help="directory of the four MNIST files (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per Adam step (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="Adam's learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights and shuffling (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads: torch's (torch.set_num_threads), arraycnn's fit(workers=) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--parallel",
        choices=("threads", "processes"),
        default="threads",
        help="where arraycnn's --threads shards run: threads, or worker processes on NumPy "
        "(fit(parallel=); default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use the first N train images (default: all)"
    )
    parser.add_argument(
        "--test-limit", type=int, default=None, help="use the first N test images (default: all)"
    )
    parser.add_argument(
        "--until",
        type=float,
        default=None,
        help="stop after the first epoch at this test accuracy (default: run every epoch)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="directory for the summary JSON and the model (default: write nothing)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train, print a summary (JSON), optionally write it and the model to ``--out``.

    Examples
    --------
    >>> summary = main(["--data-dir", "data/mnist", "--epochs", "1"])  # doctest: +SKIP
    >>> summary["epochs_to_99"]  # doctest: +SKIP
    """
    args = parse_args(argv)
    data = load_data(args.data_dir, args.limit, args.test_limit)
    common = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "progress": not args.quiet,
        "until": args.until,
        "architecture": args.architecture,
    }
    model = None
    if args.framework == "torch":
        summary = train_torch(data, threads=args.threads, **common)
    else:
        model, summary = train_arraycnn(
            data,
            backend=args.backend,
            strategy=args.strategy,
            workers=args.threads,
            parallel=args.parallel,
            **common,
        )
    summary.update(
        train_samples=int(data[0][0].shape[0]),
        test_samples=int(data[1][0].shape[0]),
        architecture=args.architecture,
        batch_size=args.batch_size,
        lr=args.lr,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
    )
    if not args.quiet:
        print(json.dumps(summary, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"lecture_mnist_{args.framework}.json").write_text(json.dumps(summary, indent=1))
        if model is not None:
            model.save(out / "lecture_mnist.npz")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
