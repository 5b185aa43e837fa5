"""``arraycnn info`` and ``arraycnn tune`` in a tiny configuration, and the calibration fit."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

import arraycnn as ac
from arraycnn.cli import main
from arraycnn.conv import autotune, cost, tune_cli


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("ARRAYCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARRAYCNN_TUNE_CASES", "tiny")
    for var in ("ARRAYCNN_AUTOTUNE", "ARRAYCNN_WORKSPACE_LIMIT"):
        monkeypatch.delenv(var, raising=False)
    ac.conv.set_autotune(None)
    ac.conv.set_workspace_limit(None)
    yield
    ac.conv.set_autotune(None)


def _one_entry():
    x = np.ones((1, 1, 6, 6))
    w = np.ones((1, 1, 3, 3))
    ac.conv2d(x, w, autotune=True)


def test_info_text(capsys, tmp_path):
    _one_entry()
    assert main(["info", "--entries"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "naive, separable, im2col, fft" in out
    assert f"cache {tmp_path / 'cache' / 'autotune.json'}: 1 entries" in out
    assert "calibration file:" in out and "(absent: shipped constants in use)" in out
    assert "|forward -> " in out


def test_info_json_and_clear_cache(capsys):
    _one_entry()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["autotune_entries"] == 1 and "entries" not in info
    numpy_row = next(b for b in info["backends"] if b["backend"] == "numpy")
    assert numpy_row["available"] and numpy_row["calibration_source"] in (
        "shipped",
        "first-estimates",
    )
    assert main(["info", "--clear-cache"]) == 0
    assert "1 entries removed" in capsys.readouterr().out
    assert autotune.cache_entries() == {}


def test_tune_quick_tiny_stores_calibration(capsys, tmp_path):
    assert main(["tune", "--quick", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "regret time(model pick)/min" in out and "stored in" in out
    data = json.loads((tmp_path / "cache" / "calibration.json").read_text())
    assert set(data["backends"]) == {"numpy"}
    assert data["backends"]["numpy"]["regret_after"]["geomean"] >= 1.0
    cal, source = cost.calibration_for("numpy")
    assert source == "user" and "fitted by `arraycnn tune --quick`" in cal.source
    assert all(c > 0 for c in cal.coefficients())
    assert main(["info"]) == 0
    assert "calibration (user)" in capsys.readouterr().out


def test_tune_dry_run_json_and_errors(capsys, tmp_path):
    assert main(["tune", "--quick", "--dry-run", "--json", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["backend"] == "numpy" and report[0]["samples"] > 0
    assert not (tmp_path / "cache" / "calibration.json").exists()
    with pytest.raises(SystemExit, match="--repeats must be >= 1, got 0"):
        main(["tune", "--repeats", "0"])
    assert main(["tune", "--backend", "nosuchlib", "--dry-run"]) == 1
    assert "skipping backend 'nosuchlib'" in capsys.readouterr().out


def test_tune_torch_backend(capsys):
    pytest.importorskip("torch")
    assert main(["tune", "--quick", "--dry-run", "--backend", "torch"]) == 0
    assert "backend torch" in capsys.readouterr().out


def _synthetic_samples(truth: cost.Calibration) -> list[tune_cli.Sample]:
    """Every tiny and quick case and strategy, with the time ``truth`` predicts."""
    samples = []
    for case in tune_cli.CASES[:9]:
        geom = tune_cli._geometry(case)
        itemsize = np.dtype(case.dtype).itemsize
        rank = 1 if case.rank1 else case.k
        for name in ("naive", "separable", "im2col", "fft"):
            for direction in ("forward", "backward"):
                counts = cost.op_counts(
                    name, geom, direction=direction, itemsize=itemsize, rank=rank
                )
                seconds = truth.seconds(name, counts, direction)
                samples.append(
                    tune_cli.Sample(case, name, direction, geom, itemsize, rank, seconds)
                )
    return samples


def test_fit_recovers_a_known_model():
    truth = dataclasses.replace(
        cost.FIRST_ESTIMATES,
        sec_per_gemm_flop=1 / 20e9,
        sec_per_byte=1 / 8e9,
        sec_per_fft_flop=1 / 2e9,
        sec_per_spectral_flop=1 / 1e9,
        sec_per_call=15e-6,
        scale={"naive": 1.5, "separable": 0.8, "im2col": 1.0, "fft": 1.2, "fft:backward": 0.6},
        scales_gemm=False,  # the model the fit fits
    )
    samples = _synthetic_samples(truth)
    fitted = tune_cli.fit(samples, cost.FIRST_ESTIMATES, source="synthetic")
    assert fitted.scales_gemm is False
    for s in samples:
        counts = cost.OpCounts(*tune_cli._counts(s))
        assert fitted.seconds(s.strategy, counts, s.direction) == pytest.approx(s.seconds, rel=0.1)
    assert tune_cli._summary(tune_cli.regret(samples, fitted))["max"] == pytest.approx(1.0)
    # the v1 baseline is evaluated on the same samples (a ratio >= 1 by definition)
    assert tune_cli._summary(tune_cli.regret(samples, None))["geomean"] >= 1.0


def test_fit_keeps_the_strategy_factors_off_the_gemms():
    """GEMM-heavy samples whose strategies differ only outside their GEMMs (naive's other
    terms 3x, im2col's 0.5x): one factor on the whole prediction could not fit both
    the GEMM-bound and the overhead-bound cases."""
    truth = dataclasses.replace(
        cost.FIRST_ESTIMATES,
        sec_per_gemm_flop=1 / 5e9,
        sec_per_call=1e-7,
        scale={"naive": 3.0, "im2col": 0.5},
        scales_gemm=False,
    )
    samples = [s for s in _synthetic_samples(truth) if s.strategy in ("naive", "im2col")]
    fitted = tune_cli.fit(samples, cost.FIRST_ESTIMATES, source="synthetic")
    for s in samples:
        counts = cost.OpCounts(*tune_cli._counts(s))
        assert fitted.seconds(s.strategy, counts, s.direction) == pytest.approx(s.seconds, rel=0.05)


def test_update_shipped_rewrites_only_the_block(tmp_path):
    target = tmp_path / "cost.py"
    shutil.copy(cost.__file__, target)
    mine = dataclasses.replace(
        cost.FIRST_ESTIMATES, sec_per_call=7e-6, source="test fit 'x'", scales_gemm=False
    )
    tune_cli.update_shipped({"numpy": mine}, path=target)
    text = target.read_text()
    original = open(cost.__file__).read()
    head = original.split("# BEGIN SHIPPED CALIBRATION")[0]
    tail = original.split("# END SHIPPED CALIBRATION")[1]
    assert text.startswith(head) and text.endswith(tail)
    block = text.split("# BEGIN SHIPPED CALIBRATION")[1].split("# END SHIPPED CALIBRATION")[0]
    namespace = {"Calibration": cost.Calibration}
    exec(block.split("\n", 1)[1], namespace)  # the block is valid Python
    assert namespace["SHIPPED"]["numpy"].sec_per_call == pytest.approx(7e-6)
    assert namespace["SHIPPED"]["numpy"].source == "test fit 'x'"
    assert namespace["SHIPPED"]["numpy"].scales_gemm is False
    bad = tmp_path / "nothing.py"
    bad.write_text("x = 1\n")
    with pytest.raises(RuntimeError, match="no SHIPPED CALIBRATION block"):
        tune_cli.update_shipped({"numpy": mine}, path=bad)


def test_tune_evaluate_held_out(capsys, tmp_path):
    assert main(["tune", "--evaluate", "2", "--repeats", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "2 held-out cases" in out and "calibration in use geomean" in out
    assert not (tmp_path / "cache" / "calibration.json").exists()  # evaluation stores nothing
    with pytest.raises(SystemExit, match="--evaluate must be >= 0, got -1"):
        main(["tune", "--evaluate", "-1"])


def test_holdout_cases_are_seeded_and_bounded():
    first = tune_cli.holdout_cases(5, seed=7)
    assert first == tune_cli.holdout_cases(5, seed=7)
    assert first != tune_cli.holdout_cases(5, seed=8)
    for case in first:
        assert tune_cli._geometry(case).macs() <= tune_cli.HOLDOUT_MAX_MACS_TINY


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_shipped_calibrations_are_fitted_and_sane(backend):
    cal = cost.SHIPPED[backend]
    assert cal.source.startswith("fitted by `arraycnn tune")
    assert all(0 < c < 1e-3 for c in cal.coefficients())
    names = ("naive", "separable", "im2col", "fft")
    assert set(cal.scale) == {*names, *(f"{n}:backward" for n in names)}
    assert cost.calibration_for(backend) == (cal, "shipped")  # no user file in the tmp dir


def test_backward_factor_falls_back_to_the_forward_one():
    counts = cost.OpCounts(bytes=1e9)
    only_forward = dataclasses.replace(cost.FIRST_ESTIMATES, scale={"naive": 2.0})
    assert only_forward.factor("naive", "backward") == 2.0
    assert only_forward.seconds("naive", counts, "backward") == only_forward.seconds(
        "naive", counts
    )
    both = dataclasses.replace(only_forward, scale={"naive": 2.0, "naive:backward": 3.0})
    assert both.factor("naive", "backward") == 3.0 and both.factor("naive") == 2.0
    assert both.seconds("naive", counts, "backward") == pytest.approx(
        1.5 * both.seconds("naive", counts)
    )
    assert both.factor("fft", "backward") == 1.0  # unknown strategy: neutral


def test_strategy_factor_leaves_the_gemm_terms_alone():
    """Fitted calibrations scale all but the GEMM terms per strategy; those fitted before
    (``scales_gemm`` True, the default of a file without the field) scale everything."""
    counts = cost.OpCounts(gemm_flops=1e9, gemm_cells=1e8, bytes=1e9, calls=10)
    cal = dataclasses.replace(cost.FIRST_ESTIMATES, scale={"naive": 2.0}, scales_gemm=False)
    gemm = 1e9 * cal.sec_per_gemm_flop + 1e8 * cal.sec_per_gemm_cell
    rest = 1e9 * cal.sec_per_byte + 10 * cal.sec_per_call
    assert cal.seconds("naive", counts) == pytest.approx(gemm + 2.0 * rest)
    old = {k: v for k, v in cal.to_json().items() if k != "scales_gemm"}
    loaded = cost.Calibration.from_json(old)
    assert loaded.scales_gemm is True
    assert loaded.seconds("naive", counts) == pytest.approx(2.0 * (gemm + rest))
    with pytest.raises(ValueError, match="scales_gemm must be true or false, got 'yes'"):
        cost.Calibration.from_json(cal.to_json() | {"scales_gemm": "yes"})
