"""A real ``dask.distributed`` cluster: two worker processes on 127.0.0.1, started and
stopped here.

A 4096 x 4096 float32 image is filtered on the workers (a Gaussian and a random 9 x 9
kernel, chunks of 1024) and compared with the in-memory result (the in-memory filters are
checked against scipy.signal in test_filters.py; the chunked path against SciPy directly in
test_dask.py). The digits grid search runs on the cluster and gives the serial table.
"""

from __future__ import annotations

import numpy as np
import pytest

import arraycnn as ac
from arraycnn.examples import keras_digits_grid
from arraycnn.testing import assert_close

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 one-thread worker processes, closed after the module's tests."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=40,
    )
    with cluster, distributed.Client(cluster) as client:
        yield client
    assert cluster.status.name == "closed"


def _gaussian(size: int, sigma: float) -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    kernel = np.outer(taps, taps)
    return (kernel / kernel.sum()).astype(np.float32)


@pytest.mark.parametrize("kind", ["gaussian", "random"])
def test_a_4096_image_filtered_on_two_workers_equals_the_in_memory_result(client, kind):
    # generated on the workers (a seeded dask generator: the same values at every compute)
    lazy_image = da.random.default_rng(0).standard_normal((4096, 4096), chunks=1024)
    lazy_image = lazy_image.astype(np.float32)
    image = lazy_image.compute()
    rng = np.random.default_rng(1)
    kernel = _gaussian(9, 2.0) if kind == "gaussian" else rng.standard_normal((9, 9))
    kernel = kernel.astype(np.float32)
    lazy = ac.correlate2d(lazy_image, kernel, "same", "symm")
    assert len(client.scheduler_info()["workers"]) == 2
    on_cluster = client.compute(lazy).result()
    assert isinstance(on_cluster, np.ndarray) and on_cluster.dtype == np.float32
    expected = ac.correlate2d(image, kernel, "same", "symm")
    # a sum's rounding is relative to the sum of |terms|; the whole image may run by FFT
    # (errors relative to the whole image) and each chunk by another strategy
    magnitude = ac.correlate2d(np.abs(image), np.abs(kernel), "same", "symm")
    assert_close(on_cluster, expected, scale=float(magnitude.max()))


def test_the_digits_grid_on_two_workers_gives_the_serial_table(client):
    options = {"epochs": 1, "batch_size": 32, "limit": 200, "log": lambda message: None}
    serial = keras_digits_grid.run_grid([0.05, 0.5], [1e-4, 1e-2], **options)
    spread = keras_digits_grid.run_grid([0.05, 0.5], [1e-4, 1e-2], **options, client=client)
    assert spread["train_accuracy"] == serial["train_accuracy"]
    assert spread["test_accuracy"] == serial["test_accuracy"]


def test_predict_on_two_workers_equals_the_in_memory_model(client):
    model = keras_digits_grid.build_model(seed=0)
    model.build((1, 8, 8))
    X = np.random.default_rng(1).standard_normal((300, 1, 8, 8)).astype(np.float32)
    lazy = model.predict_proba(da.from_array(X, chunks=(50, 1, 8, 8)))
    assert_close(client.compute(lazy).result(), model.predict_proba(X))
