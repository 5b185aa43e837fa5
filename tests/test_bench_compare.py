"""``arraycnn bench --compare REV``: the regression check of CI.

Speed is never asserted: the report's logic is tested on given timings, the comparison
itself for its structure (every case timed on both trees), the errors for their messages.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from arraycnn.cli import main as cli_main
from arraycnn.tools import compare

ROOT = Path(__file__).resolve().parents[1]
NAMES = [name for name, *_ in compare.CASES]


def in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", "HEAD"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


needs_git = pytest.mark.skipif(not in_git_checkout(), reason="not run from a git checkout")


def side(label: str, seconds: dict[str, float], errors: dict[str, str] | None = None):
    result = compare.Side(label, errors=dict(errors or {}))
    for name, value in seconds.items():
        result.seconds[name] = [value, value * 3, value]  # median: value
    return result


def test_a_case_slower_than_the_threshold_is_a_warning_naming_it_and_both_times():
    slow, fine = NAMES[0], NAMES[1]
    base = side("parent", {name: 0.001 for name in NAMES})
    head = side("HEAD", {**{name: 0.001 for name in NAMES}, slow: 0.002, fine: 0.0014})
    lines, warnings = compare.format_report(base, head, threshold=1.5)
    assert len(lines) == len(NAMES) + 1
    assert len(warnings) == 1
    assert slow in warnings[0] and "2.00x slower" in warnings[0]
    assert "1.00 ms -> 2.00 ms" in warnings[0]
    _, none = compare.format_report(base, head, threshold=2.5)
    assert none == []


def test_a_case_that_errors_is_shown_as_an_error_and_not_compared():
    name = NAMES[2]
    base = side("parent", {n: 0.001 for n in NAMES})
    head = side("HEAD", {n: 0.001 for n in NAMES if n != name}, {name: "ValueError: boom"})
    lines, warnings = compare.format_report(base, head, threshold=1.5)
    row = next(line for line in lines if line.startswith(name))
    assert "error" in row and row.rstrip().endswith("-")
    assert warnings == []


@needs_git
def test_compare_times_every_case_on_both_trees(tmp_path: Path):
    """The working tree against itself and against HEAD's package (git archive)."""
    base_tree = tmp_path / "head"
    commit = compare.extract_package(ROOT, "HEAD", base_tree)
    assert len(commit) == 40 and (base_tree / "arraycnn" / "__init__.py").is_file()
    sides = compare.compare(
        {"HEAD": base_tree, "working tree": ROOT}, rounds=2, calls=1, workdir=tmp_path
    )
    for result in sides.values():
        assert result.errors == {}
        assert sorted(result.seconds) == sorted(NAMES)
        assert all(len(times) == 2 and min(times) > 0 for times in result.seconds.values())


@needs_git
def test_an_unknown_revision_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc_info:
        cli_main(["bench", "--compare", "no-such-revision-of-arraycnn"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert "'no-such-revision-of-arraycnn' is not a commit of" in err


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_outside_a_git_checkout_is_a_usage_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc_info:
        cli_main(["bench", "--compare", "HEAD"])
    assert exc_info.value.code == 2
    assert "--compare needs a git checkout of arraycnn" in capsys.readouterr().err


def test_a_threshold_that_is_not_positive_is_refused(capsys):
    with pytest.raises(SystemExit) as exc_info:
        cli_main(["bench", "--compare", "HEAD", "--threshold", "0"])
    assert exc_info.value.code == 2
    assert "--threshold" in capsys.readouterr().err
