"""Data parallelism on worker processes: ``fit(..., workers=k, parallel="processes")``.

The shards of a batch run as with threads (:mod:`arraycnn.nn.parallel`): shard 0 on the
calling process with the model itself, shard ``i`` on worker process ``i`` with a copy of
the replica its thread would have (:class:`~arraycnn.nn.parallel.Replica` ``i``, made in
the calling process: Dropout's replicas draw the same masks), each shard's loss gradient
weighted by its share of the batch; the gradients are added and one optimizer step runs in
the calling process.

Why processes: each NumPy operation hands the GIL over twice, and with several hundred
operations per step, many of them a few microseconds long, two threads spend a fifth of a
step waiting for it (docs/performance.md). Processes share no GIL; they pay instead

* a start: each worker is a fresh interpreter (the ``spawn`` start method: safe with threads,
  JAX and torch loaded) that imports arraycnn and unpickles the model, about half a second per
  call of ``fit``, ``evaluate`` or ``predict``;
* per step, the shard's samples sent to the worker through a pipe, and the parameters and
  gradients through shared memory: one block of every parameter, which the workers' layers
  use in place and the calling process refreshes after each optimizer step, and one block of
  gradients per worker, which it adds into the model's.

NumPy only (the blocks are host memory): other backends take ``parallel="threads"``. As with
any ``spawn`` start, a script that calls ``fit`` at import time must do so under
``if __name__ == "__main__":``. Workers ignore Ctrl-C (the calling process stops training at
the end of the step, and closes them); an exception in a worker is raised in the caller with
the worker's traceback; a worker that dies raises RuntimeError. Every worker is closed when
the call returns or raises.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from .parallel import Replica, _one_blas_thread, add_layer_gradients

__all__ = ["ParameterLayout", "ProcessShards", "RemoteError"]

Array = Any

#: Seconds a worker gets to exit after it is asked to, before it is terminated.
CLOSE_SECONDS = 5.0


class RemoteError(RuntimeError):
    """An exception raised in a worker process; its traceback is the message, and the
    original exception (where it could be pickled) the ``__cause__``.

    Examples
    --------
    >>> try:
    ...     raise RemoteError("in worker process 1: Traceback ...") from KeyError("w")
    ... except RemoteError as error:
    ...     type(error.__cause__).__name__
    'KeyError'
    """


@dataclass(frozen=True)
class ParameterLayout:
    """Where each parameter lives in a shared block: ``(layer, name, shape, dtype, offset)``
    rows (host arithmetic).

    Examples
    --------
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(2, 3)], seed=0)
    >>> _ = model.build((2,))
    >>> layout = ParameterLayout.of(model.layers)
    >>> [(i, name, shape, offset) for i, name, shape, _, offset in layout.entries]
    [(0, 'w', (2, 3), 0), (0, 'b', (3,), 24)]
    >>> layout.nbytes
    36
    """

    entries: tuple[tuple[int, str, tuple[int, ...], str, int], ...]
    nbytes: int

    @classmethod
    def of(cls, layers: Sequence[Any]) -> ParameterLayout:
        """The layout of the parameters of ``layers`` (NumPy arrays)."""
        entries, offset = [], 0
        for i, layer in enumerate(layers):
            for name, value in getattr(layer, "params", {}).items():
                entries.append((i, name, tuple(value.shape), str(value.dtype), offset))
                offset += value.nbytes
        return cls(tuple(entries), offset)

    def views(self, block: Any) -> dict[tuple[int, str], np.ndarray]:
        """Each parameter's array over the shared ``block`` (a buffer of :attr:`nbytes`)."""
        out = {}
        for i, name, shape, dtype, offset in self.entries:
            count = int(np.prod(shape, dtype=np.int64))
            flat = np.frombuffer(block, dtype=dtype, count=count, offset=offset)
            out[i, name] = flat.reshape(shape)  # (size,) -> the parameter's shape
        return out

    def layers(self, block: Any, count: int) -> list[SimpleNamespace]:
        """``count`` layer stand-ins whose ``grads`` are the arrays over ``block`` (for
        :func:`~arraycnn.nn.parallel.add_layer_gradients`)."""
        out = [SimpleNamespace(grads={}) for _ in range(count)]
        for (i, name), view in self.views(block).items():
            out[i].grads[name] = view
        return out


def _serve(conn: Any, blob: bytes, params: Any, grads: Any, layout: Any) -> None:
    """A worker process: the model and its replica from ``blob``, their parameters over the
    shared block ``params``; answers ``(job, piece, gradients)`` messages with
    ``job(replica, model, piece)``, writing the replica's gradients into ``grads`` when
    asked, until ``None`` comes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller handles Ctrl-C
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    try:
        model, runner = pickle.loads(blob)  # the replica's layers share the model's params dicts
    except BaseException as exc:  # e.g. a layer class the worker cannot import
        conn.send(("error", _portable_exception(exc), traceback.format_exc()))
        return
    for (i, name), view in layout.views(params).items():
        model.layers[i].params[name] = view
    grad_views = layout.views(grads)
    conn.send(("ready", None))
    while (message := conn.recv()) is not None:
        job, piece, gradients = message
        try:
            result = job(runner, model, piece)
            if gradients:
                for (i, name), view in grad_views.items():
                    view[...] = runner.layers[i].grads[name]
            conn.send(("ok", result))
        except BaseException as exc:
            conn.send(("error", _portable_exception(exc), traceback.format_exc()))


def _portable_exception(exc: BaseException) -> BaseException | None:
    """``exc`` if it survives pickling, else None (the traceback text still goes back)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


def _pickled(model_and_replica: tuple) -> bytes:
    """The model and a replica for a worker, pickled.

    Raises
    ------
    TypeError
        If they cannot be pickled (a layer holding a lambda, a class defined in a function):
        naming the reason and ``parallel="threads"``, which needs no pickling.
    """
    try:
        return pickle.dumps(model_and_replica)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"parallel='processes' sends the model to its workers by pickle, which failed: "
            f"{exc}; use parallel='threads'"
        ) from exc


class ProcessShards:
    """The worker processes of a ``workers > 1, parallel="processes"`` call (a context
    manager: the processes and the BLAS limit last until it exits), with the methods of
    :class:`~arraycnn.nn.parallel.Shards` that training and inference use.

    Examples
    --------
    >>> import numpy as np
    >>> from arraycnn.nn import Dense, Sequential
    >>> from arraycnn.nn.training import forward_piece
    >>> model = Sequential([Dense(2, 3)], seed=0)
    >>> _ = model.build((2,))
    >>> with ProcessShards(model, 2) as shards:  # doctest: +SKIP
    ...     outs = shards.run(forward_piece, [np.ones((1, 2))] * 2)
    """

    #: The shards' pieces must carry their own samples (they cross a process boundary).
    remote = True

    def __init__(self, model: Any, workers: int) -> None:
        self.model = model
        self.workers = workers
        self.layout = ParameterLayout.of(model.layers)
        self._stack = contextlib.ExitStack()
        self._conns: list[Any] = []
        self._processes: list[Any] = []
        self._params: dict[tuple[int, str], np.ndarray] = {}
        self._grads: list[list[SimpleNamespace]] = []

    def __enter__(self) -> ProcessShards:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self._stack.enter_context(_one_blas_thread(self.model.xp))
        ctx = multiprocessing.get_context("spawn")
        size = max(1, self.layout.nbytes)
        params = ctx.RawArray("b", size)
        self._params = self.layout.views(params)
        self.publish()
        for index in range(1, self.workers):
            # made here, in order, as the thread replicas are (Dropout's seed stream)
            blob = _pickled((self.model, Replica(self.model.layers, index)))
            grads = ctx.RawArray("b", size)
            self._grads.append(self.layout.layers(grads, len(self.model.layers)))
            here, there = ctx.Pipe()
            process = ctx.Process(
                target=_serve,
                args=(there, blob, params, grads, self.layout),
                name=f"arraycnn-shard-{index}",
                daemon=True,
            )
            process.start()
            there.close()
            self._conns.append(here)
            self._processes.append(process)
        for index in range(1, self.workers):
            self._receive(index)

    def __exit__(self, *exc: object) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process in self._processes:
            process.join(CLOSE_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []
        self._stack.close()

    def _receive(self, index: int) -> Any:
        """The answer of worker ``index``: its result, or its exception raised here."""
        process = self._processes[index - 1]
        try:
            kind, *body = self._conns[index - 1].recv()
        except (EOFError, OSError):
            process.join(1.0)
            raise RuntimeError(
                f"worker process {index} ({process.name}) exited unexpectedly "
                f"(exit code {process.exitcode})"
            ) from None
        if kind == "error":
            original, text = body
            raise RemoteError(f"in worker process {index}:\n{text}") from original
        return body[0]

    def run(self, job: Callable[[Any, Any, Any], Any], pieces: Sequence[Any]) -> list[Any]:
        """``[job(runner_i, model_i, pieces[i]) ...]``: piece 0 here with the model, the others
        at once on the workers (``job`` and the pieces are pickled: a module-level function
        and host data). Every answer is read before an exception is raised."""
        return self._run(job, pieces, gradients=False)

    def run_training(self, job: Callable[[Any, Any, Any], Any], pieces: Sequence[Any]) -> list:
        """As :meth:`run`, and each worker writes its replica's gradients for
        :meth:`add_gradients`."""
        return self._run(job, pieces, gradients=True)

    def _run(self, job: Callable, pieces: Sequence[Any], *, gradients: bool) -> list[Any]:
        if len(pieces) > self.workers:
            raise ValueError(f"{len(pieces)} pieces for {self.workers} workers")
        for index, piece in enumerate(pieces[1:], start=1):
            self._conns[index - 1].send((job, piece, gradients))
        answers: list[Any] = [None] * len(pieces)
        failure: BaseException | None = None
        try:
            answers[0] = job(self.model, self.model, pieces[0])
        except BaseException as exc:
            failure = exc
        for index in range(1, len(pieces)):
            try:
                answers[index] = self._receive(index)
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return answers

    def add_gradients(self, count: int) -> None:
        """Add the gradients the workers of the last ``count - 1`` shards wrote into the
        model's layers' own (shard 0's)."""
        add_layer_gradients(self.model.layers, self._grads[: count - 1])

    def publish(self) -> None:
        """Copy the model's parameters (after an optimizer step) into the shared block the
        workers' layers use."""
        for (i, name), view in self._params.items():
            view[...] = self.model.layers[i].params[name]
