"""Evaluations each agent needs to reach grid search's best score, on a task whose whole
product fits the budget (grid then knows the true optimum).

The task: quantize digits-cnn with three choices per layer (float, per-tensor and
per-channel int8: 3^4 = 81 plans), scored by accuracy minus relative model size (the
``weighted`` scorer): quantizing pays, but not every form keeps the accuracy, so the
optimum is a real plan rather than the baseline (under ``latency_under_accuracy`` int8
does not speed up a model of 30 us, and every agent "finds" the baseline at step 1),
and the score is deterministic, free of latency noise. Grid enumerates
all 81 plans first and so measures every plan once; random, optuna (TPE) and rl (PPO)
then search the same Task object with the same budget, so each of their plans is
answered from the task's cache with exactly the measurement grid scored: "reaching
grid's best" compares like with like and latency noise cannot move the target. Each
agent runs with seeds 0, 1 and 2; the table shows the median number of plans proposed
(the baseline, every agent's first step, included) until the best score so far equals
grid's best, and its ratio to the 81 plans grid needs to be sure of the optimum.

Run: python benchmarks/agent_efficiency.py [--model digits-cnn] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from mscgym.agents import SearchResult, create_agent
from mscgym.tasks.task import Task

CHOICES = ("float", "int8_tensor_minmax", "int8_channel_minmax")
AGENTS = ("random", "optuna", "rl")
WEIGHTS = {"accuracy": 1.0, "size": 1.0}


def plans_to_reach(result: SearchResult, target: float) -> int | None:
    """1-based step at which the best score so far first reaches ``target`` (None: never)."""
    for entry in result.history:
        if entry["best_score"] >= target:
            return int(entry["step"]) + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--profile-repeat", type=int, default=30)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    task = Task(args.model, "quantize", quant_choices=CHOICES,
                profile_repeat=args.profile_repeat, scorer="weighted",
                scorer_options={"weights": WEIGHTS})
    budget = task.space.cardinality
    start = time.perf_counter()
    grid = create_agent("grid", mode="full", progress=False).search(task, budget)
    grid_seconds = time.perf_counter() - start
    target = grid.best_score
    grid_found = plans_to_reach(grid, target)
    print(f"task: quantize {args.model}, {len(task.space)} layers x {len(CHOICES)} choices = "
          f"{budget} plans; grid measured all in {grid_seconds:.0f} s, best score "
          f"{target:.4g} (baseline {grid.baseline_score:.4g}), found at plan {grid_found}")
    print()
    print("| agent | plans to reach grid's best, per seed | median | median / grid's "
          f"{budget} |")
    print("|---|---|---:|---:|")
    print(f"| grid (full) | {grid_found} (order of enumeration) | {budget} | 1.00 |")
    for name in AGENTS:
        reached = []
        for seed in seeds:
            result = create_agent(name, seed=seed, progress=False).search(task, budget)
            reached.append(plans_to_reach(result, target))
        # An agent that never reaches the target within the budget counts as budget + 1.
        counted = [budget + 1 if r is None else r for r in reached]
        median = statistics.median(counted)
        shown = ", ".join(f">{budget}" if r is None else str(r) for r in reached)
        print(f"| {name} | {shown} | {median:g} | {median / budget:.2f} |", flush=True)


if __name__ == "__main__":
    main()
