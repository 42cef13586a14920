"""The full leaderboard: every task, budgets 16, 64 and 256, every agent (seed 0).

Hours on a 2-core laptop (resnet18 and mobilenetv2 evaluations take seconds each,
budget 256 runs 256 of them per agent), so CI runs ``mscgym leaderboard --quick``
instead. Agents whose optional dependency is missing (``rl`` without
stable-baselines3) are skipped with a note rather than failing the whole run.
``leaderboard.json`` and ``leaderboard.md`` in ``--out`` are rewritten after every
run, so an interrupted run keeps what it finished.

Run: python benchmarks/leaderboard/run.py [--out leaderboard-full] [--budgets 16,64]
     [--agents random,greedy] [--tasks quantize/resnet18,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mscgym.compiler.errors import MSCError
from mscgym.leaderboard import FULL, make_agent, run_leaderboard, to_markdown


def _available(agents: tuple[str, ...]) -> tuple[str, ...]:
    kept = []
    for name in agents:
        try:
            make_agent(name)
        except MSCError as err:
            print(f"skipping agent {name}: {err}", file=sys.stderr)
            continue
        kept.append(name)
    return tuple(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="leaderboard-full")
    parser.add_argument("--budgets", default=",".join(map(str, FULL.budgets)))
    parser.add_argument("--agents", default=",".join(FULL.agents))
    parser.add_argument("--tasks", default=",".join(FULL.tasks))
    args = parser.parse_args()

    config = dataclasses.replace(
        FULL, budgets=tuple(int(b) for b in args.budgets.split(",")),
        agents=_available(tuple(args.agents.split(","))), tasks=tuple(args.tasks.split(",")))
    board = run_leaderboard(config, args.out, log=lambda line: print(line, flush=True))
    print(to_markdown(board))
    return 0 if all(run.validated for run in board.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
