"""``mscgym leaderboard``: run agents on the fixed leaderboard tasks and rank them.

Without options it runs the full leaderboard (every task, budgets 16, 64 and 256,
every agent: hours on a laptop); ``--quick`` runs the small one that finishes in a
few minutes on two cores. ``--budget``, ``--agents`` and ``--tasks`` narrow either.
Writes ``leaderboard.md``, ``leaderboard.json``, the best plans' records and the
search histories into ``--out``; exits 1 when a best record does not validate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from mscgym.leaderboard.config import ALL_AGENTS, FULL, QUICK, LeaderboardConfig
from mscgym.leaderboard.tasks import TASKS
from mscgym.utils.paths import output_arg

NAME = "leaderboard"
EXIT_NOT_VALIDATED = 1


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _budgets(text: str) -> tuple[int, ...]:
    try:
        budgets = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 16 or 16,64, "
                                         f"got {text!r}") from None
    if any(b < 1 for b in budgets):
        raise argparse.ArgumentTypeError(f"budgets must be positive, got {text!r}")
    return budgets


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="rank search agents on the fixed leaderboard tasks",
        description="Run every agent on every leaderboard task under every budget (seed 0), "
                    "validate each best record, and rank the agents by the geometric mean "
                    "of their latency speed-ups (a plan outside the task's quality bound "
                    "counts as 1.0). See docs/LEADERBOARD.md.",
        epilog="examples:\n  mscgym leaderboard --quick --out lb\n"
               "  mscgym leaderboard --budget 16 --agents random,optuna --tasks "
               "quantize/digits-cnn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"the small leaderboard: tasks {','.join(QUICK.tasks)}, budget "
                             f"{','.join(map(str, QUICK.budgets))}, agents "
                             f"{','.join(QUICK.agents)} (a few minutes)")
    parser.add_argument("--budget", type=_budgets, metavar="N[,N...]",
                        help="plans per search (default 16,64,256; 8 with --quick)")
    parser.add_argument("--agents", type=_names, metavar="A,B",
                        help=f"agents to run: {', '.join(ALL_AGENTS)}, any registered agent, "
                             "or package.module:AgentClass")
    parser.add_argument("--tasks", type=_names, metavar="T1,T2",
                        help=f"tasks to run: {', '.join(TASKS)}")
    parser.add_argument("--out", default="leaderboard", metavar="DIR", type=output_arg("dir"),
                        help="output directory (default ./leaderboard)")
    parser.add_argument("--list", action="store_true",
                        help="list the tasks and agents, run nothing")
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> LeaderboardConfig:
    """The full or quick configuration, narrowed by ``--budget``, ``--agents``, ``--tasks``."""
    config = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.budget is not None:
        changes["budgets"] = args.budget
    if args.agents is not None:
        changes["agents"] = args.agents
    if args.tasks is not None:
        changes["tasks"] = args.tasks
    return dataclasses.replace(config, **changes)


def _listing() -> str:
    lines = ["tasks:"]
    lines += [f"  {t.name:<30} {t.runner:<12} {t.bound}" for t in TASKS.values()]
    lines += ["agents:", *(f"  {name}" for name in ALL_AGENTS)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import optuna

    from mscgym.leaderboard.report import JSON_NAME, MARKDOWN_NAME, summary_table
    from mscgym.leaderboard.results import summarize
    from mscgym.leaderboard.runner import run_leaderboard

    if args.list:
        print(_listing())
        return 0
    config = config_from_args(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study is noise here
    board = run_leaderboard(config, args.out, log=lambda line: print(line, flush=True))
    for budget in config.budgets:
        print(f"\nbudget {budget}:")
        print("\n".join(summary_table([s for s in summarize(board.runs) if s.budget == budget])))
    print(f"\nwrote {os.path.join(args.out, MARKDOWN_NAME)} and "
          f"{os.path.join(args.out, JSON_NAME)} ({board.wall_seconds:.0f} s)")
    return 0 if all(r.validated for r in board.runs) else EXIT_NOT_VALIDATED
