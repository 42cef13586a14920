"""Grid search: the whole space when the budget covers it, else a fair coarse grid.

``mode="full"`` enumerates ``itertools.product`` over each dimension's choices (the
last dimension varies fastest) up to the budget. On a space larger than the budget
that only ever varies the last few dimensions, which is not a fair grid, so
``mode="auto"`` (the default) uses it only when the budget covers the whole space and
otherwise runs ``mode="coarse"``:

1. the uniform plans, one per choice index ``k`` of the largest dimension, with
   every dimension at choice ``k`` (mapped proportionally onto smaller dimensions),
   so each setting is tried across the whole model first; then
2. a layer-by-layer refinement from the best plan so far
   (:func:`mscgym.agents.sweep.coordinate_sweep`): each dimension in turn tries all
   its choices while the others stay at their best, keeping earlier dimensions at
   the choice they were found best with (the original MSC gym reset them).

The search ends early when the space is exhausted or the refinement converges.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from mscgym.agents.base import Agent
from mscgym.agents.evaluator import Evaluator
from mscgym.agents.sweep import coordinate_sweep, uniform_indices
from mscgym.compiler.errors import MSCError
from mscgym.tasks.task import Task

MODES = ("auto", "full", "coarse")


class GridAgent(Agent):
    """Exhaustive or coarse grid search; see the module docstring."""

    name = "grid"

    def __init__(self, *, mode: str = "auto", seed: int = 0, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        if mode not in MODES:
            raise MSCError(f"grid agent: unknown mode {mode!r}; expected one of {list(MODES)}")
        super().__init__(seed=seed, progress=progress, logdir=logdir, options={"mode": mode})
        self.mode = mode

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        mode = self.mode
        if mode == "auto":
            mode = "full" if task.space.cardinality <= evaluator.budget else "coarse"
        if mode == "full":
            for indices in itertools.product(*(range(s) for s in task.space.sizes)):
                if evaluator.done:
                    break
                plan = task.space.decode(indices)
                if not evaluator.seen(plan):  # the baseline, evaluated first
                    evaluator.evaluate(plan, phase="grid")
        else:
            sizes = task.space.sizes
            for k in range(max(sizes)):
                if evaluator.done:
                    break
                plan = task.space.decode(uniform_indices(sizes, k))
                if not evaluator.seen(plan):
                    evaluator.evaluate(plan, phase="uniform")
            coordinate_sweep(task, evaluator)
        return {"mode": mode}
