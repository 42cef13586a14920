"""Who and what a leaderboard runs: entrant names, budgets and the full and quick
configurations, importable without torch (the command line's help lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mscgym.leaderboard.tasks import DEFAULT_PROFILE_REPEAT, QUICK_TASKS, TASKS

UNIFORM_AGENT = "uniform-int8"
"""The one-plan baseline (:class:`~mscgym.leaderboard.entrants.UniformAgent`)."""

ENTRANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "grid": ("grid", {}),
    "random": ("random", {}),
    "greedy": ("greedy", {}),
    "optuna": ("optuna", {"sampler": "tpe"}),
    "optuna-nsga2": ("optuna", {"sampler": "nsga2"}),
    "rl": ("rl", {}),
}
"""Leaderboard name -> (registered agent, options). Other names in
``mscgym.agents.AGENTS`` run with their defaults."""
ALL_AGENTS = (UNIFORM_AGENT, *ENTRANTS)
QUICK_AGENTS = (UNIFORM_AGENT, "random", "greedy", "optuna")

FULL_BUDGETS = (16, 64, 256)
QUICK_BUDGETS = (8,)
QUICK_PROFILE_REPEAT = 100  # runs of 20-40 us: many repeats make the median re-measurable


@dataclass(frozen=True)
class LeaderboardConfig:
    """Which tasks, agents and budgets to run, and how many timed runs per latency."""

    tasks: tuple[str, ...] = tuple(TASKS)
    agents: tuple[str, ...] = ALL_AGENTS
    budgets: tuple[int, ...] = FULL_BUDGETS
    profile_repeat: int = DEFAULT_PROFILE_REPEAT

    def to_json(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "agents": list(self.agents),
                "budgets": list(self.budgets), "profile_repeat": self.profile_repeat}


FULL = LeaderboardConfig()
QUICK = LeaderboardConfig(tasks=QUICK_TASKS, agents=QUICK_AGENTS, budgets=QUICK_BUDGETS,
                          profile_repeat=QUICK_PROFILE_REPEAT)
