"""The Tune search space of a task: one ``tune.choice`` over choice indices per dimension.

Indices (not the choices themselves) keep every dimension a list of small ints, which
every Tune searcher handles and which maps back to a plan through the task's space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.spaces import Plan, SearchSpace
from mscgym.tasks.task import Task
from mscgym.tune.deps import import_tune


def search_space(task: Task) -> dict[str, Any]:
    """``{dimension name: tune.choice([0, ..., n_choices - 1])}`` in the space's order."""
    tune = import_tune()
    return {dim.name: tune.choice(list(range(len(dim.choices)))) for dim in task.space}


def plan_config(space: SearchSpace, plan: Mapping[str, Any]) -> dict[str, int]:
    """The Tune config (choice indices by dimension name) that stands for ``plan``."""
    indices = space.encode(space.validate(plan))
    return dict(zip([dim.name for dim in space], indices, strict=True))


def config_plan(space: SearchSpace, config: Mapping[str, Any]) -> Plan:
    """The plan a Tune trial's config (choice indices by dimension name) stands for."""
    missing = [dim.name for dim in space if dim.name not in config]
    if missing:
        raise MSCError(f"Tune trial config misses dimensions {missing}; it has keys "
                       f"{sorted(config)}")
    return space.decode([int(config[dim.name]) for dim in space])
