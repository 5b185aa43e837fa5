"""The ``arraycnn`` command: one subcommand per module, imported only when used.

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("arraycnn.tools.demo", "conv2d with every strategy on one input: agreement and time"),
    "train": ("arraycnn.train_cli", "train a CNN on digits or MNIST"),
    "bench": ("arraycnn.tools.bench", "benchmark the convolution strategies against peers"),
    "tune": ("arraycnn.tools.tune", "fit the dispatcher's cost model on this machine"),
    "info": ("arraycnn.info", "show backends, strategies and the dispatcher's caches"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand whose module is present."""
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
        sp.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arraycnn`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
