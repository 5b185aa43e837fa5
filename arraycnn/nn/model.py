"""``Sequential``: a stack of layers with ``fit`` / ``evaluate`` / ``predict``, save and load.

The model owns a backend (array namespace), a dtype and a device; layers are built for them
from the per-sample input shape. Parameters are addressed as ``"<layer index>.<name>"``
(``"0.w"``, ``"0.b"``, ``"3.w"``...), which is also how optimizer state is keyed.

The model is the layers and their passes; the rest lives beside it:

* :mod:`arraycnn.nn.data` — checking ``X`` / ``y`` (NumPy on the host or arrays of the model's
  namespace), batching, moving host batches to the device;
* :mod:`arraycnn.nn.training` — the loop behind ``fit`` (steps, Ctrl-C, callbacks, the fused
  Softmax / Sigmoid loss head), ``evaluate`` and :class:`History`;
* :mod:`arraycnn.nn.progress` — the progress bar or per-epoch lines;
* :mod:`arraycnn.nn.serialization` — the ``.npz`` model file of ``save`` / :func:`load_model`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import dask_arrays
from ..backend import backend_name, device_of, resolve_backend
from ..budget import WorkspaceError
from . import training
from .base import backward_through, forward_through, sample_shape
from .data import batches, check_seed, placement_of, positive_int, prepare_inputs, x_batch
from .parallel import resolve_workers, shard_rows
from .serialization import MODEL_DTYPES, ModelFileError, read_model, save_model
from .sharding import check_parallel, sharded
from .training import Callback, History

__all__ = ["History", "Sequential", "load_model"]

Array = Any


def _parameter_count(params: dict[str, Array]) -> int:
    return sum(math.prod(tuple(p.shape)) for p in params.values())


def _check_layers(layers: list[Any]) -> None:
    if not layers:
        raise ValueError("layers must not be empty")
    for i, layer in enumerate(layers):
        missing = [a for a in ("build", "forward", "backward") if not hasattr(layer, a)]
        if missing:
            raise TypeError(
                f"layers[{i}] ({type(layer).__name__}) is not a layer: no {', '.join(missing)}"
            )


def _model_device(xp: ModuleType, dtype: Any, device: Any) -> Any:
    """The device object of ``xp`` for ``device`` (None: the namespace's default device), as
    arrays on it report it (torch's ``"cpu"`` becomes ``torch.device("cpu")``).

    Raises
    ------
    ValueError
        If ``xp`` cannot allocate on ``device``; the message names both.
    """
    try:
        return device_of(xp.empty(0, dtype=dtype, device=device))  # (0,): a probe, no data
    except Exception as exc:  # each library refuses a foreign device with its own error
        raise ValueError(
            f"device {device!r} is not a device of backend {backend_name(xp)!r}: {exc}"
        ) from exc


def _table(rows: list[tuple[str, str, str]]) -> str:
    """Three left / left / right aligned columns."""
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)


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
        Floating dtype of parameters and activations: ``"float32"``, ``"float64"`` or
        ``"float16"`` (where the backend has it; the optimizers keep their state and compute
        their updates in float32 for float16 parameters, see :mod:`arraycnn.nn.optim`).
    seed : int, optional
        A non-negative int: seeds the initial weights (host-side NumPy generator, documented
        in :mod:`arraycnn.nn.init`) and the default shuffling of ``fit``.
    device : device, optional
        Where parameters, optimizer state and every pass live: a device of the backend
        (``"cpu"`` or ``torch.device("cuda")`` for torch, ``array_api_strict.Device("device1")``,
        a CuPy device...). Default: the backend's default device (for torch, its current
        default device). Whether it is an accelerator is read from the namespace and the
        device object (:func:`arraycnn.backend.is_accelerator`).

    Attributes
    ----------
    device : device
        The device as arrays on it report it (torch's ``"cpu"`` reads ``device(type='cpu')``).

    Notes
    -----
    Data for ``fit``, ``predict``, ``predict_proba`` and ``evaluate`` is NumPy on the host
    (moved to the device one batch at a time) or arrays of the backend on the model's device
    (batched there); results are arrays on the model's device. Arrays of the backend on
    another device are refused with a ValueError naming both devices, before anything runs.

    The model is built on the first ``fit`` / ``predict`` from the data's per-sample shape
    (``X.shape[1:]``), or explicitly with :meth:`build`. Each layer's ``build`` refuses
    parameters (or one sample's output) larger than the memory available
    (:func:`arraycnn.budget.check_size`) with a :class:`~arraycnn.budget.WorkspaceError`
    before allocating them.

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.nn import Dense, Flatten, Sequential, Softmax
    >>> model = Sequential([Flatten(), Dense(4, 3), Softmax()], backend="numpy", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((6, 1, 2, 2))
    >>> history = model.fit(X, np.arange(6) % 3, epochs=2, batch_size=3, progress=False)
    >>> history.epochs, model.predict(X).shape
    ([1, 2], (6,))
    """

    def __init__(
        self,
        layers: Sequence[Any],
        *,
        backend: str | ModuleType = "numpy",
        dtype: str = "float32",
        seed: int | None = None,
        device: Any = None,
    ):
        layers = list(layers)
        _check_layers(layers)
        if not isinstance(dtype, str) or dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype must be 'float32', 'float64' or 'float16', got {dtype!r}")
        self.layers = layers
        self.xp = resolve_backend(backend)
        self.dtype_name = dtype
        if not hasattr(self.xp, dtype):
            raise ValueError(f"dtype {dtype!r} is not available on backend {self.backend!r}")
        self.dtype = getattr(self.xp, dtype)
        self.device = _model_device(self.xp, self.dtype, device)
        self.seed = check_seed(seed, "seed")
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.loss: Any = None
        self.optimizer: Any = None

    # ---------------------------------------------------------------- structure

    @property
    def built(self) -> bool:
        """True once :meth:`build` succeeded (explicitly or on the first data).

        Examples
        --------
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)])
        >>> model.built, model.build((3,)), model.built
        (False, (2,), True)
        """
        return self.input_shape is not None

    @property
    def backend(self) -> str:
        """Short name of the model's backend.

        Examples
        --------
        >>> from arraycnn.nn import ReLU
        >>> Sequential([ReLU()], backend="array_api_strict").backend
        'array_api_strict'
        """
        return backend_name(self.xp)

    def __getstate__(self) -> dict[str, Any]:
        """For pickle (a worker process's copy, :mod:`arraycnn.nn.processes`): the backend
        by name, as a module cannot be pickled."""
        return {**self.__dict__, "xp": backend_name(self.xp)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, xp=resolve_backend(state["xp"]))

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
        WorkspaceError
            When a layer's parameters exceed the memory available (before they are allocated).

        Examples
        --------
        >>> from arraycnn.nn import Conv2D, Flatten, MaxPool2D
        >>> model = Sequential([Conv2D(1, 2, 3, padding=1), MaxPool2D(2), Flatten()])
        >>> model.build((1, 4, 4))  # (1, 4, 4) -> (2, 4, 4) -> (2, 2, 2) -> (8,)
        (8,)
        """
        shape = sample_shape(input_shape, "Sequential.build")
        rng = np.random.default_rng(self.seed)
        current = shape
        for i, layer in enumerate(self.layers):
            try:
                current = tuple(
                    layer.build(current, xp=self.xp, device=self.device, dtype=self.dtype, rng=rng)
                )
            except WorkspaceError as exc:
                raise WorkspaceError(f"layer {i} ({type(layer).__name__}): {exc}") from exc
            except ValueError as exc:
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) does not fit its input: {exc}"
                ) from exc
        self.input_shape = shape
        self.output_shape = current
        return current

    def parameters(self) -> dict[str, Array]:
        """All parameters keyed ``"<layer index>.<name>"``.

        Examples
        --------
        >>> from arraycnn.nn import Dense, ReLU
        >>> model = Sequential([Dense(3, 2), ReLU(), Dense(2, 1)], seed=0)
        >>> _ = model.build((3,))
        >>> {key: p.shape for key, p in model.parameters().items()}
        {'0.w': (3, 2), '0.b': (2,), '2.w': (2, 1), '2.b': (1,)}
        """
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, "params", {}).items()
        }

    def gradients(self) -> dict[str, Array]:
        """The gradients of the last backward pass, keyed like :meth:`parameters`.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)], seed=0)
        >>> _ = model.build((3,))
        >>> _ = model.forward(np.ones((4, 3), dtype=np.float32), training=True)
        >>> _ = model.backward(np.ones((4, 2), dtype=np.float32))
        >>> model.gradients()["0.b"]
        array([4., 4.], dtype=float32)
        """
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, "grads", {}).items()
        }

    def set_parameters(self, params: dict[str, Array]) -> None:
        """Write parameters back into the layers (keys as :meth:`parameters`).

        Raises
        ------
        KeyError
            For a key that names no parameter of the model.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)], seed=0)
        >>> _ = model.build((3,))
        >>> model.set_parameters({"0.b": np.ones(2, dtype=np.float32)})
        >>> model.parameters()["0.b"]
        array([1., 1.], dtype=float32)
        """
        for key, value in params.items():
            index, name = key.split(".", 1)
            layer_params = self.layers[int(index)].params
            if name not in layer_params:
                raise KeyError(f"no parameter {key!r} in this model")
            layer_params[name] = value

    def count_parameters(self) -> int:
        """Total number of scalar parameters.

        Examples
        --------
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)], seed=0)
        >>> _ = model.build((3,))
        >>> model.count_parameters()  # 3 * 2 weights + 2 biases
        8
        """
        return _parameter_count(self.parameters())

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable architecture: layer classes and configs, input shape, dtype.

        Examples
        --------
        >>> from arraycnn.nn import ReLU
        >>> Sequential([ReLU()], seed=3).get_config()
        {'layers': [{'class': 'ReLU', 'config': {}}], 'input_shape': None,
         'dtype': 'float32', 'seed': 3}
        """
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
        """A table of layers, per-sample output shapes and parameter counts.

        Examples
        --------
        >>> from arraycnn.nn import Dense, Flatten
        >>> model = Sequential([Flatten(), Dense(4, 3)], seed=0)
        >>> model.summary()
        'Sequential (not built yet)'
        >>> _ = model.build((1, 2, 2))
        >>> print(model.summary())
        layer      output shape  parameters
        input      (1, 2, 2)
        0 Flatten  (4,)                   0
        1 Dense    (3,)                  15
        total                            15
        """
        if not self.built:
            return "Sequential (not built yet)"
        rows = [("layer", "output shape", "parameters"), ("input", str(self.input_shape), "")]
        # Output shapes from a forward pass of one zero sample: exact for any layer, cheap.
        x = self.xp.zeros((1, *self.input_shape), dtype=self.dtype, device=self.device)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training=False)
            n = _parameter_count(getattr(layer, "params", {}))
            rows.append((f"{i} {type(layer).__name__}", str(tuple(x.shape[1:])), str(n)))
        rows.append(("total", "", str(self.count_parameters())))
        return _table(rows)

    # ---------------------------------------------------------------- passes

    def forward(self, x: Array, *, training: bool = False, stop: int | None = None) -> Array:
        """Run layers ``[0, stop)`` (all by default) on a batch in the model's namespace.

        Parameters
        ----------
        x : array, shape (N, *input_shape)
        training : bool
            Training mode (dropout active; layers keep what backward needs).
        stop : int, optional
            Skip the layers from ``stop`` on (``-1``: all but the last).

        Returns
        -------
        array, shape (N, *output shape of layer stop - 1)

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense, Softmax
        >>> model = Sequential([Dense(3, 2), Softmax()], seed=0)
        >>> _ = model.build((3,))
        >>> model.forward(np.ones((4, 3), dtype=np.float32)).sum(axis=1).round(4)
        array([1., 1., 1., 1.], dtype=float32)
        """
        return forward_through(self.layers, x, training=training, stop=stop)

    def backward(
        self, gy: Array, *, stop: int | None = None, input_grad: bool = True
    ) -> Array | None:
        """Back-propagate ``gy`` through layers ``[0, stop)`` in reverse; fills their grads.

        ``input_grad=False`` (training) lets the first layer skip the gradient with respect
        to the model's input where it can (a Conv2D's ``input_grad``); None is then returned.

        Returns
        -------
        array, shape (N, *input_shape), or None
            The gradient with respect to the input of the last forward.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)], seed=0)
        >>> _ = model.build((3,))
        >>> _ = model.forward(np.ones((4, 3), dtype=np.float32), training=True)
        >>> model.backward(np.ones((4, 2), dtype=np.float32)).shape
        (4, 3)
        """
        return backward_through(self.layers, gy, stop=stop, input_grad=input_grad)

    # ---------------------------------------------------------------- training

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
        progress: bool | None = None,
        callback: Callback | None = None,
        verbose: int | None = None,
        workers: int | None = None,
        parallel: str = "threads",
    ) -> History:
        """Train with mini-batch gradient descent.

        Parameters
        ----------
        X : array, shape (N, *sample_shape)
            NumPy (batches move to the backend per step) or the model's namespace; N >= 1.
        y : array, shape (N,) labels, or (N, K) one-hot / targets
            Labels are ints, or floats that are whole numbers, in ``[0, K)`` (0 or 1 for a
            model with one output, which also takes float targets).
        epochs, batch_size : int
            Positive. The last batch of an epoch may be smaller. A batch whose training step
            (the input and every layer's output for the batch, gradients and optimizer state)
            would not fit the memory available is refused before training
            (:func:`arraycnn.nn.training.check_batch`).
        loss : str or Loss
            ``"categorical_crossentropy"``, ``"binary_crossentropy"``, ``"mse"`` or an object.
        optimizer : str or Optimizer
            A name for :func:`arraycnn.nn.optim.get_optimizer` (default hyper-parameters) or an
            optimizer object (its state persists across ``fit`` calls).
        validation_data : (X_val, y_val), optional
            Evaluated at the end of every epoch (at least one sample).
        shuffle : bool
            Reshuffle the samples every epoch.
        seed : int, optional
            Shuffling seed, a non-negative int (default: the model's seed).
        progress : bool, optional
            A progress bar on a terminal, else one line per epoch (at most 80 columns);
            nothing if False. Default True, or what ``verbose`` says.
        callback : callable, optional
            ``callback(epoch, metrics)`` after every epoch (``metrics`` as recorded in the
            history); a true return value ends training there (early stopping). Checked to
            be callable before the first epoch.
        verbose : {0, 1, 2}, optional
            Keras' spelling of ``progress``: 0 is ``progress=False``, 1 and 2 are
            ``progress=True``. Giving both is allowed only where they agree.
        workers : int, optional
            Threads that train on each batch at once (``scipy.fft``'s convention: a negative
            value counts back from ``os.cpu_count()``; default 1). The batch is cut into
            ``workers`` shards that run forward and backward on replicas of the model sharing
            its parameters; their gradients are added, weighted by their share of the batch,
            before one optimizer step, so the update is the whole batch's up to rounding.
            Validation runs sharded too. Dropout draws each shard's masks from its own seeded
            source: a seeded run is reproducible for a given ``workers``. NumPy's BLAS runs
            one thread per worker meanwhile (:mod:`arraycnn.nn.parallel`). Pays on CPU
            backends (NumPy, array-api-strict; on torch, mind ``torch.set_num_threads``).
        parallel : {"threads", "processes"}
            Where the ``workers`` shards run: threads of this process (default), or, on the
            NumPy backend, worker processes (:mod:`arraycnn.nn.processes`), which share no
            GIL: faster per step, but each call starts its workers (about half a second) and a
            script must call ``fit`` under ``if __name__ == "__main__":``. The update is the
            same either way, up to rounding.

        Returns
        -------
        History
            Per-epoch metrics, as Keras' ``History``: ``history.history`` maps each metric
            name to its list of per-epoch values, ``history.epoch`` lists the 0-based epoch
            numbers (``history.epochs`` the 1-based ones). Ctrl-C stops training after the
            current step, keeps the weights, and returns the history of the completed
            epochs. A NaN or infinite training loss (divergence) gives one
            ``RuntimeWarning``.

        Raises
        ------
        TypeError, ValueError
            For a bad argument (the message names it; ``verbose`` outside 0, 1, 2 or
            disagreeing with ``progress`` is one), before anything is trained.
        WorkspaceError
            For a batch, or parameters (``build``), larger than the memory available.

        Notes
        -----
        With a last ``Softmax`` layer and categorical cross-entropy (or ``Sigmoid`` and binary
        cross-entropy), the loss is computed on the logits in its fused, stable form.

        Host round trips (a synchronisation with a GPU, each): a training step makes none of
        its own; the loss and accuracy are summed on the device and read at most
        :data:`~arraycnn.nn.progress.TICKS_PER_EPOCH` - 1 times per epoch by the progress bar
        (terminals only) and once at each epoch's end (validation too: once per epoch). A
        divergence warning comes from that end-of-epoch read. Values are validated once per
        ``fit``: NumPy ``X`` (NaN or infinity) on the host, at no device cost; ``X`` on the
        device with one reduction there and one read before the first step; labels ``y`` on the
        device are copied to the host once and checked there (range, length), and each batch
        of them moves back with its samples.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense, Softmax
        >>> model = Sequential([Dense(2, 2), Softmax()], seed=0)
        >>> X, y = np.array([[2.0, 0.0], [0.0, 2.0]] * 8), np.array([0, 1] * 8)
        >>> history = model.fit(X, y, epochs=3, batch_size=4, optimizer="adam", progress=False,
        ...                     validation_data=(X, y), callback=lambda epoch, m: epoch == 2)
        >>> history.epochs, sorted(history.history)
        ([1, 2], ['accuracy', 'epoch_time', 'loss', 'val_accuracy', 'val_loss'])
        """
        return training.fit(
            self,
            X,
            y,
            epochs=epochs,
            batch_size=batch_size,
            loss=loss,
            optimizer=optimizer,
            validation_data=validation_data,
            shuffle=shuffle,
            seed=seed,
            progress=training.resolve_progress(progress, verbose),
            callback=callback,
            workers=workers,
            parallel=parallel,
        )

    def evaluate(
        self,
        X: Any,
        y: Any,
        *,
        batch_size: int = 256,
        loss: Any = None,
        workers: int | None = None,
        parallel: str = "threads",
    ) -> dict[str, float]:
        """Mean loss and accuracy over a data set.

        Parameters
        ----------
        X : array, shape (N, *sample_shape)
        y : array, shape (N,) int labels, or (N, K) one-hot / targets
        batch_size : int
            Lowered where a batch would not fit the memory available (results do not depend
            on it).
        loss : str or Loss, optional
            Default: the loss of the last ``fit``, else categorical cross-entropy (or binary
            cross-entropy for a model with one output).
        workers : int, optional
            Threads that evaluate each batch's shards at once (as in :meth:`fit`).
        parallel : {"threads", "processes"}
            As in :meth:`fit`.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``

        Raises
        ------
        ValueError
            For zero samples (there is no mean to report), and for ``X`` / ``y`` that do
            not fit the model (see :meth:`fit`).

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense, Softmax
        >>> model = Sequential([Dense(2, 2), Softmax()], seed=0)
        >>> scores = model.evaluate(np.eye(2), np.array([0, 1]))
        >>> round(scores["loss"], 4), scores["accuracy"]
        (0.7486, 0.5)
        """
        return training.evaluate(
            self, X, y, batch_size=batch_size, loss=loss, workers=workers, parallel=parallel
        )

    # ---------------------------------------------------------------- inference

    def predict_proba(
        self,
        X: Any,
        *,
        batch_size: int = 256,
        workers: int | None = None,
        parallel: str = "threads",
    ) -> Array:
        """The last layer's output for every sample (class probabilities after Softmax).

        ``batch_size`` is lowered where a batch's pass would not fit the memory available
        (:func:`arraycnn.nn.training.capped_batch`); results do not depend on it.
        ``workers`` threads (or processes, ``parallel``) run each batch's shards at once (as
        in :meth:`fit`); a dask ``X`` runs on dask's own scheduler and takes no ``workers``.

        Returns
        -------
        array of the model's namespace, shape (N, *output_shape)
            Empty, shape (0, *output_shape), for zero samples.

        Raises
        ------
        WorkspaceError
            If not even one sample's pass fits the memory available.
        ValueError
            For ``workers`` other than 1 with a dask ``X``.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense, Softmax
        >>> model = Sequential([Dense(2, 3), Softmax()], seed=0)
        >>> proba = model.predict_proba(np.ones((5, 2)), batch_size=2)
        >>> proba.shape, proba.sum(axis=1).round(4).tolist()
        ((5, 3), [1.0, 1.0, 1.0, 1.0, 1.0])
        """
        batch_size = positive_int(batch_size, "batch_size")
        workers = resolve_workers(workers)
        parallel = check_parallel(parallel, self)
        if dask_arrays.is_dask_array(X):  # lazy, chunk by chunk (arraycnn.dask_arrays)
            _no_workers_on_dask(workers)
            return dask_arrays.predict_proba(self, X, batch_size=batch_size)
        data = prepare_inputs(self, X)
        batch_size = training.capped_batch(self, batch_size, "predict")
        place = placement_of(self)
        with sharded(self, workers, parallel) as shards:
            outputs = [
                self._forward_shards(data, s, place, shards) for s in batches(data.n, batch_size)
            ]
        if not outputs:
            return self.xp.zeros((0, *self.output_shape), dtype=self.dtype, device=self.device)
        return outputs[0] if len(outputs) == 1 else self.xp.concat(outputs, axis=0)

    def _forward_shards(self, data: Any, index: slice, place: Any, shards: Any) -> Array:
        """Inference on rows ``index`` of ``data``, in shards on ``shards`` where given."""
        if shards is None:
            return self.forward(x_batch(data, index, place), training=False)
        pieces = [
            training.portable_rows(data, rows, shards, i)
            for i, (rows, _) in enumerate(shard_rows(index, shards.workers))
        ]
        parts = shards.run(training.forward_piece, pieces)
        return parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=0)

    def predict(
        self,
        X: Any,
        *,
        batch_size: int = 256,
        workers: int | None = None,
        parallel: str = "threads",
    ) -> Array:
        """Predicted class labels, shape (N,), int64, in the model's namespace.

        Argmax over the outputs; with a single output unit, ``output > 0.5``. Zero samples
        give an empty array. ``workers`` and ``parallel`` as in :meth:`predict_proba`.

        Examples
        --------
        >>> import numpy as np
        >>> from arraycnn.nn import Dense, Sigmoid
        >>> model = Sequential([Dense(2, 1), Sigmoid()], seed=0)
        >>> labels = model.predict(np.array([[4.0, 0.0], [-4.0, 0.0]]))
        >>> labels.dtype, labels.shape
        (dtype('int64'), (2,))
        """
        if dask_arrays.is_dask_array(X):  # lazy, chunk by chunk (arraycnn.dask_arrays)
            _no_workers_on_dask(resolve_workers(workers))
            return dask_arrays.predict(self, X, batch_size=batch_size)
        proba = self.predict_proba(X, batch_size=batch_size, workers=workers, parallel=parallel)
        xp = self.xp
        flat = xp.reshape(proba, (proba.shape[0], math.prod(proba.shape[1:])))  # (N, ...) -> (N, K)
        if flat.shape[1] == 1:
            return xp.astype(flat[:, 0] > 0.5, xp.int64)
        return xp.astype(xp.argmax(flat, axis=1), xp.int64)

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write architecture and weights to one ``.npz`` file, atomically.

        The file holds a JSON header (layer classes and configs, input shape, dtype) under
        ``__arraycnn_model__`` and one array per parameter (``"0.w"``...). It is written to a
        temporary file in the same directory and moved into place with ``os.replace``, so a
        crash never leaves a half-written model. Load it with :func:`load_model`.

        Examples
        --------
        >>> import tempfile
        >>> from arraycnn.nn import Dense
        >>> model = Sequential([Dense(3, 2)], seed=0)
        >>> _ = model.build((3,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save(Path(tmp) / "model.npz")
        ...     print(path.name, load_model(path, dtype="float64").parameters()["0.w"].dtype)
        model.npz float64
        """
        return save_model(self, path)


def _no_workers_on_dask(workers: int) -> None:
    """Refuse ``workers`` for dask input: its chunks run on dask's scheduler."""
    if workers != 1:
        raise ValueError(
            f"workers={workers}: a dask X runs on dask's own scheduler (its threads or "
            "processes); leave workers at 1"
        )


def load_model(
    path: str | os.PathLike,
    *,
    backend: str | ModuleType = "numpy",
    dtype: str | None = None,
    device: Any = None,
) -> Sequential:
    """Rebuild a model written by :meth:`Sequential.save`, on any backend and device.

    Nothing in the file is trusted (see :mod:`arraycnn.nn.serialization`): the header and the
    declared shape and dtype of every array are checked, and the model is built from the
    header, before any array is read; each array is then read as exactly its declared size.

    Parameters
    ----------
    path : path-like
    backend : str or module
        Where the loaded model runs (need not be the one it was trained on).
    dtype : str, optional
        Override the saved dtype.
    device : device, optional
        Where the parameters are placed (as ``Sequential(device=...)``; the file does not
        record a device: a model saved from any device loads onto any other).

    Raises
    ------
    ValueError
        If ``device`` is not a device of ``backend``.
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        (a ``ValueError``) If the file is not a sound arraycnn model file: not a zip of
        ``.npy`` arrays, a header of the wrong form, arrays whose declared sizes do not
        match the file or the architecture, non-floating dtypes, NaN or infinite
        parameters. The message names the file.
    WorkspaceError
        If the architecture's parameters exceed the memory available (nothing is allocated).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from arraycnn.backend import to_numpy
    >>> from arraycnn.nn import Dense, Softmax
    >>> model = Sequential([Dense(3, 2), Softmax()], seed=0)
    >>> _ = model.build((3,))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     loaded = load_model(model.save(Path(tmp) / "m.npz"), backend="array_api_strict")
    >>> loaded.backend
    'array_api_strict'
    >>> X = np.ones((2, 3), dtype=np.float32)
    >>> np.allclose(to_numpy(loaded.predict_proba(X)), model.predict_proba(X))
    True
    """
    saved = read_model(path)
    header = saved.header
    model = Sequential(
        saved.layers(),
        backend=backend,
        dtype=dtype or header["dtype"],
        seed=header.get("seed"),
        device=device,
    )
    try:
        model.build(tuple(header["input_shape"]))
    except WorkspaceError as exc:
        raise WorkspaceError(f"{str(saved.path)!r}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ModelFileError(saved.path, f"its architecture does not build: {exc}") from exc
    model.set_parameters(saved.parameters_for(model.parameters(), placement_of(model)))
    return model
