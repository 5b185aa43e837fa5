"""Model files built by hand, byte by byte, for the loading and fuzz tests.

Independent of arraycnn's writer: the ``.npy`` headers and the zip archive are written here
from the format descriptions, so that a test can declare anything (shapes the data does not
have, wrong field types, dtypes arraycnn never writes).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np

HEADER_KEY = "__arraycnn_model__"


def npy_bytes(
    data: bytes,
    *,
    descr: object = "<f4",
    shape: object = (),
    fortran_order: object = False,
    version: tuple[int, int] = (1, 0),
    header_text: str | None = None,
) -> bytes:
    """A ``.npy`` file: magic, version, header length, the header dict (padded to 64 bytes)
    and ``data`` as given. ``header_text`` replaces the dict's text entirely."""
    text = header_text
    if text is None:
        text = repr({"descr": descr, "fortran_order": fortran_order, "shape": shape})
    length_size = 2 if version[0] == 1 else 4
    prefix = 6 + 2 + length_size
    padded = text + " " * ((64 - (prefix + len(text) + 1) % 64) % 64) + "\n"
    length = struct.pack("<H" if length_size == 2 else "<I", len(padded))
    return b"\x93NUMPY" + bytes(version) + length + padded.encode("latin1") + data


def npy_of(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes of a real array (C order, little-endian descr as NumPy writes it)."""
    array = np.ascontiguousarray(array)
    return npy_bytes(array.tobytes(), descr=array.dtype.str, shape=array.shape)


def header_bytes(header: object) -> bytes:
    """The JSON header as the uint8 ``.npy`` member arraycnn writes."""
    raw = json.dumps(header).encode()
    return npy_bytes(raw, descr="|u1", shape=(len(raw),))


def dense_header(
    in_features: int = 3, out_features: int = 2, *, dtype: str = "float32", **extra: object
) -> dict:
    """The header of ``Sequential([Dense(in, out)])`` built for ``(in,)`` samples."""
    return {
        "format": "arraycnn.Sequential",
        "version": 1,
        "layers": [
            {
                "class": "Dense",
                "config": {
                    "in_features": in_features,
                    "out_features": out_features,
                    "bias": True,
                    "init": "glorot",
                },
            }
        ],
        "input_shape": [in_features],
        "dtype": dtype,
        "seed": 0,
        **extra,
    }


def dense_members(
    w: np.ndarray | None = None, b: np.ndarray | None = None, header: object = None
) -> dict[str, bytes]:
    """Members of a sound Dense(3, 2) model file (``w`` and ``b`` replaceable)."""
    w = np.arange(6, dtype=np.float32).reshape(3, 2) / 10 if w is None else w  # (6,) -> (3, 2)
    b = np.array([0.5, -0.5], dtype=np.float32) if b is None else b
    return {
        f"{HEADER_KEY}.npy": header_bytes(dense_header() if header is None else header),
        "0.w.npy": npy_of(w),
        "0.b.npy": npy_of(b),
    }


def write_zip(
    path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED
) -> Path:
    """A zip archive of ``members`` (name -> bytes), as ``np.savez`` would write it."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path
