"""The full leaderboard: the ONNX Runtime tasks at a millisecond scale, budget 12, every
agent (seed 0).

The board is scored by latency, so its default tasks are those whose float model takes
at least a millisecond per image on ONNX Runtime (:data:`MILLISECOND_MODELS`): the
32x32 digits ResNet-20 (quantize, prune, and compress with fine-tuning), resnet18
(quantize) and mobilenetv2 (prune). The 8x8 digits models run in 20-130 us, most of it
ONNX Runtime's per-call overhead, so their best plans are the float model or within a
few percent of it for every agent (1.00-1.13x on the board of 2026-12-02 08:01 UTC,
code 3453296): they measure the runtime's overhead, not the agents. They stay
leaderboard tasks (``--tasks prune/digits-cnn,...``) and the quick board runs two of
them. Sized to finish within an hour on an idle 2-core machine; ``estimate.py`` predicts
the time from a few plans per task. The heavy part is ``quantize/resnet18`` (a fresh
task's first plan calibrates each quantization choice on 224x224 crops, ~67 s, and each
agent and each validation starts fresh). Two tasks stay out because every one of their
plans is cold: ``compress/resnet18`` (each pruned graph is calibrated anew on
ImageNet-sized crops) and ``compress/digits32-mobilenetv2`` (each plan prunes,
calibrates and fine-tunes, ~17 s); name them with ``--tasks`` to run them. The TVM
tasks compile every plan (tens of seconds each), so they too run only when named (with
a smaller ``--budgets``), and larger budgets only when asked for (``--budgets 16,64``:
hours). CI runs ``mscgym leaderboard --quick`` instead. Agents whose optional dependency
is missing (``rl`` without stable-baselines3) are skipped with a note rather than
failing the whole run. ``leaderboard.json`` and ``leaderboard.md`` in ``--out`` are
rewritten after every run, so an interrupted run keeps what it finished.

Every best record is validated in a fresh process. A complete run of the default
configuration writes its tables into docs/LEADERBOARD.md (the section between the
``full-board`` markers); ``--publish DOC`` / ``--no-publish`` choose otherwise.

Run: python benchmarks/leaderboard/run.py [--out leaderboard-full] [--budgets 16,64]
     [--agents random,greedy] [--tasks quantize/resnet18,...] [--publish DOC.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from mscgym.compiler.errors import MSCError
from mscgym.leaderboard import FULL, TASKS, make_agent, run_leaderboard, to_markdown
from mscgym.leaderboard.report import publish

DOC = Path(__file__).resolve().parents[2] / "docs" / "LEADERBOARD.md"

DEFAULT_BUDGETS = (12,)
MILLISECOND_MODELS = ("digits32-resnet20", "resnet18", "mobilenetv2")
"""Models whose float batch-1 run takes a millisecond or more on ONNX Runtime at one
thread (about 2.8, 40 and 9 ms on the 2-core AMD EPYC), where compression can pay."""
HEAVY_TASKS = ("compress/resnet18", "compress/digits32-mobilenetv2")
"""Tasks where every plan pays calibration (and fine-tuning): run only when named."""
DEFAULT_TASKS = tuple(name for name in FULL.tasks
                      if TASKS[name].runner == "onnxruntime"
                      and TASKS[name].model in MILLISECOND_MODELS and name not in HEAVY_TASKS)


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
    parser.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    parser.add_argument("--agents", default=",".join(FULL.agents))
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--publish", metavar="DOC.md",
                        help="write the tables into this doc's full-board section (default: "
                             "docs/LEADERBOARD.md when the default configuration ran)")
    parser.add_argument("--no-publish", action="store_true", help="write no doc")
    args = parser.parse_args()
    default = (args.budgets, args.agents, args.tasks) == (
        parser.get_default("budgets"), parser.get_default("agents"),
        parser.get_default("tasks"))
    doc = None if args.no_publish else args.publish or (DOC if default else None)
    machine = f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the start)"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    config = dataclasses.replace(
        FULL, budgets=tuple(int(b) for b in args.budgets.split(",")),
        agents=_available(tuple(args.agents.split(","))), tasks=tuple(args.tasks.split(",")))
    board = run_leaderboard(config, args.out, log=lambda line: print(line, flush=True))
    print(to_markdown(board))
    if doc is not None and board.complete:
        publish(board, doc, when, machine)
        print(f"published the tables into {doc}")
    return 0 if all(run.validated for run in board.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
