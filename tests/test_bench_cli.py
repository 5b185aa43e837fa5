"""``arraycnn bench`` in a tiny configuration: it runs, writes its JSON and PNG, rejects bad input.

Speed is never asserted; only the structure and internal consistency of the results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest

import arraycnn as ac
from arraycnn import STRATEGY_NAMES
from arraycnn.cli import main as cli_main
from arraycnn.tools import bench, cases, measuring, reporting

pytest.importorskip("matplotlib")

TINY = ["--layers", "none", "--image-sizes", "12", "--kernel-sizes", "3", "--repeat", "1"]


def run_bench(argv: list[str]) -> int:
    """Parse ``argv`` with the subcommand's own parser and run it."""
    parser = argparse.ArgumentParser(prog="arraycnn bench")
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run argv expecting argparse to refuse it; return its error message."""
    with pytest.raises(SystemExit) as exc_info:
        run_bench(argv)
    assert exc_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny run through the ``arraycnn`` entry point (numpy; one small layer; peers on)."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--quick", *TINY, "--layers", "64x1x28x28:32x3x3"]
    argv += ["--backend", "numpy", "--out", str(out)]
    buffer = io.StringIO()
    with ac.config(cache_dir=out / "cache"), contextlib.redirect_stdout(buffer):
        code = cli_main(argv)
    assert code == 0
    return out, buffer.getvalue()


def test_writes_json_with_expected_keys(tiny_run: tuple[Path, str]) -> None:
    out, _ = tiny_run
    report = json.loads((out / "results.json").read_text())
    assert {"created", "environment", "settings", "strategies", "seconds_total", "cases"} <= set(
        report
    )
    assert report["strategies"] == list(STRATEGY_NAMES)
    assert report["settings"]["backends"] == ["numpy"]
    labels = [(c["case"], c["direction"]) for c in report["cases"]]
    assert labels == [
        ("64x1x28x28:32x3x3", "forward"),
        ("64x1x28x28:32x3x3", "backward"),
        ("img12:k3:gaussian", "forward"),
        ("img12:k3:random", "forward"),
    ]
    for case in report["cases"]:
        keys = {"times", "auto_choice", "best", "regret", "peers", "skipped", "kind", "x_shape"}
        assert keys <= set(case)
        times = case["times"]["numpy"]
        assert "auto" in times and all(t > 0 for t in times.values())
        assert case["auto_choice"]["numpy"] in STRATEGY_NAMES
        strategies = {s: t for s, t in times.items() if s != "auto"}
        assert case["best"]["numpy"] == min(strategies, key=strategies.__getitem__)
        expected = times["auto"] / min(times.values())
        assert case["regret"]["numpy"] == pytest.approx(expected)
        assert case["regret"]["numpy"] >= 1.0
        chosen = times[case["auto_choice"]["numpy"]] / min(strategies.values())
        assert case["choice_regret"]["numpy"] == pytest.approx(chosen)
    filtering = report["cases"][2]
    assert {"scipy.fft", "scipy.2d", "ndimage"} <= set(filtering["peers"])
    layer_forward = report["cases"][0]
    assert layer_forward["gemm"]["numpy"] > 0  # the layer's GEMM alone, the GFLOP/s anchor
    regrets = [case["regret"]["numpy"] for case in report["cases"]]
    assert report["regret"]["numpy"]["max"] == pytest.approx(max(regrets))
    assert report["regret"]["numpy"]["cases"] == len(regrets)
    choices = [case["choice_regret"]["numpy"] for case in report["cases"]]
    assert report["regret"]["numpy"]["choice_max"] == pytest.approx(max(choices))


def test_auto_choice_is_the_one_conv2d_makes(tiny_run: tuple[Path, str]) -> None:
    """The choice recorded per forward case is :func:`arraycnn.choose_strategy`'s on the
    registry's inputs of that case."""
    out, _ = tiny_run
    report = json.loads((out / "results.json").read_text())
    registry = [cases.LAYERS["64x1x28x28:32x3x3"], *cases.FilterGrid((12,), (3,)).cases()]
    by_label = {case.label: case for case in registry}
    forward = [c for c in report["cases"] if c["direction"] == "forward"]
    assert len(forward) == 3
    for entry in forward:
        case = by_label[entry["case"]]
        x, w, _ = cases.host_arrays(case)
        assert entry["auto_choice"]["numpy"] == ac.choose_strategy(x, w, **case.kwargs)
        assert entry["x_shape"] == list(case.x_shape) and entry["kind"] == case.kind


def test_rank1_peer_only_for_the_gaussian_kernel(tiny_run: tuple[Path, str]) -> None:
    pytest.importorskip("cv2")
    out, _ = tiny_run
    gaussian, random = json.loads((out / "results.json").read_text())["cases"][2:]
    assert {"cv2", "cv2.sep"} <= set(gaussian["peers"])
    assert "cv2" in random["peers"] and "cv2.sep" not in random["peers"]


def _result(times: dict[str, float], choice: str) -> measuring.CaseResult:
    case = cases.filter_case(12, 3, "random")
    return measuring.CaseResult(case, times={"numpy": times}, choice={"numpy": choice})


def test_choice_regret_separates_the_choice_from_autos_overhead() -> None:
    """Auto ran the fastest strategy (its regret is its own overhead: choice regret 1) or
    another one (the choice alone costs that strategy's time over the fastest)."""
    right = _result({"naive": 2.0, "im2col": 3.0, "auto": 2.2}, "naive")
    wrong = _result({"naive": 2.0, "im2col": 3.0, "auto": 3.3}, "im2col")
    assert right.regret("numpy") == pytest.approx(1.1)
    assert right.choice_regret("numpy") == 1.0
    assert wrong.regret("numpy") == pytest.approx(1.65)
    assert wrong.choice_regret("numpy") == pytest.approx(1.5)
    summary = reporting.regret_summary([right, wrong])["numpy"]
    assert summary["max"] == pytest.approx(1.65)
    assert summary["choice_max"] == pytest.approx(1.5)
    assert summary["choice_geomean"] == pytest.approx(1.5**0.5)
    assert summary["other_choice_cases"] == ["img12:k3:random (forward)"]
    untimed = _result({"naive": 2.0, "auto": 2.2}, "im2col")  # im2col was skipped
    assert untimed.choice_regret("numpy") is None
    assert reporting.regret_summary([untimed])["numpy"]["choice_max"] is None


def test_writes_a_png_crossover_plot(tiny_run: tuple[Path, str]) -> None:
    import matplotlib.image

    out, _ = tiny_run
    path = out / "crossover.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01  # not a blank canvas


def test_prints_tables(tiny_run: tuple[Path, str]) -> None:
    _, stdout = tiny_run
    assert "conv layers" in stdout and "image filtering" in stdout
    assert "regret" in stdout and "results.json" in stdout
    assert "backward" in stdout and "fastest SciPy and OpenCV" in stdout


def test_skipped_strategies_are_reported_and_auto_still_timed(tmp_path: Path) -> None:
    argv = [*TINY, "--backend", "numpy", "--no-peers", "--max-seconds", "1e-12"]
    assert run_bench([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    for case in report["cases"]:
        assert set(case["times"]["numpy"]) == {"auto"}
        assert case["best"]["numpy"] is None
        assert case["regret"]["numpy"] == 1.0
        assert case["peers"] == {}
        skipped = case["skipped"]
        assert set(skipped) == {f"numpy:{s}" for s in STRATEGY_NAMES}
        assert all("predicted" in why for why in skipped.values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "nosuch"], "unknown backend 'nosuch'"),
        (["--backend", ""], "unknown backend"),
        (["--image-sizes", "0"], "positive integers"),
        (["--image-sizes", "a,b"], "comma-separated positive integers"),
        (["--kernel-sizes", "-3"], "positive integers"),
        (["--repeat", "0"], "positive integer"),
        (["--repeat", "2,3"], "one positive integer"),
        (["--max-seconds", "-1"], "positive number"),
        (["--max-seconds", "inf"], "positive number"),
        (["--max-seconds", "fast"], "positive number"),
        (["--case-seconds", "-1"], "expected a finite number >= 0, got '-1'"),
        (["--case-seconds", "inf"], "expected a finite number >= 0, got 'inf'"),
        (["--case-seconds", "long"], "expected a number >= 0, got 'long'"),
        (["--layers", "64x1x28x28"], "unknown layer '64x1x28x28'"),
    ],
)
def test_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = parse_error(argv, capsys)
    assert message in err
    assert "argument --" in err  # argparse names the option


def test_no_case_to_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--layers", "none", "--image-sizes", "8", "--kernel-sizes", "9"]
    assert run_bench([*argv, "--out", str(tmp_path)]) == 2
    assert "no case to run" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    argv = ["--layers", "none", "--no-filters"]
    assert run_bench([*argv, "--out", str(tmp_path)]) == 2
    assert "no case to run" in capsys.readouterr().err


def test_no_filters_times_layers_only(tmp_path: Path) -> None:
    argv = ["--quick", "--layers", "64x1x28x28:32x3x3", "--no-filters", "--no-peers"]
    assert run_bench([*argv, "--repeat", "1", "--backend", "numpy", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert {c["kind"] for c in report["cases"]} == {"layer"}


def test_unusable_backend_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import cupy

        if cupy.is_available():
            pytest.skip("CuPy has a GPU here")
    except ImportError:
        pass
    assert run_bench([*TINY, "--backend", "cupy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cupy" in err and err.startswith("arraycnn bench:")


def test_the_readme_commands_parse() -> None:
    parser = argparse.ArgumentParser(prog="arraycnn bench")
    bench.add_arguments(parser)
    args = parser.parse_args(["--layers", "all", "--no-filters", "--backend", "numpy,torch"])
    assert args.layers == list(cases.LAYERS) and args.no_filters
    assert args.backend == ["numpy", "torch"]
    assert parser.parse_args(["--layers", "none"]).layers == []
    args = parser.parse_args(["--quick", "--out", "somewhere", "--repeat", "2"])
    assert args.quick and str(args.out) == "somewhere" and args.repeat == 2
