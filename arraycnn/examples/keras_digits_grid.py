"""The lecture's Keras grid search on the 8×8 digits, on arraycnn.

Network (as in the lecture): Conv2D 10 filters 3×3 + ReLU -> MaxPool 2×2 -> Flatten ->
Dense 50 + ReLU -> Dense 10 + softmax, categorical cross-entropy, plain SGD with an L2 penalty.
The grid runs over the learning rate η and the L2 strength λ; train and test accuracy of every
cell are drawn as heat maps.

The L2 penalty is SGD's ``weight_decay = λ``: the gradient of ``λ/2 · ||θ||²`` is added to every
parameter's gradient. Keras' ``kernel_regularizer=l2(λ)`` adds ``λ · ||W||²`` to the kernels
only, i.e. it corresponds to weight decay ``2λ`` without decay of the biases.

The split is arraycnn's deterministic stratified 80 / 20 split of the 1797 digits. The default
grid spans the useful range and its failures: λ = 1 is too strong to learn anything, and η = 1
sits at the edge of divergence, so whether that row trains depends on rounding (for instance on
the number of BLAS threads).

Run::

    python -m arraycnn.examples.keras_digits_grid --out out/ \
        [--lrs 0.01,0.1,1 --lambdas 1e-4,1e-2,1 --epochs 20 --batch-size 32]

On a cluster (``pip install "arraycnn[dask]"``): ``--scheduler ADDRESS`` sends the grid points
to the ``dask.distributed`` scheduler at ADDRESS (``tcp://host:8786``), ``--workers N`` starts
a ``LocalCluster`` of N one-thread worker processes on 127.0.0.1 for the run. Each grid point
is one task (:func:`train_cell`, the function the serial run calls too), seeded alike, so the
table and the heat maps are those of the serial run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def build_model(*, backend: Any = "numpy", seed: int = 0, strategy: str = "auto"):
    """The lecture's digits CNN for (1, 8, 8) inputs.

    Examples
    --------
    >>> build_model(seed=0).build((1, 8, 8))
    (10,)
    """
    from arraycnn.nn.activations import ReLU, Softmax
    from arraycnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D
    from arraycnn.nn.model import Sequential

    return Sequential(
        [
            Conv2D(1, 10, 3, strategy=strategy),  # (1, 8, 8) -> (10, 6, 6)
            ReLU(),
            MaxPool2D(2),  # -> (10, 3, 3)
            Flatten(),  # -> (90,)
            Dense(90, 50),
            ReLU(),
            Dense(50, 10),
            Softmax(),
        ],
        backend=backend,
        seed=seed,
    )


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _split(seed: int, limit: int | None) -> tuple:
    """((X_train, y_train), (X_test, y_test)) of the digits (the first ``limit``)."""
    from arraycnn.datasets import load_digits, train_test_split

    X, y = load_digits()
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return train_test_split(X, y, test_fraction=0.2, seed=seed)


def train_cell(
    lr: float,
    lam: float,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    backend: Any = "numpy",
    limit: int | None = None,
) -> tuple[float, float]:
    """(train accuracy, test accuracy) of one grid point: a fresh seeded model trained
    with SGD(lr, weight_decay=lam). A module-level function, so that a ``dask.distributed``
    worker can run it.

    Examples
    --------
    >>> train, test = train_cell(0.1, 1e-4, epochs=1, batch_size=32, limit=100)
    >>> 0.0 <= train <= 1.0 and 0.0 <= test <= 1.0
    True
    """
    from arraycnn.nn.optim import SGD

    (X_train, y_train), (X_test, y_test) = _split(seed, limit)
    model = build_model(backend=backend, seed=seed)
    model.fit(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        loss="categorical_crossentropy",
        optimizer=SGD(lr=lr, weight_decay=lam),
        seed=seed,
        progress=False,
    )
    train = model.evaluate(X_train, y_train)["accuracy"]
    return float(train), float(model.evaluate(X_test, y_test)["accuracy"])


def run_grid(
    lrs: list[float],
    lambdas: list[float],
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    backend: Any = "numpy",
    limit: int | None = None,
    log=print,
    client: Any = None,
) -> dict:
    """Train one model per (η, λ); return accuracies as nested lists [i_lr][j_lambda].

    With a ``dask.distributed.Client`` as ``client``, every grid point is one task on the
    cluster (results gathered in grid order; the same seeds give the serial run's table).

    Examples
    --------
    >>> quiet = lambda message: None
    >>> result = run_grid([0.1], [1e-4, 1e-2], epochs=1, batch_size=32, limit=200, log=quiet)
    >>> len(result["train_accuracy"]), len(result["test_accuracy"][0])  # 1 rate x 2 lambdas
    (1, 2)
    """
    (X_train, _), (X_test, _) = _split(seed, limit)
    train_acc = np.zeros((len(lrs), len(lambdas)))
    test_acc = np.zeros_like(train_acc)
    options = {
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "backend": backend,
        "limit": limit,
    }
    points = [(i, j) for i in range(len(lrs)) for j in range(len(lambdas))]
    started = time.perf_counter()
    if client is None:
        cells = (train_cell(lrs[i], lambdas[j], **options) for i, j in points)
    else:
        futures = [
            client.submit(train_cell, lrs[i], lambdas[j], **options, pure=False)
            for i, j in points
        ]
        cells = (future.result() for future in futures)
    for (i, j), (train, test) in zip(points, cells):
        train_acc[i, j], test_acc[i, j] = train, test
        log(
            f"lr {lrs[i]:<8g} lambda {lambdas[j]:<8g} train accuracy {train:.3f}  "
            f"test accuracy {test:.3f}"
        )
    return {
        "lrs": list(lrs),
        "lambdas": list(lambdas),
        "train_accuracy": train_acc.tolist(),
        "test_accuracy": test_acc.tolist(),
        "epochs": epochs,
        "batch_size": batch_size,
        "train_samples": int(X_train.shape[0]),
        "test_samples": int(X_test.shape[0]),
        "seconds": time.perf_counter() - started,
    }


def plot_heatmaps(result: dict, path: Path) -> Path:
    """Two annotated heat maps (train, test accuracy) side by side, written as PNG.

    Examples
    --------
    >>> import tempfile
    >>> result = {"lrs": [0.1], "lambdas": [0.0, 0.1], "train_accuracy": [[0.9, 0.8]],
    ...           "test_accuracy": [[0.85, 0.8]], "epochs": 1, "batch_size": 32,
    ...           "train_samples": 100, "test_samples": 25}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_heatmaps(result, Path(tmp) / "grid.png").read_bytes()[:4]
    b'\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, lambdas = result["lrs"], result["lambdas"]
    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.6 * len(lambdas), 1.5 + 1.0 * len(lrs)))
    for ax, key, title in zip(
        axes, ("train_accuracy", "test_accuracy"), ("Training accuracy", "Test accuracy")
    ):
        values = np.asarray(result[key])
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(lambdas)), [f"{v:g}" for v in lambdas])
        ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs])
        ax.set_xlabel("L2 strength λ (weight decay)")
        ax.set_ylabel("learning rate η")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(
        f"digits CNN, SGD, {result['epochs']} epochs, batch {result['batch_size']} "
        f"({result['train_samples']} train / {result['test_samples']} test)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    """Run the grid, write ``digits_grid.png`` and ``digits_grid.json`` into ``--out``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     options = ["--lrs", "0.1", "--lambdas", "0", "--epochs", "1", "--limit", "100"]
    ...     result = main([*options, "--quiet", "--out", tmp])
    >>> result["lrs"], result["lambdas"], result["png"].endswith("digits_grid.png")
    ([0.1], [0.0], True)
    """
    parser = argparse.ArgumentParser(
        description="Reproduces the lecture's Keras grid search on the 8x8 digits with arraycnn: "
        "a small CNN (one 3x3 convolution of 10 filters, 2x2 max pooling, dense 50 and 10) "
        "trained with SGD and an L2 penalty for every learning rate and penalty strength of "
        "the grid, then draws the train and test accuracy of every cell as heat maps "
        "(digits_grid.png, digits_grid.json).",
    )
    parser.add_argument(
        "--out", default="out", help="directory for the figure and JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--lrs",
        type=_floats,
        default=[0.01, 0.1, 1.0],
        help="comma-separated learning rates (default: 0.01,0.1,1)",
    )
    parser.add_argument(
        "--lambdas",
        type=_floats,
        default=[1e-4, 1e-2, 1.0],
        help="comma-separated L2 strengths (default: 1e-4,1e-2,1)",
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="epochs per cell (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per SGD step (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights and shuffling (default: %(default)s)"
    )
    parser.add_argument(
        "--backend", default="numpy", help="arraycnn backend (default: %(default)s)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use the first N digits (default: all 1797)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing while training")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the grid points on the dask.distributed scheduler at ADDRESS "
        "(tcp://host:8786; needs arraycnn[dask])",
    )
    cluster.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the grid points on a LocalCluster of N worker processes (needs arraycnn[dask])",
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be a positive integer, got {args.workers}")

    def log(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    grid = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "backend": args.backend,
        "limit": args.limit,
        "log": log,
    }
    if args.scheduler is None and args.workers is None:
        result = run_grid(args.lrs, args.lambdas, **grid)
    else:
        with _client(args.scheduler, args.workers) as client:
            result = run_grid(args.lrs, args.lambdas, **grid, client=client)
    out = Path(args.out)
    png = plot_heatmaps(result, out / "digits_grid.png")
    (out / "digits_grid.json").write_text(json.dumps(result, indent=1))
    result["png"] = str(png)
    log(f"wrote {png} and {out / 'digits_grid.json'} ({result['seconds']:.1f} s)")
    return result


@contextlib.contextmanager
def _client(address: str | None, workers: int | None) -> Iterator[Any]:
    """A dask.distributed client of the scheduler at ``address``, or of a LocalCluster of
    ``workers`` one-thread processes on 127.0.0.1 (closed on exit)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SystemExit(
            'keras_digits_grid: --scheduler / --workers need dask: pip install "arraycnn[dask]"'
        ) from None
    if address is not None:
        with Client(address) as client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )
    with cluster, Client(cluster) as client:
        yield client


if __name__ == "__main__":
    main(sys.argv[1:])
