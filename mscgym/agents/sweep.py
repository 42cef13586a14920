"""Layer-by-layer (coordinate) search, shared by the grid and greedy agents.

The original MSC gym's layer-wise grid search reset the earlier layers to their
default while it searched a later one, so it returned a plan that combined nothing
it had learned. Here each dimension is searched with every other dimension held at
the best plan found so far, and that best plan is what later dimensions start from.
"""

from __future__ import annotations

from collections.abc import Sequence

from mscgym.agents.evaluator import Evaluator
from mscgym.tasks.task import Task


def uniform_indices(sizes: Sequence[int], k: int) -> list[int]:
    """Choice ``k`` of the largest dimension, mapped proportionally onto every dimension."""
    largest = max(sizes)
    return [k * size // largest for size in sizes]


def coordinate_sweep(task: Task, evaluator: Evaluator) -> None:
    """Improve the evaluator's best plan one dimension at a time, in space order.

    For each dimension, try each of its choices with all other dimensions at the best
    plan so far (plans this search already proposed are skipped, free), then move on
    with the best. Passes repeat until one changes nothing (a local optimum: every
    single-dimension change of the best plan has been tried) or the budget is spent.
    Each proposal is tagged ``sweep:<dimension>`` in the history.
    """
    space = task.space
    while not evaluator.done:
        start = evaluator.best_step
        for position, dim in enumerate(space.dims):
            for choice in range(len(dim.choices)):
                if evaluator.done:
                    return
                indices = space.encode(evaluator.best_plan)
                indices[position] = choice
                plan = space.decode(indices)
                if not evaluator.seen(plan):
                    evaluator.evaluate(plan, phase=f"sweep:{dim.name}")
        if evaluator.best_step == start:
            return
