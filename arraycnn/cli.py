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

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("arraycnn.tools.demo", "conv2d with every strategy on one input: agreement and time"),
    "train": ("arraycnn.train_cli", "train a CNN on digits or MNIST"),
    "bench": ("arraycnn.tools.bench", "benchmark the convolution strategies against peers"),
    "tune": ("arraycnn.tools.tune", "fit the dispatcher's cost model on this machine"),
    "info": ("arraycnn.info", "show backends, strategies and the dispatcher's caches"),
}

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
    parser = argparse.ArgumentParser(prog="arraycnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # subcommand not built yet
                continue
            raise
        sp = sub.add_parser(name, help=help_text, description=help_text)
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
