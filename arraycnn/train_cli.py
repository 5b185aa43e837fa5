"""``arraycnn train``: train a CNN on the 8×8 digits or on MNIST, save the model and its curves.

Writes into ``--out``: ``model_<dataset>.npz`` (load with :func:`arraycnn.nn.model.load_model`),
``training_<dataset>.png`` (loss and accuracy per epoch, train vs test) and
``history_<dataset>.json``; prints progress and the final test accuracy.

Every option is checked before anything is loaded or trained: a bad value (an unknown backend
or strategy, a count below 1, a negative seed, an ``--out`` that is a file or cannot be
written, MNIST files with bad labels or images) is a usage error (one line, exit status 2).
Ctrl-C stops training after the current step, saves the model and the history of the completed
epochs, and exits with status 130.

Examples::

    python -m arraycnn train --dataset digits --out out/
    python -m arraycnn train --dataset mnist --data-dir data/mnist --epochs 3 --out out/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .backend import BACKEND_NAMES, resolve_backend
from .budget import WorkspaceError
from .cli import INTERRUPTED, UsageError
from .conv.table import parse_strategy
from .nn.optim import OPTIMIZERS

#: Per-data-set defaults: epochs, batch size, optimizer, learning rate.
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": 1e-3},
    "mnist": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
}


# --------------------------------------------------------------------------------------------
# option types: each refuses a bad value with ArgumentTypeError (argparse: usage error, status 2)
# --------------------------------------------------------------------------------------------


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--epochs``, ``--batch-size``, ``--limit``).

    Examples
    --------
    >>> positive_int("64")
    64
    >>> positive_int("-5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be >= 1, got -5
    """
    return _integer(text, 1)


def seed_option(text: str) -> int:
    """A non-negative integer (``--seed``).

    Examples
    --------
    >>> seed_option("0")
    0
    >>> seed_option("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be >= 0, got -1
    """
    return _integer(text, 0)


def workers_option(text: str) -> int:
    """Threads for ``fit(..., workers=)`` (``--workers``): a positive integer, or a negative
    one counting back from the CPU count (-1: all).

    Examples
    --------
    >>> workers_option("2")
    2
    >>> workers_option("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: workers must be a positive int or a negative one ... got 0
    """
    from .nn.parallel import resolve_workers

    count = _integer(text, -(os.cpu_count() or 1))
    try:
        return resolve_workers(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def learning_rate(text: str) -> float:
    """A finite number > 0 (``--lr``).

    Examples
    --------
    >>> learning_rate("1e-3")
    0.001
    >>> learning_rate("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a finite number > 0, got 'nan'
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def backend_option(text: str) -> str:
    """A backend name that resolves here (``--backend``): known and installed.

    Examples
    --------
    >>> backend_option("numpy")
    'numpy'
    >>> backend_option("tensorflow")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: unknown backend 'tensorflow'; choose from numpy, cupy, ...
    """
    if text not in BACKEND_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown backend {text!r}; choose from {', '.join(BACKEND_NAMES)}"
        )
    try:
        resolve_backend(text)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def strategy_option(text: str) -> str:
    """A convolution strategy name (``--strategy``).

    Examples
    --------
    >>> strategy_option("IM2COL")
    'im2col'
    """
    try:
        return parse_strategy(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def optimizer_name(text: str) -> str:
    """An optimizer name of :data:`arraycnn.nn.optim.OPTIMIZERS` (``--optimizer``).

    Examples
    --------
    >>> optimizer_name("Adam")
    'adam'
    """
    name = text.lower()
    if name not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {text!r}; choose from {', '.join(OPTIMIZERS)}"
        )
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``arraycnn train``.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--dataset", "mnist", "--epochs", "2"])
    >>> args.dataset, args.epochs, args.batch_size  # None: the data set's default
    ('mnist', 2, None)
    """
    parser.add_argument(
        "--dataset",
        choices=tuple(DEFAULTS),
        default="digits",
        help="digits: scikit-learn's 8x8 digits (1797 images); mnist: 28x28 MNIST from --data-dir",
    )
    parser.add_argument(
        "--backend",
        type=backend_option,
        default="numpy",
        help="array library to train with: numpy, torch, cupy, array_api_strict",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"passes over the training images (default: {_per_dataset('epochs')})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"images per optimizer step (default: {_per_dataset('batch_size')})",
    )
    parser.add_argument(
        "--strategy",
        type=strategy_option,
        default="auto",
        help="convolution strategy: auto, naive, separable, im2col, fft or winograd",
    )
    parser.add_argument(
        "--lr",
        type=learning_rate,
        default=None,
        help=f"learning rate (default: {_per_dataset('lr')})",
    )
    parser.add_argument(
        "--optimizer",
        type=optimizer_name,
        default=None,
        help=f"{', '.join(OPTIMIZERS)} (default: {_per_dataset('optimizer')})",
    )
    parser.add_argument(
        "--seed", type=seed_option, default=0, help="seed of the initial weights and shuffling"
    )
    parser.add_argument(
        "--workers",
        type=workers_option,
        default=1,
        help="threads that train each batch's shards at once (fit(workers=); -1: all CPUs)",
    )
    parser.add_argument(
        "--parallel",
        choices=("threads", "processes"),
        default="threads",
        help="where the --workers shards run: threads, or worker processes on the numpy "
        "backend (fit(parallel=); default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default="data/mnist",
        help="directory of the four MNIST files (--dataset mnist only)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="train on the first N training images only (default: all)",
    )
    parser.add_argument(
        "--out", default="out", help="directory for the model, its curves and its history"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")


def _per_dataset(key: str) -> str:
    """One default of :data:`DEFAULTS` per data set, for the help.

    Examples
    --------
    >>> _per_dataset("epochs")
    '30 digits, 3 mnist'
    >>> _per_dataset("lr")
    '0.001'
    """
    values = {
        name: f"{d[key]:g}" if isinstance(d[key], float) else str(d[key])
        for name, d in DEFAULTS.items()
    }
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{value} {name}" for name, value in values.items())


def output_names(dataset: str) -> list[str]:
    """The files ``arraycnn train`` writes into ``--out``.

    Examples
    --------
    >>> output_names("digits")
    ['model_digits.npz', 'training_digits.png', 'history_digits.json']
    """
    return [f"model_{dataset}.npz", f"training_{dataset}.png", f"history_{dataset}.json"]


def output_directory(text: str, names: list[str]) -> Path:
    """``--out`` created if needed and checked to be a writable directory whose ``names``
    are not directories, before anything is trained.

    Raises
    ------
    UsageError
        Naming ``--out`` and the problem.

    Examples
    --------
    >>> output_directory("/dev/null", ["model.npz"])
    Traceback (most recent call last):
    ...
    arraycnn.cli.UsageError: argument --out: '/dev/null' exists and is not a directory
    """
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {text!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"argument --out: cannot write into {text!r}: {exc}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"argument --out: cannot write into {text!r}")
    for name in names:
        if (out / name).is_dir():
            raise UsageError(f"argument --out: {str(out / name)!r} is a directory")
    return out


def digits_model(*, backend: Any, seed: int, strategy: str):
    """A small CNN for (1, 8, 8) digits: two 3×3 "same" convolutions of 32 filters, 2×2 max
    pooling, dense 128 with dropout 0.3, softmax.

    Examples
    --------
    >>> model = digits_model(backend="numpy", seed=0, strategy="auto")
    >>> model.build((1, 8, 8)), model.count_parameters()
    ((10,), 76522)
    """
    from .nn.activations import ReLU, Softmax
    from .nn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
    from .nn.model import Sequential

    return Sequential(
        [
            Conv2D(1, 32, 3, padding=1, strategy=strategy),  # (1, 8, 8) -> (32, 8, 8)
            ReLU(),
            Conv2D(32, 32, 3, padding=1, strategy=strategy),  # -> (32, 8, 8)
            ReLU(),
            MaxPool2D(2),  # -> (32, 4, 4)
            Flatten(),  # -> (512,)
            Dense(512, 128),
            ReLU(),
            Dropout(0.3),
            Dense(128, 10),
            Softmax(),
        ],
        backend=backend,
        seed=seed,
    )


def load_data(args: argparse.Namespace):
    """(X_train, y_train), (X_test, y_test) of the chosen data set (host NumPy arrays).

    Examples
    --------
    >>> args = argparse.Namespace(dataset="digits", seed=0, limit=100)
    >>> (X_train, y_train), (X_test, y_test) = load_data(args)
    >>> X_train.shape, X_test.shape  # the limit applies to the training split
    ((100, 1, 8, 8), (359, 1, 8, 8))
    """
    from .datasets import load_digits, load_mnist, train_test_split

    if args.dataset == "digits":
        X, y = load_digits()
        train, test = train_test_split(X, y, test_fraction=0.2, seed=args.seed)
    else:
        train, test = load_mnist(args.data_dir, download=True)
    if args.limit is not None:
        train = (train[0][: args.limit], train[1][: args.limit])
    return train, test


def plot_history(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train vs test, as a PNG.

    Examples
    --------
    >>> import tempfile
    >>> curves = {"loss": [0.9, 0.5], "val_loss": [1.0, 0.6],
    ...           "accuracy": [0.6, 0.8], "val_accuracy": [0.5, 0.7]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_history(curves, Path(tmp) / "curves.png", "two epochs")
    ...     path.read_bytes()[:4]
    b'\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], "o-", label="train")
    ax_loss.plot(epochs, history["val_loss"], "s-", label="test")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, history["accuracy"], "o-", label="train")
    ax_acc.plot(epochs, history["val_accuracy"], "s-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("Accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, save; print the final test accuracy. Returns the exit status.

    Examples
    --------
    >>> import tempfile
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     args = parser.parse_args(["--epochs", "1", "--limit", "64", "--quiet", "--out", tmp])
    ...     status = run(args)
    test accuracy ... after 1 epoch(s), ... s
    wrote .../model_digits.npz, .../training_digits.png, .../history_digits.json
    >>> status
    0
    """
    from .examples.lecture_mnist import build_model as mnist_model
    from .nn.optim import get_optimizer

    defaults = DEFAULTS[args.dataset]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    batch_size = args.batch_size if args.batch_size is not None else defaults["batch_size"]
    lr = args.lr if args.lr is not None else defaults["lr"]
    optimizer_name = args.optimizer or defaults["optimizer"]
    try:
        optimizer = get_optimizer(optimizer_name, lr=lr)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"argument --optimizer/--lr: {exc}") from None
    if args.parallel == "processes" and args.backend != "numpy":
        raise UsageError(
            f"argument --parallel: processes need --backend numpy, got {args.backend!r}"
        )
    out = output_directory(args.out, output_names(args.dataset))

    data = _loaded(args)
    if data is None:
        return 1
    (X_train, y_train), (X_test, y_test) = data
    build = digits_model if args.dataset == "digits" else mnist_model
    model = build(backend=args.backend, seed=args.seed, strategy=args.strategy)
    if not args.quiet:
        print(
            f"{args.dataset}: {X_train.shape[0]} train / {X_test.shape[0]} test images, "
            f"backend {model.backend}, {optimizer_name} lr {lr:g}, batch {batch_size}, "
            f"{epochs} epochs"
        )
    started = time.perf_counter()
    try:
        history = model.fit(
            X_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            loss="categorical_crossentropy",
            optimizer=optimizer,
            validation_data=(X_test, y_test),
            seed=args.seed,
            progress=not args.quiet,
            workers=args.workers,
            parallel=args.parallel,
        )
    except WorkspaceError as exc:
        raise UsageError(f"argument --batch-size: {exc}") from None
    seconds = time.perf_counter() - started
    final = (
        {"accuracy": None, "loss": None} if history.interrupted else model.evaluate(X_test, y_test)
    )
    model_path = model.save(out / f"model_{args.dataset}.npz")
    record = {
        "dataset": args.dataset,
        "backend": model.backend,
        "optimizer": optimizer_name,
        "lr": lr,
        "batch_size": batch_size,
        "epochs_run": len(history.epochs),
        "interrupted": history.interrupted,
        "seconds": seconds,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "history": history.history,
    }
    (out / f"history_{args.dataset}.json").write_text(json.dumps(record, indent=1))
    png = None
    if history.epochs:
        last = (
            history.history["val_accuracy"][-1] if final["accuracy"] is None else final["accuracy"]
        )
        png = plot_history(
            history.history,
            out / f"training_{args.dataset}.png",
            f"{args.dataset}: {model.backend}, {optimizer_name} lr {lr:g}, batch {batch_size} — "
            f"test accuracy {last:.4f}",
        )
    if history.interrupted:
        print(f"interrupted after {len(history.epochs)} complete epoch(s), {seconds:.1f} s")
    else:
        print(
            f"test accuracy {final['accuracy']:.4f} (loss {final['loss']:.4f}) after "
            f"{len(history.epochs)} epoch(s), {seconds:.1f} s"
        )
    print(
        f"wrote {model_path}" + (f", {png}" if png else "") + f", {out}/history_{args.dataset}.json"
    )
    return INTERRUPTED if history.interrupted else 0


def _loaded(args: argparse.Namespace):
    """:func:`load_data`; a data set that cannot be used is a usage error, one that cannot be
    fetched is reported in one line (None: exit status 1)."""
    try:
        return load_data(args)
    except (ValueError, FileNotFoundError) as exc:
        option = "--data-dir" if args.dataset == "mnist" else "--dataset"
        raise UsageError(f"argument {option}: {exc}") from None
    except RuntimeError as exc:
        print(f"arraycnn train: error: {exc}", file=sys.stderr)
        return None
