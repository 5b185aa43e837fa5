"""Command-line habits: ``--version``, help text and defaults on every option, a top-level
help written for users, examples whose help says what they reproduce."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

import arraycnn
from arraycnn.cli import SUBCOMMANDS, build_parser, main

EXAMPLES = ("keras_digits_grid", "lecture_mnist", "notebook_one_image")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of every subcommand (argparse keeps them as the choices of one action;
    it has no public accessor for a parser's actions)."""
    (action,) = [a for a in parser._actions if isinstance(a.choices, dict)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option of ``parser`` but ``--help``."""
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_version_prints_the_package_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"arraycnn {arraycnn.__version__}"


def test_every_subcommand_is_built():
    assert set(subparsers(build_parser())) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    parser = subparsers(build_parser())[name]
    text = parser.format_help()
    for action in options(parser):
        flag = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{name} {flag} has no help"
        takes_a_value = action.nargs != 0
        if takes_a_value:  # flags (store_true) have no default worth showing
            # the option's help paragraph, from its flag to the next option
            paragraph = re.search(rf"\n  {re.escape(flag)}\b(.*?)(?=\n  -|\Z)", text, re.S)
            assert paragraph, f"{name} {flag} is not in the help"
            assert "default" in paragraph.group(1), f"{name} {flag} does not show its default"
    assert "(default: None)" not in text and "(default: False)" not in text


def test_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out and ":func:" not in out
    for name, (_module, help_text) in SUBCOMMANDS.items():
        assert re.search(rf"\n\s+{name}\s+{re.escape(help_text)}\n", out), name
    assert "--version" in out


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_help_says_what_it_reproduces(example, capsys):
    module = importlib.import_module(f"arraycnn.examples.{example}")
    entry = getattr(module, "parse_args", None) or module.main
    with pytest.raises(SystemExit) as exit_info:
        entry(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert description.startswith("Reproduces ") and len(description.split()) >= 20
    assert "``" not in out and "%%" not in out
    options_part = out.split("options:", 1)[1]
    for match in re.finditer(r"\n  (--[\w-]+)( [A-Z_{][^ ]*)?(.*)", options_part):
        flag, rest = match.group(1), match.group(3).strip()
        after = options_part[match.end() :].split("\n", 2)
        assert rest or (len(after) > 1 and after[1].startswith(" " * 10)), f"{flag} has no help"
