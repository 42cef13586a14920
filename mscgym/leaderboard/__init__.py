"""The agent leaderboard: fixed tasks, budgets and seeds; every agent's best plan
recorded and re-validated; geomean latency speed-up per agent (see docs/LEADERBOARD.md).

``run_leaderboard(QUICK, "out")`` runs the small version ``mscgym leaderboard --quick``
runs; ``FULL`` is every task with budgets 16, 64 and 256.
"""

from mscgym.utils.lazy import lazy_exports

# Loaded on first use, so the configurations (names, budgets) import without torch.
__all__ = lazy_exports(__name__, {
    "mscgym.leaderboard.config": ("ALL_AGENTS", "ENTRANTS", "FULL", "QUICK", "QUICK_AGENTS",
                                  "LeaderboardConfig"),
    "mscgym.leaderboard.entrants": ("UniformAgent", "make_agent"),
    "mscgym.leaderboard.report": ("to_json", "to_markdown", "write_outputs"),
    "mscgym.leaderboard.results": ("AgentSummary", "RunResult", "geomean", "speedup",
                                   "summarize"),
    "mscgym.leaderboard.runner": ("Leaderboard", "audit", "run_leaderboard", "run_one",
                                  "search_one", "validate_runs"),
    "mscgym.leaderboard.fresh": ("validate_fresh",),
    "mscgym.leaderboard.tasks": ("QUICK_TASKS", "TASKS", "LeaderboardTask", "get_tasks"),
})
