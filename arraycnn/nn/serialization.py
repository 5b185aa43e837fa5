"""The model file: architecture and weights of a ``Sequential`` in one ``.npz``.

The file holds a JSON header (format, version, layer classes and configs, input shape, dtype,
seed) under :data:`MODEL_HEADER_KEY` and one array per parameter (``"0.w"``, ``"0.b"``...).
:func:`save_model` writes it atomically; :func:`read_model` reads and checks its header and
the declared shape and dtype of every array into a :class:`SavedModel`, from which
:func:`arraycnn.nn.model.load_model` rebuilds the model on any backend.

Nothing in a file is trusted. Before any array is read:

* the file must be a zip archive of ``.npy`` members stored or deflated, unencrypted, each
  name once, at most :data:`MAX_MEMBERS` of them;
* the JSON header (at most :data:`MAX_HEADER_BYTES`) must have the fields and types
  :meth:`Sequential.get_config <arraycnn.nn.model.Sequential.get_config>` writes;
* every array's ``.npy`` header (read with ``numpy.lib.format.read_magic`` and
  ``read_array_header_1_0`` / ``_2_0`` on the member's stream; at most
  :data:`MAX_NPY_HEADER_BYTES`) must declare a real floating dtype (float16/32/64) and a
  shape whose size, computed in Python integers, is exactly what the zip member holds
  (``ZipInfo.file_size``).

The model is then built from the header (each layer's ``build`` refuses parameters over the
memory available with :class:`~arraycnn.budget.WorkspaceError` before allocating them), the
declared shapes are compared with the architecture's, and only then are the arrays read, each
exactly its declared size. Parameters holding NaN or infinity are refused: a model file with
them cannot predict anything (inspect such a file with ``numpy.load``). Pickled objects are
never loaded.

Every problem with a file raises :class:`ModelFileError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from ..backend import to_numpy
from ..budget import format_bytes
from .base import LAYERS
from .data import Placement

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "MAX_NPY_HEADER_BYTES",
    "MODEL_DTYPES",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "MODEL_HEADER_KEY",
    "DeclaredArray",
    "ModelFileError",
    "SavedModel",
    "read_model",
    "save_model",
]

Array = Any

#: Key of the JSON header inside a saved model (.npz).
MODEL_HEADER_KEY = "__arraycnn_model__"
MODEL_FORMAT = "arraycnn.Sequential"
MODEL_FORMAT_VERSION = 1
#: The dtypes a model (and so a model file) may have.
MODEL_DTYPES = ("float32", "float64", "float16")
#: Largest JSON header accepted (bytes).
MAX_HEADER_BYTES = 1024**2
#: Largest ``.npy`` header accepted (bytes); NumPy's own default limit.
MAX_NPY_HEADER_BYTES = 10_000
#: Most zip members accepted in a model file.
MAX_MEMBERS = 10_000

#: What reading a hostile zip member may raise; each becomes a :class:`ModelFileError`.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,  # encrypted members; RecursionError
    NotImplementedError,
    OverflowError,
    SyntaxError,
    zlib.error,
    struct.error,
)
_FLOAT_DTYPES = (np.dtype("<f2"), np.dtype("<f4"), np.dtype("<f8"))
_ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_PARAMETER_KEY = re.compile(r"^(0|[1-9][0-9]{0,8})\.[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ModelFileError(ValueError):
    """A file that is not a sound arraycnn model file; the message names the file.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    problem : str
        What is wrong with it.

    Examples
    --------
    >>> error = ModelFileError("m.npz", "parameter '0.w' holds NaN or infinite values")
    >>> str(error), isinstance(error, ValueError)
    ("'m.npz': parameter '0.w' holds NaN or infinite values", True)
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{str(path)!r}: {problem}")


class _Savable(Protocol):
    @property
    def built(self) -> bool: ...

    def get_config(self) -> dict[str, Any]: ...

    def parameters(self) -> dict[str, Array]: ...


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
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


def _checked_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    return Path(path)


def save_model(model: _Savable, path: str | os.PathLike) -> Path:
    """Write a built model's architecture and weights to ``path``, atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a crash never leaves a half-written model. Parameters holding NaN or
    infinity are written with a ``RuntimeWarning``: :func:`read_model` refuses such a file.
    Each parameter is copied to the host explicitly (:func:`~arraycnn.backend.to_numpy`), so
    a model on any device writes the same file; the file records no device.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the model is not built.
    TypeError
        If ``path`` is not a str or path-like.

    Examples
    --------
    >>> import tempfile
    >>> from arraycnn.nn import Dense, Sequential
    >>> model = Sequential([Dense(3, 2)], backend="numpy", seed=0)
    >>> _ = model.build((3,))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_model(model, Path(tmp) / "model.npz")
    ...     sorted(np.load(path).files)
    ['0.b', '0.w', '__arraycnn_model__']
    """
    path = _checked_path(path)
    if not model.built:
        raise ValueError("the model is not built yet: call build(input_shape) or fit first")
    header = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, **model.get_config()}
    arrays = {key: to_numpy(value) for key, value in model.parameters().items()}
    non_finite = sorted(key for key, a in arrays.items() if not np.isfinite(a).all())
    if non_finite:
        warnings.warn(
            f"saving parameters {non_finite} that hold NaN or infinite values to {str(path)!r}: "
            "load_model refuses such a file",
            RuntimeWarning,
            stacklevel=2,
        )
    arrays[MODEL_HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    _write_atomically(path, arrays)
    return path


# --------------------------------------------------------------------------------------------
# reading: the zip members and their .npy headers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredArray:
    """What a ``.npy`` member of a model file declares, checked against the member's size.

    Attributes
    ----------
    member : str
        The zip member's name (``"0.w.npy"``).
    shape : tuple of int
    dtype : numpy.dtype
        float16, float32 or float64 (either byte order).
    fortran_order : bool
    offset : int
        Bytes of the ``.npy`` header: the data start there.

    Examples
    --------
    >>> declared = DeclaredArray("0.w.npy", (3, 2), np.dtype("<f4"), False, 128)
    >>> declared.nbytes, declared.member_bytes
    (24, 152)
    """

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        """Bytes of the data (a Python int: no overflow for any declared shape)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def member_bytes(self) -> int:
        """Bytes the member must hold: header and data."""
        return self.offset + self.nbytes

    def describe(self) -> str:
        """``"shape (3, 2) float32 (24 B)"``."""
        return f"shape {self.shape} {self.dtype.name} ({format_bytes(self.nbytes)})"


def _read_exactly(stream: IO[bytes], size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{what} is truncated: {len(data)} of {size} bytes")
    return data


def _npy_header(stream: IO[bytes], member: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header bytes)`` of the ``.npy`` data in ``stream``.

    The header's length is checked before the header is read; NumPy's own readers parse it.
    """
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"member {member!r}: unsupported .npy format version {version}")
    length_field = _read_exactly(stream, 2 if version == (1, 0) else 4, f"member {member!r}")
    length = int.from_bytes(length_field, "little")
    if length > MAX_NPY_HEADER_BYTES:
        raise ValueError(
            f"member {member!r} has a .npy header of {length} bytes "
            f"(at most {MAX_NPY_HEADER_BYTES} accepted)"
        )
    text = _read_exactly(stream, length, f"the .npy header of member {member!r}")
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read(
        io.BytesIO(length_field + text), max_header_size=MAX_NPY_HEADER_BYTES
    )
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"member {member!r} declares an invalid shape {shape!r}")
    return shape, fortran_order, dtype, np.lib.format.MAGIC_LEN + len(length_field) + length


def _declared(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtypes: tuple[np.dtype, ...]
) -> DeclaredArray:
    """The checked declaration of one member (only its header is decompressed): a dtype
    among ``dtypes`` (either byte order) and as many bytes as its shape needs."""
    with archive.open(info) as stream:
        shape, fortran_order, dtype, offset = _npy_header(stream, info.filename)
    if dtype.fields is not None or dtype.newbyteorder("<") not in dtypes:
        expected = "/".join(d.name for d in dtypes)
        raise ValueError(f"member {info.filename!r} has dtype {dtype.str!r}, not {expected}")
    declared = DeclaredArray(info.filename, shape, dtype, fortran_order, offset)
    if info.file_size != declared.member_bytes:
        raise ValueError(
            f"member {info.filename!r} declares {declared.describe()} but holds "
            f"{format_bytes(max(info.file_size - offset, 0))} of data"
        )
    return declared


def _read_data(archive: zipfile.ZipFile, declared: DeclaredArray) -> np.ndarray:
    """The member's array, reading exactly its declared bytes (the zip's CRC is checked)."""
    with archive.open(declared.member) as stream:
        again = _npy_header(stream, declared.member)
        if again[:3] != (declared.shape, declared.fortran_order, declared.dtype):
            raise ValueError(f"member {declared.member!r} changed while it was read")
        data = _read_exactly(stream, declared.nbytes, f"member {declared.member!r}")
        if stream.read(1):
            raise ValueError(f"member {declared.member!r} holds data beyond its array")
    order = "F" if declared.fortran_order else "C"
    return np.frombuffer(data, dtype=declared.dtype).reshape(declared.shape, order=order)


def _members(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by key (name without ``.npy``), each checked to be readable."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelFileError(
            path, f"holds {len(infos)} zip members; a model file holds at most {MAX_MEMBERS}"
        )
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise ModelFileError(path, f"holds a member {name!r} that is not a .npy array")
        if name[:-4] in members:
            raise ModelFileError(path, f"holds the member {name!r} twice")
        if info.flag_bits & 0x1:
            raise ModelFileError(path, f"member {name!r} is encrypted")
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise ModelFileError(
                path,
                f"member {name!r} uses zip compression method {info.compress_type} "
                "(stored or deflated expected)",
            )
        members[name[:-4]] = info
    return members


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any error of reading a hostile file into a :class:`ModelFileError`."""
    try:
        yield
    except ModelFileError:
        raise
    except _READ_ERRORS as exc:
        raise ModelFileError(path, f"{what}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# reading: the JSON header
# --------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the JSON header holds {name}")


def _header_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    declared = _declared(archive, info, (np.dtype(np.uint8),))
    if len(declared.shape) != 1:
        raise ValueError(f"the header is not a 1-D array but has shape {declared.shape}")
    if declared.nbytes > MAX_HEADER_BYTES:
        raise ValueError(
            f"the header declares {format_bytes(declared.nbytes)} "
            f"(at most {format_bytes(MAX_HEADER_BYTES)} accepted)"
        )
    text = _read_data(archive, declared).tobytes().decode("utf-8")
    return json.loads(text, parse_constant=_refuse_constant)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header_problem(header: Any) -> str | None:
    """What is wrong with a parsed JSON header, or None."""
    if not isinstance(header, dict):
        return f"the header is not a JSON object but {type(header).__name__}"
    if header.get("format") != MODEL_FORMAT:
        return f"is not an arraycnn model file: format {header.get('format')!r}"
    version = header.get("version")
    if not _is_int(version) or version != MODEL_FORMAT_VERSION:
        return f"has format version {version!r}; this arraycnn reads {MODEL_FORMAT_VERSION}"
    layers = header.get("layers")
    if not isinstance(layers, list) or not layers:
        return f"header field 'layers' must be a non-empty list, got {layers!r:.80}"
    for i, entry in enumerate(layers):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("class"), str)
            and isinstance(entry.get("config"), dict)
        ):
            return f"header layer {i} must be {{'class': str, 'config': dict}}, got {entry!r:.80}"
    shape = header.get("input_shape")
    if not (isinstance(shape, list) and shape and all(_is_int(s) and s >= 1 for s in shape)):
        return f"header field 'input_shape' must be a list of positive ints, got {shape!r:.80}"
    if header.get("dtype") not in MODEL_DTYPES:
        return (
            f"header field 'dtype' must be one of {MODEL_DTYPES}, got {header.get('dtype')!r:.80}"
        )
    seed = header.get("seed")
    if seed is not None and not (_is_int(seed) and seed >= 0):
        return f"header field 'seed' must be a non-negative int or null, got {seed!r:.80}"
    return None


def _shown(keys: list[str], limit: int = 10) -> str:
    return ", ".join(repr(k) for k in keys[:limit]) + (", ..." if len(keys) > limit else "")


# --------------------------------------------------------------------------------------------
# the saved model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedModel:
    """A checked model file: its header and the declared shape and dtype of every parameter.

    No array is read until :meth:`parameters_for`.

    Attributes
    ----------
    path : pathlib.Path
        The file (named in error messages).
    header : dict
        ``format``, ``version`` and :meth:`Sequential.get_config`'s ``layers``,
        ``input_shape``, ``dtype`` and ``seed``, checked for their types.
    declared : dict[str, DeclaredArray]
        Parameters by key (``"0.w"``...).

    Examples
    --------
    >>> saved = SavedModel(Path("m.npz"), {"layers": [{"class": "ReLU", "config": {}}]}, {})
    >>> saved.layers()
    [ReLU()]
    """

    path: Path
    header: dict[str, Any]
    declared: dict[str, DeclaredArray]

    def layers(self) -> list[Any]:
        """New layers built from the header's classes and configs (registry :data:`LAYERS`).

        Raises
        ------
        ModelFileError
            For a class that is not a known layer, or a config the layer refuses.
        """
        layers = []
        for i, entry in enumerate(self.header["layers"]):
            cls = LAYERS.get(entry["class"])
            if cls is None:
                raise ModelFileError(
                    self.path,
                    f"layer {i} has unknown class {entry['class']!r:.80}; known: {sorted(LAYERS)}",
                )
            try:
                layers.append(cls(**entry["config"]))
            except (TypeError, ValueError) as exc:
                raise ModelFileError(
                    self.path, f"layer {i} ({cls.__name__}) has an invalid config: {exc}"
                ) from exc
        return layers

    def check_shapes(self, expected: dict[str, Array]) -> None:
        """Check the declared keys and shapes against a built model's parameters ``expected``.

        Raises
        ------
        ModelFileError
            If the keys differ, or a declared shape differs from the expected one.

        Examples
        --------
        >>> declared = {"0.b": DeclaredArray("0.b.npy", (2,), np.dtype("<f4"), False, 128)}
        >>> SavedModel(Path("m.npz"), {}, declared).check_shapes({"0.b": np.zeros(3)})
        Traceback (most recent call last):
        ...
        arraycnn.nn.serialization.ModelFileError: 'm.npz': parameter '0.b' declares shape ...
        """
        if set(expected) != set(self.declared):
            missing = sorted(set(expected) - set(self.declared))
            extra = sorted(set(self.declared) - set(expected))
            raise ModelFileError(
                self.path,
                f"its parameters do not match its architecture: missing [{_shown(missing)}], "
                f"unexpected [{_shown(extra)}]",
            )
        for key, current in expected.items():
            declared = self.declared[key]
            if declared.shape != tuple(current.shape):
                raise ModelFileError(
                    self.path,
                    f"parameter {key!r} declares {declared.describe()}, expected shape "
                    f"{tuple(current.shape)}",
                )

    def parameters_for(self, expected: dict[str, Array], place: Placement) -> dict[str, Array]:
        """The saved parameters on ``place``, checked against a built model's ``expected``.

        Each array is read as exactly its declared bytes, converted to ``place.dtype`` on the
        host and moved once.

        Raises
        ------
        ModelFileError
            If the keys or shapes differ (:meth:`check_shapes`), a member cannot be read, or a
            parameter holds NaN or infinity (in the file, or after conversion to a narrower
            dtype).

        Examples
        --------
        >>> import tempfile
        >>> from arraycnn.nn import Dense, Sequential
        >>> model = Sequential([Dense(2, 1)], seed=0)
        >>> _ = model.build((2,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     saved = read_model(model.save(Path(tmp) / "m.npz"))
        ...     loaded = saved.parameters_for(model.parameters(), Placement(np, np.float64, "cpu"))
        >>> loaded["0.b"]
        array([0.])
        """
        self.check_shapes(expected)
        host_dtype = np.dtype(f"float{place.xp.finfo(place.dtype).bits}")
        loaded = {}
        with _reading(self.path, "cannot read its parameters"):
            with zipfile.ZipFile(self.path) as archive:
                for key in expected:
                    raw = _read_data(archive, self.declared[key])
                    loaded[key] = place.xp.asarray(
                        self._finite(key, raw, host_dtype), dtype=place.dtype, device=place.device
                    )
        return loaded

    def _finite(self, key: str, raw: np.ndarray, host_dtype: np.dtype) -> np.ndarray:
        """``raw`` as ``host_dtype``, refused where it is (or becomes) non-finite."""
        if not np.isfinite(raw).all():
            raise ModelFileError(
                self.path,
                f"parameter {key!r} holds NaN or infinite values (the model diverged before it "
                "was saved?); inspect the file with numpy.load",
            )
        with np.errstate(over="ignore"):
            host = raw.astype(host_dtype)
        if not np.isfinite(host).all():
            raise ModelFileError(
                self.path,
                f"parameter {key!r} holds values beyond the range of {host_dtype.name}; load it "
                "with a wider dtype",
            )
        return host


def read_model(path: str | os.PathLike) -> SavedModel:
    """Read and check a file written by :func:`save_model` (no array is read yet).

    See the module docstring for what is checked.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TypeError
        If ``path`` is not a str or path-like.
    ModelFileError
        If the file is not a sound arraycnn model file (the message names the file).

    Examples
    --------
    >>> read_model("no/such/model.npz")
    Traceback (most recent call last):
    ...
    FileNotFoundError: model file 'no/such/model.npz' does not exist
    """
    path = _checked_path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelFileError(path, "is not a file")
    not_a_model = "is not an arraycnn model file (written by Sequential.save)"
    with _reading(path, not_a_model):
        archive = zipfile.ZipFile(path)
    with archive:
        members = _members(archive, path)
        if MODEL_HEADER_KEY not in members:
            raise ModelFileError(path, f"{not_a_model}: no model header")
        with _reading(path, f"{not_a_model}: unreadable header"):
            header = _header_json(archive, members.pop(MODEL_HEADER_KEY))
        problem = _header_problem(header)
        if problem is not None:
            raise ModelFileError(path, problem)
        declared = {}
        for key, info in members.items():
            if not _PARAMETER_KEY.match(key):
                raise ModelFileError(
                    path, f"holds a member {info.filename!r:.80} that names no parameter"
                )
            with _reading(path, f"parameter {key!r}"):
                declared[key] = _declared(archive, info, _FLOAT_DTYPES)
    return SavedModel(path, header, declared)
