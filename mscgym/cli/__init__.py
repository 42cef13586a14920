"""The ``mscgym`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``run`` (a function of the parsed arguments returning the exit
code) as a default; adding a command means adding its module to ``COMMANDS``. A
command that fails on purpose raises an :class:`~mscgym.compiler.errors.MSCError`,
which ``main`` prints as one line on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mscgym.cli import inspect, leaderboard, plot, replay, run, search, tune, validate
from mscgym.compiler.errors import MSCError

COMMANDS = [inspect, search, replay, validate, run, leaderboard, plot, tune]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mscgym", description="Model compression as a search problem (MSCGraph over TVM)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except MSCError as exc:
        print(f"mscgym {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
