"""The agent leaderboard: fixed tasks, budgets and seeds; every agent's best plan
recorded and re-validated; geomean latency speed-up per agent (see docs/LEADERBOARD.md).

``run_leaderboard(QUICK, "out")`` runs the small version ``mscgym leaderboard --quick``
runs; ``FULL`` is every task with budgets 16, 64 and 256.
"""

from mscgym.leaderboard.entrants import ALL_AGENTS, ENTRANTS, QUICK_AGENTS, UniformAgent, make_agent
from mscgym.leaderboard.report import to_json, to_markdown, write_outputs
from mscgym.leaderboard.results import AgentSummary, RunResult, geomean, speedup, summarize
from mscgym.leaderboard.runner import (
    FULL,
    QUICK,
    Leaderboard,
    LeaderboardConfig,
    audit,
    run_leaderboard,
    run_one,
)
from mscgym.leaderboard.tasks import QUICK_TASKS, TASKS, LeaderboardTask, get_tasks

__all__ = [
    "ALL_AGENTS",
    "ENTRANTS",
    "FULL",
    "QUICK",
    "QUICK_AGENTS",
    "QUICK_TASKS",
    "TASKS",
    "AgentSummary",
    "Leaderboard",
    "LeaderboardConfig",
    "LeaderboardTask",
    "RunResult",
    "UniformAgent",
    "audit",
    "geomean",
    "get_tasks",
    "make_agent",
    "run_leaderboard",
    "run_one",
    "speedup",
    "summarize",
    "to_json",
    "to_markdown",
    "write_outputs",
]
