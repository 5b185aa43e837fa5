"""The one-image notebook, on arraycnn: train a tiny CNN on a single 32×32 image.

The network of the notebook: a 5×5 convolution with padding 2 and a bias (32×32 -> 32×32),
ReLU, 2×2 max pooling (-> 16×16 = 256 features), one dense unit and a sigmoid; binary
cross-entropy against the label 0; 50 steps of plain gradient descent at learning rate 0.001,
initial weights ``0.01 * N(0, 1)`` and pixels drawn from 1..254 (unscaled, as there).

What differs: the gradients come from arraycnn's verified layers (the notebook's hand-written
kernel gradient is wrong), and this script checks the kernel gradient against central finite
differences in float64 before training.

Run::

    python -m arraycnn.examples.notebook_one_image [--steps 50] [--lr 0.001] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np


def build_model(*, backend: Any = "numpy", dtype: str = "float64", seed: int = 0):
    """Conv 5×5 (pad 2) -> ReLU -> MaxPool 2×2 -> Flatten -> Dense(256, 1) -> Sigmoid.

    Weights are re-drawn as ``0.01 * N(0, 1)`` from ``seed``, as in the notebook.

    Examples
    --------
    >>> model = build_model(seed=0)
    >>> model.output_shape, model.count_parameters()  # 5 * 5 + 1 and 256 + 1
    ((1,), 283)
    """
    from arraycnn.nn.activations import ReLU, Sigmoid
    from arraycnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D
    from arraycnn.nn.model import Sequential

    model = Sequential(
        [
            Conv2D(1, 1, 5, padding=2),  # (1, 32, 32) -> (1, 32, 32)
            ReLU(),
            MaxPool2D(2),  # -> (1, 16, 16)
            Flatten(),  # -> (256,)
            Dense(256, 1),
            Sigmoid(),
        ],
        backend=backend,
        dtype=dtype,
        seed=seed,
    )
    model.build((1, 32, 32))
    rng = np.random.default_rng(seed)
    model.set_parameters(
        {
            key: model.xp.asarray(
                0.01 * rng.standard_normal(tuple(p.shape)), dtype=model.dtype, device=model.device
            )
            for key, p in model.parameters().items()
        }
    )
    return model


def make_image(seed: int = 0) -> np.ndarray:
    """One 32×32 image of integers 1..254 as float, shape (1, 1, 32, 32).

    Examples
    --------
    >>> image = make_image(0)
    >>> image.shape, image.dtype, bool(1 <= image.min() <= image.max() <= 254)
    ((1, 1, 32, 32), dtype('float64'), True)
    """
    rng = np.random.default_rng(seed)
    return rng.integers(1, 255, size=(1, 1, 32, 32)).astype(np.float64)


def loss_of_kernel(model, image: np.ndarray, label: np.ndarray):
    """Binary cross-entropy of the model's output as a function of the conv kernel (float64).

    Examples
    --------
    >>> model, image = build_model(seed=0), make_image(0)
    >>> f = loss_of_kernel(model, image, np.array([0]))
    >>> kernel = np.asarray(model.parameters()["0.w"])
    >>> f(kernel) > 0, f(np.zeros_like(kernel)) != f(kernel)
    (True, True)
    """
    from arraycnn.backend import to_numpy
    from arraycnn.nn.losses import BinaryCrossEntropy

    xp = model.xp
    bce = BinaryCrossEntropy()
    x = xp.asarray(image, dtype=model.dtype, device=model.device)
    t = xp.asarray(label.reshape(-1, 1), dtype=model.dtype, device=model.device)

    def f(kernel: np.ndarray) -> float:
        saved = model.parameters()["0.w"]
        model.set_parameters({"0.w": xp.asarray(kernel, dtype=model.dtype, device=model.device)})
        try:
            value, _ = bce(model.forward(x), t)
        finally:
            model.set_parameters({"0.w": saved})
        return float(to_numpy(value))

    return f


def kernel_gradient(model, image: np.ndarray, label: np.ndarray):
    """The model's gradient of the loss with respect to the conv kernel (one backward pass).

    Examples
    --------
    >>> model = build_model(seed=0)
    >>> kernel_gradient(model, make_image(0), np.array([0])).shape
    (1, 1, 5, 5)
    """
    from arraycnn.nn.losses import BinaryCrossEntropy

    xp = model.xp
    x = xp.asarray(image, dtype=model.dtype, device=model.device)
    t = xp.asarray(label.reshape(-1, 1), dtype=model.dtype, device=model.device)
    _, g = BinaryCrossEntropy()(model.forward(x, training=True), t)
    model.backward(g)
    return model.gradients()["0.w"]


def main(argv: list[str] | None = None) -> dict:
    """Check the kernel gradient, train, print the loss per step; return the numbers.

    Examples
    --------
    >>> result = main(["--steps", "3", "--quiet"])
    >>> len(result["losses"]), result["losses"][-1] < result["losses"][0]
    (3, True)
    """
    from arraycnn.backend import to_numpy
    from arraycnn.nn.optim import SGD
    from arraycnn.testing import check_grad

    parser = argparse.ArgumentParser(
        description="Reproduces the one-image notebook: a tiny CNN (one 5x5 convolution, 2x2 "
        "max pooling, one sigmoid unit) trained by plain gradient descent on a single random "
        "32x32 image. Checks the kernel gradient against finite differences first (the "
        "notebook's hand-written one is wrong), then prints the loss of every step.",
    )
    parser.add_argument(
        "--steps", type=int, default=50, help="gradient-descent steps (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.001, help="learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the image and weights (default: %(default)s)"
    )
    parser.add_argument(
        "--backend", default="numpy", help="arraycnn backend (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)

    model = build_model(backend=args.backend, seed=args.seed)
    image, label = make_image(args.seed), np.array([0])
    kernel = np.asarray(to_numpy(model.parameters()["0.w"]), dtype=np.float64)
    grad = kernel_gradient(model, image, label)
    gradient_error = check_grad(loss_of_kernel(model, image, label), kernel, grad, directions=4)

    history = model.fit(
        image,
        label,
        epochs=args.steps,
        batch_size=1,
        loss="binary_crossentropy",
        optimizer=SGD(lr=args.lr),
        shuffle=False,
        progress=False,
    )
    losses = history.history["loss"]  # loss before each step (one step per epoch)
    y_hat = float(to_numpy(model.predict_proba(image))[0, 0])
    if not args.quiet:
        print(f"kernel gradient vs finite differences: max relative error {gradient_error:.2e}")
        for step, value in enumerate(losses, start=1):
            print(f"step {step:3d}  loss {value:.6f}")
        print(f"final output y_hat = {y_hat:.6f} (label 0)")
    return {"losses": losses, "gradient_error": gradient_error, "y_hat": y_hat}


if __name__ == "__main__":
    main(sys.argv[1:])
