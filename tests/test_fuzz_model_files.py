"""Fuzzing load_model with corrupted and hostile model files (Hypothesis).

Every outcome must be a correct result or an arraycnn error naming the file:

* a model that loads holds exactly the arrays NumPy's own reader (``numpy.load``, an
  independent implementation) finds in the file, in the model's dtype, and the architecture
  the file's header describes;
* anything else raises :class:`~arraycnn.nn.ModelFileError` or
  :class:`~arraycnn.budget.WorkspaceError` whose message names the file: never another
  exception, never a hang, never a large allocation.

The corruptions: truncations, flipped bytes, garbage, mutated JSON header fields (values of
every JSON type, huge and negative numbers), mutated ``.npy`` headers (dtypes, shapes up to
2**40 per axis, Fortran order, data of the wrong length).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from model_files import HEADER_KEY, header_bytes, npy_bytes, write_zip

from arraycnn.backend import to_numpy
from arraycnn.budget import WorkspaceError
from arraycnn.nn import (
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ModelFileError,
    ReLU,
    Sequential,
    Softmax,
    load_model,
)

FILE_NAME = "fuzzed-model.npz"
#: Loading takes about a millisecond: four times the profile's examples per test.
FUZZ = settings(max_examples=4 * settings().max_examples)


def sound_model() -> Sequential:
    model = Sequential(
        [Conv2D(1, 2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 3), Softmax()],
        seed=7,
    )
    model.build((1, 4, 4))
    return model


@pytest.fixture(scope="module")
def sound_file(tmp_path_factory) -> bytes:
    """The bytes of a file written by Sequential.save."""
    return sound_model().save(tmp_path_factory.mktemp("sound") / "model.npz").read_bytes()


@pytest.fixture(scope="module")
def sound_members(sound_file) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        path.write_bytes(sound_file)
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}


def outcome(data: bytes) -> None:
    """Load ``data`` as a model file; check the result or the error (module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILE_NAME
        path.write_bytes(data)
        try:
            model = load_model(path)
        except (ModelFileError, WorkspaceError) as exc:
            assert FILE_NAME in str(exc), exc
            event(f"refused: {type(exc).__name__}")
            return
        check_loaded(model, path)
        event("loaded")


def numpy_reads(path: Path) -> dict[str, np.ndarray]:
    """Every member of the archive as ``numpy.load`` reads a ``.npy`` file (the oracle)."""
    with zipfile.ZipFile(path) as archive:
        return {
            info.filename.removesuffix(".npy"): np.load(
                io.BytesIO(archive.read(info)), allow_pickle=False
            )
            for info in archive.infolist()
        }


def check_loaded(model: Sequential, path: Path) -> None:
    """A loaded model holds the file's arrays (read by NumPy) and its header's layers."""
    arrays = numpy_reads(path)
    header = json.loads(bytes(arrays.pop(HEADER_KEY)).decode())
    assert [type(layer).__name__ for layer in model.layers] == [
        entry["class"] for entry in header["layers"]
    ]
    assert model.input_shape == tuple(header["input_shape"])
    params = model.parameters()
    assert set(params) == set(arrays)
    host_dtype = np.dtype(model.dtype_name)
    for key, value in params.items():
        expected = arrays[key].astype(host_dtype)
        np.testing.assert_array_equal(np.asarray(to_numpy(value)), expected)


# ------------------------------------------------------------------------------ raw bytes


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10**6))
def test_truncated_files(sound_file, cut):
    outcome(sound_file[: cut % len(sound_file)])


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=8,
    )
)
def test_flipped_bytes(sound_file, flips):
    data = bytearray(sound_file)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    outcome(bytes(data))


@FUZZ
@given(garbage=st.binary(max_size=2048), keep=st.integers(min_value=0, max_value=4096))
def test_garbage_and_spliced_garbage(sound_file, garbage, keep):
    outcome(garbage)
    outcome(sound_file[:keep] + garbage + sound_file[keep:])


# ------------------------------------------------------------------------------ the JSON header

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["Dense", "Conv2D", "float16", "float64", "same", "he", "naive"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def containers(header: dict) -> list[dict]:
    """The header's dicts that a mutation may change: itself, its layers and their configs."""
    found = [header]
    layers = header.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict):
            found.append(layer)
            if isinstance(layer.get("config"), dict):
                found.append(layer["config"])
    return found


@st.composite
def mutated_headers(draw, header: dict) -> dict:
    """``header`` with one to three fields (top level, a layer, a layer's config) replaced,
    added or removed."""
    header = json.loads(json.dumps(header))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        target = draw(st.sampled_from(containers(header)))
        key = draw(st.sampled_from([*sorted(target), "unknown"]))
        if draw(st.integers(0, 9)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(JSON_VALUES)
    return header


@FUZZ
@given(data=st.data())
def test_mutated_json_headers(sound_members, data):
    header = json.loads(npy_payload(sound_members[f"{HEADER_KEY}.npy"]).decode())
    members = dict(sound_members)
    members[f"{HEADER_KEY}.npy"] = header_bytes(data.draw(mutated_headers(header)))
    outcome(zip_bytes(members))


def npy_payload(member: bytes) -> bytes:
    """The data bytes of a version 1.0 .npy member."""
    length = int.from_bytes(member[8:10], "little")
    return member[10 + length :]


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_zip(Path(tmp) / "m.npz", members, compression=compression).read_bytes()


# ------------------------------------------------------------------------------ .npy headers

DESCRS = st.sampled_from(
    ["<f4", ">f4", "<f8", ">f8", "<f2", "|u1", "<i4", "<U3", "|O", "|S4", "<c8", "|b1", "<M8[s]"]
) | st.sampled_from([[("a", "<f4")], 7, None, "", "f4,f4", "V8"])
SHAPES = st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4).map(
    tuple
) | st.sampled_from([None, [2, 1, 3, 3], (2.0,), (True, 3), "3"])


#: The parameters of sound_model() and their shapes.
SHAPES_OF = {"0.w": (2, 1, 3, 3), "0.b": (2,), "4.w": (8, 3), "4.b": (3,)}


def payload_for(descr: object, shape: object) -> int | None:
    """Bytes of data the declaration needs, where it is a declaration NumPy understands."""
    try:
        return int(np.prod(shape)) * np.dtype(descr).itemsize
    except (TypeError, ValueError, OverflowError):
        return None


@FUZZ
@given(
    key=st.sampled_from(sorted(SHAPES_OF)),
    data=st.data(),
    fortran_order=st.sampled_from([False, True, 0, "no"]),
    deflate=st.booleans(),
)
def test_mutated_npy_headers(sound_members, key, data, fortran_order, deflate):
    """Any declaration; half the time the architecture's shape, with data of the declared
    length (random bytes: NaN, infinities, subnormals and ordinary numbers)."""
    descr = data.draw(DESCRS)
    shape = data.draw(SHAPES | st.just(SHAPES_OF[key]))
    needed = payload_for(descr, shape)
    sized = (
        st.nothing()
        if needed is None or not 0 <= needed <= 4096
        else st.binary(min_size=needed, max_size=needed)
    )
    payload = data.draw(sized | st.binary(max_size=512))
    members = dict(sound_members)
    members[f"{key}.npy"] = npy_bytes(
        payload, descr=descr, shape=shape, fortran_order=fortran_order
    )
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    outcome(zip_bytes(members, compression))


@FUZZ
@given(
    key=st.sampled_from(["0.w", "4.w"]),
    dims=st.lists(st.integers(min_value=1, max_value=2**40), min_size=1, max_size=4),
    dtype=st.sampled_from(["<f4", "<f8", "<f2"]),
)
def test_huge_declared_sizes(sound_members, key, dims, dtype):
    """Shapes up to 2**160 elements declared over a few bytes: refused without allocating."""
    members = dict(sound_members)
    members[f"{key}.npy"] = npy_bytes(b"\0" * 64, descr=dtype, shape=tuple(dims))
    outcome(zip_bytes(members))


def test_the_sound_file_loads(sound_file):
    """The oracle accepts the unmodified file (so the fuzz tests above can tell)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILE_NAME
        path.write_bytes(sound_file)
        check_loaded(load_model(path), path)
