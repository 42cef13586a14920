"""The task kinds a :class:`~mscgym.tasks.task.Task` searches, importable without torch
(the command line offers them as choices before any model is loaded).

Every registered tool with a search space is a kind of its own (its env is
``msc/<Name>-v0``); a composite kind searches several tools at once."""

from __future__ import annotations

from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.spaces import Dimension, SearchSpace
from mscgym.tools.registry import tool_spec, tool_specs

COMPOSITE_KINDS: dict[str, tuple[str, ...]] = {"compress": ("prune", "distill", "quantize")}
"""Kinds over several tools, each with the order its tools apply in. ``compress`` is
AMC's recipe: prune, recover by fine-tuning from the float teacher, then calibrate the
recovered weights (its space lists the tools in pipeline order)."""
COMPOSITE_ENV_IDS: dict[str, str] = {"compress": "msc/Compress-v0"}
"""The Gymnasium id of each composite kind's env."""


def task_kinds() -> tuple[str, ...]:
    """Every kind a task takes now: each searchable registered tool, then the composites."""
    return (*(s.name for s in tool_specs() if s.searchable), *COMPOSITE_KINDS)


def kind_order(kind: str) -> tuple[str, ...]:
    """The tools of ``kind`` in the order they apply to a plan."""
    if kind in COMPOSITE_KINDS:
        return COMPOSITE_KINDS[kind]
    if kind not in task_kinds():
        raise MSCError(f"unknown task tool {kind!r}; expected one of {list(task_kinds())}")
    return (kind,)


def kind_tools(kind: str) -> tuple[str, ...]:
    """The tools of ``kind`` in pipeline order (the order of their search dimensions)."""
    return tuple(sorted(kind_order(kind), key=lambda name: tool_spec(name).order))


def kind_space(kind: str, task: Any) -> SearchSpace:
    """The search space of ``task``, a task of ``kind``: the dimensions of each of the
    kind's tools, in pipeline order, from the space builder each tool declares in
    :mod:`mscgym.tools.registry`."""
    dims: list[Dimension] = []
    for name in kind_tools(kind):
        dims.extend(tool_spec(name).build_space(task))
    if not dims:
        raise MSCError(f"model {task.source.model_id!r} has nothing to {kind}")
    return SearchSpace(dims)


def env_ids() -> dict[str, str]:
    """Gymnasium env id -> task kind, for every kind a task takes now."""
    ids = {spec.gym_id: spec.name for spec in tool_specs() if spec.searchable}
    ids.update({COMPOSITE_ENV_IDS[kind]: kind for kind in COMPOSITE_KINDS})
    return {str(env_id): kind for env_id, kind in ids.items()}


TOOLS: tuple[str, ...] = task_kinds()
"""The kinds of the built-in tools (what the command line offers)."""
MODEL_SUFFIXES: tuple[str, ...] = (".onnx", ".pt2", ".json")
"""Model files a task takes: ONNX, a saved ``torch.export`` program, an exported MSCGraph."""
