"""The training loop behind :meth:`Sequential.fit <arraycnn.nn.model.Sequential.fit>`, and
evaluation.

:func:`fit` runs epochs of :func:`train_step` over :func:`~arraycnn.nn.data.batches`, shows
progress with a :class:`~arraycnn.nn.progress.Reporter`, turns Ctrl-C into a request to stop
after the current step (:func:`stop_on_sigint`) and records a :class:`History`.

When the last layer is ``Softmax`` and the loss is categorical cross-entropy, training and
evaluation feed the pre-softmax logits to the loss's fused, numerically stable form (Keras
does the same); likewise ``Sigmoid`` with binary cross-entropy (see :func:`training_head`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType, ModuleType
from typing import Any, Protocol

import numpy as np

from ..budget import WorkspaceError, format_bytes, memory_limit
from .data import (
    Dataset,
    Index,
    Placement,
    batches,
    check_flag,
    check_seed,
    epoch_order,
    num_outputs,
    placement_of,
    positive_int,
    prepare_labeled,
    target_batch,
    x_batch,
)
from .losses import BinaryCrossEntropy, CategoricalCrossEntropy, Loss, get_loss, one_hot
from .optim import get_optimizer
from .parallel import batch_length, resolve_workers, shard_rows
from .progress import Reporter
from .sharding import check_parallel, sharded

__all__ = [
    "Head",
    "History",
    "StepResult",
    "StopFlag",
    "capped_batch",
    "check_batch",
    "count_correct",
    "evaluate",
    "evaluate_dataset",
    "fit",
    "largest_batch",
    "resolve_loss",
    "resolve_optimizer",
    "resolve_progress",
    "stop_on_sigint",
    "train_step",
    "training_head",
]

Array = Any
#: ``callback(epoch, metrics)``; a true return value ends training.
Callback = Callable[[int, dict[str, float]], Any]


class _Model(Protocol):
    """What training and evaluation need of a model (:class:`~arraycnn.nn.model.Sequential`)."""

    xp: ModuleType
    dtype: Any
    device: Any
    seed: int | None
    layers: list[Any]
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    loss: Any
    optimizer: Any

    @property
    def built(self) -> bool: ...

    def build(self, input_shape: Sequence[int]) -> tuple[int, ...]: ...

    def forward(self, x: Array, *, training: bool = False, stop: int | None = None) -> Array: ...

    def backward(self, gy: Array, *, stop: int | None = None) -> Array: ...

    def parameters(self) -> dict[str, Array]: ...

    def gradients(self) -> dict[str, Array]: ...

    def set_parameters(self, params: dict[str, Array]) -> None: ...


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


@dataclass
class History:
    """What ``fit`` measured, one entry per completed epoch (as Keras' ``History``).

    Attributes
    ----------
    history : dict[str, list[float]]
        ``"loss"``, ``"accuracy"`` (running means over the epoch's training steps),
        ``"val_loss"``, ``"val_accuracy"`` (when validation data was given) and
        ``"epoch_time"`` (wall seconds of each epoch, validation included).
    epochs : list[int]
        1-based numbers of the completed epochs.
    epoch : list[int]
        The same, 0-based, as Keras' ``History.epoch`` (read-only).
    interrupted : bool
        True if Ctrl-C ended training early; the incomplete epoch is not recorded.
    steps : int
        Optimizer steps taken in total.

    Examples
    --------
    >>> history = History()
    >>> history.record(1, {"loss": 0.75, "accuracy": 0.5})
    >>> history["loss"], history.epochs
    ([0.75], [1])
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    interrupted: bool = False
    steps: int = 0

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics (as Python floats).

        Examples
        --------
        >>> history = History()
        >>> history.record(3, {"loss": np.float32(0.25)})
        >>> history.history, history.epochs
        ({'loss': [0.25]}, [3])
        """
        self.epochs.append(epoch)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    @property
    def epoch(self) -> list[int]:
        """0-based numbers of the completed epochs, as Keras' ``History.epoch``.

        Examples
        --------
        >>> history = History()
        >>> history.record(1, {"loss": 0.5})
        >>> history.record(2, {"loss": 0.25})
        >>> history.epoch, history.epochs
        ([0, 1], [1, 2])
        """
        return [e - 1 for e in self.epochs]

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------


def resolve_progress(progress: Any, verbose: Any) -> bool:
    """``fit``'s display switch from ``progress=`` and its Keras alias ``verbose=``.

    ``verbose`` 0 means no output, 1 or 2 the progress display (``True``/``False`` count as
    1/0, as in Keras); None for either means not given. Neither given: True.

    Raises
    ------
    TypeError
        For a ``verbose`` that is not an int (or bool), or a ``progress`` that is not a bool.
    ValueError
        For a ``verbose`` other than 0, 1, 2, and for ``verbose`` and ``progress`` that
        disagree.

    Examples
    --------
    >>> resolve_progress(None, 0), resolve_progress(None, 2), resolve_progress(None, None)
    (False, True, True)
    >>> resolve_progress(True, 0)
    Traceback (most recent call last):
    ...
    ValueError: verbose=0 disagrees with progress=True; give only one of them
    """
    shown = None if progress is None else check_flag(progress, "progress")
    if verbose is None:
        return True if shown is None else shown
    if not isinstance(verbose, (int, np.integer)):
        raise TypeError(
            f"verbose must be 0, 1 or 2 (Keras' alias of progress), "
            f"got {type(verbose).__name__} {verbose!r}"
        )
    if int(verbose) not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2 (Keras' alias of progress), got {verbose!r}")
    wanted = int(verbose) != 0
    if shown is not None and shown != wanted:
        raise ValueError(
            f"verbose={int(verbose)} disagrees with progress={shown}; give only one of them"
        )
    return wanted


def resolve_loss(loss: Any) -> Loss:
    """A :class:`~arraycnn.nn.losses.Loss` from a name, class or instance.

    Raises
    ------
    ValueError
        ``"loss: unknown loss ..."`` for an unknown name.

    Examples
    --------
    >>> resolve_loss("mse")
    MeanSquaredError()
    >>> resolve_loss("hinge")
    Traceback (most recent call last):
    ...
    ValueError: loss: unknown loss 'hinge' (loss must be one of 'mse', ...; got 'hinge')
    """
    try:
        return get_loss(loss)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"loss: unknown loss {loss!r} ({exc})") from exc


def resolve_optimizer(optimizer: Any) -> Any:
    """Any object with ``step(params, grads)`` as is; else an optimizer from its name.

    Raises
    ------
    ValueError
        ``"optimizer: unknown optimizer ..."`` for an unknown name.

    Examples
    --------
    >>> resolve_optimizer("sgd")
    SGD(lr=0.01, weight_decay=0.0)
    >>> resolve_optimizer("adamax")
    Traceback (most recent call last):
    ...
    ValueError: optimizer: unknown optimizer 'adamax' (optimizer must be one of ...)
    """
    if hasattr(optimizer, "step"):  # any object with the Optimizer.step contract
        return optimizer
    try:
        return get_optimizer(optimizer)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"optimizer: unknown optimizer {optimizer!r} ({exc})") from exc


def _validation_set(model: _Model, validation_data: Any) -> Dataset | None:
    if validation_data is None:
        return None
    if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise TypeError("validation_data must be a pair (X_val, y_val)")
    X, y = validation_data
    return prepare_labeled(model, X, y, names=("validation X", "validation y"), nonempty=True)


def _check_callback(callback: Any) -> Callback | None:
    if callback is not None and not callable(callback):
        raise TypeError(
            "callback must be callable as callback(epoch, metrics), got "
            f"{type(callback).__name__} {callback!r}"
        )
    return callback


# --------------------------------------------------------------------------------------------
# memory of a batch
# --------------------------------------------------------------------------------------------


def _sample_bytes(model: _Model) -> int:
    """Bytes one sample adds to a pass: its input and every layer's output (a layer keeps its
    input for the backward pass), from the per-sample shapes of a built model."""
    shapes = [tuple(model.input_shape or ())]
    shapes += [
        tuple(s) for s in (getattr(layer, "output_shape", None) for layer in model.layers) if s
    ]
    return sum(math.prod(shape) for shape in shapes) * _itemsize(model)


def _state_bytes(model: _Model, training: bool) -> int:
    """Bytes a training step adds besides the batch: a gradient and at most two optimizer slots
    per parameter (nothing for inference: the parameters exist already)."""
    if not training:
        return 0
    count = sum(math.prod(tuple(p.shape)) for p in model.parameters().values())
    return 3 * count * max(_itemsize(model), 4)  # optimizer state is float32 at least


def _itemsize(model: _Model) -> int:
    return model.xp.finfo(model.dtype).bits // 8


def largest_batch(model: _Model, *, training: bool = False) -> int:
    """The most samples per batch whose pass (every layer's output for the batch, and for
    training the gradients and optimizer state) fits the memory available
    (:func:`arraycnn.budget.memory_limit`); 0 when not even one sample does.

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(256, 1024)], seed=0)
    >>> _ = model.build((256,))
    >>> largest_batch(model) > 1000  # 5 KiB per sample
    True
    """
    limit = memory_limit(model.xp, model.device)
    if limit is None:
        return sys.maxsize
    room = limit - _state_bytes(model, training)
    return max(room, 0) // max(_sample_bytes(model), 1)


def capped_batch(model: _Model, batch_size: int, what: str) -> int:
    """``batch_size``, lowered to :func:`largest_batch` where a batch would not fit (for
    inference, where the batch size changes nothing but memory and speed).

    Raises
    ------
    WorkspaceError
        If not even one sample fits.

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(256, 1024)], seed=0)
    >>> _ = model.build((256,))
    >>> capped_batch(model, 64, "predict")
    64
    """
    batch = min(batch_size, largest_batch(model))
    if batch < 1:
        check_batch(model, 1, what)
    return batch


def check_batch(model: _Model, batch: int, what: str, *, training: bool = False) -> None:
    """Refuse, before anything runs, a batch of ``batch`` samples whose pass does not fit the
    memory available: the batch's input and every layer's output (and, for ``training``, a
    gradient and the optimizer state of every parameter).

    Raises
    ------
    WorkspaceError
        Naming the sizes, the memory available and the largest batch that fits.

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(1, 10**7)], seed=0)
    >>> _ = model.build((1,))
    >>> check_batch(model, 10**6, "fit", training=True)
    Traceback (most recent call last):
    ...
    arraycnn.budget.WorkspaceError: fit: a batch of 1000000 samples (38.15 MiB each: ...
    """
    limit = memory_limit(model.xp, model.device)
    per_sample, state = _sample_bytes(model), _state_bytes(model, training)
    needed = batch * per_sample + state
    if limit is None or needed <= limit:
        return
    fits = largest_batch(model, training=training)
    advice = f"use batch_size <= {fits}" if fits else "not even one sample fits"
    extra = f" with {format_bytes(state)} of gradients and optimizer state" if state else ""
    raise WorkspaceError(
        f"{what}: a batch of {batch} samples ({format_bytes(per_sample)} each: the input and "
        f"every layer's output){extra} needs {needed} bytes ({format_bytes(needed)}), more than "
        f"the memory available of {limit} bytes ({format_bytes(limit)}); {advice}"
    )


# --------------------------------------------------------------------------------------------
# the loss head and metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Where the forward pass stops and which loss sees its output.

    Attributes
    ----------
    stop : int or None
        Run layers ``[0, stop)``; None runs them all.
    loss : Loss
        Applied to that output.

    Examples
    --------
    >>> Head(stop=-1, loss=CategoricalCrossEntropy(from_logits=True)).logits
    True
    """

    stop: int | None
    loss: Loss

    @property
    def logits(self) -> bool:
        """Whether the loss sees pre-activation logits (the last layer skipped)."""
        return self.stop is not None


def training_head(layers: Sequence[Any], output_shape: tuple[int, ...], loss: Loss) -> Head:
    """The :class:`Head` for a model's ``layers`` and ``loss``.

    Softmax + categorical cross-entropy (over a flat class axis) and Sigmoid + binary
    cross-entropy run on the logits (the last layer is skipped) with the loss's fused stable
    form; anything else runs every layer into ``loss`` itself.

    Examples
    --------
    >>> from arraycnn.nn import Dense, Softmax
    >>> training_head([Dense(4, 3), Softmax()], (3,), CategoricalCrossEntropy(False))
    Head(stop=-1, loss=CategoricalCrossEntropy(from_logits=True))
    >>> training_head([Dense(4, 3)], (3,), resolve_loss("mse"))
    Head(stop=None, loss=MeanSquaredError())
    """
    last = type(layers[-1]).__name__
    if last == "Softmax" and isinstance(loss, CategoricalCrossEntropy):
        if getattr(layers[-1], "axis", -1) in (-1, 1) and len(output_shape) == 1:
            return Head(-1, CategoricalCrossEntropy(from_logits=True))
    if last == "Sigmoid" and isinstance(loss, BinaryCrossEntropy):
        return Head(-1, BinaryCrossEntropy(from_logits=True))
    return Head(None, loss)


def count_correct(output: Array, y: np.ndarray, *, logits: bool, place: Placement) -> Array:
    """Number of correct predictions in a batch, as a 0-d integer array on the device (reading
    it is the caller's choice: a host round trip).

    Parameters
    ----------
    output : array, shape (B, *output_shape)
        Probabilities, or logits if ``logits``.
    y : numpy.ndarray, shape (B,) labels or (B, K) one-hot
    logits : bool
        One output unit: the decision threshold is 0 for logits, 0.5 for probabilities.
    place : Placement
        Where ``output`` lives (the labels are moved there).

    Returns
    -------
    array, shape (), int64
        On ``output``'s device.

    Examples
    --------
    >>> place = Placement(np, np.float64, "cpu")
    >>> output = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> int(count_correct(output, np.array([0, 1, 1]), logits=False, place=place))
    2
    """
    xp = place.xp
    flat = xp.reshape(output, (output.shape[0], -1))  # (B, ...) -> (B, K)
    if flat.shape[1] == 1:
        pred = flat[:, 0] > (0.0 if logits else 0.5)
        truth = place.from_host(y.reshape(-1) > 0.5, xp.bool)  # (B,) or (B, 1) -> (B,)
    else:
        pred = xp.argmax(flat, axis=1)
        labels = y if y.ndim == 1 else np.argmax(y, axis=1)
        truth = place.from_host(labels.astype(np.int64), pred.dtype)
    return xp.sum(xp.astype(pred == truth, xp.int64))


# --------------------------------------------------------------------------------------------
# one step, one epoch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one training step measured, left on the device (reading a value is a host round
    trip: :class:`_Tally` reads the epoch's sums only when they are shown).

    Attributes
    ----------
    loss : array, shape ()
        The batch's mean loss, before the step (the model's floating dtype).
    correct : array, shape (), int64
        Correct predictions in the batch.
    count : int
        Samples in the batch.

    Examples
    --------
    >>> StepResult(loss=np.float64(0.5), correct=np.int64(3), count=4).count
    4
    """

    loss: Array
    correct: Array
    count: int


@dataclass
class _Tally:
    """Running sums over an epoch's steps, kept on the device (float32 at least for the loss);
    :meth:`means` reads them (two host round trips)."""

    loss_sum: Array | None = None
    correct: Array | None = None
    seen: int = 0

    def add(self, step: StepResult, xp: ModuleType) -> None:
        loss = step.loss
        if xp.finfo(loss.dtype).bits < 32:  # float16 sums lose whole units past 2048
            loss = xp.astype(loss, xp.float32)
        weighted = loss * float(step.count)
        self.loss_sum = weighted if self.loss_sum is None else self.loss_sum + weighted
        self.correct = step.correct if self.correct is None else self.correct + step.correct
        self.seen += step.count

    def means(self) -> dict[str, float]:
        """The epoch's mean loss and accuracy so far, read to the host."""
        return {"loss": float(self.loss_sum) / self.seen, "accuracy": int(self.correct) / self.seen}


def _targets(y: np.ndarray, head: Head, model: _Model, place: Placement) -> Array:
    """A batch of host labels ``y`` in the form ``head.loss`` takes, on the device.

    Class labels for categorical cross-entropy become one-hot rows on the device: the
    labels were range-checked once per ``fit`` (:func:`~arraycnn.nn.data.check_y`), and the
    loss checks label targets at every call, a host round trip per step.
    """
    int_labels = isinstance(head.loss, CategoricalCrossEntropy)
    target = target_batch(y, int_labels=int_labels, output_shape=model.output_shape, place=place)
    if int_labels and target.ndim == 1:
        return one_hot(target, num_outputs(model.output_shape), place.dtype, xp=place.xp)
    return target


def _apply_gradients(model: _Model, optimizer: Any) -> None:
    """One optimizer step on the gradients of the last backward pass."""
    params = model.parameters()
    if params:
        grads = model.gradients()
        model.set_parameters(optimizer.step(params, {k: grads[k] for k in params}))


def _shards_of(index: Index, shards: Any) -> list[tuple[Index, float | None]]:
    """The pieces of a batch for ``shards``: (rows, weight = the piece's share of the batch),
    weight None for a batch in one piece (nothing to scale)."""
    pieces = shard_rows(index, 1 if shards is None else shards.workers)
    if len(pieces) == 1:
        return [(index, None)]
    n = sum(count for _, count in pieces)
    return [(rows, count / n) for rows, count in pieces]


def portable_rows(data: Dataset, rows: Index, shards: Any, shard: int) -> tuple[Dataset, Index]:
    """``(data, rows)`` for shard ``shard`` of ``shards``: as they are, or, for a shard on
    another process (``shards.remote``, shard > 0), the rows' own samples and labels (host
    arrays: the piece is pickled) with ``slice(0, n)``."""
    if not getattr(shards, "remote", False) or shard == 0:
        return data, rows
    y = None if data.y is None else data.y[rows]
    return Dataset(data.X[rows], on_host=data.on_host, y=y), slice(0, batch_length(rows))


def train_piece(runner: Any, model: _Model, piece: tuple) -> StepResult:
    """A shard's training pass (:func:`_train_pass`): ``piece`` is ``(data, rows, head,
    weight)``; module level, so that a worker process can run it."""
    data, rows, head, weight = piece
    return _train_pass(runner, model, data, rows, head, weight)


def eval_piece(runner: Any, model: _Model, piece: tuple) -> StepResult:
    """A shard's evaluation pass (:func:`_eval_pass`): ``piece`` is ``(data, rows, head)``."""
    data, rows, head = piece
    return _eval_pass(runner, model, data, rows, head)


def forward_piece(runner: Any, model: _Model, piece: tuple) -> Array:
    """A shard's inference: ``piece`` is ``(data, rows)``; the runner's output."""
    data, rows = piece
    return runner.forward(x_batch(data, rows, placement_of(model)), training=False)


def _weighted_sum(values: list[Array], weights: list[float | None]) -> Array:
    """``sum(w * v)`` of 0-d arrays (a single value with weight None: itself)."""
    if weights == [None]:
        return values[0]
    total = values[0] * weights[0]
    for value, weight in zip(values[1:], weights[1:]):
        total = total + value * weight
    return total


def _train_pass(
    runner: Any,
    model: _Model,
    data: Dataset,
    index: Index,
    head: Head,
    weight: float | None,
) -> StepResult:
    """Forward, loss and backward of rows ``index`` on ``runner`` (the model or a replica),
    the loss gradient scaled by ``weight`` (the rows' share of a sharded batch)."""
    place = placement_of(model)
    xb = x_batch(data, index, place)
    y = data.y[index]
    out = runner.forward(xb, training=True, stop=head.stop)
    value, g = head.loss(out, _targets(y, head, model, place))
    if weight is not None:
        g = g * weight
    runner.backward(g, stop=head.stop, input_grad=False)  # nobody uses d loss / d X
    hits = count_correct(out, y, logits=head.logits, place=place)
    return StepResult(value, hits, int(xb.shape[0]))


def train_step(
    model: _Model,
    data: Dataset,
    index: Index,
    head: Head,
    optimizer: Any,
    shards: Any = None,
) -> StepResult:
    """Forward, loss, backward and one optimizer step on the batch ``index`` of ``data``.

    Makes no host round trip: the batch moves to the device (NumPy data) and the loss and
    the correct predictions stay there. With ``shards`` (``fit(..., workers=k)``), the batch's
    pieces run at once on the model and its replicas and their gradients are added before the
    step (:mod:`arraycnn.nn.parallel`).

    Returns
    -------
    StepResult
        ``loss`` (the batch's mean, before the step) and ``correct`` predictions, 0-d arrays
        on the device, and ``count`` of samples in the batch.

    Examples
    --------
    >>> from arraycnn.nn import SGD, Dense, Sequential, Softmax
    >>> model = Sequential([Dense(2, 2), Softmax()], backend="numpy", seed=0)
    >>> data = Dataset(np.array([[1.0, 0.0], [0.0, 1.0]]), on_host=True, y=np.array([0, 1]))
    >>> model.build((2,))
    (2,)
    >>> head = training_head(model.layers, model.output_shape, resolve_loss("cross_entropy"))
    >>> result = train_step(model, data, slice(0, 2), head, SGD(0.1))
    >>> round(float(result.loss), 4), int(result.correct), result.count
    (0.7486, 1, 2)
    """
    pieces = _shards_of(index, shards)
    if shards is None:
        results = [_train_pass(model, model, data, index, head, None)]
    else:
        jobs = [
            (*portable_rows(data, rows, shards, i), head, weight)
            for i, (rows, weight) in enumerate(pieces)
        ]
        results = shards.run_training(train_piece, jobs)
        shards.add_gradients(len(pieces))
    _apply_gradients(model, optimizer)
    if shards is not None:
        shards.publish()
    weights = [weight for _, weight in pieces]
    return _combined(results, weights)


def _combined(results: list[StepResult], weights: list[float | None]) -> StepResult:
    """One :class:`StepResult` for a batch from its pieces' (loss weighted by share)."""
    if len(results) == 1:
        return results[0]
    hits = results[0].correct
    for result in results[1:]:
        hits = hits + result.correct
    loss = _weighted_sum([result.loss for result in results], weights)
    return StepResult(loss, hits, sum(result.count for result in results))


@dataclass
class StopFlag:
    """Set when training should stop after the current step (Ctrl-C).

    Examples
    --------
    >>> flag = StopFlag()
    >>> flag.requested
    False
    """

    requested: bool = False


@contextlib.contextmanager
def stop_on_sigint(flag: StopFlag) -> Iterator[None]:
    """Turn Ctrl-C into ``flag.requested = True`` while the block runs (main thread only).

    A second Ctrl-C raises KeyboardInterrupt at once. Outside the main thread signals cannot
    be caught; :func:`fit` then also catches the KeyboardInterrupt exception itself (and stops
    at once, between two steps if it can). The caller's handler is restored on exit.

    Examples
    --------
    >>> import os, signal
    >>> flag = StopFlag()
    >>> with stop_on_sigint(flag):
    ...     os.kill(os.getpid(), signal.SIGINT)
    >>> flag.requested
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.requested:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Run:
    """One ``fit`` call's checked arguments and its running state."""

    model: _Model
    train: Dataset
    validation: Dataset | None
    head: Head
    optimizer: Any
    epochs: int
    batch_size: int
    shuffle: bool
    rng: np.random.Generator
    workers: int = 1
    parallel: str = "threads"
    shards: Any = None
    history: History = field(default_factory=History)
    flag: StopFlag = field(default_factory=StopFlag)
    warned_non_finite: bool = False

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train.n // self.batch_size)


def _start_run(
    model: _Model,
    X: Any,
    y: Any,
    epochs: int,
    batch_size: int,
    loss: Any,
    optimizer: Any,
    validation_data: Any,
    shuffle: bool,
    seed: int | None,
    workers: Any = None,
    parallel: Any = "threads",
) -> _Run:
    """Check the arguments of :func:`fit` (same order) and its data, building the model if
    needed, and the memory of a batch; set the model's loss and optimizer."""
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    loss_fn, opt = resolve_loss(loss), resolve_optimizer(optimizer)
    shuffle, seed = check_flag(shuffle, "shuffle"), check_seed(seed, "seed")
    workers = resolve_workers(workers)
    parallel = check_parallel(parallel, model)
    train = prepare_labeled(model, X, y, nonempty=True)
    validation = _validation_set(model, validation_data)
    check_batch(model, min(batch_size, train.n), "fit", training=True)
    model.loss, model.optimizer = loss_fn, opt
    head = training_head(model.layers, model.output_shape, loss_fn)
    rng = np.random.default_rng(model.seed if seed is None else seed)
    return _Run(
        model, train, validation, head, opt, epochs, batch_size, shuffle, rng, workers, parallel
    )


def _train_epoch(run: _Run, reporter: Reporter) -> _Tally:
    """The training steps of one epoch, until done or a stop is requested."""
    tally = _Tally()
    order = epoch_order(run.rng, run.train.n, run.shuffle)
    for index in batches(run.train.n, run.batch_size, order):
        try:
            result = train_step(run.model, run.train, index, run.head, run.optimizer, run.shards)
        except KeyboardInterrupt:
            run.flag.requested = True
            break
        run.history.steps += 1
        tally.add(result, run.model.xp)
        reporter.step(tally.means)  # reads the sums only at the bar's few ticks
        if run.flag.requested:
            break
    return tally


def _warn_if_non_finite(run: _Run, epoch: int, loss: float) -> None:
    """Warn once per ``fit`` when an epoch's mean loss is NaN or infinite: some step's loss
    was (training diverged). Checked on the epoch's metrics, read once at its end."""
    if math.isfinite(loss) or run.warned_non_finite:
        return
    run.warned_non_finite = True
    warnings.warn(
        f"the training loss is {loss} in epoch {epoch} (its mean over steps up to step "
        f"{run.history.steps}): training diverged (lower the learning rate, or use float32 "
        "where float16 overflows)",
        RuntimeWarning,
        stacklevel=5,  # the caller of Sequential.fit
    )


def _run_epoch(run: _Run, epoch: int, reporter: Reporter) -> dict[str, float] | None:
    """Train, validate and record epoch ``epoch``; None if Ctrl-C interrupted it."""
    started = time.perf_counter()
    reporter.start_epoch(epoch)
    tally = _train_epoch(run, reporter)
    if run.flag.requested:
        _report_interrupt(reporter, run.history, epoch)
        return None
    validation = run.validation
    batch_size = max(1, min(max(run.batch_size, 256), largest_batch(run.model)))
    scores = (
        None
        if validation is None
        else evaluate_dataset(run.model, validation, batch_size, shards=run.shards)
    )
    metrics = _epoch_metrics(tally, scores, started)
    _warn_if_non_finite(run, epoch, metrics["loss"])
    run.history.record(epoch, metrics)
    reporter.end_epoch(epoch, metrics)
    return metrics


def _epoch_metrics(
    tally: _Tally, validation: dict[str, float] | None, started: float
) -> dict[str, float]:
    metrics = tally.means()
    if validation is not None:
        metrics["val_loss"] = validation["loss"]
        metrics["val_accuracy"] = validation["accuracy"]
    metrics["epoch_time"] = time.perf_counter() - started
    return metrics


def _report_interrupt(reporter: Reporter, history: History, epoch: int) -> None:
    history.interrupted = True
    reporter.message(
        f"training interrupted (Ctrl-C) in epoch {epoch} after {history.steps} steps; "
        f"weights kept, history of {len(history.epochs)} completed epoch(s) returned"
    )


def _callback_stops(callback: Callback | None, epoch: int, metrics: dict[str, float]) -> bool:
    """Whether ``callback`` (given a copy of ``metrics``) asks to end training."""
    return callback is not None and bool(callback(epoch, dict(metrics)))


# --------------------------------------------------------------------------------------------
# fit and evaluate
# --------------------------------------------------------------------------------------------


def fit(
    model: _Model,
    X: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    loss: Any = "categorical_crossentropy",
    optimizer: Any = "adam",
    validation_data: tuple[Any, Any] | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    workers: Any = None,
    parallel: Any = "threads",
) -> History:
    """Train ``model`` with mini-batch gradient descent (see :meth:`Sequential.fit`).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential, Softmax
    >>> model = Sequential([Dense(2, 2), Softmax()], backend="numpy", seed=0)
    >>> X, y = np.array([[1.0, 0.0], [0.0, 1.0]] * 4), np.array([0, 1] * 4)
    >>> history = fit(model, X, y, epochs=3, batch_size=4, optimizer="sgd", progress=False)
    >>> history.epochs, history.steps
    ([1, 2, 3], 6)
    """
    callback = _check_callback(callback)
    progress = check_flag(progress, "progress")
    run = _start_run(
        model, X, y, epochs, batch_size, loss, optimizer, validation_data, shuffle, seed,
        workers, parallel,
    )  # fmt: skip
    reporter = Reporter(progress, run.epochs, run.steps_per_epoch)
    shards = sharded(model, run.workers, run.parallel)
    with stop_on_sigint(run.flag), shards as run.shards, reporter:
        for epoch in range(1, run.epochs + 1):
            metrics = _run_epoch(run, epoch, reporter)
            if metrics is None or _callback_stops(callback, epoch, metrics):
                break
    return run.history


def _eval_pass(runner: Any, model: _Model, data: Dataset, index: Index, head: Head) -> StepResult:
    """Loss and correct predictions of rows ``index`` on ``runner`` (the model or a replica),
    in inference mode."""
    place = placement_of(model)
    out = runner.forward(x_batch(data, index, place), training=False, stop=head.stop)
    value, _ = head.loss(out, _targets(data.y[index], head, model, place))
    hits = count_correct(out, data.y[index], logits=head.logits, place=place)
    return StepResult(value, hits, batch_length(index))


def evaluate_dataset(
    model: _Model,
    data: Dataset,
    batch_size: int,
    loss: Loss | None = None,
    *,
    shards: Any = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over a checked :class:`Dataset`.

    ``loss`` defaults to the model's (the last ``fit``'s); the fused head applies as in
    training. The sums stay on the device and are read once, at the end (two host round
    trips, however many batches). With ``shards``, each batch's pieces run at once on the
    model and its replicas (:mod:`arraycnn.nn.parallel`).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential, Softmax
    >>> model = Sequential([Dense(2, 2), Softmax()], backend="numpy", seed=0)
    >>> model.build((2,))
    (2,)
    >>> data = Dataset(np.array([[1.0, 0.0], [0.0, 1.0]]), on_host=True, y=np.array([0, 1]))
    >>> scores = evaluate_dataset(model, data, 256, resolve_loss("cross_entropy"))
    >>> round(scores["loss"], 4), scores["accuracy"]
    (0.7486, 0.5)
    """
    if data.n == 0:
        raise ValueError("there is nothing to evaluate: 0 samples")
    head = training_head(model.layers, model.output_shape, model.loss if loss is None else loss)
    tally = _Tally()
    for s in batches(data.n, batch_size):
        pieces = _shards_of(s, shards)
        if shards is None:
            results = [_eval_pass(model, model, data, s, head)]
        else:
            jobs = [
                (*portable_rows(data, rows, shards, i), head) for i, (rows, _) in enumerate(pieces)
            ]
            results = shards.run(eval_piece, jobs)
        tally.add(_combined(results, [weight for _, weight in pieces]), model.xp)
    return tally.means()


def evaluate(
    model: _Model,
    X: Any,
    y: Any,
    *,
    batch_size: int = 256,
    loss: Any = None,
    workers: Any = None,
    parallel: Any = "threads",
) -> dict[str, float]:
    """Mean loss and accuracy over a data set (see :meth:`Sequential.evaluate`).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential, Sigmoid
    >>> model = Sequential([Dense(2, 1), Sigmoid()], backend="numpy", seed=0)
    >>> scores = evaluate(model, np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 0]))
    >>> sorted(scores)  # binary cross-entropy: the model has one output
    ['accuracy', 'loss']
    """
    batch_size = positive_int(batch_size, "batch_size")
    workers = resolve_workers(workers)
    parallel = check_parallel(parallel, model)
    data = prepare_labeled(model, X, y, nonempty=True)
    batch_size = capped_batch(model, batch_size, "evaluate")
    if loss is None:
        loss = model.loss
    if loss is None:
        single = num_outputs(model.output_shape) == 1
        loss = "binary_crossentropy" if single else "categorical_crossentropy"
    with sharded(model, workers, parallel) as shards:
        return evaluate_dataset(model, data, batch_size, resolve_loss(loss), shards=shards)
