"""``create_agent(name, **options)``: agents by name, options checked up front.

Agent modules are imported on first use, so ``grid`` works where the optional
reinforcement-learning dependency (stable-baselines3) is not installed.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from mscgym.compiler.errors import MSCError

if TYPE_CHECKING:
    from mscgym.agents.base import Agent

AGENTS: dict[str, tuple[str, str]] = {
    "grid": ("mscgym.agents.grid", "GridAgent"),
    "random": ("mscgym.agents.random_search", "RandomAgent"),
    "greedy": ("mscgym.agents.greedy", "GreedyAgent"),
    "optuna": ("mscgym.agents.optuna_agent", "OptunaAgent"),
    "rl": ("mscgym.agents.rl", "PPOAgent"),
    "ray": ("mscgym.tune.agent", "RayAgent"),
}
ALIASES: dict[str, str] = {
    "grid_search": "grid", "random_search": "random", "bayesian": "optuna", "ppo": "rl",
    "ray_tune": "ray",
}
"""The agent type names MSC's gym configs use, mapped to the agents above."""


def agent_names() -> list[str]:
    """Every name ``create_agent`` accepts: the agents and their MSC-style aliases."""
    return [*AGENTS, *ALIASES]


def canonical_agent(name: str) -> str:
    """The agent a name or alias stands for; an unknown name lists the known ones."""
    name = ALIASES.get(name, name)
    if name not in AGENTS:
        raise MSCError(f"unknown agent {name!r}; expected one of {agent_names()}")
    return name


def agent_class(name: str) -> type[Agent]:
    name = canonical_agent(name)
    module_name, class_name = AGENTS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == "stable_baselines3":
            raise MSCError(f"agent {name!r} needs stable-baselines3 "
                           f"(pip install 'mscgym[rl]')") from None
        raise
    return getattr(module, class_name)


def create_agent(name: str, **options: Any) -> Agent:
    """The agent ``name`` with ``options`` (its keyword arguments, e.g. seed, progress)."""
    cls = agent_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MSCError(f"agent {name!r}: unknown options {unknown}; expected some of "
                       f"{accepted}")
    return cls(**options)
