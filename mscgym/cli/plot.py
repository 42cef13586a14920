"""``mscgym plot``: draw a search's history and Pareto front as PNG files.

Reads a search history JSON (``mscgym search --history``, or the leaderboard's
``histories/``), a directory of record JSONs, or an Optuna study
(``sqlite:///search.db --study NAME``), and writes ``<name>-history.png`` (score per
evaluation and the best so far) and ``<name>-pareto.png`` (quality against latency,
the front highlighted) into ``--out``.
"""

from __future__ import annotations

import argparse
from typing import Any

from mscgym.utils.paths import output_arg

NAME = "plot"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="plot a search history and its Pareto front",
        description="Plot the score per evaluation (with the best so far) and the Pareto "
                    "front of quality against latency of a search history JSON, a directory "
                    "of records, or an Optuna study.",
        epilog="examples:\n  mscgym plot history.json --out plots\n"
               "  mscgym plot sqlite:///search.db --study quantize-digits-cnn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="RECORDS_OR_STUDY",
                        help="a history .json, a directory of record .json files, or an "
                             "Optuna storage URL such as sqlite:///search.db")
    parser.add_argument("--study", metavar="NAME",
                        help="study name in the Optuna storage (needed if it holds several)")
    parser.add_argument("--out", default="plots", metavar="DIR", type=output_arg("dir"),
                        help="directory for the PNG files (default ./plots)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mscgym.plots import make_plots  # matplotlib

    for path in make_plots(args.source, args.out, study=args.study):
        print(path)
    return 0
