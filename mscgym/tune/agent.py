"""The ``ray`` agent: a Ray Tune sweep (:mod:`mscgym.tune`) behind the Agent interface,
and :func:`run_sweep`, the same search as a function.

It lives in the tune layer, above the agents it builds on; the agent registry names it by
module path, so :mod:`mscgym.agents` never imports :mod:`mscgym.tune`.

The budget is the sweep's number of trials. Trials run in Ray workers, in parallel;
their results become the search history, in trial order. The best plan is then
measured again on the caller's own task (through its cache), and that measurement is
what the result's best metrics, score and record hold: the record then compares like
with like when ``mscgym validate`` re-measures it, whatever the load on the workers
was. The workers' score of it stays in ``extra["sweep_best_score"]``.

Ray is optional: creating this agent without it raises an MSCError that says how to
install it, and nothing here imports Ray until a sweep runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mscgym.agents.base import Agent, SearchResult
from mscgym.agents.evaluator import Evaluator
from mscgym.tasks.task import Task
from mscgym.tune.deps import check_ray
from mscgym.tune.sweep import SweepSettings, experiment_path, run_trials, stored_baseline


class RayAgent(Agent):
    """Parallel search with Ray Tune; options as for :func:`mscgym.tune.run_sweep`."""

    name = "ray"

    def __init__(self, *, search_alg: str = "optuna", max_concurrent: int = 2,
                 resources_per_trial: Mapping[str, float] | None = None,
                 storage_path: str | os.PathLike[str] | None = None,
                 experiment_name: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, scheduler: str | None = None, seed: int = 0,
                 resume: bool = False, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        check_ray()
        self.settings = SweepSettings(
            search_alg=search_alg, max_concurrent=max_concurrent,
            resources_per_trial=dict(resources_per_trial or {"cpu": 1}),
            storage_path=storage_path, name=experiment_name, address=address,
            num_cpus=num_cpus, scheduler=scheduler, seed=seed, resume=resume,
            progress=progress)
        super().__init__(seed=seed, progress=progress, logdir=logdir,
                         options=self.settings.to_json())
        # Tune's own status tables are the progress display of a sweep; the evaluator's
        # tqdm bar would interleave with them (and only moves once the sweep is over).
        self.progress = False

    def _prepare(self, task: Task) -> None:
        """A resumed sweep scores against the baseline its first run stored."""
        if self.settings.resume:
            stored = stored_baseline(experiment_path(task, self.settings))
            if stored is not None:
                task.adopt_baseline(stored)

    def _start(self, task: Task, evaluator: Evaluator) -> None:
        """Nothing here: the sweep's first trial is the baseline plan (Tune's
        ``points_to_evaluate``), measured in a worker like every other trial."""

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        return run_trials(task, evaluator, self.settings)

    def _result(self, task: Task, evaluator: Evaluator, extra: dict[str, Any]
                ) -> SearchResult:
        best = self._best(evaluator)
        metrics = task.evaluate(best["plan"])  # this process's measurement (or its cache)
        worker_evaluations = sum(not entry["cached"] for entry in evaluator.history)
        extra = {**extra, "sweep_best_score": float(best["score"])}
        return self._build_result(task, evaluator, extra, metrics, None,
                                  evaluator.real_evaluations + worker_evaluations)


def run_sweep(
    task: Task,
    search_alg: str = "optuna",
    num_samples: int = 8,
    max_concurrent: int = 2,
    resources_per_trial: Mapping[str, float] | None = None,
    storage_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    logdir: str | os.PathLike[str] | None = None,
) -> SearchResult:
    """Sweep ``task`` with Ray Tune (``num_samples`` trials); see the module docstring.

    The result's best record is re-measured on this process's task (through its cache),
    so ``mscgym validate`` compares it with a measurement made the same way.
    """
    agent = RayAgent(search_alg=search_alg, max_concurrent=max_concurrent,
                     resources_per_trial=resources_per_trial, storage_path=storage_path,
                     experiment_name=name, address=address, num_cpus=num_cpus,
                     scheduler=scheduler, seed=seed, resume=resume, progress=progress,
                     logdir=logdir)
    return agent.search(task, num_samples)
