"""The agent interface: ``agent.search(task_or_env, budget) -> SearchResult``.

Every agent searches the same thing (a Task's search space, scored by the task's
scorer) under the same budget rule (plans proposed, see :class:`Evaluator`), and
returns the same result, so agents can be compared and their best plan replayed
from the record.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mscgym.agents.evaluator import Evaluator, pareto_front
from mscgym.compiler.errors import MSCError
from mscgym.records.record import Record, make_record
from mscgym.runtime import tuning_ledger
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task


@dataclass
class SearchResult:
    """What a search found and how it got there.

    ``history`` has one entry per step: ``step``, ``plan``, ``metrics`` (JSON),
    ``score``, ``best_score`` (best so far, this step included), ``objectives``
    (the task's (quality, speed-up) pair), ``cached`` (answered from the task cache)
    and ``phase`` (which part of the agent proposed it). ``pareto`` holds the history
    entries no other entry dominates on ``objectives``, whatever the agent.
    ``evaluations`` counts real (uncached) task evaluations, the baseline's included
    when this search had to measure it. ``baseline_score`` is the uncompressed plan's,
    ``baseline_metrics`` the measurement every score is relative to.
    """

    best_plan: dict[str, Any]
    best_metrics: Metrics
    best_score: float
    best_record: Record
    history: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    evaluations: int
    cache_stats: dict[str, Any]
    wall_seconds: float
    baseline_score: float = 0.0
    baseline_metrics: Metrics | None = None
    agent: str = ""
    budget: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def beat_baseline(self) -> bool:
        """Whether some plan scored strictly better than the uncompressed baseline."""
        return self.best_score > self.baseline_score

    def summary(self) -> str:
        """One line on the outcome that says plainly when nothing beat the baseline."""
        if self.beat_baseline:
            return (f"best score {self.best_score:.4g} beats the baseline's "
                    f"{self.baseline_score:.4g}")
        return (f"no plan beat the baseline (score {self.baseline_score:.4g}) in "
                f"{len(self.history)} plans; the best plan is the uncompressed model")

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "budget": self.budget,
            "best_plan": self.best_plan,
            "best_metrics": self.best_metrics.to_json(),
            "best_score": self.best_score,
            "best_record": self.best_record.to_json(),
            "history": self.history,
            "pareto": self.pareto,
            "evaluations": self.evaluations,
            "cache_stats": self.cache_stats,
            "wall_seconds": self.wall_seconds,
            "baseline_score": self.baseline_score,
            "baseline_metrics": (None if self.baseline_metrics is None
                                 else self.baseline_metrics.to_json()),
            "beat_baseline": self.beat_baseline,
            "extra": self.extra,
        }


def resolve_task(task_or_env: Any) -> Task:
    """The Task behind a Task, a CompressionEnv, or a Gymnasium wrapper around one."""
    if isinstance(task_or_env, Task):
        return task_or_env
    env = getattr(task_or_env, "unwrapped", task_or_env)
    task = getattr(env, "task", None)
    if isinstance(task, Task):
        return task
    raise MSCError(f"agents search a Task or a CompressionEnv, got {type(task_or_env).__name__}")


class Agent(abc.ABC):
    """Base of all search agents.

    Subclasses set ``name``, take their own options as keyword arguments (kept in
    ``options`` for the record), and implement :meth:`_run`, which proposes plans
    through the evaluator until it is done or the agent has nothing new to try.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, seed: int = 0, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.seed = int(seed)
        self.progress = bool(progress)
        self.logdir = logdir
        self.options = dict(options or {})

    def search(self, task_or_env: Any, budget: int) -> SearchResult:
        """Search ``task_or_env`` (a Task or a CompressionEnv) with at most ``budget`` plans."""
        task = resolve_task(task_or_env)
        self._prepare(task)
        evaluator = Evaluator(task, budget, agent=self.name, progress=self.progress,
                              logdir=self.logdir)
        tuned_before = tuning_ledger.snapshot()
        try:
            self._start(task, evaluator)
            extra = dict(self._run(task, evaluator) or {})
        finally:
            evaluator.close()
        if task.runner == "tvm":
            # What the search paid for MetaSchedule tuning of new workloads (this process).
            extra["tvm_tuning"] = tuning_ledger.snapshot().since(tuned_before).as_dict()
        return self._result(task, evaluator, extra)

    def _prepare(self, task: Task) -> None:  # noqa: B027 - a hook, empty by default
        """Before the search: adopt a baseline stored by an earlier run (resumed studies
        and sweeps override this), so old and new plans are scored against one baseline."""

    def _start(self, task: Task, evaluator: Evaluator) -> None:
        """The first step of every search: the no-compression plan.

        Whatever an agent proposes afterwards, its best is then never worse than the
        baseline (ties keep the earlier plan), and the baseline's measurement is a
        counted step rather than a hidden extra evaluation.
        """
        evaluator.evaluate_baseline()

    @abc.abstractmethod
    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any] | None:
        """Propose plans through ``evaluator`` until it is done or nothing is left to try.

        May return JSON facts about the run (e.g. the Optuna study name) for the result.
        """

    def _result(self, task: Task, evaluator: Evaluator, extra: dict[str, Any]
                ) -> SearchResult:
        best = self._best(evaluator)
        return self._build_result(task, evaluator, extra, evaluator.metrics[best["step"]],
                                  float(best["score"]), evaluator.real_evaluations)

    def _best(self, evaluator: Evaluator) -> dict[str, Any]:
        if evaluator.best is None:
            raise MSCError(f"agent {self.name!r} evaluated no plan")
        return evaluator.best

    def _build_result(self, task: Task, evaluator: Evaluator, extra: dict[str, Any],
                      metrics: Metrics, score: float | None, evaluations: int
                      ) -> SearchResult:
        """The result around the best plan, with its record (``score`` None: the
        record's own score of ``metrics``)."""
        best = self._best(evaluator)
        info = {"agent": self.name, "seed": self.seed, "options": self.options,
                "budget": evaluator.budget, "steps": evaluator.steps, **extra}
        record = make_record(task, best["plan"], metrics,
                             extra={**info, "evaluations": evaluations})
        return SearchResult(
            best_plan=dict(best["plan"]),
            best_metrics=metrics,
            best_score=float(record.score if score is None else score),
            best_record=record,
            history=evaluator.history,
            pareto=pareto_front(evaluator.history),
            evaluations=evaluations,
            cache_stats=evaluator.cache_stats(),
            wall_seconds=evaluator.wall_seconds,
            baseline_score=evaluator.baseline_score,
            baseline_metrics=task.baseline,
            agent=self.name,
            budget=evaluator.budget,
            extra=extra,
        )
