"""Who competes: the built-in agents with their leaderboard settings, the uniform
baseline, and outside agents named ``package.module:ClassName``.

Every entrant is created with the fixed seed and no progress bar, so two runs of the
leaderboard propose the same plans.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from mscgym.agents import AGENTS, Agent, Evaluator, create_agent
from mscgym.compiler.errors import MSCError
from mscgym.leaderboard.config import ALL_AGENTS, ENTRANTS, UNIFORM_AGENT
from mscgym.leaderboard.tasks import SEED
from mscgym.tasks.task import Task

UNIFORM_QUANT = "int8_channel_minmax"
UNIFORM_QUANT_BY_RUNNER = {"onnxruntime": "uint8a_channel_minmax"}
"""The uniform int8 form a runner's int8 kernels fuse: ONNX Runtime's x86 kernels take
uint8 activations (int8 per-channel weights); elsewhere symmetric int8 (UNIFORM_QUANT)."""
UNIFORM_DENSITY = 0.5


def uniform_quant(task: Task, choices: tuple[Any, ...]) -> Any:
    """The uniform quantization choice for ``task``'s runner among a dimension's
    ``choices``: the runner's own form where the space offers it, else UNIFORM_QUANT."""
    preferred = UNIFORM_QUANT_BY_RUNNER.get(task.runner, UNIFORM_QUANT)
    return preferred if preferred in choices else UNIFORM_QUANT


class UniformAgent(Agent):
    """The one-plan baseline: every quantizable layer int8 in the form the task's runner
    runs fastest (:func:`uniform_quant`: per-channel int8 weights, min-max activations,
    uint8 on ONNX Runtime) and every prune group at half density, whichever the task
    searches.

    It is what a user gets without any search, so an agent that cannot beat it has not
    earned its budget.
    """

    name = UNIFORM_AGENT

    def __init__(self, *, seed: int = 0, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(seed=seed, progress=progress, logdir=logdir,
                         options={"quantize": {**UNIFORM_QUANT_BY_RUNNER, "other": UNIFORM_QUANT},
                                  "prune": UNIFORM_DENSITY})

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        plan = task.space.baseline_plan()
        for dim in task.space:
            if dim.tool == "quantize":
                plan[dim.name] = uniform_quant(task, dim.choices)
            elif dim.tool == "prune":
                plan[dim.name] = UNIFORM_DENSITY
        evaluator.evaluate(plan, phase="uniform")
        return {}


def _external(spec: str) -> Agent:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MSCError(f"agent {spec!r}: cannot import module {module_name!r} ({err})") from None
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Agent)):
        raise MSCError(f"agent {spec!r}: {module_name}.{class_name} is not a subclass of "
                       "mscgym.agents.Agent")
    accepted = inspect.signature(cls.__init__).parameters
    options = {k: v for k, v in (("seed", SEED), ("progress", False)) if k in accepted}
    return cls(**options)


def make_agent(name: str) -> Agent:
    """The entrant ``name``: a leaderboard name, a registered agent, or ``module:Class``."""
    if ":" in name:
        return _external(name)
    if name == UniformAgent.name:
        return UniformAgent(seed=SEED, progress=False)
    if name in ENTRANTS:
        agent, options = ENTRANTS[name]
        return create_agent(agent, seed=SEED, progress=False, **options)
    if name in AGENTS:
        return create_agent(name, seed=SEED, progress=False)
    raise MSCError(f"unknown leaderboard agent {name!r}; expected one of "
                   f"{sorted(set(ALL_AGENTS) | set(AGENTS))} or package.module:AgentClass")
