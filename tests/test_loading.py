"""load_model trusts nothing: model files written by hand (tests/model_files.py) that lie about
their sizes, carry headers of the wrong form, hold non-float dtypes or NaN are refused with an
error naming the file, before any array is read; sound files (stored or deflated, either byte
order, Fortran order) load to exactly their arrays."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
from model_files import (
    HEADER_KEY,
    dense_header,
    dense_members,
    header_bytes,
    npy_bytes,
    npy_of,
    write_zip,
)

from arraycnn.backend import to_numpy
from arraycnn.budget import WorkspaceError
from arraycnn.nn import Dense, ModelFileError, Sequential, load_model

W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10  # (6,) -> (3, 2): dense_members' weight
B = np.array([0.5, -0.5], dtype=np.float32)


def params_of(model) -> dict[str, np.ndarray]:
    return {key: np.asarray(to_numpy(value)) for key, value in model.parameters().items()}


# ------------------------------------------------------------------------------ sound files


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_hand_written_file_loads_to_its_arrays(tmp_path, compression):
    path = write_zip(tmp_path / "m.npz", dense_members(), compression=compression)
    model = load_model(path)
    params = params_of(model)
    np.testing.assert_array_equal(params["0.w"], W)
    np.testing.assert_array_equal(params["0.b"], B)
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(to_numpy(model.predict_proba(x)), x @ W + B, rtol=1e-6)


def test_big_endian_and_fortran_order_arrays_load_to_their_values(tmp_path):
    members = dense_members()
    members["0.w.npy"] = npy_bytes(
        np.asfortranarray(W).astype(">f8").tobytes(order="F"),
        descr=">f8",
        shape=(3, 2),
        fortran_order=True,
    )
    model = load_model(write_zip(tmp_path / "m.npz", members), dtype="float64")
    np.testing.assert_array_equal(params_of(model)["0.w"], W.astype(np.float64))


def test_a_file_written_with_savez_compressed_loads(tmp_path):
    model = Sequential([Dense(3, 2)], seed=4)
    model.build((3,))
    arrays = {key: to_numpy(value) for key, value in model.parameters().items()}
    header = json.dumps({"format": "arraycnn.Sequential", "version": 1, **model.get_config()})
    arrays[HEADER_KEY] = np.frombuffer(header.encode(), dtype=np.uint8)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    loaded = params_of(load_model(tmp_path / "c.npz"))
    for key, value in arrays.items():
        if key != HEADER_KEY:
            np.testing.assert_array_equal(loaded[key], value)


# ------------------------------------------------------------------------------ declared sizes


def four_gib_member() -> bytes:
    """A .npy member declaring a (32768, 32768) float32 array (4 GiB) that holds 4 MiB."""
    return npy_bytes(b"\0" * (4 * 1024**2), descr="<f4", shape=(32768, 32768))


def test_a_4mb_file_declaring_a_4gib_array_is_refused_without_reading_it(tmp_path, traced_peak):
    members = dense_members()
    members["0.w.npy"] = four_gib_member()
    path = write_zip(tmp_path / "hostile.npz", members)
    assert path.stat().st_size < 5 * 1024**2

    def refuse():
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        return info.value

    error, peak = traced_peak(refuse)
    assert "hostile.npz" in str(error)
    assert "declares shape (32768, 32768) float32 (4.00 GiB) but holds 4.00 MiB" in str(error)
    assert peak < 1024**2  # the 4 MiB member was never read, let alone 4 GiB allocated


def test_an_architecture_matching_the_4gib_array_is_refused_before_anything_is_built(
    tmp_path, traced_peak
):
    members = dense_members(header=dense_header(32768, 32768))
    members["0.w.npy"] = four_gib_member()
    path = write_zip(tmp_path / "big.npz", members)
    with pytest.raises(ModelFileError, match=r"big\.npz.*0\.w.*4\.00 GiB.*holds 4\.00 MiB"):
        load_model(path)


def test_an_architecture_larger_than_the_memory_is_refused_before_its_parameters_exist(
    tmp_path, traced_peak
):
    """A header declaring Dense(10**6, 10**6) (4 TB of weights) over small arrays: refused by
    the layer's build, before anything of that size exists."""
    members = dense_members(header=dense_header(10**6, 10**6))
    path = write_zip(tmp_path / "tera.npz", members)

    def refuse():
        with pytest.raises(WorkspaceError) as info:
            load_model(path)
        return info.value

    error, peak = traced_peak(refuse)
    assert "tera.npz" in str(error) and "needs 4000004000000 bytes (3.64 TiB)" in str(error)
    assert peak < 1024**2


def test_a_deflated_member_may_expand_far_beyond_the_file(tmp_path):
    """Zeros deflate about 1000:1; an honest 4 MiB member in a small file loads."""
    members = dense_members(
        w=np.zeros((1024, 1024), np.float32),
        b=np.ones(1024, np.float32),
        header=dense_header(1024, 1024),
    )
    path = write_zip(tmp_path / "zeros.npz", members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 64 * 1024
    params = params_of(load_model(path))
    assert not params["0.w"].any() and params["0.b"].sum() == 1024


def test_a_declared_shape_that_differs_from_the_architecture_is_refused(tmp_path):
    members = dense_members(w=np.zeros((3, 4), np.float32))
    with pytest.raises(
        ModelFileError, match=r"m\.npz.*'0\.w' declares shape \(3, 4\).*expected shape \(3, 2\)"
    ):
        load_model(write_zip(tmp_path / "m.npz", members))


@pytest.mark.parametrize("cut", [1, 5, 24])
def test_a_member_holding_less_or_more_than_declared_is_refused(tmp_path, cut):
    members = dense_members()
    full = npy_of(W)
    members["0.w.npy"] = full[:-cut]
    with pytest.raises(ModelFileError, match=r"m\.npz.*'0\.w\.npy' declares shape \(3, 2\)"):
        load_model(write_zip(tmp_path / "m.npz", members))
    members["0.w.npy"] = full + b"\0" * cut
    with pytest.raises(ModelFileError, match=r"m\.npz.*'0\.w\.npy' declares shape \(3, 2\)"):
        load_model(write_zip(tmp_path / "m.npz", members))


def test_missing_and_unexpected_parameters_are_named(tmp_path):
    members = dense_members()
    del members["0.b.npy"]
    members["1.w.npy"] = npy_of(W)
    with pytest.raises(
        ModelFileError, match=r"do not match its architecture: missing \['0\.b'\], unexpected"
    ):
        load_model(write_zip(tmp_path / "m.npz", members))


# ------------------------------------------------------------------------------ .npy headers


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (npy_bytes(b"ab" * 12, descr="<U2", shape=(3, 2)), r"dtype '<U2', not float16/float32"),
        (npy_bytes(b"\0" * 48, descr="|O", shape=(3, 2)), r"dtype '\|O', not float16"),
        (npy_bytes(b"\0" * 24, descr="<i4", shape=(3, 2)), r"dtype '<i4', not float16"),
        (npy_bytes(b"\0" * 48, descr="<c8", shape=(3, 2)), r"dtype '<c8', not float16"),
        (
            npy_bytes(b"\0" * 24, descr=[("a", "<f4")], shape=(3, 2)),
            r"dtype .*not float16",
        ),
        (npy_bytes(b"\0" * 24, descr="<f4", shape=[3, 2]), "shape is not valid"),
        (npy_bytes(b"\0" * 24, descr="<f4", shape=(3, -2)), r"invalid shape \(3, -2\)"),
        (npy_bytes(b"\0" * 24, descr="<f4", shape=(3, True)), r"invalid shape \(3, True\)"),
        (npy_bytes(b"\0" * 24, descr="<f4", shape=(3, 2), fortran_order="no"), "fortran_order"),
        (npy_bytes(b"\0" * 24, descr=7, shape=(3, 2)), "descr"),
        (npy_bytes(b"\0" * 24, header_text="{'descr': '<f4'}"), "correct keys"),
        (npy_bytes(b"\0" * 24, header_text="__import__('os')"), "malformed node"),
        (npy_bytes(b"\0" * 24, header_text="[1, 2]"), "not a dictionary"),
        (npy_bytes(b"\0" * 24, descr="<f4", shape=(3, 2), version=(3, 0)), "version"),
        (b"\x93NUMPY\x01", r"truncated|EOF"),
        (b"PK\x03\x04 not numpy at all", "magic string is not correct"),
        (
            b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{",
            r"\.npy header of 2147483648 bytes",
        ),
    ],
)
def test_bad_npy_headers_name_the_file_and_member(tmp_path, member, match):
    members = dense_members()
    members["0.w.npy"] = member
    with pytest.raises(ModelFileError, match=rf"m\.npz.*'0\.w'.*{match}"):
        load_model(write_zip(tmp_path / "m.npz", members))


# ------------------------------------------------------------------------------ the JSON header


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "other"}, "not an arraycnn model file: format 'other'"),
        ({"version": 2}, "format version 2; this arraycnn reads 1"),
        ({"version": True}, "format version True"),
        ({"layers": "Dense"}, "'layers' must be a non-empty list"),
        ({"layers": []}, "'layers' must be a non-empty list"),
        ({"layers": [["Dense", {}]]}, r"layer 0 must be \{'class': str, 'config': dict\}"),
        ({"layers": [{"class": 3, "config": {}}]}, r"layer 0 must be"),
        ({"layers": [{"class": "Dense", "config": []}]}, r"layer 0 must be"),
        ({"layers": [{"class": "Evil", "config": {}}]}, "layer 0 has unknown class 'Evil'"),
        (
            {"layers": [{"class": "Dense", "config": {"in_features": "3", "out_features": 2}}]},
            r"layer 0 \(Dense\) has an invalid config: Dense: in_features must be an int",
        ),
        (
            {"layers": [{"class": "Dense", "config": {"units": 3}}]},
            r"layer 0 \(Dense\) has an invalid config: .*unexpected keyword",
        ),
        ({"input_shape": None}, "'input_shape' must be a list of positive ints"),
        ({"input_shape": [3.0]}, "'input_shape' must be a list of positive ints"),
        ({"input_shape": [0]}, "'input_shape' must be a list of positive ints"),
        ({"input_shape": [4]}, r"architecture does not build: layer 0 \(Dense\)"),
        ({"dtype": "int32"}, "'dtype' must be one of"),
        ({"dtype": ["float32"]}, "'dtype' must be one of"),
        ({"seed": -1}, "'seed' must be a non-negative int or null"),
        ({"seed": "0"}, "'seed' must be a non-negative int or null"),
    ],
)
def test_header_fields_of_the_wrong_form_name_the_file(tmp_path, change, match):
    header = {**dense_header(), **change}
    path = write_zip(tmp_path / "m.npz", dense_members(header=header))
    with pytest.raises(ModelFileError, match=rf"m\.npz.*{match}"):
        load_model(path)


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (header_bytes([1, 2]), "the header is not a JSON object but list"),
        (npy_bytes(b'{"a": NaN}', descr="|u1", shape=(10,)), "holds NaN"),
        (npy_bytes(b"{" * 5000 + b"}" * 5000, descr="|u1", shape=(10000,)), "unreadable header"),
        (npy_bytes(b"\xff\xfe{}", descr="|u1", shape=(4,)), r"utf-8|unreadable header"),
        (npy_bytes(b"{}", descr="<f4", shape=(2,)), r"dtype '<f4', not uint8"),
        (npy_bytes(b"{}" * 2, descr="|u1", shape=(2, 2)), "not a 1-D array"),
        (
            npy_bytes(b"{}", descr="|u1", shape=(2 * 1024**2,)),
            r"declares .*2\.00 MiB.*holds|header declares 2\.00 MiB",
        ),
    ],
)
def test_bad_json_headers_name_the_file(tmp_path, member, match):
    members = dense_members()
    members[f"{HEADER_KEY}.npy"] = member
    with pytest.raises(ModelFileError, match=rf"m\.npz.*{match}"):
        load_model(write_zip(tmp_path / "m.npz", members))


# ------------------------------------------------------------------------------ the archive


def test_files_that_are_not_model_archives(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"notes\.txt.*not an arraycnn model file"):
        load_model(text)
    plain = tmp_path / "arrays.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(
        ModelFileError, match=r"arrays\.npz.*not an arraycnn model.*no model header"
    ):
        load_model(plain)
    with pytest.raises(ModelFileError, match=r"is not a file"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz' does not exist"):
        load_model(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got int 3"):
        load_model(3)


@pytest.mark.parametrize("keep", [10, 100, 300])
def test_a_truncated_archive_names_the_file(tmp_path, keep):
    path = write_zip(tmp_path / "m.npz", dense_members())
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ModelFileError, match=r"m\.npz"):
        load_model(path)


def test_unexpected_members_are_refused(tmp_path):
    members = dense_members()
    members["notes.txt"] = b"hello"
    with pytest.raises(ModelFileError, match=r"member 'notes\.txt' that is not a \.npy array"):
        load_model(write_zip(tmp_path / "a.npz", members))
    members = dense_members()
    members["../evil.npy"] = npy_of(W)
    with pytest.raises(ModelFileError, match=r"'\.\./evil\.npy'.* names no parameter"):
        load_model(write_zip(tmp_path / "b.npz", members))


def test_a_duplicated_member_is_refused(tmp_path):
    path = write_zip(tmp_path / "m.npz", dense_members())
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive.writestr("0.w.npy", npy_of(W * 2))
    with pytest.raises(ModelFileError, match=r"holds the member '0\.w\.npy' twice"):
        load_model(path)


def test_other_compression_methods_are_refused(tmp_path):
    path = write_zip(tmp_path / "m.npz", dense_members(), compression=zipfile.ZIP_LZMA)
    with pytest.raises(ModelFileError, match=r"zip compression method 14 \(stored or deflated"):
        load_model(path)


def test_a_corrupted_data_byte_is_caught_by_the_crc(tmp_path):
    path = write_zip(tmp_path / "m.npz", dense_members())
    data = bytearray(path.read_bytes())
    at = data.index(W.tobytes())  # the weights of 0.w, stored
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.npz.*'0\.w'.*Bad CRC-32"):
        load_model(path)


# ------------------------------------------------------------------------------ values


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_are_refused(tmp_path, bad):
    w = W.copy()
    w[1, 0] = bad
    with pytest.raises(ModelFileError, match=r"m\.npz.*'0\.w' holds NaN or infinite values"):
        load_model(write_zip(tmp_path / "m.npz", dense_members(w=w)))


def test_values_beyond_a_narrower_dtype_are_refused(tmp_path):
    w = W.astype(np.float64)
    w[0, 0] = 1e6  # beyond float16's 65504
    path = write_zip(tmp_path / "m.npz", dense_members(w=w))
    assert params_of(load_model(path, dtype="float64"))["0.w"][0, 0] == 1e6
    with pytest.raises(ModelFileError, match=r"'0\.w' holds values beyond the range of float16"):
        load_model(path, dtype="float16")


def test_saving_non_finite_parameters_warns_and_the_file_is_refused(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    model.build((3,))
    model.set_parameters({"0.b": np.array([np.nan, 0.0], dtype=np.float32)})
    with pytest.warns(RuntimeWarning, match=r"\['0\.b'\] that hold NaN.*load_model refuses"):
        path = model.save(tmp_path / "diverged.npz")
    with pytest.raises(ModelFileError, match=r"diverged\.npz.*'0\.b' holds NaN"):
        load_model(path)
    np.testing.assert_array_equal(np.load(path)["0.b"], [np.nan, 0.0])  # still inspectable


def test_a_header_without_a_seed_loads_with_none(tmp_path):
    header = dense_header()
    del header["seed"]
    model = load_model(write_zip(tmp_path / "m.npz", dense_members(header=header)))
    assert model.seed is None
    np.testing.assert_array_equal(params_of(model)["0.w"], W)
