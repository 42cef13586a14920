"""The evaluation loop every agent shares: budget, scoring, best-so-far, history, logs.

Agents only decide which plan to try next; this module runs it through the task,
scores it, keeps the best (a tie keeps the earlier plan, so a search never swaps a
result for an equally good later one), and logs each step to a tqdm bar and, when a
``logdir`` is given, to TensorBoard.
"""

from __future__ import annotations

import json
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from mscgym.compiler.errors import MSCError
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task
from mscgym.utils.pareto import Direction, pareto_indices

_NUMERIC_METRICS = ("distill_loss", "accuracy", "latency_ms", "latency_p90_ms", "latency_iqr_ms",
                    "size_bytes", "params", "flops")


def plan_id(plan: Mapping[str, Any]) -> str:
    """A canonical string for a plan (its JSON with sorted keys)."""
    return json.dumps(dict(plan), sort_keys=True)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one (maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True))


def pareto_front(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """History entries no other entry dominates on ``objectives`` (first copy of each plan),
    in history order; Optuna computes the front (:func:`mscgym.utils.pareto.pareto_indices`)."""
    unique: dict[str, dict[str, Any]] = {}
    for entry in history:
        unique.setdefault(plan_id(entry["plan"]), entry)
    entries = list(unique.values())
    if not entries:
        return []
    directions: list[Direction] = ["maximize"] * len(entries[0]["objectives"])
    return [entries[i] for i in pareto_indices([e["objectives"] for e in entries], directions)]


class Evaluator:
    """Runs an agent's proposals through ``task`` within ``budget`` and logs each step.

    The budget counts plans proposed, not real evaluations: a plan the task answers
    from its cache (already measured by this or an earlier search, or proposed twice)
    still spends one unit. That keeps budgets comparable between agents and runs
    whatever the cache holds; ``evaluations`` and ``cache_stats`` say what was real.
    Agents that must not waste budget on repeats check :meth:`seen` first.
    """

    def __init__(self, task: Task, budget: int, *, agent: str, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
            raise MSCError(f"agent {agent!r}: budget must be a positive int, got {budget!r}")
        self.task = task
        self.budget = int(budget)
        self.agent = agent
        self.history: list[dict[str, Any]] = []
        self.metrics: list[Metrics] = []
        self.best_step: int | None = None
        self.hits = 0
        self._seen: set[str] = set()
        self._start_time = time.perf_counter()
        self._start_evaluations = task.evaluations
        self._bar = tqdm(total=self.budget, desc=f"{agent} search", unit="plan",
                         disable=not progress)
        self._writer = None
        if logdir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.fspath(logdir))

    # -- budget -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(self.history)

    @property
    def remaining(self) -> int:
        return self.budget - self.steps

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def seen(self, plan: Mapping[str, Any]) -> bool:
        """Whether this search already proposed ``plan``."""
        return plan_id(self.task.space.validate(plan)) in self._seen

    @property
    def real_evaluations(self) -> int:
        """Uncached task evaluations since this search started (the baseline's included)."""
        return self.task.evaluations - self._start_evaluations

    @property
    def baseline_score(self) -> float:
        """The uncompressed plan's score (its measurement is the task's baseline)."""
        return float(self.task.score(self.task.baseline))

    def evaluate_baseline(self) -> dict[str, Any]:
        """Evaluate the no-compression plan as the next step (the first, for every agent).

        Run through the task like any plan, it is measured once and then serves as the
        task's baseline (answered from the cache), so the step and the baseline agree and
        the counters add up: real evaluations + cached steps = steps.
        """
        return self.evaluate(self.task.space.baseline_plan(), phase="baseline")

    # -- best so far --------------------------------------------------------------------
    @property
    def best(self) -> dict[str, Any] | None:
        return None if self.best_step is None else self.history[self.best_step]

    @property
    def best_plan(self) -> dict[str, Any]:
        if self.best is None:
            raise MSCError(f"agent {self.agent!r}: no plan evaluated yet")
        return dict(self.best["plan"])

    # -- steps --------------------------------------------------------------------------
    def evaluate(self, plan: Mapping[str, Any], phase: str = "") -> dict[str, Any]:
        """Evaluate ``plan`` on the task (cached when measured before) as the next step."""
        if self.done:
            raise MSCError(f"agent {self.agent!r}: the budget of {self.budget} plans is spent")
        before = self.task.evaluations
        metrics = self.task.evaluate(plan)
        return self.record(plan, metrics, cached=self.task.evaluations == before, phase=phase)

    def record(self, plan: Mapping[str, Any], metrics: Metrics, *, cached: bool,
               phase: str = "") -> dict[str, Any]:
        """Take a plan evaluated elsewhere (an env episode, a resumed study) as the next step."""
        if self.done:
            raise MSCError(f"agent {self.agent!r}: the budget of {self.budget} plans is spent")
        plan = self.task.space.validate(plan)
        score = float(self.task.score(metrics))
        step = self.steps
        if self.best is None or score > self.best["score"]:
            self.best_step = step
        self.hits += int(cached)
        entry = {
            "step": step,
            "plan": plan,
            "metrics": metrics.to_json(),
            "score": score,
            "best_score": score if self.best_step == step else float(self.best["score"]),
            "objectives": [float(v) for v in self.task.objectives(metrics)],
            "cached": bool(cached),
            "phase": phase,
        }
        self.history.append(entry)
        self.metrics.append(metrics)
        self._seen.add(plan_id(plan))
        self._log(entry)
        return entry

    def _log(self, entry: dict[str, Any]) -> None:
        self._bar.set_postfix(score=f"{entry['score']:.4g}", best=f"{entry['best_score']:.4g}",
                              cached=self.hits, refresh=False)
        self._bar.update(1)
        if self._writer is None:
            return
        step = entry["step"]
        self._writer.add_scalar("reward", entry["score"], step)
        self._writer.add_scalar("best_score", entry["best_score"], step)
        for name in _NUMERIC_METRICS:
            value = entry["metrics"].get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(f"metrics/{name}", value, step)
        quality, speed = entry["objectives"]
        self._writer.add_scalar("objectives/quality", quality, step)
        self._writer.add_scalar("objectives/speedup", speed, step)
        self._writer.add_scalar("cache/hits", self.hits, step)
        self._writer.add_scalar("cache/hit_rate", self.hits / self.steps, step)

    def close(self) -> None:
        self._bar.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    # -- summary ------------------------------------------------------------------------
    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self._start_time

    def cache_stats(self) -> dict[str, Any]:
        """Steps answered from the cache in this search, and the task cache's own counts."""
        return {"hits": self.hits, "misses": self.steps - self.hits,
                "hit_rate": self.hits / self.steps if self.steps else 0.0,
                "task_cache": self.task.cache.stats()}
