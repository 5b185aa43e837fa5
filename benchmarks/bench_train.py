"""One training step of the lecture MNIST network, per conv strategy, and the same step in torch.

The network is :func:`arraycnn.examples.lecture_mnist.build_model` (the one the lecture
example trains to 99 %): conv 1->16 5x5 pad 2, ReLU, 2x2 max pool, conv 16->32 5x5 pad 2,
ReLU, 2x2 max pool, flatten, dense 1568->128, ReLU, dropout 0.25, dense 128->10, softmax.
A batch is 64 seeded standard-normal (1, 28, 28) float32 images with seeded integer labels
(no data set is read).

One step is what ``Sequential.fit`` does per batch, through the public API only::

    logits = model.forward(x, training=True, stop=-1)   # the final Softmax is skipped ...
    loss, g = CategoricalCrossEntropy(from_logits=True)(logits, labels)  # ... and fused here
    model.backward(g, stop=-1)
    model.set_parameters(adam.step(model.parameters(), model.gradients()))

(``fit`` also counts the batch's correct predictions for its progress line: a metric, not
part of the step, left out here.) The torch row times the same network, batch and Adam
(forward, loss, backward, update; one thread).

The epoch rows time one ``Sequential.fit`` epoch (``auto``, no validation, no progress) on
:data:`EPOCH_SAMPLES` seeded MNIST-shaped samples in batches of 64, shuffled, with Adam;
their torch twin runs the same network, shuffled batches, loss and Adam in ``torch.nn``
(one thread), summing the batch losses as ``fit`` does. :class:`ArraycnnEpoch` and
:class:`TorchEpoch` are plain callables, so that a script can time them side by side with
:func:`arraycnn.timing.interleaved_medians`.

Forcing ``separable`` is allowed (``auto`` never picks it here: He-initialised 5x5 kernels
are full rank, and the dispatcher needs rank 1 before two 1-D passes pay off for 5x5);
a forced strategy is skipped only when the dispatcher's own predictions of its four calls
(forward and backward of both convolutions) add up to more than :data:`common.MAX_SECONDS`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np

import arraycnn
from arraycnn import nn
from arraycnn.examples.lecture_mnist import build_model, torch_network
from arraycnn.geometry import conv_geometry
from arraycnn.tools.cases import seeded
from arraycnn.tools.measuring import MAX_WORKSPACE_BYTES, predicted

from .common import BACKENDS, MAX_SECONDS, STRATEGIES, XPBenchmark, limit_threads

Array = Any

BATCH = 64
SAMPLE = (1, 28, 28)
CLASSES = 10
LEARNING_RATE = 1e-3
MODEL_SEED = 0
DATA_SEED = 10
#: Steps before :class:`TrainLoss` reads the loss.
LOSS_STEPS = 20
#: Samples of one timed epoch (32 batches of 64).
EPOCH_SAMPLES = 2048


def host_batch() -> tuple[np.ndarray, np.ndarray]:
    """Seeded images (BATCH, 1, 28, 28) float32 and labels (BATCH,) int64 in [0, CLASSES)."""
    x = seeded((BATCH, *SAMPLE), np.float32, seed=DATA_SEED)
    labels = np.random.default_rng(DATA_SEED + 1).integers(0, CLASSES, BATCH).astype(np.int64)
    return x, labels


def host_epoch_data() -> tuple[np.ndarray, np.ndarray]:
    """Seeded images (EPOCH_SAMPLES, 1, 28, 28) float32 in [0, 1) and labels (EPOCH_SAMPLES,)
    int64 in [0, CLASSES)."""
    rng = np.random.default_rng(DATA_SEED + 2)
    x = rng.random((EPOCH_SAMPLES, *SAMPLE), dtype=np.float32)
    labels = rng.integers(0, CLASSES, EPOCH_SAMPLES).astype(np.int64)
    return x, labels


def predicted_step_seconds(
    model: nn.Sequential, strategy: str, xp: ModuleType
) -> tuple[float, int]:
    """Sum of the dispatcher's predictions for the step's conv calls when ``strategy`` is
    forced (forward and backward of every Conv2D, on the layers' own weights), and the
    largest predicted workspace. Raises NotImplementedError where the strategy cannot run."""
    seconds, workspace = 0.0, 0
    for layer in model.layers:
        if not isinstance(layer, nn.Conv2D):
            continue
        geom = conv_geometry(
            (BATCH, *layer.input_shape),
            layer.weight_shape,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
        )
        w = layer.params["w"]
        for direction in ("forward", "backward"):
            try:
                plan = predicted(strategy, w, geom, xp=xp, direction=direction)
            except (ValueError, MemoryError) as exc:
                raise NotImplementedError(f"{strategy}: {exc}") from exc
            seconds += plan.seconds
            workspace = max(workspace, plan.bytes)
    return seconds, workspace


class ArraycnnStep:
    """The lecture network (built, seeded), its loss and Adam, and one batch on a backend."""

    def __init__(self, backend: str, strategy: str, x: Array, labels: Array) -> None:
        self.model = build_model(backend=backend, seed=MODEL_SEED, strategy=strategy)
        self.model.build(SAMPLE)
        self.loss_fn = nn.CategoricalCrossEntropy(from_logits=True)
        self.opt = nn.Adam(LEARNING_RATE)
        self.x, self.labels = x, labels

    def __call__(self) -> Array:
        """One training step; returns the batch loss (0-d array, before the update)."""
        model = self.model
        logits = model.forward(self.x, training=True, stop=-1)  # (N, 10), Softmax skipped
        value, g = self.loss_fn(logits, self.labels)
        model.backward(g, stop=-1)
        model.set_parameters(self.opt.step(model.parameters(), model.gradients()))
        return value

    def last_parameter(self) -> Array:
        """An array written by the step's update (what the timer waits for)."""
        return next(reversed(self.model.parameters().values()))

    def eval_loss(self) -> float:
        """Loss on the batch without dropout (inference mode)."""
        logits = self.model.forward(self.x, training=False, stop=-1)
        value, _ = self.loss_fn(logits, self.labels)
        return float(value)


class _TrainCase(XPBenchmark):
    """Backend, seeded batch and (for the step rows) a warmed-up :class:`ArraycnnStep`."""

    def setup_data(self, backend: str) -> None:
        self.setup_backend(backend)
        self.backend = backend
        x, labels = host_batch()
        self.x = self.to_xp(x)
        self.labels = self.to_xp(labels)

    def setup_step(self, backend: str, strategy: str) -> None:
        self.setup_data(backend)
        if strategy != "auto" and strategy not in arraycnn.available_strategies(self.xp):
            raise NotImplementedError(f"{strategy}: not available on {backend}")
        self.step = ArraycnnStep(backend, strategy, self.x, self.labels)
        if strategy != "auto":  # auto picks from the same predictions: never the slowest
            seconds, workspace = predicted_step_seconds(self.step.model, strategy, self.xp)
            if seconds > MAX_SECONDS:
                raise NotImplementedError(f"{strategy}: predicted {seconds:.2g} s per step")
            if workspace > MAX_WORKSPACE_BYTES:
                raise NotImplementedError(f"{strategy}: workspace {workspace} bytes")
        self.run_step()  # warm-up: dispatcher analyses, FFT plans, optimizer state, fresh pages

    def run_step(self) -> None:
        self.step()
        self.sync(self.step.last_parameter())


class TrainStep(_TrainCase):
    """One training step (batch 64 of 1 x 28 x 28, float32) per conv strategy."""

    params: ClassVar[list] = [BACKENDS, STRATEGIES]
    param_names: ClassVar[list] = ["backend", "strategy"]

    def setup(self, backend: str, strategy: str) -> None:
        self.setup_step(backend, strategy)

    def time_step(self, *_: str) -> None:
        """Seconds per training step: forward, loss, backward, Adam update."""
        self.run_step()

    def peakmem_step(self, *_: str) -> None:
        """Peak resident memory of the process during one training step."""
        self.run_step()


class TrainLoss(_TrainCase):
    """Loss on the batch after 20 Adam steps on it with ``auto``: a sanity signal that the
    step learns (ln 10 = 2.30 nats at chance; a fresh seeded model every call)."""

    params: ClassVar[list] = [BACKENDS]
    param_names: ClassVar[list] = ["backend"]

    def setup(self, backend: str) -> None:
        self.setup_data(backend)

    def track_loss_after_20_steps(self, *_: str) -> float:
        """Cross-entropy on the batch after 20 Adam steps on it (falls as training works)."""
        step = ArraycnnStep(self.backend, "auto", self.x, self.labels)
        for _ in range(LOSS_STEPS):
            step()
        return step.eval_loss()

    track_loss_after_20_steps.unit = "nats"  # type: ignore[attr-defined]
    track_loss_after_20_steps.pretty_name = "training: loss after 20 steps"  # type: ignore[attr-defined]


class TorchStep:
    """The same step in torch (CPU, one thread): forward, cross-entropy, backward, Adam."""

    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        try:
            import torch
        except ImportError as exc:
            raise NotImplementedError("torch is not installed") from exc
        torch.set_num_threads(1)
        torch.manual_seed(MODEL_SEED)
        self.net = torch_network()
        self.net.train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels)

    def __call__(self) -> Any:
        self.opt.zero_grad()
        loss = self.loss_fn(self.net(self.x), self.labels)
        loss.backward()
        self.opt.step()
        return loss


class TrainStepTorch:
    """Peer row: one training step of the same network in ``torch.nn`` (one thread)."""

    timeout = 120.0

    def setup(self) -> None:
        limit_threads()
        self.step = TorchStep(*host_batch())
        self.step()  # warm-up

    def time_step(self) -> None:
        """Seconds per training step of the same network in torch.nn (the peer row)."""
        self.step()

    def peakmem_step(self) -> None:
        """Peak resident memory of one torch.nn training step."""
        self.step()


class ArraycnnEpoch:
    """One ``fit`` epoch of the lecture network (``auto``, Adam) on host data ``x``, ``labels``,
    on ``workers`` threads; each call trains one more epoch of the same model (the optimizer's
    state persists)."""

    def __init__(
        self, backend: str, x: np.ndarray, labels: np.ndarray, *, workers: int = 1
    ) -> None:
        self.model = build_model(backend=backend, seed=MODEL_SEED)
        self.model.build(SAMPLE)
        self.opt = nn.Adam(LEARNING_RATE)
        self.x, self.labels = x, labels
        self.workers = workers
        self.epochs = 0

    def __call__(self) -> Array:
        """One epoch; returns the last parameter written (what the timer waits for)."""
        self.epochs += 1
        self.model.fit(
            self.x,
            self.labels,
            epochs=1,
            batch_size=BATCH,
            loss="categorical_crossentropy",
            optimizer=self.opt,
            seed=DATA_SEED + self.epochs,
            progress=False,
            workers=self.workers,
        )
        return next(reversed(self.model.parameters().values()))


class TorchEpoch:
    """The same epoch in ``torch.nn`` (CPU, one thread): shuffled batches of 64, forward,
    cross-entropy, backward, Adam; the batch losses are summed as ``fit`` does."""

    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        import torch

        self.step = TorchStep(x[:BATCH], labels[:BATCH])  # network, Adam and loss
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels)
        self.rng = np.random.default_rng(DATA_SEED)

    def __call__(self) -> Any:
        """One epoch; returns the summed loss of its batches (a 0-d tensor)."""
        import torch

        step, n = self.step, self.x.shape[0]
        order = torch.from_numpy(self.rng.permutation(n))
        total = torch.zeros(())
        for lo in range(0, n, BATCH):
            idx = order[lo : lo + BATCH]
            step.opt.zero_grad()
            loss = step.loss_fn(step.net(self.x[idx]), self.labels[idx])
            loss.backward()
            step.opt.step()
            total += loss.detach() * idx.shape[0]
        return total


class TrainEpoch(XPBenchmark):
    """One epoch of ``fit`` (2048 samples, batches of 64, Adam, ``auto``) per backend."""

    timeout = 300.0

    def setup(self, backend: str) -> None:
        self.setup_backend(backend)
        self.epoch = ArraycnnEpoch(backend, *host_epoch_data())
        self.epoch()  # warm-up: dispatcher analyses, optimizer state, fresh pages

    def time_epoch(self, *_: str) -> None:
        """Seconds per epoch of Sequential.fit: 32 steps and the epoch's bookkeeping."""
        self.sync(self.epoch())


class TrainEpochTorch:
    """Peer row: the same epoch in ``torch.nn`` (one thread)."""

    timeout = 300.0

    def setup(self) -> None:
        limit_threads()
        self.epoch = TorchEpoch(*host_epoch_data())
        self.epoch()  # warm-up

    def time_epoch(self) -> None:
        """Seconds per epoch of the same network, batches and Adam in torch.nn (the peer row)."""
        self.epoch()


class TrainEpochTwoWorkers:
    """The epoch of :class:`TrainEpoch` on NumPy with ``fit(..., workers=2)``: each batch's
    two halves on two threads (one BLAS thread each)."""

    timeout = 300.0

    def setup(self) -> None:
        limit_threads()
        self.epoch = ArraycnnEpoch("numpy", *host_epoch_data(), workers=2)
        self.epoch()  # warm-up: dispatcher analyses at the half batch, the worker's scratch

    def time_epoch(self) -> None:
        """Seconds per epoch of Sequential.fit on two threads."""
        self.epoch()


class TrainEpochTorchTwoThreads:
    """Peer row: the torch epoch on two threads (``torch.set_num_threads(2)``)."""

    timeout = 300.0

    def setup(self) -> None:
        import torch

        limit_threads()
        self.threads = torch.get_num_threads()
        torch.set_num_threads(2)
        self.epoch = TorchEpoch(*host_epoch_data())
        self.epoch()  # warm-up

    def teardown(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def time_epoch(self) -> None:
        """Seconds per epoch of the torch.nn twin on two threads (the peer row)."""
        self.epoch()
