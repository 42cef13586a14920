"""Random search: seeded, uniform over the space, no plan twice.

A plan is drawn as one integer below the space's cardinality (Python ints, so any
space size works) and decoded mixed-radix, the last dimension fastest, which makes
every index vector equally likely. Plans already proposed are drawn again, so no
plan repeats while unseen ones remain; the search ends when the space is exhausted.
The same seed gives the same sequence of plans on the same space.
"""

from __future__ import annotations

import os
import random
from typing import Any

from mscgym.agents.base import Agent
from mscgym.agents.evaluator import Evaluator
from mscgym.tasks.task import Task


def decode_index(number: int, sizes: list[int]) -> list[int]:
    """The index vector that ``number`` stands for (mixed radix, last dimension fastest)."""
    indices = []
    for size in reversed(sizes):
        number, digit = divmod(number, size)
        indices.append(digit)
    return indices[::-1]


class RandomAgent(Agent):
    """Uniform random search without repeats; see the module docstring."""

    name = "random"

    def __init__(self, *, seed: int = 0, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(seed=seed, progress=progress, logdir=logdir)

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        rng = random.Random(self.seed)
        sizes = task.space.sizes
        cardinality = task.space.cardinality
        drawn: set[int] = set()
        while not evaluator.done and len(drawn) < cardinality:
            number = rng.randrange(cardinality)
            if number in drawn:
                continue
            drawn.add(number)
            plan = task.space.decode(decode_index(number, sizes))
            if not evaluator.seen(plan):  # the baseline, evaluated first
                evaluator.evaluate(plan, phase="random")
        return {}
