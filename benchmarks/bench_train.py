"""One SGD training step of a small MNIST-like CNN, and its peak memory.

Network (28 x 28 inputs, batch 64): conv 1->8 3x3 pad 1, ReLU, 2x2 pool, conv 8->16 3x3
pad 1, ReLU, 2x2 pool, dense 784->10, softmax cross-entropy. Written with
:func:`arraycnn.conv2d` / :func:`arraycnn.conv2d_backward` and ``arraycnn.pooling``'s
max pooling (a reshape-based 2x2 average pool where that module is absent), so it does
not depend on the layer classes' API.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np

import arraycnn

from .common import BACKENDS, STRATEGIES, XPBenchmark, seeded

Array = Any

BATCH = 64
CLASSES = 10
LEARNING_RATE = 0.05


def avg_pool2(x: Array, *, xp: ModuleType) -> Array:
    """2 x 2 average pooling of (N, C, H, W) with even H, W."""
    n, c, h, w = x.shape
    x6 = xp.reshape(x, (n, c, h // 2, 2, w // 2, 2))  # (N, C, H, W) -> (N, C, H/2, 2, W/2, 2)
    return xp.mean(x6, axis=(3, 5))


def avg_pool2_backward(gy: Array, *, xp: ModuleType) -> Array:
    """Gradient of :func:`avg_pool2`: each input gets a quarter of its window's gradient."""
    n, c, h2, w2 = gy.shape
    g6 = xp.reshape(gy / 4, (n, c, h2, 1, w2, 1))  # (N, C, H/2, W/2) -> (N, C, H/2, 1, W/2, 1)
    g6 = xp.broadcast_to(g6, (n, c, h2, 2, w2, 2))
    return xp.reshape(g6, (n, c, 2 * h2, 2 * w2))  # (N, C, H/2, 2, W/2, 2) -> (N, C, H, W)


try:
    from arraycnn.pooling import max_pool2d, max_pool2d_backward

    def pool2(x: Array, *, xp: ModuleType) -> Array:
        """2 x 2 max pooling (arraycnn.pooling)."""
        return max_pool2d(x, 2)

    def pool2_backward(gy: Array, x: Array, *, xp: ModuleType) -> Array:
        """Gradient of :func:`pool2` with respect to its input ``x``."""
        return max_pool2d_backward(gy, x, 2)

except ImportError:  # an older arraycnn without pooling

    def pool2(x: Array, *, xp: ModuleType) -> Array:
        """2 x 2 average pooling."""
        return avg_pool2(x, xp=xp)

    def pool2_backward(gy: Array, x: Array, *, xp: ModuleType) -> Array:
        """Gradient of :func:`pool2`."""
        return avg_pool2_backward(gy, xp=xp)


def relu(x: Array, *, xp: ModuleType) -> Array:
    return xp.where(x > 0, x, xp.zeros_like(x))


def train_step(params: dict[str, Array], x: Array, onehot: Array, strategy: str, *, xp) -> float:
    """Forward, backward and SGD update of ``params`` in place (dict entries replaced).

    Returns the batch loss as a Python float (a host sync, as a training loop's log line).
    """
    conv = {"padding": 1, "strategy": strategy}
    z1 = arraycnn.conv2d(x, params["w1"], params["b1"], **conv)  # (N, 8, 28, 28)
    a1 = relu(z1, xp=xp)
    p1 = pool2(a1, xp=xp)  # (N, 8, 14, 14)
    z2 = arraycnn.conv2d(p1, params["w2"], params["b2"], **conv)  # (N, 16, 14, 14)
    a2 = relu(z2, xp=xp)
    p2 = pool2(a2, xp=xp)  # (N, 16, 7, 7)
    flat = xp.reshape(p2, (p2.shape[0], -1))  # (N, 16, 7, 7) -> (N, 784)
    logits = flat @ params["w3"] + params["b3"]  # (N, 10)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_z = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    log_p = shifted - log_z
    n = x.shape[0]
    loss = -xp.sum(onehot * log_p) / n
    g_logits = (xp.exp(log_p) - onehot) / n  # (N, 10)
    grads = {"w3": xp.matrix_transpose(flat) @ g_logits, "b3": xp.sum(g_logits, axis=0)}
    g_flat = g_logits @ xp.matrix_transpose(params["w3"])  # (N, 784)
    g_p2 = xp.reshape(g_flat, p2.shape)  # (N, 784) -> (N, 16, 7, 7)
    g_z2 = xp.where(z2 > 0, pool2_backward(g_p2, a2, xp=xp), xp.zeros_like(z2))
    g_p1, grads["w2"], grads["b2"] = arraycnn.conv2d_backward(g_z2, p1, params["w2"], **conv)
    g_z1 = xp.where(z1 > 0, pool2_backward(g_p1, a1, xp=xp), xp.zeros_like(z1))
    _, grads["w1"], grads["b1"] = arraycnn.conv2d_backward(g_z1, x, params["w1"], **conv)
    for name, g in grads.items():
        params[name] = params[name] - LEARNING_RATE * g
    return float(loss)


class _TrainCase(XPBenchmark):
    """Seeded parameters, a batch (64 x 1 x 28 x 28, float32) and its labels."""

    def setup_step(self, backend: str, strategy: str) -> None:
        if strategy == "separable":
            raise NotImplementedError("separable: random 3x3 filters are full rank")
        xp = self.setup_backend(backend)
        shapes = {
            "w1": (8, 1, 3, 3),
            "b1": (8,),
            "w2": (16, 8, 3, 3),
            "b2": (16,),
            "w3": (16 * 7 * 7, CLASSES),
            "b3": (CLASSES,),
        }
        self.params_ = {
            name: self.to_xp((0.1 * seeded(shape, np.float32, seed=i)).astype(np.float32))
            for i, (name, shape) in enumerate(shapes.items())
        }
        self.x = self.to_xp(np.abs(seeded((BATCH, 1, 28, 28), np.float32, seed=10)))
        labels = np.random.default_rng(11).integers(0, CLASSES, BATCH)
        self.onehot = self.to_xp(np.eye(CLASSES, dtype=np.float32)[labels])
        self.strategy = strategy
        self.xp_ = xp
        train_step(self.params_, self.x, self.onehot, strategy, xp=xp)  # warm-up


class TrainStep(_TrainCase):
    """One training step (batch 64 of 1 x 28 x 28, float32) per conv strategy."""

    params: ClassVar[list] = [BACKENDS, STRATEGIES]
    param_names: ClassVar[list] = ["backend", "strategy"]

    def setup(self, backend: str, strategy: str) -> None:
        self.setup_step(backend, strategy)

    def time_step(self, *_: str) -> None:
        train_step(self.params_, self.x, self.onehot, self.strategy, xp=self.xp_)

    def peakmem_step(self, *_: str) -> None:
        train_step(self.params_, self.x, self.onehot, self.strategy, xp=self.xp_)


class TrainLoss(_TrainCase):
    """Loss after 20 more steps with ``auto``: a sanity signal that the step learns."""

    params: ClassVar[list] = [BACKENDS]
    param_names: ClassVar[list] = ["backend"]

    def setup(self, backend: str) -> None:
        self.setup_step(backend, "auto")

    def track_loss_after_20_steps(self, *_: str) -> float:
        loss = float("nan")
        for _ in range(20):
            loss = train_step(self.params_, self.x, self.onehot, self.strategy, xp=self.xp_)
        return loss

    track_loss_after_20_steps.unit = "nats"  # type: ignore[attr-defined]
