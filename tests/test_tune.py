"""``arraycnn tune``: the fit of the cost model, its regret, the stored files and the CLI.

The fit is checked on synthetic samples: the counts of the real plans of tune's quick
cases, with the times a known calibration predicts (the truth is in the model family, so
a correct fit reproduces every time and every pick). The command runs on the tiny case set;
speed is never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pytest

from arraycnn.cli import main
from arraycnn.conv import cost
from arraycnn.conv.strategy import Counts
from arraycnn.tools import cases, tune

TRUTH = cost.Calibration(
    sec_per_gemm_flop=1 / 20e9,
    sec_per_gemm_cell=2e-10,
    sec_per_byte=1 / 8e9,
    sec_per_fft_flop=1 / 2e9,
    sec_per_call=5e-6,
    factor={"naive": 1.5, "separable": 0.8, "im2col": 1.0, "fft": 1.2, "winograd": 1.3},
)
#: The fit's starting point: neutral factors, constants far from the truth's.
START = cost.Calibration(1e-9, 1e-9, 1e-9, 1e-9, 1e-6, factor={}, source="start")


def synthetic_samples(truth: cost.Calibration, noise: float = 0.0) -> list[tune.Sample]:
    """tune's quick cases, every plan auto may choose, timed by ``truth`` (times ``exp`` of
    seeded normal noise of scale ``noise``)."""
    rng = np.random.default_rng(5)
    samples = []
    for case in cases.TUNE_CASES["quick"]:
        for (name, direction), (plan, _) in tune.case_plans(case, np, truth).items():
            seconds = truth.seconds(name, plan.counts) * math.exp(noise * rng.standard_normal())
            samples.append(tune.Sample(case, name, direction, plan.counts, seconds))
    return samples


def squared_relative_error(cal: cost.Calibration, samples: list[tune.Sample]) -> float:
    return sum((cal.seconds(s.strategy, s.counts) / s.seconds - 1) ** 2 for s in samples)


def test_synthetic_samples_cover_every_strategy_and_direction():
    samples = synthetic_samples(TRUTH)
    assert {s.strategy for s in samples} == {"naive", "separable", "im2col", "fft", "winograd"}
    assert {s.direction for s in samples} == {"forward", "backward"}


def test_fit_reproduces_the_times_and_picks_of_a_known_model():
    samples = synthetic_samples(TRUTH)
    fitted = tune.fit(samples, START, source="synthetic")
    for s in samples:
        assert fitted.seconds(s.strategy, s.counts) == pytest.approx(s.seconds, rel=1e-6)
    assert all(row[3] == 1.0 for row in tune.regret(samples, fitted))
    assert tune.summary(tune.regret(samples, fitted)) == {
        "geomean": 1.0,
        "max": 1.0,
        "optimal_fraction": 1.0,
    }
    # the GEMM constants are identified; the others up to the scale the factors share
    assert fitted.sec_per_gemm_flop == pytest.approx(TRUTH.sec_per_gemm_flop, rel=1e-6)
    assert fitted.sec_per_gemm_cell == pytest.approx(TRUTH.sec_per_gemm_cell, rel=1e-6)
    ratio = fitted.sec_per_byte / TRUTH.sec_per_byte
    assert fitted.sec_per_call / TRUTH.sec_per_call == pytest.approx(ratio, rel=1e-6)
    for name, factor in TRUTH.factor.items():
        assert fitted.factor[name] * ratio == pytest.approx(factor, rel=1e-6)
    assert math.prod(fitted.factor.values()) == pytest.approx(1.0)  # geometric mean 1
    assert fitted.source == "synthetic"


def test_fit_on_noisy_times_is_no_worse_than_the_model_that_made_them():
    samples = synthetic_samples(TRUTH, noise=0.2)
    fitted = tune.fit(samples, START)
    assert squared_relative_error(fitted, samples) <= squared_relative_error(TRUTH, samples)
    assert all(v >= 0 for v in fitted.to_json().values() if isinstance(v, float))


def test_a_constant_no_sample_exercises_keeps_its_starting_value():
    samples = [s for s in synthetic_samples(TRUTH) if s.strategy != "fft"]
    assert all(s.counts.fft_flops == 0 for s in samples)
    fitted = tune.fit(samples, START)
    assert fitted.sec_per_fft_flop == START.sec_per_fft_flop
    assert "fft" not in fitted.factor  # not measured: the start's (absent) factor
    for s in samples:
        assert fitted.seconds(s.strategy, s.counts) == pytest.approx(s.seconds, rel=1e-6)


def test_regret_is_the_measured_time_of_the_models_pick_over_the_fastest():
    case = cases.TUNE_CASES["tiny"][0]
    samples = [
        tune.Sample(case, "naive", "forward", Counts(bytes=1e6), 3e-3),
        tune.Sample(case, "im2col", "forward", Counts(bytes=2e6), 2e-3),
        tune.Sample(case, "naive", "backward", Counts(bytes=1e6), 1e-3),
        tune.Sample(case, "im2col", "backward", Counts(bytes=2e6), 4e-3),
    ]
    plain = cost.Calibration(0.0, 0.0, 1e-9, 0.0, 0.0)  # naive predicted faster everywhere
    assert tune.regret(samples, plain) == [
        (case.label, "forward", "naive", 1.5),
        (case.label, "backward", "naive", 1.0),
    ]
    slow_naive = cost.Calibration(0.0, 0.0, 1e-9, 0.0, 0.0, factor={"naive": 3.0})
    assert [row[2:] for row in tune.regret(samples, slow_naive)] == [
        ("im2col", 1.0),
        ("im2col", 4.0),
    ]
    assert tune.summary(tune.regret(samples, slow_naive)) == pytest.approx(
        {"geomean": 2.0, "max": 4.0, "optimal_fraction": 0.5}
    )


def test_update_shipped_rewrites_the_json_package_data(tmp_path):
    target = tmp_path / "calibration.json"
    shutil.copy(tune.shipped_path(), target)
    before = json.loads(target.read_text())
    mine = cost.Calibration(1.23456789e-11, 0.0, 2e-11, 3e-11, 4e-6, {"fft": 1.23456}, "test")
    assert tune.update_shipped({"numpy": mine}, path=target) == target
    after = json.loads(target.read_text())  # JSON, not Python
    assert after["format"] == before["format"]
    assert after["backends"]["torch"] == before["backends"]["torch"]  # not refitted: kept
    numpy_entry = cost.Calibration.from_json(after["backends"]["numpy"])
    assert numpy_entry.sec_per_gemm_flop == 1.23457e-11  # six significant digits
    assert numpy_entry.factor == {"fft": 1.235}
    assert numpy_entry.source == "test"


def test_tune_stores_a_user_calibration_the_dispatcher_uses(capsys, tmp_path):
    assert main(["tune", "--cases", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "backend numpy" in out and "in-sample regret" in out and "stored in" in out
    data = json.loads((tmp_path / "cache" / "calibration.json").read_text())
    assert set(data["backends"]) == {"numpy"}
    assert data["backends"]["numpy"]["regret"]["geomean"] >= 1.0
    cal, origin = cost.calibration_for("numpy")
    assert origin == "user"
    assert cal.source.startswith("arraycnn tune --cases tiny: 2 cases, ")
    assert set(cal.factor) == {"naive", "separable", "im2col", "fft", "winograd"}
    assert main(["info"]) == 0
    assert "fitted on this machine by 'arraycnn tune'" in capsys.readouterr().out


def test_tune_dry_run_json_with_held_out_cases(capsys, tmp_path):
    argv = ["tune", "--cases", "tiny", "--dry-run", "--json", "--repeats", "1"]
    assert main([*argv, "--evaluate", "2", "--seed", "3"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["backend"] == "numpy" and report["samples"] > 0
    assert report["held_out"]["cases"] == 2 and report["held_out"]["seed"] == 3
    for summary in (report["regret"]["fitted"], report["held_out"]["in_use"]):
        assert summary["max"] >= summary["geomean"] >= 1.0
    assert cost.Calibration.from_json(report["calibration"]).source.startswith("arraycnn tune")
    assert not (tmp_path / "cache" / "calibration.json").exists()


def test_tune_torch_backend(capsys):
    pytest.importorskip("torch")
    assert main(["tune", "--cases", "tiny", "--dry-run", "--backend", "torch"]) == 0
    assert "backend torch" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "0"], "expected an integer >= 1, got '0'"),
        (["--repeats", "many"], "expected an integer >= 1, got 'many'"),
        (["--evaluate", "-1"], "expected an integer >= 0, got '-1'"),
        (["--cases", "huge"], "invalid choice: 'huge'"),
        (["--backend", "nosuch"], "unknown backend 'nosuch'"),
        (["--dry-run", "--update-shipped"], "not allowed with argument"),
    ],
)
def test_rejects_bad_arguments(argv, message, capsys):
    parser = argparse.ArgumentParser(prog="arraycnn tune")
    tune.add_arguments(parser)
    with pytest.raises(SystemExit) as exc_info:
        parser.parse_args(argv)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "argument --" in err


def test_unusable_backend_is_an_error(capsys):
    try:
        import cupy

        if cupy.is_available():
            pytest.skip("CuPy has a GPU here")
    except ImportError:
        pass
    assert main(["tune", "--cases", "tiny", "--backend", "cupy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arraycnn tune:") and "cupy" in err.lower()
