"""Data parallelism on threads (``fit`` / ``evaluate`` / ``predict`` with ``workers``): a sharded
step against finite differences of an independent loop forward, sharded passes against the
one-thread ones, dropout's replicas, the BLAS limit, the threads really used, and every error
path.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from test_model import (
    PlainSGD,
    check_sgd_step,
    host_cross_entropy,
    host_forward_logits,
    small_cnn,
    toy_images,
)
from threadpoolctl import threadpool_info, threadpool_limits

from arraycnn.backend import to_numpy
from arraycnn.nn.activations import ReLU, Softmax
from arraycnn.nn.base import Layer
from arraycnn.nn.layers import Dense, Dropout, Flatten
from arraycnn.nn.model import Sequential
from arraycnn.nn.optim import Adam
from arraycnn.nn.parallel import resolve_workers, shard_bounds
from arraycnn.testing import assert_close

CPUS = os.cpu_count() or 1


def host_params(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in model.parameters().items()}


# ------------------------------------------------------------------------------ the sharded step


def check_sharded_sgd_step(rng, backend="numpy", **sharding) -> None:
    """One full-batch SGD step of 12 samples with ``sharding`` (``workers``, ``parallel``)
    moves every parameter by -lr * dL/dp of the whole batch's mean loss."""
    X, y = toy_images(rng)
    model = small_cnn(backend=backend)
    model.build((1, 6, 6))
    before = host_params(model)
    lr = 0.5
    model.fit(
        X, y, epochs=1, batch_size=len(X), optimizer=PlainSGD(lr), shuffle=False,
        progress=False, **sharding,
    )  # fmt: skip
    check_sgd_step(before, host_params(model), lr, X, y)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_a_sharded_sgd_step_follows_the_finite_difference_gradient(xp, rng, workers):
    """Shards of 6/6, 4/4/4 and 3/3/2/2/2 (unequal shares)."""
    check_sharded_sgd_step(rng, backend=xp, workers=workers)


@pytest.mark.parametrize(("n", "batch_size", "workers"), [(23, 5, 2), (7, 4, 3), (9, 4, 8)])
def test_fit_on_workers_trains_as_one_thread_does(rng, n, batch_size, workers):
    """Without dropout the sharded fit is the one-thread fit up to rounding: shuffled batches,
    a last batch smaller than the workers, Adam's state, validation and the history."""
    X, y = toy_images(rng, n=n)
    runs = []
    for count in (1, workers):
        model = small_cnn(seed=3)
        history = model.fit(
            X,
            y,
            epochs=2,
            batch_size=batch_size,
            optimizer=Adam(lr=0.05),
            validation_data=(X[:5], y[:5]),
            seed=1,
            progress=False,
            workers=count,
        )
        runs.append((host_params(model), history.history))
    (params_1, history_1), (params_k, history_k) = runs
    for key in params_1:
        assert_close(params_k[key], params_1[key], err_msg=key)
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert_close(np.array(history_k[metric]), np.array(history_1[metric]), err_msg=metric)


def test_evaluate_and_predict_on_workers_agree_with_the_loop_forward(rng):
    X, y = toy_images(rng, n=19)
    model = small_cnn()
    model.build((1, 6, 6))
    logits = host_forward_logits(host_params(model), X)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba = e / e.sum(axis=1, keepdims=True)
    assert_close(model.predict_proba(X, batch_size=7, workers=3), proba)
    np.testing.assert_array_equal(to_numpy(model.predict(X, workers=2)), proba.argmax(axis=1))
    scores = model.evaluate(X, y, batch_size=8, workers=3)
    assert scores["loss"] == pytest.approx(host_cross_entropy(logits, y), rel=1e-12)
    assert scores["accuracy"] == pytest.approx(float((proba.argmax(axis=1) == y).mean()))


def test_shards_run_on_worker_threads_at_once():
    """Every shard but the first runs on a pool thread; two shards overlap in time."""
    seen: set[str] = set()
    barrier = threading.Barrier(2, timeout=10)

    class Meeting(Layer):
        def forward(self, x, *, training=False):
            seen.add(threading.current_thread().name)
            barrier.wait()  # only returns when the other shard is here at the same time
            return x

        def backward(self, gy):
            return gy

    model = Sequential([Flatten(), Meeting(), Dense(4, 2), Softmax()], seed=0)
    model.predict_proba(np.ones((6, 1, 2, 2)), workers=2)
    assert threading.current_thread().name in seen
    assert any(name.startswith("arraycnn-shard") for name in seen), seen


# ------------------------------------------------------------------------------ dropout replicas


def dropout_model(seed=0):
    layers = [Flatten(), Dense(16, 32), ReLU(), Dropout(0.5), Dense(32, 3), Softmax()]
    return Sequential(layers, dtype="float64", seed=seed)


def test_a_seeded_sharded_run_with_dropout_is_reproducible(rng):
    X, y = rng.standard_normal((40, 1, 4, 4)), np.arange(40) % 3
    results = []
    for _ in range(2):
        model = dropout_model()
        model.fit(X, y, epochs=2, batch_size=10, seed=0, progress=False, workers=2)
        results.append(host_params(model))
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


def test_dropout_replicas_draw_their_own_masks():
    layer = Dropout(0.5)
    layer.build((1000,), rng=np.random.default_rng(0))
    twins = [layer.replica(1), layer.replica(2)]
    x = np.ones((1, 1000))
    masks = [lay.forward(x, training=True) != 0 for lay in (layer, *twins)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert twins[0].params is layer.params and twins[0].grads is not layer.grads


def test_a_replica_of_an_unbuilt_dropout_is_refused():
    with pytest.raises(RuntimeError, match="Dropout has no random source yet"):
        Dropout(0.5).replica(1)


# ------------------------------------------------------------------------------ BLAS threads


def test_blas_runs_one_thread_per_worker_during_fit_and_is_restored(rng):
    if not any(info["user_api"] == "blas" for info in threadpool_info()):
        pytest.skip("no BLAS library that threadpoolctl can limit")
    X, y = toy_images(rng)
    during: list[set[int]] = []

    def record(epoch, metrics):
        during.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    with threadpool_limits(limits=2, user_api="blas"):
        small_cnn().fit(X, y, epochs=1, batch_size=6, progress=False, workers=2, callback=record)
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert during == [{1}]
    assert after == {2}


# ------------------------------------------------------------------------------ shards, workers


@pytest.mark.parametrize(
    ("n", "shards", "expected"),
    [
        (64, 2, [(0, 32), (32, 64)]),
        (10, 3, [(0, 4), (4, 7), (7, 10)]),
        (2, 5, [(0, 1), (1, 2)]),
        (1, 1, [(0, 1)]),
    ],
)
def test_shard_bounds_cover_the_batch_in_near_equal_pieces(n, shards, expected):
    assert shard_bounds(n, shards) == expected


def test_workers_follow_scipy_fft(monkeypatch):
    assert resolve_workers(None) == 1
    assert resolve_workers(np.int64(3)) == 3
    assert resolve_workers(-1) == CPUS
    assert resolve_workers(-CPUS) == 1


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("workers", "error", "match"),
    [
        (0, ValueError, r"workers must be a positive int .* got 0"),
        (-(CPUS + 1), ValueError, rf"counting back from the {CPUS} CPUs .* got {-(CPUS + 1)}"),
        (1.5, TypeError, r"workers must be an int, got float 1\.5"),
        ("2", TypeError, r"workers must be an int, got str '2'"),
        (True, TypeError, r"workers must be an int, got bool True"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "evaluate", "predict_proba", "predict"])
def test_bad_workers_are_refused_before_anything_runs(rng, workers, error, match, method):
    X, y = toy_images(rng)
    model = small_cnn()
    model.build((1, 6, 6))
    before = host_params(model)
    kwargs = {"epochs": 1, "batch_size": 4, "progress": False} if method == "fit" else {}
    args = (X,) if method.startswith("predict") else (X, y)
    with pytest.raises(error, match=match):
        getattr(model, method)(*args, workers=workers, **kwargs)
    for key, value in host_params(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_workers_with_dask_input_are_refused():
    da = pytest.importorskip("dask.array")
    model = small_cnn()
    model.build((1, 6, 6))
    X = da.zeros((4, 1, 6, 6), chunks=2)
    for method in (model.predict_proba, model.predict):
        with pytest.raises(ValueError, match="workers=2: a dask X runs on dask's own scheduler"):
            method(X, workers=2)


def test_a_layer_without_replica_is_refused_for_workers(rng):
    class DuckIdentity:
        """A layer by duck typing only (no replica)."""

        def __init__(self):
            self.params, self.grads = {}, {}

        def build(self, input_shape, **kwargs):
            return tuple(input_shape)

        def forward(self, x, *, training=False):
            return x

        def backward(self, gy):
            return gy

        def get_config(self):
            return {}

    model = Sequential([Flatten(), DuckIdentity(), Dense(36, 4), Softmax()], seed=0)
    X, y = toy_images(rng)
    with pytest.raises(TypeError, match=r"layer 1 \(DuckIdentity\) has none"):
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2)
    model.fit(X, y, epochs=1, batch_size=4, progress=False)  # one worker needs no replica


def test_an_error_in_a_worker_thread_reaches_the_caller(rng):
    class FailsOnReplicas(Layer):
        def replica(self, index):
            twin = super().replica(index)
            twin.failing = True
            return twin

        def forward(self, x, *, training=False):
            if getattr(self, "failing", False):
                raise RuntimeError(f"shard on {threading.current_thread().name} failed")
            return x

        def backward(self, gy):
            return gy

    model = Sequential([Flatten(), FailsOnReplicas(), Dense(36, 4), Softmax()], seed=0)
    X, y = toy_images(rng)
    with pytest.raises(RuntimeError, match=r"shard on arraycnn-shard.* failed"):
        model.fit(X, y, epochs=1, batch_size=4, progress=False, workers=2)
    assert not any(t.name.startswith("arraycnn-shard") for t in threading.enumerate())
