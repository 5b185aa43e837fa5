"""``arraycnn info``: backends, strategies, calibration in use and the autotune cache."""

from __future__ import annotations

import json

import numpy as np

import arraycnn as ac
from arraycnn.backend import BACKEND_NAMES
from arraycnn.budget import format_bytes
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
    cache = tmp_path / "cache"
    sizes = [p.stat().st_size for p in cache.rglob("*") if p.is_file()]
    assert f"Cache directory: {cache}\n  {len(sizes)} files, {format_bytes(sum(sizes))} (" in out
    assert ": 1 choices remembered" in out
    assert "|forward -> " in out
    assert "shipped constants; 'arraycnn tune' fits it to this machine" in out


def test_info_text_says_what_a_user_can_act_on(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(_json_of_info(capsys))["backends"]
    for row in rows:
        assert row["backend"] in out
        if not row["available"] and "install" in row:
            assert row["install"].startswith("pip install ")
            assert row["install"] in out
    assert "from:" not in out and "previous model" not in out  # no maintainer history
    assert all(len(line) <= 80 for line in out.splitlines() if not line.startswith("Cache"))


def _json_of_info(capsys) -> str:
    assert main(["info", "--json"]) == 0
    return capsys.readouterr().out


def test_info_json_counts_the_cache_directory(capsys, tmp_path):
    cache = tmp_path / "cache"
    assert json.loads(_json_of_info(capsys))["cache_files"] == 0
    _one_entry()
    (cache / "extra").mkdir(parents=True, exist_ok=True)
    (cache / "extra" / "blob.bin").write_bytes(b"x" * 1000)
    info = json.loads(_json_of_info(capsys))
    sizes = [p.stat().st_size for p in cache.rglob("*") if p.is_file()]
    assert info["cache_dir"] == str(cache)
    assert info["cache_files"] == len(sizes) >= 2
    assert info["cache_bytes"] == sum(sizes) >= 1000


def test_info_json_and_clear_cache(capsys):
    _one_entry()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["autotune_entries"] == 1 and "entries" not in info
    numpy_row = next(b for b in info["backends"] if b["backend"] == "numpy")
    assert numpy_row["available"] and numpy_row["calibration_source"] == "shipped"
    assert numpy_row["strategies"] == ["naive", "separable", "im2col", "fft", "winograd"]
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


def test_info_says_whether_depthwise_layers_run_compiled(capsys, monkeypatch):
    import importlib.util

    has_numba = importlib.util.find_spec("numba") is not None
    info = json.loads(_json_of_info(capsys))["compiled_depthwise"]
    assert info["enabled"] == has_numba
    assert main(["info"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "Compiled loops" in ln]
    expected = "on (numba " if has_numba else 'pip install "arraycnn[numba]"'
    assert len(line) == 1 and expected in line[0]
    monkeypatch.setenv("ARRAYCNN_NUMBA", "0")
    ac.clear_caches()
    info = json.loads(_json_of_info(capsys))["compiled_depthwise"]
    assert info == {"enabled": False, "reason": "off (ARRAYCNN_NUMBA=0)"}
