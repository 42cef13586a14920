"""Greedy layer-by-layer search from the baseline (or a uniform) plan.

It evaluates the start plan (the baseline, every agent's first step, by default), then
runs :func:`mscgym.agents.sweep.coordinate_sweep`:
for each dimension in space order, every choice with the other dimensions at their
current best, keeping the best; passes repeat until one changes nothing or the
budget is spent. Starting from the baseline (the default), the result is never
worse than the baseline: the baseline is the first step and ties keep the earlier.
"""

from __future__ import annotations

import os
from typing import Any

from mscgym.agents.base import Agent
from mscgym.agents.evaluator import Evaluator
from mscgym.agents.sweep import coordinate_sweep, uniform_indices
from mscgym.compiler.errors import MSCError
from mscgym.tasks.task import Task


class GreedyAgent(Agent):
    """Coordinate-wise greedy search; ``start`` is "baseline" or a uniform choice index."""

    name = "greedy"

    def __init__(self, *, start: str | int = "baseline", seed: int = 0, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        if start != "baseline" and (isinstance(start, bool) or not isinstance(start, int)
                                    or start < 0):
            raise MSCError(f"greedy agent: start must be 'baseline' or a choice index >= 0, "
                           f"got {start!r}")
        super().__init__(seed=seed, progress=progress, logdir=logdir, options={"start": start})
        self.start = start

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        sizes = task.space.sizes
        if self.start != "baseline":
            if self.start >= max(sizes):
                raise MSCError(f"greedy agent: start index {self.start} is out of range; the "
                               f"largest dimension has {max(sizes)} choices")
            plan = task.space.decode(uniform_indices(sizes, int(self.start)))
            if not evaluator.done and not evaluator.seen(plan):
                evaluator.evaluate(plan, phase="start")
        coordinate_sweep(task, evaluator)
        return {}
