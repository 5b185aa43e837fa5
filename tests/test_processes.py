"""Data parallelism on worker processes (``parallel="processes"``): a process-sharded SGD step
against finite differences of an independent loop forward, sharded fits and inference against
the one-process ones, dropout's replicas (a worker is the thread replica of its index), pickling
a model, and every error path (bad arguments, an exception or a death in a worker, no process
left behind).

Each test starts worker processes (a fresh interpreter each, about a second): the file keeps
their number small.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest
from test_model import host_forward_logits, small_cnn, toy_images
from test_parallel import check_sharded_sgd_step, dropout_model, host_params

from arraycnn.backend import to_numpy
from arraycnn.nn.activations import Softmax
from arraycnn.nn.base import Layer
from arraycnn.nn.layers import Dense, Flatten
from arraycnn.nn.model import Sequential
from arraycnn.nn.optim import Adam
from arraycnn.nn.processes import ParameterLayout, RemoteError
from arraycnn.testing import assert_close


def in_a_worker() -> bool:
    return multiprocessing.current_process().name.startswith("arraycnn-shard")


def no_worker_left() -> bool:
    return not [p for p in multiprocessing.active_children() if p.name.startswith("arraycnn")]


def test_a_process_sharded_sgd_step_follows_the_finite_difference_gradient(rng):
    """Shards of 4/4/4 on this process and two workers."""
    check_sharded_sgd_step(rng, workers=3, parallel="processes")
    assert no_worker_left()


def test_fit_evaluate_and_predict_on_processes_match_one_process(rng):
    """Without dropout: shuffled batches with a last one smaller than the workers, Adam's
    state (the workers see every update), validation, the history, then inference."""
    X, y = toy_images(rng, n=23)
    runs = []
    for workers in (1, 2):
        model = small_cnn(seed=3)
        history = model.fit(
            X,
            y,
            epochs=3,
            batch_size=5,
            optimizer=Adam(lr=0.05),
            validation_data=(X[:5], y[:5]),
            seed=1,
            progress=False,
            workers=workers,
            parallel="processes",
        )
        runs.append((model, host_params(model), history.history))
    (_, params_1, history_1), (model, params_2, history_2) = runs
    for key in params_1:
        assert_close(params_2[key], params_1[key], err_msg=key)
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert_close(np.array(history_2[metric]), np.array(history_1[metric]), err_msg=metric)

    logits = host_forward_logits(params_2, X)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba = e / e.sum(axis=1, keepdims=True)
    assert_close(model.predict_proba(X, batch_size=7, workers=2, parallel="processes"), proba)
    labels = model.predict(X, workers=2, parallel="processes")
    np.testing.assert_array_equal(to_numpy(labels), proba.argmax(axis=1))
    scores = model.evaluate(X, y, batch_size=8, workers=2, parallel="processes")
    assert scores["accuracy"] == pytest.approx(float((proba.argmax(axis=1) == y).mean()))
    assert no_worker_left()


def test_with_dropout_a_worker_draws_the_masks_of_its_thread_replica(rng):
    """Worker i runs replica i of every layer, so a seeded process run drops the units the
    seeded thread run drops: the same parameters to rounding (and not those of one thread)."""
    X, y = rng.standard_normal((40, 1, 4, 4)), np.arange(40) % 3
    params = {}
    for workers, parallel in ((3, "threads"), (3, "processes"), (1, "threads")):
        model = dropout_model()
        model.fit(X, y, epochs=2, batch_size=10, seed=0, progress=False, workers=workers,
                  parallel=parallel)  # fmt: skip
        params[workers, parallel] = host_params(model)
    for key, value in params[3, "threads"].items():
        assert_close(params[3, "processes"][key], value, err_msg=key)
    assert any(not np.allclose(params[1, "threads"][k], v) for k, v in params[3, "threads"].items())


def test_a_model_survives_pickling_with_its_backend_and_dropout():
    model = dropout_model()
    model.build((1, 4, 4))
    twin = pickle.loads(pickle.dumps(model))
    assert twin.xp is model.xp and twin.layers[3]._xp is model.layers[3]._xp
    x = np.linspace(-1, 1, 32).reshape(2, 1, 4, 4)
    assert_close(twin.predict_proba(x), model.predict_proba(x))


def test_the_parameter_layout_views_a_block_in_place():
    model = Sequential([Dense(2, 3), Dense(3, 1)], seed=0)
    model.build((2,))
    layout = ParameterLayout.of(model.layers)
    block = bytearray(layout.nbytes)
    views = layout.views(block)
    assert [(i, name, v.shape) for (i, name), v in views.items()] == [
        (0, "w", (2, 3)),
        (0, "b", (3,)),
        (1, "w", (3, 1)),
        (1, "b", (1,)),
    ]
    views[1, "w"][...] = 7.0
    flat = np.frombuffer(block, dtype=np.float32)
    assert np.count_nonzero(flat == 7.0) == 3 and flat.size == 2 * 3 + 3 + 3 + 1
    stand_ins = layout.layers(block, 2)
    assert stand_ins[1].grads["w"].tolist() == [[7.0], [7.0], [7.0]]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("parallel", "error", "match"),
    [
        ("gpus", ValueError, "parallel must be one of 'threads', 'processes', got 'gpus'"),
        (2, TypeError, "parallel must be a str, got int 2"),
    ],
)
def test_a_bad_parallel_is_refused_before_anything_runs(rng, parallel, error, match):
    X, y = toy_images(rng, n=4)
    model = small_cnn()
    with pytest.raises(error, match=match):
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2, parallel=parallel)
    with pytest.raises(error, match=match):
        model.predict(X, workers=2, parallel=parallel)
    with pytest.raises(error, match=match):
        model.evaluate(X, y, workers=2, parallel=parallel)


def test_processes_need_the_numpy_backend(rng):
    X, y = toy_images(rng, n=4)
    model = small_cnn(backend="array_api_strict")
    with pytest.raises(ValueError, match=r"'processes' needs the numpy .*'array_api_strict'"):
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2, parallel="processes")


class FailsInWorkers(Layer):
    """Identity, except in a worker process: ``mode`` "raise" raises, "exit" kills it."""

    def __init__(self, mode: str = "raise") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x, *, training=False):
        if in_a_worker():
            if self.mode == "exit":
                os._exit(3)
            raise ArithmeticError("shard broke on purpose")
        return x

    def backward(self, gy):
        return gy

    def get_config(self):
        return {"mode": self.mode}


def test_an_exception_in_a_worker_reaches_the_caller_with_its_traceback(rng):
    X, y = toy_images(rng, n=8)
    model = Sequential([Flatten(), FailsInWorkers(), Dense(36, 4), Softmax()], seed=0)
    with pytest.raises(RemoteError, match=r"(?s)in worker process 1:.*broke on purpose") as info:
        model.fit(X, y, epochs=1, batch_size=8, progress=False, workers=2, parallel="processes")
    assert isinstance(info.value.__cause__, ArithmeticError)
    assert no_worker_left()


def test_a_worker_that_dies_is_reported_and_the_others_closed(rng):
    X = toy_images(rng, n=9)[0]
    model = Sequential([Flatten(), FailsInWorkers("exit"), Dense(36, 4), Softmax()], seed=0)
    with pytest.raises(RuntimeError, match=r"worker process \d .* exited unexpectedly "
                       r"\(exit code 3\)"):  # fmt: skip
        model.predict(X, workers=3, parallel="processes")
    assert no_worker_left()


def test_a_model_that_cannot_be_pickled_is_refused_before_any_worker_starts(rng):
    class Local(Layer):  # a class defined in a function cannot be pickled
        def forward(self, x, *, training=False):
            return x

        def backward(self, gy):
            return gy

    X, y = toy_images(rng, n=4)
    model = Sequential([Flatten(), Local(), Dense(36, 4), Softmax()], seed=0)
    with pytest.raises(TypeError, match=r"parallel='processes' sends the model .* by pickle, "
                       r"which failed: .*Local.*; use parallel='threads'"):  # fmt: skip
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2, parallel="processes")
    assert no_worker_left()


class BreaksOnArrival(FailsInWorkers):
    """Unpickles everywhere but in a worker process (as a class the worker cannot import)."""

    def __setstate__(self, state):
        if in_a_worker():
            raise ImportError("no module named 'elsewhere'")
        self.__dict__.update(state)


def test_a_worker_that_cannot_load_the_model_reports_why(rng):
    X, y = toy_images(rng, n=4)
    model = Sequential([Flatten(), BreaksOnArrival(), Dense(36, 4), Softmax()], seed=0)
    with pytest.raises(RemoteError, match=r"(?s)in worker process 1:.*no module named") as info:
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2, parallel="processes")
    assert isinstance(info.value.__cause__, ImportError)
    assert no_worker_left()
