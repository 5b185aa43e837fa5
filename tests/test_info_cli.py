"""``arraycnn info``: backends, strategies, calibration in use and the autotune cache."""

from __future__ import annotations

import json

import numpy as np

import arraycnn as ac
from arraycnn.backend import BACKEND_NAMES
from arraycnn.cli import main
from arraycnn.conv import cost, measured


def _one_entry() -> None:
    """One autotuned choice in the (per-test) cache."""
    ac.conv2d(np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3)), autotune=True)


def test_info_text(capsys, tmp_path):
    _one_entry()
    assert main(["info", "--entries"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "naive, separable, im2col, fft" in out
    assert f"cache {tmp_path / 'cache' / 'autotune.json'}: 1 entries" in out
    assert "calibration file:" in out and "(absent: shipped constants in use)" in out
    assert "calibration (shipped)" in out
    assert "|forward -> " in out


def test_info_json_and_clear_cache(capsys):
    _one_entry()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["autotune_entries"] == 1 and "entries" not in info
    numpy_row = next(b for b in info["backends"] if b["backend"] == "numpy")
    assert numpy_row["available"] and numpy_row["calibration_source"] == "shipped"
    assert numpy_row["strategies"] == ["naive", "separable", "im2col", "fft"]
    assert numpy_row["calibration_origin"] == cost.shipped_calibrations()["numpy"].source
    assert main(["info", "--clear-cache"]) == 0
    assert "1 entries removed" in capsys.readouterr().out
    assert measured.cache_entries() == {}


def test_info_shows_a_user_calibration(capsys):
    mine = cost.Calibration(1e-11, 1e-10, 2e-11, 5e-11, 3e-6, {"fft": 2.0}, source="mine")
    cost.save_user_calibration("numpy", mine)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["calibration_file_exists"] is True
    numpy_row = next(b for b in info["backends"] if b["backend"] == "numpy")
    assert numpy_row["calibration_source"] == "user"
    assert numpy_row["calibration_origin"] == "mine"
    assert numpy_row["calibration"] == mine.describe()


def test_info_lists_unavailable_backends_with_the_reason(capsys):
    assert main(["info", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["backends"]
    assert [r["backend"] for r in rows] == list(BACKEND_NAMES)
    for row in rows:
        assert row["available"] or row["reason"]
