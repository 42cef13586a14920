"""How long the full leaderboard will take, from a few measured evaluations per task.

For each task of the configuration ``run.py`` runs, this builds the task the way the
board does (fresh, own cache), measures its baseline and evaluates a few random plans,
and times one fresh interpreter start as the fresh-process validation pays it. It
reports wall time and CPU time (this process and its children): on a machine shared
with other jobs the wall time is inflated by the load, while the CPU time is what the
single-process board needs on an idle machine (every search runs with
OMP_NUM_THREADS=1, so CPU seconds are wall seconds there).

The first random plan of a fresh task is "cold": it pays the calibration of every
quantization choice it uses (cached per task afterwards); later plans are "warm". Each
board run and each validation builds a fresh task, so per task the board pays 14 task
builds with baselines and 14 cold plans (7 searches: uniform-int8's one plan and each
other agent's first; 7 validations re-measuring their plan uncached), 6 x (budget - 2)
warm plans (the baseline plan is measured with the task) and one fresh interpreter.
This is an upper bound: cached repeats are free and agents that change one layer at a
time (greedy, grid) rarely pay a whole cold plan.

Run: OMP_NUM_THREADS=1 python benchmarks/leaderboard/estimate.py [--plans 2]
     [--budget 16] [--tasks quantize/digits-cnn,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

from mscgym.leaderboard import FULL, TASKS
from mscgym.leaderboard.tasks import SEED

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import DEFAULT_BUDGETS, DEFAULT_TASKS  # noqa: E402


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=3,
                        help="random plans timed per task (the first is cold), at least 2")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGETS[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--agents", type=int, default=len(FULL.agents))
    args = parser.parse_args()

    import mscgym.tasks.task  # noqa: F401 (torch and TVM load once, as in the board)

    with Clock() as start:
        subprocess.run([sys.executable, "-c", "import mscgym.records.replay, "
                        "mscgym.tasks.task, mscgym.leaderboard.fresh"], check=True)
    print(f"load average {os.getloadavg()[0]:.1f}; fresh interpreter start: "
          f"{start.wall:.1f} s wall, {start.cpu:.1f} s CPU")
    print(f"{'task':<34}{'setup wall/cpu':>16}{'cold wall/cpu':>16}{'warm wall/cpu':>16}"
          f"{'board est. cpu':>16}")
    total_cpu = total_wall = 0.0
    searches = args.agents - 1  # uniform-int8 proposes one plan
    for name in args.tasks.split(","):
        board_task = TASKS[name]
        with Clock() as setup:
            task = board_task.build(FULL.profile_repeat)
            task.baseline  # noqa: B018 (measures it)
        rng = np.random.default_rng(SEED)
        clocks = []
        for _ in range(args.plans):
            plan = task.space.decode([int(rng.integers(size)) for size in task.space.sizes])
            with Clock() as clock:
                task.evaluate(plan)
            clocks.append(clock)
        cold, warm = clocks[0], clocks[1:]
        warm_cpu = sum(c.cpu for c in warm) / len(warm)
        warm_wall = sum(c.wall for c in warm) / len(warm)
        colds, warms = 2 * args.agents, searches * max(args.budget - 2, 0)
        task_cpu = colds * (setup.cpu + cold.cpu) + warms * warm_cpu + start.cpu
        total_cpu += task_cpu
        total_wall += colds * (setup.wall + cold.wall) + warms * warm_wall + start.wall
        print(f"{name:<34}{setup.wall:>8.1f}/{setup.cpu:<7.1f}{cold.wall:>8.1f}/"
              f"{cold.cpu:<7.1f}{warm_wall:>8.2f}/{warm_cpu:<7.2f}{task_cpu / 60:>12.1f} min",
              flush=True)
    print(f"estimate at budget {args.budget}: {total_cpu / 60:.0f} min on an idle machine "
          f"(CPU time); {total_wall / 60:.0f} min at this load")


if __name__ == "__main__":
    main()
