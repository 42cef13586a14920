"""Run the leaderboard: every agent on every task under every budget, checked.

Each run gets a fresh task (its own evaluation cache, so no agent reuses another's
measurements, and each measures its own baseline), searches it, writes the best
plan's record and the search history, and checks the result twice: an audit that
the agent kept the rules (budget, scorer, no evaluations behind the evaluator's
back), and :func:`mscgym.records.replay.validate`, which rebuilds the task from the
record and re-measures the plan, in a fresh Python process (:mod:`.fresh`: one per
task and budget, after its agents ran), so nothing the searching process holds can
stand in for the record. The JSON and Markdown outputs are rewritten after every
task's runs, so an interrupted leaderboard leaves the runs it finished and validated.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mscgym.agents import SearchResult
from mscgym.compiler.errors import MSCError
from mscgym.leaderboard.config import LeaderboardConfig
from mscgym.leaderboard.entrants import make_agent
from mscgym.leaderboard.fresh import validate_fresh
from mscgym.leaderboard.report import write_outputs
from mscgym.leaderboard.results import RunResult, speedup
from mscgym.leaderboard.tasks import LeaderboardTask, get_tasks
from mscgym.tasks.task import Task
from mscgym.utils.files import atomic_write_text


@dataclass
class Leaderboard:
    """The runs finished so far under ``config``."""

    config: LeaderboardConfig
    tasks: list[LeaderboardTask]
    runs: list[RunResult] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return len(self.runs) == (len(self.tasks) * len(self.config.agents)
                                  * len(self.config.budgets))


def slug(name: str) -> str:
    """``name`` as one safe file-name component (task and agent names hold / and :)."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def audit(result: SearchResult, task: Task, budget: int) -> list[str]:
    """Ways the result breaks the rules: over budget, evaluations outside the evaluator,
    another task or scorer in the record, a best that is not the history's best."""
    problems = []
    steps = len(result.history)
    if steps > budget or result.budget != budget:
        problems.append(f"proposed {steps} plans under budget {result.budget}; the "
                        f"leaderboard gave {budget}")
    if result.evaluations > steps + 1:
        problems.append(f"made {result.evaluations} real evaluations for {steps} plans (at "
                        "most one each, plus the baseline)")
    record = result.best_record
    if _json(record.task) != _json(task.describe()):
        problems.append("the best record describes another task (model, space, scorer or "
                        "runner changed)")
    if _json(record.plan) != _json(result.best_plan):
        problems.append("the best record's plan is not the best plan")
    if abs(task.score(record.metrics) - result.best_score) > 1e-9 * max(1.0, abs(
            result.best_score)):
        problems.append("the best score is not the task scorer's score of the best metrics")
    if result.history and result.best_score != max(e["score"] for e in result.history):
        problems.append("the best score is not the best score in the history")
    return problems


def search_one(board_task: LeaderboardTask, agent_name: str, budget: int, out: str,
               profile_repeat: int) -> RunResult:
    """Search ``board_task`` with ``agent_name`` under ``budget``, write the record and
    history, and audit the result; the record is not validated yet (``validated`` is
    False until :func:`apply_validation` adds what a fresh process found)."""
    task = board_task.build(profile_repeat)
    result = make_agent(agent_name).search(task, budget)
    name = f"{slug(board_task.name)}_b{budget}.json"
    record_path = os.path.join(out, "records", slug(agent_name), name)
    history_path = os.path.join(out, "histories", slug(agent_name), name)
    result.best_record.save(record_path)
    atomic_write_text(history_path, json.dumps(result.to_json(), indent=1, sort_keys=True))
    problems = audit(result, task, budget)
    baseline, best = task.baseline, result.best_metrics
    return RunResult(
        agent=agent_name, task=board_task.name, budget=budget,
        baseline_latency_ms=baseline.latency_ms, best_latency_ms=best.latency_ms,
        best_accuracy=best.accuracy, best_distill_loss=best.distill_loss,
        speedup=speedup(best, baseline),
        feasible=board_task.feasible(best, baseline), best_score=result.best_score,
        evaluations=result.evaluations, steps=len(result.history),
        wall_seconds=result.wall_seconds, validated=False, problems=problems,
        best_plan=result.best_plan, record=os.path.relpath(record_path, out),
        history=os.path.relpath(history_path, out))


def apply_validation(run: RunResult, problems: list[str]) -> RunResult:
    """Add the validation's ``problems`` to ``run``; validated when none are left."""
    run.problems = [*run.problems, *problems]
    run.validated = not run.problems
    return run


VALIDATION_SECONDS_PER_RECORD = 600.0
"""Time a fresh validation process gets per record before its records count as not
validated (a stuck child must not stall the board; a 224x224 record takes ~1-2 min)."""


def validate_runs(runs: list[RunResult], out: str) -> list[RunResult]:
    """Validate the runs' records in one fresh process (see :mod:`.fresh`)."""
    paths = [os.path.join(out, run.record) for run in runs]
    found = validate_fresh(paths, timeout=VALIDATION_SECONDS_PER_RECORD * len(paths))
    return [apply_validation(run, found[path]) for run, path in zip(runs, paths, strict=True)]


def run_one(board_task: LeaderboardTask, agent_name: str, budget: int, out: str,
            profile_repeat: int) -> RunResult:
    """Search ``board_task`` with ``agent_name`` under ``budget``; write the record and
    validate it in a fresh process."""
    return validate_runs([search_one(board_task, agent_name, budget, out, profile_repeat)],
                         os.fspath(out))[0]


def _check(config: LeaderboardConfig) -> list[LeaderboardTask]:
    tasks = get_tasks(config.tasks)
    if not config.agents:
        raise MSCError("the leaderboard needs at least one agent")
    if len(set(config.agents)) != len(config.agents):
        raise MSCError(f"an agent is named twice in {list(config.agents)}")
    for name in config.agents:
        make_agent(name)
    if not config.budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                 for b in config.budgets):
        raise MSCError(f"budgets must be positive ints, got {list(config.budgets)}")
    if config.profile_repeat < 1:
        raise MSCError(f"profile_repeat must be >= 1, got {config.profile_repeat}")
    return tasks


def run_leaderboard(config: LeaderboardConfig, out: str | os.PathLike[str],
                    log: Callable[[str], None] | None = None) -> Leaderboard:
    """Run ``config`` into the directory ``out`` (leaderboard.json, leaderboard.md,
    records/, histories/); ``log`` gets one line per finished run.

    Every name is checked before anything runs, so a typo fails in a second, not after
    an hour of searching.
    """
    board = Leaderboard(config, _check(config))
    out = os.fspath(out)
    start = time.perf_counter()
    total = len(board.tasks) * len(config.budgets) * len(config.agents)
    for board_task in board.tasks:
        for budget in config.budgets:
            searched = []
            for agent_name in config.agents:
                searched.append(search_one(board_task, agent_name, budget, out,
                                           config.profile_repeat))
                if log is not None:
                    log(f"  searched: {agent_name} on {board_task.name} (budget {budget}) in "
                        f"{searched[-1].wall_seconds:.1f} s; validated with the task's others")
            for run in validate_runs(searched, out):
                board.runs.append(run)
                if log is not None:
                    log(_progress_line(run, len(board.runs), total))
            board.wall_seconds = time.perf_counter() - start
            write_outputs(board, out)
    return board


def _progress_line(run: RunResult, done: int, total: int) -> str:
    verdict = "validated" if run.validated else "NOT validated: " + "; ".join(run.problems)
    bound = "feasible" if run.feasible else "infeasible, counted 1.00x"
    return (f"[{done}/{total}] {run.agent} on {run.task} (budget {run.budget}): "
            f"speed-up {run.speedup:.2f}x ({bound}), score {run.best_score:.4g}, "
            f"{run.evaluations} evaluations, {run.wall_seconds:.1f} s, {verdict}")
