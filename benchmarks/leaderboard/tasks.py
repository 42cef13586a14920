"""Print the leaderboard's fixed tasks: runner, quality bound, search space and the
float baseline each one measures (builds every task: real translation and profiling).

Run: python benchmarks/leaderboard/tasks.py [--tasks quantize/digits-cnn,...]
"""

from __future__ import annotations

import argparse
import math
import time

from mscgym.leaderboard import TASKS, get_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated task names (default: all)")
    parser.add_argument("--profile-repeat", type=int, default=30)
    args = parser.parse_args()

    print("| task | runner | bound | dimensions | plans | baseline quality | "
          "baseline latency (ms) | build (s) |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    for board_task in get_tasks(args.tasks.split(",")):
        start = time.perf_counter()
        task = board_task.build(args.profile_repeat)
        base = task.baseline
        quality = (f"acc {base.accuracy:.4f}" if base.accuracy is not None
                   else f"loss {base.distill_loss:.3g}")
        plans = math.prod(task.space.sizes)
        print(f"| {board_task.name} | {board_task.runner} | {board_task.bound} | "
              f"{len(task.space.sizes)} | {plans:.3g} | {quality} | {base.latency_ms:.4f} | "
              f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
