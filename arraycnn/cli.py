"""The ``arraycnn`` command: one subcommand per module, imported only when used.

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``. Bad input
never ends in a traceback: options are checked by their argparse types, and what a subcommand
finds wrong after parsing (an output path it cannot write, a data file it cannot use) it raises
as :class:`UsageError`, which :func:`main` reports as argparse reports its own errors (the
usage, one line ``arraycnn <command>: error: ...``, exit status 2). Ctrl-C exits with status
130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._version import __version__

__all__ = ["SUBCOMMANDS", "HelpFormatter", "UsageError", "build_parser", "main"]

#: What ``arraycnn --help`` says above the list of commands.
DESCRIPTION = (
    "arraycnn: 2-D convolution and small CNNs on any array library (NumPy, torch, CuPy, JAX, "
    "array-api-strict). The commands below train a CNN, compare the convolution strategies "
    "with each other and with SciPy/torch/OpenCV, fit the strategy chooser to this machine, "
    "and show what is installed and cached. Run 'arraycnn COMMAND --help' for a command's "
    "options."
)

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("arraycnn.tools.demo", "conv2d with every strategy on one input: agreement and time"),
    "train": ("arraycnn.train_cli", "train a CNN on digits or MNIST"),
    "bench": ("arraycnn.tools.bench", "benchmark the convolution strategies against peers"),
    "tune": ("arraycnn.tools.tune", "fit the dispatcher's cost model on this machine"),
    "info": ("arraycnn.info", "show the backends usable here and the cache directory"),
}


class HelpFormatter(argparse.HelpFormatter):
    """The formatter of every ``arraycnn`` parser: each option's help ends with its default.

    ``(default: X)`` is appended where the option has a default worth showing (not None,
    not a flag's False) and its help does not already say it.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="p", formatter_class=HelpFormatter)
    >>> _ = parser.add_argument("--seed", type=int, default=0, help="random seed")
    >>> _ = parser.add_argument("--quiet", action="store_true", help="print less")
    >>> print(parser.format_help())  # doctest: +NORMALIZE_WHITESPACE
    usage: p [-h] [--seed SEED] [--quiet]
    <BLANKLINE>
    options:
      -h, --help   show this help message and exit
      --seed SEED  random seed (default: 0)
      --quiet      print less
    <BLANKLINE>
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input found after parsing; :func:`main` reports it as a usage error.

    Examples
    --------
    >>> main(["train", "--out", "/dev/null"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand whose module is present.

    Examples
    --------
    >>> build_parser().parse_args(["info", "--json"]).json
    True
    """
    parser = argparse.ArgumentParser(
        prog="arraycnn", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"arraycnn {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # subcommand not built yet
                continue
            raise
        sp = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        module.add_arguments(sp)
        sp.set_defaults(run=module.run, parser=sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arraycnn`` command; returns the exit status.

    Bad options and :class:`UsageError` exit through argparse (``SystemExit(2)``); Ctrl-C
    outside the training loop (which handles it itself) returns 130.

    Examples
    --------
    >>> main(["train", "--limit", "-5"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        args.parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"arraycnn {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    return 2  # not reached: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
