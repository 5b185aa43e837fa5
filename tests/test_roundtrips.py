"""Host round trips on the hot path: training and convolution on a device read no values per step.

array-api-strict's ``Device("device1")`` stands in for a GPU; :func:`roundtrips.count_round_trips`
counts the reads of array values from it (``bool``, ``int``, ``float``, index, NumPy and DLPack
copies). A training epoch may read a small constant number of values (the running loss and
accuracy at its end, the progress bar's ticks); the same epoch with four times as many steps
must read exactly as many.
"""

from __future__ import annotations

import numpy as np
import pytest
from roundtrips import DEVICE, count_round_trips
from scipy import signal as scipy_signal

from arraycnn import choose_strategy
from arraycnn.backend import to_numpy
from arraycnn.conv import conv2d, conv2d_backward
from arraycnn.nn.activations import ReLU, Softmax
from arraycnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D
from arraycnn.nn.model import Sequential
from arraycnn.nn.progress import TICKS_PER_EPOCH, Reporter
from arraycnn.testing import assert_close

strict = pytest.importorskip("array_api_strict")

BATCH = 4


def dense_model() -> Sequential:
    """(1, 6, 6) -> Flatten (36,) -> Dense (8,) -> ReLU -> Dense (3,) -> Softmax."""
    layers = [Flatten(), Dense(36, 8), ReLU(), Dense(8, 3), Softmax()]
    return Sequential(layers, backend="array_api_strict", dtype="float64", seed=0, device=DEVICE)


def small_cnn() -> Sequential:
    """(1, 6, 6) -> Conv2D 3x3 (2, 6, 6) -> MaxPool2D (2, 3, 3) -> Flatten (18,) -> Dense (3,)."""
    layers = [Conv2D(1, 2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(18, 3), Softmax()]
    return Sequential(layers, backend="array_api_strict", dtype="float64", seed=0, device=DEVICE)


def labeled(steps: int, *, on_device: bool) -> tuple[object, object]:
    """``steps`` batches of samples (N, 1, 6, 6) and labels (N,) in three classes."""
    n = steps * BATCH
    X = np.random.default_rng(steps).standard_normal((n, 1, 6, 6))
    y = np.arange(n) % 3
    if on_device:
        return strict.asarray(X, device=DEVICE), strict.asarray(y, device=DEVICE)
    return X, y


def reads_of_fit(make_model, steps: int, *, on_device: bool = False, **kwargs) -> int:
    model = make_model()
    X, y = labeled(steps, on_device=on_device)
    kwargs.setdefault("epochs", 1)
    with count_round_trips() as trips:
        model.fit(X, y, batch_size=BATCH, progress=False, **kwargs)
    return trips.total


# ------------------------------------------------------------------------- the counter


def test_the_counter_counts_value_reads_of_arrays_on_the_watched_device_only():
    a = strict.asarray([1.0, 2.0, 3.0], device=DEVICE)
    elsewhere = strict.asarray([1.0, 2.0, 3.0])
    with count_round_trips() as trips:
        total = strict.sum(a) * 2.0  # computed on the device: no read
        assert float(total) == 12.0
        assert int(strict.argmax(a)) == 2
        assert bool(strict.all(a > 0.0))
        assert to_numpy(a).tolist() == [1.0, 2.0, 3.0]
        assert float(strict.sum(elsewhere)) == 6.0  # another device: not watched
    assert trips.by_method == {"__float__": 1, "__int__": 1, "__bool__": 1, "__dlpack__": 1}
    assert trips.total == 4


def test_the_counter_restores_the_array_class_on_exit():
    a = strict.asarray(2.0, device=DEVICE)
    with count_round_trips() as trips:
        pass
    assert float(a) == 2.0
    assert trips.total == 0


# ------------------------------------------------------------------------- training


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy-data", "device-data"])
def test_an_epoch_reads_the_device_as_often_with_four_times_the_steps(on_device):
    short = reads_of_fit(dense_model, 4, on_device=on_device)
    long = reads_of_fit(dense_model, 16, on_device=on_device)
    assert short == long
    assert long <= 4  # the epoch's mean loss and accuracy, the data's checks


def test_each_epoch_reads_its_metrics_once_however_long():
    one = reads_of_fit(dense_model, 16, epochs=1)
    three = reads_of_fit(dense_model, 16, epochs=3)
    assert three - one == 2 * 2  # loss and accuracy, once per further epoch


def test_device_data_is_checked_once_per_fit_not_per_epoch():
    """Device X is checked for NaN once (one read), device y copied to the host once."""
    extra_one = reads_of_fit(dense_model, 8, epochs=1, on_device=True) - reads_of_fit(
        dense_model, 8, epochs=1
    )
    extra_three = reads_of_fit(dense_model, 8, epochs=3, on_device=True) - reads_of_fit(
        dense_model, 8, epochs=3
    )
    assert extra_one == extra_three == 2


def test_nan_in_device_data_is_refused_before_training():
    X, y = labeled(2, on_device=False)
    X[5, 0, 1, 1] = np.nan
    model = dense_model()
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        model.fit(strict.asarray(X, device=DEVICE), y, epochs=1, batch_size=BATCH, progress=False)


def test_labels_on_the_device_out_of_range_are_refused_before_training():
    X, y = labeled(2, on_device=True)
    y = strict.asarray(np.arange(8) % 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"y: labels must be in \[0, 3\).*got values in \[0, 3\]"):
        dense_model().fit(X, y, epochs=1, batch_size=BATCH, progress=False)


def test_validation_reads_the_device_as_often_with_four_times_the_batches():
    def reads(steps: int) -> int:
        model = dense_model()
        X, y = labeled(4, on_device=True)
        validation = labeled(steps, on_device=True)
        with count_round_trips() as trips:
            model.fit(X, y, epochs=1, batch_size=BATCH, progress=False, validation_data=validation)
            model.evaluate(*validation, batch_size=BATCH)
        return trips.total

    assert reads(4) == reads(16)


def test_a_diverging_epoch_still_warns_from_its_end_of_epoch_read():
    model = dense_model()
    model.build((1, 6, 6))
    model.set_parameters({"3.b": strict.asarray([np.nan, 0.0, 0.0], device=DEVICE)})
    X, y = labeled(4, on_device=True)
    with pytest.warns(RuntimeWarning, match=r"the training loss is nan in epoch 1 .*diverged"):
        model.fit(X, y, epochs=1, batch_size=BATCH, progress=False)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 100])
def test_the_progress_bar_reads_the_metrics_at_a_few_ticks_per_epoch(steps, capsys):
    reads = []

    def means() -> dict[str, float]:
        reads.append(1)
        return {"loss": 0.5, "accuracy": 0.5}

    reporter = Reporter(True, epochs=2, steps_per_epoch=steps)
    reporter.live = True  # as on a terminal
    with reporter:
        for epoch in (1, 2):
            reporter.start_epoch(epoch)
            for _ in range(steps):
                reporter.step(means)
    assert len(reads) == 2 * min(steps - 1, TICKS_PER_EPOCH - 1)
    capsys.readouterr()


def test_no_progress_display_reads_no_metrics_during_an_epoch():
    reporter = Reporter(False, epochs=1, steps_per_epoch=4)
    reporter.start_epoch(1)
    for _ in range(4):
        reporter.step(lambda: pytest.fail("read the metrics without a display"))


# ------------------------------------------------------------------------- with convolution

def test_a_cnn_epoch_reads_the_device_as_often_with_four_times_the_steps():
    assert reads_of_fit(small_cnn, 4) == reads_of_fit(small_cnn, 16)


@pytest.mark.parametrize("k", [3, 7])
def test_repeated_conv2d_and_its_backward_read_nothing(k):
    rng = np.random.default_rng(k)
    x = strict.asarray(rng.standard_normal((2, 3, 12, 12)), device=DEVICE)
    w = strict.asarray(rng.standard_normal((4, 3, k, k)), device=DEVICE)
    b = strict.asarray(rng.standard_normal(4), device=DEVICE)
    y = conv2d(x, w, b, padding=k // 2)
    conv2d_backward(y, x, w, padding=k // 2)
    with count_round_trips() as trips:
        y = conv2d(x, w, b, padding=k // 2)
        conv2d_backward(y, x, w, padding=k // 2)
    assert trips.total == 0, dict(trips.sites)


@pytest.mark.parametrize("k", [3, 7, 15])
def test_a_first_conv2d_and_its_backward_read_nothing(k):
    """auto reads no value on a device: not the finiteness (FFT), not the kernel's rank."""
    rng = np.random.default_rng(k)
    x = strict.asarray(rng.standard_normal((2, 3, 3 * k, 3 * k)), device=DEVICE)
    w = strict.asarray(rng.standard_normal((4, 3, k, k)), device=DEVICE)
    with count_round_trips() as trips:
        y = conv2d(x, w, padding=k // 2)
        conv2d_backward(y, x, w, padding=k // 2)
    assert trips.total == 0, dict(trips.sites)


def test_a_forced_separable_reads_the_kernels_finiteness_and_rank():
    w_host = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])[None, None]  # rank 1
    x = strict.asarray(np.random.default_rng(0).standard_normal((1, 1, 9, 9)), device=DEVICE)
    w = strict.asarray(w_host, device=DEVICE)
    with count_round_trips() as trips:
        y = conv2d(x, w, strategy="separable")
    assert trips.by_method == {"__bool__": 1, "__int__": 1}, dict(trips.sites)
    expected = scipy_signal.correlate2d(to_numpy(x)[0, 0], w_host[0, 0], mode="valid")
    assert_close(to_numpy(y)[0, 0], expected, dtype="float64")


def test_fft_on_a_device_makes_every_output_a_nan_reaches_nonfinite():
    """On a device auto does not check finiteness before choosing FFT (a host read): a NaN
    then reaches at least the outputs it would reach directly; the finite ones are right."""
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal((1, 1, 48, 48))
    x_host[0, 0, 30, 7] = np.nan
    w_host = rng.standard_normal((1, 1, 15, 15))
    x, w = strict.asarray(x_host, device=DEVICE), strict.asarray(w_host, device=DEVICE)
    assert choose_strategy(x, w) == "fft"
    with np.errstate(invalid="ignore"):  # NumPy's FFT (array-api-strict's) warns of the NaN
        got = to_numpy(conv2d(x, w))[0, 0]
    expected = scipy_signal.correlate2d(x_host[0, 0], w_host[0, 0], mode="valid")
    reached = ~np.isfinite(expected)
    assert reached.any() and not reached.all()
    assert not np.isfinite(got[reached]).any()
    finite = np.isfinite(got)
    assert_close(got[finite], expected[finite], dtype="float64")


def test_auto_on_the_host_keeps_a_nan_local():
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal((1, 1, 48, 48))
    x_host[0, 0, 30, 7] = np.nan
    w_host = rng.standard_normal((1, 1, 15, 15))
    got = to_numpy(conv2d(strict.asarray(x_host), strict.asarray(w_host)))[0, 0]
    expected = scipy_signal.correlate2d(x_host[0, 0], w_host[0, 0], mode="valid")
    assert np.array_equal(np.isfinite(got), np.isfinite(expected))


@pytest.mark.parametrize("steps", [1, 4])
def test_predict_reads_the_device_once_whatever_the_batches(steps):
    """One finiteness check of X per call (documented), none per batch."""
    model = small_cnn()
    X, y = labeled(4, on_device=True)
    model.fit(X, y, batch_size=BATCH, progress=False, epochs=1)
    with count_round_trips() as trips:
        model.predict(X, batch_size=16 // steps)
    assert trips.by_method == {"__bool__": 1}, dict(trips.sites)
