"""``Sequential``: a stack of layers with ``fit`` / ``evaluate`` / ``predict``, save and load.

The model owns a backend (array namespace), a dtype and a device; layers are built for them
from the per-sample input shape. Data may be NumPy arrays on the host or arrays of the model's
namespace:

* NumPy ``X`` stays on the host and each batch is moved to the backend as it is used — the one
  documented host -> device transfer (a no-op on the NumPy backend);
* ``X`` already in the model's namespace is batched on the device (``xp.take`` for shuffled
  batches, so array-api-strict works too);
* labels ``y`` are small: they are brought to the host once, validated there (range, length),
  and each batch of them is moved to the backend with its images.

Parameters are addressed as ``"<layer index>.<name>"`` (``"0.w"``, ``"0.b"``, ``"3.w"``...),
which is also how optimizer state is keyed.

When the last layer is ``Softmax`` and the loss is categorical cross-entropy, ``fit`` feeds the
pre-softmax logits to the loss's fused, numerically stable form (Keras does the same); likewise
``Sigmoid`` with binary cross-entropy. ``predict_proba`` still returns the last layer's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..backend import backend_name, device_of, resolve_backend, to_numpy

__all__ = ["History", "Sequential", "load_model"]

Array = Any

#: Key of the JSON header inside a saved model (.npz).
MODEL_HEADER_KEY = "__arraycnn_model__"
MODEL_FORMAT = "arraycnn.Sequential"
MODEL_FORMAT_VERSION = 1


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
    interrupted : bool
        True if Ctrl-C ended training early; the incomplete epoch is not recorded.
    steps : int
        Optimizer steps taken in total.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    interrupted: bool = False
    steps: int = 0

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics."""
        self.epochs.append(epoch)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]


# --------------------------------------------------------------------------------------------
# helpers (host side)
# --------------------------------------------------------------------------------------------


def _layer_registry() -> dict[str, type]:
    from . import layers

    return layers.LAYERS


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch_time")


@contextlib.contextmanager
def _sigint_as_flag(flag: dict[str, bool]) -> Iterator[None]:
    """Turn Ctrl-C into ``flag["stop"] = True`` while the block runs (main thread only).

    Outside the main thread signals cannot be caught; ``fit`` then also catches the
    KeyboardInterrupt exception itself (and stops at once, between two steps if it can).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if flag.get("stop"):  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Reporter:
    """Progress display: a rich bar on a terminal, one line per epoch otherwise."""

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int):
        self.enabled = enabled
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.live = enabled and sys.stdout.isatty()
        self._progress = None
        self._task = None

    def __enter__(self) -> _Reporter:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch {epoch}/{self.epochs}", total=self.steps_per_epoch, metrics=""
            )

    def step(self, loss: float, accuracy: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, advance=1, metrics=f"loss {loss:.4f}  accuracy {accuracy:.4f}"
            )

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        line = f"epoch {epoch}/{self.epochs}  {_format_metrics(metrics)}"
        line += f"  {metrics['epoch_time']:.1f} s"
        if self._progress is not None:
            self._progress.update(self._task, metrics=_format_metrics(metrics))
        elif self.enabled:
            print(line, flush=True)

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)


# --------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------


class Sequential:
    """A stack of layers applied in order.

    Parameters
    ----------
    layers : sequence of Layer
        ``arraycnn.nn`` layers and activations (anything with ``build``, ``forward``,
        ``backward``, ``params``, ``grads`` and ``get_config``).
    backend : str or module
        As in :func:`arraycnn.resolve_backend`: ``"numpy"``, ``"torch"``, ``"cupy"``,
        ``"array_api_strict"``, ... or a namespace module.
    dtype : str
        Floating dtype of parameters and activations (``"float32"`` or ``"float64"``).
    seed : int, optional
        Seeds the initial weights (host-side NumPy generator, documented in
        :mod:`arraycnn.nn.init`) and the default shuffling of ``fit``.

    Notes
    -----
    The model is built on the first ``fit`` / ``predict`` from the data's per-sample shape
    (``X.shape[1:]``), or explicitly with :meth:`build`.
    """

    def __init__(
        self,
        layers: Sequence[Any],
        *,
        backend: str | ModuleType = "numpy",
        dtype: str = "float32",
        seed: int | None = None,
    ):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must not be empty")
        for i, layer in enumerate(layers):
            missing = [a for a in ("build", "forward", "backward") if not hasattr(layer, a)]
            if missing:
                raise TypeError(
                    f"layers[{i}] ({type(layer).__name__}) is not a layer: no {', '.join(missing)}"
                )
        if dtype not in ("float32", "float64", "float16"):
            raise ValueError(f"dtype must be 'float32', 'float64' or 'float16', got {dtype!r}")
        self.layers = layers
        self.xp = resolve_backend(backend)
        self.dtype_name = dtype
        self.dtype = getattr(self.xp, dtype)
        self.device = device_of(self.xp.empty(0, dtype=self.dtype))
        self.seed = seed
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.loss: Any = None
        self.optimizer: Any = None

    # ---------------------------------------------------------------- structure

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    @property
    def backend(self) -> str:
        """Short name of the model's backend."""
        return backend_name(self.xp)

    def build(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Create every layer's parameters for samples of shape ``input_shape`` (no batch axis).

        Returns
        -------
        tuple of int
            The per-sample output shape.

        Raises
        ------
        ValueError
            ``"expected ... got ..."`` when a layer does not fit its input; the message
            names the layer.
        """
        shape = tuple(int(s) for s in input_shape)
        rng = np.random.default_rng(self.seed)
        current = shape
        for i, layer in enumerate(self.layers):
            try:
                current = tuple(
                    layer.build(current, xp=self.xp, device=self.device, dtype=self.dtype, rng=rng)
                )
            except ValueError as exc:
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) does not fit its input: {exc}"
                ) from exc
        self.input_shape = shape
        self.output_shape = current
        return current

    def parameters(self) -> dict[str, Array]:
        """All parameters keyed ``"<layer index>.<name>"``."""
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, "params", {}).items()
        }

    def gradients(self) -> dict[str, Array]:
        """The gradients of the last backward pass, keyed like :meth:`parameters`."""
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, "grads", {}).items()
        }

    def set_parameters(self, params: dict[str, Array]) -> None:
        """Write parameters back into the layers (keys as :meth:`parameters`)."""
        for key, value in params.items():
            index, name = key.split(".", 1)
            layer_params = self.layers[int(index)].params
            if name not in layer_params:
                raise KeyError(f"no parameter {key!r} in this model")
            layer_params[name] = value

    def count_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(np.prod(tuple(p.shape), dtype=np.int64)) for p in self.parameters().values())

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable architecture: layer classes and configs, input shape, dtype."""
        return {
            "layers": [
                {"class": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ],
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "dtype": self.dtype_name,
            "seed": self.seed,
        }

    def summary(self) -> str:
        """A table of layers, per-sample output shapes and parameter counts."""
        if not self.built:
            return "Sequential (not built yet)"
        rows = [("layer", "output shape", "parameters")]
        shape = self.input_shape
        rows.append(("input", str(shape), ""))
        # Output shapes from a forward pass of one zero sample: exact for any layer, cheap.
        x = self.xp.zeros((1, *shape), dtype=self.dtype, device=self.device)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training=False)
            n = sum(int(np.prod(tuple(p.shape))) for p in getattr(layer, "params", {}).values())
            rows.append((f"{i} {type(layer).__name__}", str(tuple(x.shape[1:])), str(n)))
        rows.append(("total", "", str(self.count_parameters())))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        return "\n".join(
            f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows
        )

    # ---------------------------------------------------------------- passes

    def forward(self, x: Array, *, training: bool = False, stop: int | None = None) -> Array:
        """Run layers ``[0, stop)`` (all by default) on a batch in the model's namespace."""
        for layer in self.layers[:stop]:
            x = layer.forward(x, training=training)
        return x

    def backward(self, gy: Array, *, stop: int | None = None) -> Array:
        """Back-propagate ``gy`` through layers ``[0, stop)`` in reverse; fills their grads."""
        for layer in reversed(self.layers[:stop]):
            gy = layer.backward(gy)
        return gy

    # ---------------------------------------------------------------- data checks

    def _check_X(self, X: Any, name: str = "X") -> tuple[Any, bool]:
        """Validate ``X``; return it and whether it lives on the host (NumPy)."""
        if isinstance(X, np.ndarray):
            on_host = True
        else:
            try:
                space = array_api_compat.array_namespace(X)
            except TypeError:
                raise TypeError(
                    f"{name} must be a NumPy array or an array of the model's backend "
                    f"({self.backend}), got {type(X).__name__}"
                ) from None
            if backend_name(space) != self.backend:
                raise TypeError(
                    f"{name} is a {backend_name(space)} array but the model runs on "
                    f"{self.backend}; pass NumPy data or convert it with arraycnn.asarray"
                )
            on_host = self.backend == "numpy"
            if on_host:
                X = np.asarray(X)
        if on_host:
            if X.dtype.kind not in "fiub":
                raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
            finite = bool(np.isfinite(X).all()) if X.dtype.kind == "f" else True
        else:
            if not self.xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
                raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
            finite = (
                bool(self.xp.all(self.xp.isfinite(X)))
                if self.xp.isdtype(X.dtype, "real floating")
                else True
            )
        if not finite:
            raise ValueError(f"{name} contains NaN or infinite values")
        if len(X.shape) < 2:
            raise ValueError(f"{name} must have a batch axis and sample axes, got shape {X.shape}")
        if self.built and tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{name}: expected samples of shape {self.input_shape} (the model's input), "
                f"got {tuple(X.shape[1:])} (X.shape = {tuple(X.shape)})"
            )
        return X, on_host

    def _check_y(self, y: Any, n: int, name: str = "y") -> np.ndarray:
        """Bring labels/targets to the host, check length, values and range."""
        y_host = np.asarray(to_numpy(y))
        if y_host.ndim == 0 or y_host.shape[0] != n:
            raise ValueError(
                f"X and {name} must have the same length, got {n} samples and "
                f"{y_host.shape[0] if y_host.ndim else 'a scalar'} labels"
            )
        if y_host.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold numbers, got dtype {y_host.dtype}")
        if y_host.dtype.kind == "f" and not np.isfinite(y_host).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        k = self._num_outputs()
        if y_host.dtype.kind in "iub" and y_host.ndim == 1:
            limit = max(k, 2)  # a single output unit means two classes, 0 and 1
            low, high = int(y_host.min(initial=0)), int(y_host.max(initial=0))
            if low < 0 or high >= limit:
                raise ValueError(
                    f"{name}: labels must be in [0, {limit}) for a model with {k} output(s), "
                    f"got values in [{low}, {high}]"
                )
        elif y_host.ndim == 2 and y_host.shape[1] != k:
            raise ValueError(
                f"{name}: expected one-hot targets of shape (N, {k}), got {y_host.shape}"
            )
        return y_host

    def _num_outputs(self) -> int:
        assert self.output_shape is not None
        return int(np.prod(self.output_shape)) if self.output_shape else 1

    def _ensure_built(self, X: Any) -> None:
        if not self.built:
            self.build(tuple(X.shape[1:]))

    # ---------------------------------------------------------------- batching

    def _to_device(self, a: np.ndarray, dtype: Any) -> Array:
        """Host batch -> model backend (the one documented host -> device transfer)."""
        return self.xp.asarray(np.ascontiguousarray(a), dtype=dtype, device=self.device)

    def _x_batch(self, X: Any, on_host: bool, index: np.ndarray | slice) -> Array:
        if on_host:
            return self._to_device(X[index], self.dtype)
        if isinstance(index, slice):
            batch = X[index, ...]
        else:
            idx = self.xp.asarray(index, dtype=self.xp.int64, device=self.device)
            batch = self.xp.take(X, idx, axis=0)
        if batch.dtype != self.dtype:
            batch = self.xp.astype(batch, self.dtype)
        return batch

    def _target_batch(self, y_host: np.ndarray, index: np.ndarray | slice, loss: Any) -> Array:
        """Targets for the loss: int labels for categorical cross-entropy, floats otherwise."""
        yb = y_host[index]
        k = self._num_outputs()
        if _is_categorical(loss):
            if yb.ndim == 1:
                return self._to_device(yb.astype(np.int64), self.xp.int64)
            return self._to_device(yb, self.dtype)
        if yb.ndim == 1 and k > 1:  # int labels for an elementwise loss: one-hot on the host
            onehot = np.zeros((yb.shape[0], k), dtype=np.float64)
            onehot[np.arange(yb.shape[0]), yb.astype(np.int64)] = 1.0
            yb = onehot
        yb = yb.reshape((yb.shape[0], *self.output_shape))  # (N,) -> (N, 1) for one output
        return self._to_device(yb, self.dtype)

    # ---------------------------------------------------------------- metrics

    def _correct(self, output: Array, y_host: np.ndarray, index, *, logits: bool) -> int:
        """Number of correct predictions in a batch (``output``: probabilities or logits)."""
        xp = self.xp
        flat = xp.reshape(output, (output.shape[0], -1))  # (N, ...) -> (N, K)
        yb = y_host[index]
        if flat.shape[1] == 1:
            threshold = 0.0 if logits else 0.5
            pred = flat[:, 0] > threshold
            truth = self._to_device(yb.reshape(-1) > 0.5, xp.bool)
        else:
            pred = xp.argmax(flat, axis=1)
            labels = yb if yb.ndim == 1 else np.argmax(yb, axis=1)
            truth = self._to_device(labels.astype(np.int64), pred.dtype)
        return int(xp.sum(xp.astype(pred == truth, xp.int32)))

    # ---------------------------------------------------------------- fit

    def _head(self, loss: Any) -> tuple[int | None, Any]:
        """Where the forward pass stops during training and which loss sees its output.

        Softmax + categorical cross-entropy and Sigmoid + binary cross-entropy run on the
        logits (the last layer is skipped) with the loss's fused stable form.
        """
        from . import losses

        last = type(self.layers[-1]).__name__
        if last == "Softmax" and isinstance(loss, losses.CategoricalCrossEntropy):
            if getattr(self.layers[-1], "axis", -1) in (-1, 1) and len(self.output_shape) == 1:
                return -1, losses.CategoricalCrossEntropy(from_logits=True)
        if last == "Sigmoid" and isinstance(loss, losses.BinaryCrossEntropy):
            return -1, losses.BinaryCrossEntropy(from_logits=True)
        return None, loss

    def fit(
        self,
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
        callback: Any = None,
    ) -> History:
        """Train with mini-batch gradient descent.

        Parameters
        ----------
        X : array, shape (N, *sample_shape)
            NumPy (batches move to the backend per step) or the model's namespace.
        y : array, shape (N,) int labels, or (N, K) one-hot / targets
        epochs, batch_size : int
            Positive. The last batch of an epoch may be smaller.
        loss : str or Loss
            ``"categorical_crossentropy"``, ``"binary_crossentropy"``, ``"mse"`` or an object.
        optimizer : str or Optimizer
            A name for :func:`arraycnn.nn.optim.get_optimizer` (default hyper-parameters) or an
            optimizer object (its state persists across ``fit`` calls).
        validation_data : (X_val, y_val), optional
            Evaluated at the end of every epoch.
        shuffle : bool
            Reshuffle the samples every epoch.
        seed : int, optional
            Shuffling seed (default: the model's seed).
        progress : bool
            A progress bar on a terminal, else one line per epoch; nothing if False.
        callback : callable, optional
            ``callback(epoch, metrics)`` after every epoch (``metrics`` as recorded in the
            history); a true return value ends training there (early stopping).

        Returns
        -------
        History
            Per-epoch metrics. Ctrl-C stops training after the current step, keeps the
            weights, and returns the history of the completed epochs.
        """
        from . import losses

        epochs = _positive_int(epochs, "epochs")
        batch_size = _positive_int(batch_size, "batch_size")
        try:
            loss_fn = losses.get_loss(loss)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"loss: unknown loss {loss!r} ({exc})") from exc
        if hasattr(optimizer, "step"):  # any object with the Optimizer.step contract
            opt = optimizer
        else:
            from . import optim

            try:
                opt = optim.get_optimizer(optimizer)
            except (ValueError, KeyError) as exc:
                raise ValueError(f"optimizer: unknown optimizer {optimizer!r} ({exc})") from exc
        X, on_host = self._check_X(X)
        n = int(X.shape[0])
        if n == 0:
            raise ValueError("X is empty (0 samples)")
        self._ensure_built(X)
        y_host = self._check_y(y, n)  # the label range depends on the built output size
        val = None
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            Xv, vh = self._check_X(validation_data[0], "validation X")
            val = (Xv, vh, self._check_y(validation_data[1], int(Xv.shape[0]), "validation y"))
        self.loss, self.optimizer = loss_fn, opt
        stop, train_loss = self._head(loss_fn)

        rng = np.random.default_rng(self.seed if seed is None else seed)
        steps_per_epoch = -(-n // batch_size)
        history = History()
        flag = {"stop": False}
        with _sigint_as_flag(flag), _Reporter(progress, epochs, steps_per_epoch) as reporter:
            for epoch in range(1, epochs + 1):
                started = time.perf_counter()
                order = rng.permutation(n) if shuffle else None
                reporter.start_epoch(epoch)
                loss_sum, correct, seen = 0.0, 0, 0
                for step in range(steps_per_epoch):
                    lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                    index = order[lo:hi] if order is not None else slice(lo, hi)
                    try:
                        value, hits = self._train_step(
                            X, on_host, y_host, index, stop, train_loss, opt
                        )
                    except KeyboardInterrupt:
                        flag["stop"] = True
                        break
                    history.steps += 1
                    count = hi - lo
                    loss_sum += value * count
                    correct += hits
                    seen += count
                    reporter.step(loss_sum / seen, correct / seen)
                    if flag["stop"]:
                        break
                if flag["stop"]:
                    history.interrupted = True
                    reporter.message(
                        f"training interrupted (Ctrl-C) in epoch {epoch} after "
                        f"{history.steps} steps; weights kept, history of "
                        f"{len(history.epochs)} completed epoch(s) returned"
                    )
                    break
                metrics = {"loss": loss_sum / seen, "accuracy": correct / seen}
                if val is not None:
                    v = self._evaluate(val[0], val[1], val[2], batch_size=max(batch_size, 256))
                    metrics["val_loss"] = v["loss"]
                    metrics["val_accuracy"] = v["accuracy"]
                metrics["epoch_time"] = time.perf_counter() - started
                history.record(epoch, metrics)
                reporter.end_epoch(epoch, metrics)
                if callback is not None and callback(epoch, dict(metrics)):
                    break
        return history

    def _train_step(self, X, on_host, y_host, index, stop, loss_fn, opt) -> tuple[float, int]:
        xb = self._x_batch(X, on_host, index)
        tb = self._target_batch(y_host, index, loss_fn)
        out = self.forward(xb, training=True, stop=stop)
        value, g = loss_fn(out, tb)
        self.backward(g, stop=stop)
        params = self.parameters()
        if params:
            grads = self.gradients()
            self.set_parameters(opt.step(params, {k: grads[k] for k in params}))
        return float(value), self._correct(out, y_host, index, logits=stop is not None)

    # ---------------------------------------------------------------- inference

    def _batches(self, n: int, batch_size: int) -> Iterator[slice]:
        for lo in range(0, n, batch_size):
            yield slice(lo, min(n, lo + batch_size))

    def predict_proba(self, X: Any, *, batch_size: int = 256) -> Array:
        """The last layer's output for every sample (class probabilities after Softmax).

        Returns
        -------
        array of the model's namespace, shape (N, *output_shape)
        """
        batch_size = _positive_int(batch_size, "batch_size")
        X, on_host = self._check_X(X)
        self._ensure_built(X)
        outputs = [
            self.forward(self._x_batch(X, on_host, s), training=False)
            for s in self._batches(int(X.shape[0]), batch_size)
        ]
        if not outputs:
            return self.xp.zeros((0, *self.output_shape), dtype=self.dtype, device=self.device)
        return self.xp.concat(outputs, axis=0)

    def predict(self, X: Any, *, batch_size: int = 256) -> Array:
        """Predicted class labels, shape (N,), int64, in the model's namespace.

        Argmax over the outputs; with a single output unit, ``output > 0.5``.
        """
        proba = self.predict_proba(X, batch_size=batch_size)
        xp = self.xp
        flat = xp.reshape(proba, (proba.shape[0], -1))  # (N, ...) -> (N, K)
        if flat.shape[1] == 1:
            return xp.astype(flat[:, 0] > 0.5, xp.int64)
        return xp.astype(xp.argmax(flat, axis=1), xp.int64)

    def evaluate(
        self, X: Any, y: Any, *, batch_size: int = 256, loss: Any = None
    ) -> dict[str, float]:
        """Mean loss and accuracy over a data set.

        Parameters
        ----------
        loss : str or Loss, optional
            Default: the loss of the last ``fit``, else categorical cross-entropy (or binary
            cross-entropy for a model with one output).

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``
        """
        from . import losses

        batch_size = _positive_int(batch_size, "batch_size")
        X, on_host = self._check_X(X)
        self._ensure_built(X)
        y_host = self._check_y(y, int(X.shape[0]))
        if loss is None:
            loss = self.loss
        if loss is None:
            loss = "binary_crossentropy" if self._num_outputs() == 1 else "categorical_crossentropy"
        try:
            loss_fn = losses.get_loss(loss)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"loss: unknown loss {loss!r} ({exc})") from exc
        return self._evaluate(X, on_host, y_host, batch_size=batch_size, loss=loss_fn)

    def _evaluate(self, X, on_host, y_host, *, batch_size: int, loss: Any = None) -> dict:
        stop, loss_fn = self._head(loss if loss is not None else self.loss)
        n = int(X.shape[0])
        total, correct = 0.0, 0
        for s in self._batches(n, batch_size):
            out = self.forward(self._x_batch(X, on_host, s), training=False, stop=stop)
            value, _ = loss_fn(out, self._target_batch(y_host, s, loss_fn))
            total += float(value) * (s.stop - s.start)
            correct += self._correct(out, y_host, s, logits=stop is not None)
        return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1)}

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write architecture and weights to one ``.npz`` file, atomically.

        The file holds a JSON header (layer classes and configs, input shape, dtype) under
        ``__arraycnn_model__`` and one array per parameter (``"0.w"``...). It is written to a
        temporary file in the same directory and moved into place with ``os.replace``, so a
        crash never leaves a half-written model. Load it with :func:`load_model`.
        """
        if not self.built:
            raise ValueError("the model is not built yet: call build(input_shape) or fit first")
        path = Path(path)
        header = {
            "format": MODEL_FORMAT,
            "version": MODEL_FORMAT_VERSION,
            **self.get_config(),
        }
        arrays = {key: to_numpy(value) for key, value in self.parameters().items()}
        arrays[MODEL_HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _is_categorical(loss: Any) -> bool:
    from . import losses

    return isinstance(loss, losses.CategoricalCrossEntropy)


def load_model(
    path: str | os.PathLike,
    *,
    backend: str | ModuleType = "numpy",
    dtype: str | None = None,
) -> Sequential:
    """Rebuild a model written by :meth:`Sequential.save`, on any backend.

    Parameters
    ----------
    path : path-like
    backend : str or module
        Where the loaded model runs (need not be the one it was trained on).
    dtype : str, optional
        Override the saved dtype.

    Raises
    ------
    ValueError
        If the file is not an arraycnn model (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if MODEL_HEADER_KEY not in npz.files:
                raise ValueError("no model header")
            header = json.loads(bytes(npz[MODEL_HEADER_KEY]).decode())
            arrays = {k: npz[k] for k in npz.files if k != MODEL_HEADER_KEY}
        if header.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
    except Exception as exc:
        raise ValueError(
            f"{str(path)!r} is not an arraycnn model file (written by Sequential.save): {exc}"
        ) from exc
    registry = _layer_registry()
    layers = []
    for i, entry in enumerate(header["layers"]):
        cls = registry.get(entry["class"])
        if cls is None:
            raise ValueError(
                f"{str(path)!r}: layer {i} has unknown class {entry['class']!r}; "
                f"known: {sorted(registry)}"
            )
        layers.append(cls(**entry["config"]))
    model = Sequential(
        layers, backend=backend, dtype=dtype or header["dtype"], seed=header.get("seed")
    )
    model.build(tuple(header["input_shape"]))
    expected = model.parameters()
    if set(expected) != set(arrays):
        raise ValueError(
            f"{str(path)!r}: parameters {sorted(arrays)} do not match the architecture's "
            f"{sorted(expected)}"
        )
    loaded = {}
    for key, current in expected.items():
        if tuple(arrays[key].shape) != tuple(current.shape):
            raise ValueError(
                f"{str(path)!r}: parameter {key!r} has shape {arrays[key].shape}, "
                f"expected {tuple(current.shape)}"
            )
        loaded[key] = model.xp.asarray(arrays[key], dtype=model.dtype, device=model.device)
    model.set_parameters(loaded)
    return model
