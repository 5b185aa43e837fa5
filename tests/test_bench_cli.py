"""``arraycnn bench`` in a tiny configuration: it runs, writes its JSON and PNG, rejects bad input.

Speed is never asserted; only the structure and internal consistency of the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import arraycnn as ac
from arraycnn import STRATEGY_NAMES
from arraycnn.cli import main as cli_main
from arraycnn.tools import bench, cases, measuring, peers, reporting

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
    assert "conv layers, forward, numpy: median ms" in stdout
    assert "conv layers, backward (gx, gw, gb), numpy" in stdout
    assert "image filtering ('same'), numpy" in stdout
    assert "image filtering ('same'), peers from SciPy" in stdout
    assert "image filtering, numpy: auto against SciPy and OpenCV" in stdout
    assert "regret on numpy" in stdout and "results.json" in stdout


def test_one_progress_line_per_case(tiny_run: tuple[Path, str]) -> None:
    """Not a terminal: one line per case and direction, numbered, with its seconds."""
    _, stdout = tiny_run
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert [line.split(" ...")[0] for line in lines] == [
        "[1/4] 64x1x28x28:32x3x3",
        "[2/4] 64x1x28x28:32x3x3 backward",
        "[3/4] img12:k3:gaussian",
        "[4/4] img12:k3:random",
    ]
    assert all(line.endswith(" s") for line in lines)


def _lines_fit(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long
    assert "…" not in text  # rich's mark of a cut cell


def test_output_fits_80_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warnings, progress, tables, summary and the not-timed list at COLUMNS=80, every
    header and case label whole."""
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # a warning line to wrap too
    backends = "numpy,torch" if peers.optional("torch") else "numpy"
    argv = [*TINY, "--layers", "16x64x56x56:64x3x3/g64", "--max-seconds", "0.002"]
    assert run_bench([*argv, "--backend", backends, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    paths = f"  {tmp_path}"  # the files written: the user's own path, printed whole
    _lines_fit("\n".join(line for line in captured.out.splitlines() if paths not in line))
    _lines_fit(captured.err)
    assert "thread counts are not pinned" in " ".join(captured.err.split())
    assert "16x64x56x56:64x3x3/g64" in captured.out and "img12:k3:gaussian" in captured.out
    for header in ("naive", "sep", "im2col", "fft", "auto", "choice", "regret", "fftconv"):
        assert f" {header}" in captured.out
    assert "not timed" in captured.out  # --max-seconds left strategies out: listed, wrapped


def _wide_results() -> list[measuring.CaseResult]:
    """Results with the longest labels and the widest numbers of the bench's tables."""
    layer = cases.LAYERS["16x64x56x56:64x3x3/g64"]
    slow = dict.fromkeys(STRATEGY_NAMES, 98.7654)
    slow["auto"] = 0.0001234
    results = []
    for direction in ("forward", "backward"):
        result = measuring.CaseResult(layer, direction, {"numpy": dict(slow)}, {"numpy": "fft"})
        result.peers = {"torch": 1.234567}
        result.gemm = {"numpy": 0.0123}
        results.append(result)
    filtering = cases.filter_case(4096, 63, "gaussian")
    names = ("scipy.fft", "scipy.oa", "scipy.2d", "scipy.auto", "ndimage", "cv2", "cv2.sep")
    peers = dict.fromkeys([*names, "torch"], 0.0001234)
    choice = {"numpy": "separable"}
    results.append(measuring.CaseResult(filtering, times={"numpy": slow}, choice=choice))
    results[-1].peers = peers
    return results


def test_widest_tables_fit_80_columns_in_rich_and_plain() -> None:
    rich_console = pytest.importorskip("rich.console")
    tables = reporting.bench_tables(_wide_results(), ["numpy"], peers=True)
    buffer = io.StringIO()
    reporting.print_tables(tables, console=rich_console.Console(width=80, file=buffer))
    _lines_fit(buffer.getvalue())
    assert "16x64x56x56:64x3x3/g64" in buffer.getvalue()
    assert "98765" in buffer.getvalue() and "0.123" in buffer.getvalue()  # ms, whole
    plain = [
        line
        for t in tables
        for b in reporting.fit_width(t, 80)
        for line in reporting.render_plain(b)
    ]
    _lines_fit("\n".join(plain))


def test_a_table_too_wide_is_split_into_blocks_repeating_the_case_column() -> None:
    header = ["case", *(f"column{i}" for i in range(12))]
    rows = [["img4096:k63:gaussian", *(f"{i}.25" for i in range(12))]]
    blocks = reporting.fit_width(reporting.Table("wide", header, rows, "legend"), 80)
    assert len(blocks) == 2
    assert [b.title for b in blocks] == ["wide (1/2)", "wide (2/2)"]
    assert [b.caption for b in blocks] == ["", "legend"]
    assert all(b.header[0] == "case" and b.rows[0][0] == rows[0][0] for b in blocks)
    assert [h for b in blocks for h in b.header[1:]] == header[1:]  # every column, in order
    assert [c for b in blocks for c in b.rows[0][1:]] == rows[0][1:]
    assert all(len(line) <= 80 for b in blocks for line in reporting.render_plain(b))
    narrow = reporting.Table("narrow", header[:3], [r[:3] for r in rows])
    assert reporting.fit_width(narrow, 80) == [narrow]


def test_rich_progress_leaves_one_line_per_case() -> None:
    rich_console = pytest.importorskip("rich.console")
    buffer = io.StringIO()
    console = rich_console.Console(width=80, file=buffer)
    with reporting.RichProgress(2, console=console) as progress:
        for label in ("first case", "second case"):
            on_call = progress.start(label)
            for done in (0, 1, 2):
                on_call("numpy:fft", done, 3)
            progress.finish()
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("[")]
    assert [line.rsplit(" ", 2)[0] for line in lines] == ["[1/2] first case", "[2/2] second case"]


def test_timed_rounds_reports_every_timed_call() -> None:
    """on_call before each timed call: the calls done count up by one, below the planned."""
    seen: list[tuple[str, int, int]] = []
    calls = {name: (lambda: np.ones(3)) for name in "abc"}
    medians = measuring.timed_rounds(calls, 2, on_call=lambda *args: seen.append(args))
    assert set(medians) == set(calls) and all(t >= 0 for t in medians.values())
    assert [done for _, done, _ in seen] == list(range(6))
    assert all(planned == 6 for *_, planned in seen)
    assert [name for name, *_ in seen] == ["a", "b", "c", "b", "c", "a"]  # rotated rounds


def test_condition_warnings() -> None:
    pinned = {"OMP_NUM_THREADS": "1"}
    assert measuring.condition_warnings(pinned, load=(0.9, 0.0, 0.0), cpus=2) == []
    assert measuring.condition_warnings({"MKL_NUM_THREADS": "1"}, (0.0, 0, 0), 2) == []
    (unpinned,) = measuring.condition_warnings({}, load=(0.0, 0.0, 0.0), cpus=2)
    assert "OMP_NUM_THREADS" in unpinned and "not pinned" in unpinned
    (busy,) = measuring.condition_warnings(pinned, load=(1.5, 0.0, 0.0), cpus=2)
    assert "busy" in busy and "1.5 on 2 CPUs" in busy


def test_warnings_printed_once_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in measuring.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    argv = [*TINY, "--image-sizes", "12,16", "--backend", "numpy", "--no-peers"]
    assert run_bench([*argv, "--out", str(tmp_path)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("thread counts are not pinned") == 1
    assert err.count("the machine is busy (load average 64.0 on 2 CPUs") == 1
    assert err.index("warning") == len("arraycnn bench: ")


def test_missing_peer_is_named_once_with_the_bench_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    argv = [*TINY, "--image-sizes", "12,16", "--backend", "numpy"]
    assert run_bench([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("not installed") == 1
    assert 'pip install "arraycnn[bench]"' in out and "cv2, cv2.sep" in out
    assert "filter2D" not in out  # no OpenCV table
    report = json.loads((tmp_path / "results.json").read_text())
    assert {"cv2", "cv2.sep"} <= set(report["settings"]["missing_peers"])
    assert len(report["cases"]) == 4
    for case in report["cases"]:
        assert not {"cv2", "cv2.sep"} & (set(case["peers"]) | set(case["skipped"]))
        assert "scipy.fft" in case["peers"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_format_writes_markdown_or_csv_to_out(fmt: str, tmp_path: Path) -> None:
    argv = [*TINY, "--backend", "numpy", "--format", fmt, "--out", str(tmp_path)]
    assert run_bench(argv) == 0
    written = {p.name for p in tmp_path.iterdir()} - {"results.json", "crossover.png"}
    assert written == {"table": set(), "markdown": {"results.md"}, "csv": {"results.csv"}}[fmt]
    report = json.loads((tmp_path / "results.json").read_text())
    if fmt == "markdown":
        text = (tmp_path / "results.md").read_text()
        assert "### image filtering ('same'), numpy: median ms" in text
        assert "| case | naive | sep | im2col | fft | winograd | auto | choice | regret |" in text
        assert "| img12:k3:random |" in text
    if fmt == "csv":
        with (tmp_path / "results.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for case in report["cases"]:
            mine = {
                r["name"]: float(r["ms"])
                for r in rows
                if r["case"] == case["case"] and r["backend"] == "numpy"
            }
            expected = {name: 1e3 * t for name, t in case["times"]["numpy"].items()}
            assert mine == pytest.approx(expected)
            peers = {
                r["name"]: float(r["ms"])
                for r in rows
                if r["case"] == case["case"] and r["kind"] == "peer"
            }
            assert peers == pytest.approx({n: 1e3 * t for n, t in case["peers"].items()})


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
        (["--format", "html"], "argument --format: invalid choice: 'html'"),
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
