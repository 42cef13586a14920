"""Leaderboard results: one row per (agent, task, budget), and the per-agent summary.

The headline number is the geometric mean of latency speed-ups (the best plan's
speed-up over the baseline, paired in one timing window as its score counted it) over
the tasks, as in CompilerGym: a geometric mean does not let
one large speed-up hide many small ones. A best plan outside the task's quality bound
counts as 1.0 (no speed-up: the user would have to keep the float model) and is
flagged, so an agent gains nothing by ignoring the bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks import scorers
from mscgym.tasks.metrics import Metrics


def speedup(best: Metrics, baseline: Metrics) -> float:
    """The best plan's speed-up over the baseline as its score counted it: the paired
    ratio (both timed in one window) where measured, else the ratio of the medians."""
    if baseline.latency_ms <= 0 or best.latency_ms <= 0:
        raise MSCError(f"latencies must be positive to form a speed-up, got baseline "
                       f"{baseline.latency_ms!r} ms and best {best.latency_ms!r} ms")
    return scorers.speedup(best, baseline)


def counted_speedup(raw: float, feasible: bool) -> float:
    """What a run contributes to the geometric mean: its speed-up, or 1.0 if infeasible."""
    return raw if feasible else 1.0


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive numbers."""
    values = [float(v) for v in values]
    if not values:
        raise MSCError("the geometric mean of no values is undefined")
    if any(not v > 0 for v in values):
        raise MSCError(f"the geometric mean needs positive values, got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class RunResult:
    """One agent's search of one task under one budget, and the checks of its result."""

    agent: str
    task: str
    budget: int
    baseline_latency_ms: float
    best_latency_ms: float
    best_accuracy: float | None
    best_distill_loss: float
    speedup: float
    feasible: bool
    best_score: float
    evaluations: int
    steps: int
    wall_seconds: float
    validated: bool
    problems: list[str] = field(default_factory=list)
    best_plan: dict[str, Any] = field(default_factory=dict)
    record: str = ""
    history: str = ""

    @property
    def counted_speedup(self) -> float:
        return counted_speedup(self.speedup, self.feasible)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "counted_speedup": self.counted_speedup}


@dataclass
class AgentSummary:
    """One agent under one budget, over all tasks."""

    agent: str
    budget: int
    tasks: int
    geomean_speedup: float
    infeasible: list[str]
    evaluations: int
    wall_seconds: float
    validated: bool

    @property
    def feasible(self) -> int:
        return self.tasks - len(self.infeasible)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "feasible": self.feasible}


def summarize(runs: Sequence[RunResult]) -> list[AgentSummary]:
    """Per (agent, budget): geomean speed-up and totals, best geomean first (ties: name)."""
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.agent, run.budget), []).append(run)
    summaries = [
        AgentSummary(
            agent=agent, budget=budget, tasks=len(group),
            geomean_speedup=geomean(r.counted_speedup for r in group),
            infeasible=[r.task for r in group if not r.feasible],
            evaluations=sum(r.evaluations for r in group),
            wall_seconds=sum(r.wall_seconds for r in group),
            validated=all(r.validated for r in group),
        )
        for (agent, budget), group in groups.items()
    ]
    return sorted(summaries, key=lambda s: (s.budget, -s.geomean_speedup, s.agent))
