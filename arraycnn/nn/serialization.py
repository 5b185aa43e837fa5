"""The model file: architecture and weights of a ``Sequential`` in one ``.npz``.

The file holds a JSON header (format, version, layer classes and configs, input shape, dtype,
seed) under :data:`MODEL_HEADER_KEY` and one array per parameter (``"0.w"``, ``"0.b"``...).
:func:`save_model` writes it atomically; :func:`read_model` reads and checks it into a
:class:`SavedModel`, from which :func:`arraycnn.nn.model.load_model` rebuilds the model on
any backend.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..backend import to_numpy
from .base import LAYERS
from .data import Placement

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "MODEL_HEADER_KEY",
    "SavedModel",
    "read_model",
    "save_model",
]

Array = Any

#: Key of the JSON header inside a saved model (.npz).
MODEL_HEADER_KEY = "__arraycnn_model__"
MODEL_FORMAT = "arraycnn.Sequential"
MODEL_FORMAT_VERSION = 1


class _Savable(Protocol):
    @property
    def built(self) -> bool: ...

    def get_config(self) -> dict[str, Any]: ...

    def parameters(self) -> dict[str, Array]: ...


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


def save_model(model: _Savable, path: str | os.PathLike) -> Path:
    """Write a built model's architecture and weights to ``path``, atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a crash never leaves a half-written model.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the model is not built.

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
    if not model.built:
        raise ValueError("the model is not built yet: call build(input_shape) or fit first")
    path = Path(path)
    header = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, **model.get_config()}
    arrays = {key: to_numpy(value) for key, value in model.parameters().items()}
    arrays[MODEL_HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    _write_atomically(path, arrays)
    return path


@dataclass(frozen=True)
class SavedModel:
    """The contents of a model file: its header and its parameter arrays (host).

    Attributes
    ----------
    path : pathlib.Path
        The file (named in error messages).
    header : dict
        ``format``, ``version`` and :meth:`Sequential.get_config`'s ``layers``,
        ``input_shape``, ``dtype`` and ``seed``.
    arrays : dict[str, numpy.ndarray]
        Parameters by key (``"0.w"``...).

    Examples
    --------
    >>> saved = SavedModel(Path("m.npz"), {"layers": [{"class": "ReLU", "config": {}}]}, {})
    >>> saved.layers()
    [ReLU()]
    """

    path: Path
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def layers(self) -> list[Any]:
        """New layers built from the header's classes and configs (registry :data:`LAYERS`).

        Raises
        ------
        ValueError
            For a class that is not a known layer.
        """
        layers = []
        for i, entry in enumerate(self.header["layers"]):
            cls = LAYERS.get(entry["class"])
            if cls is None:
                raise ValueError(
                    f"{str(self.path)!r}: layer {i} has unknown class {entry['class']!r}; "
                    f"known: {sorted(LAYERS)}"
                )
            layers.append(cls(**entry["config"]))
        return layers

    def parameters_for(self, expected: dict[str, Array], place: Placement) -> dict[str, Array]:
        """The saved parameters on ``place``, checked against a built model's ``expected``.

        Raises
        ------
        ValueError
            If the keys differ, or a saved array's shape differs from the expected one.

        Examples
        --------
        >>> saved = SavedModel(Path("m.npz"), {}, {"0.b": np.ones(2)})
        >>> place = Placement(np, np.float32, "cpu")
        >>> saved.parameters_for({"0.b": np.zeros(2, dtype=np.float32)}, place)
        {'0.b': array([1., 1.], dtype=float32)}
        >>> saved.parameters_for({"0.b": np.zeros(3)}, place)
        Traceback (most recent call last):
        ...
        ValueError: 'm.npz': parameter '0.b' has shape (2,), expected (3,)
        """
        if set(expected) != set(self.arrays):
            raise ValueError(
                f"{str(self.path)!r}: parameters {sorted(self.arrays)} do not match the "
                f"architecture's {sorted(expected)}"
            )
        loaded = {}
        for key, current in expected.items():
            saved = self.arrays[key]
            if tuple(saved.shape) != tuple(current.shape):
                raise ValueError(
                    f"{str(self.path)!r}: parameter {key!r} has shape {saved.shape}, "
                    f"expected {tuple(current.shape)}"
                )
            loaded[key] = place.xp.asarray(saved, dtype=place.dtype, device=place.device)
        return loaded


def read_model(path: str | os.PathLike) -> SavedModel:
    """Read a file written by :func:`save_model` (no layer is built yet).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an arraycnn model (the message names the file).

    Examples
    --------
    >>> read_model("no/such/model.npz")
    Traceback (most recent call last):
    ...
    FileNotFoundError: model file 'no/such/model.npz' does not exist
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
    return SavedModel(path, header, arrays)
