"""Optuna search: TPE (default), GP, CMA-ES or NSGA-II over the space's choice indices.

Each dimension is one Optuna parameter named after it whose values are choice
indices: categorical where the choices are labels (quantization schemes), an
integer range where they are all numbers (densities, temperatures, ...) and so
ordered; CMA-ES, which only models numbers, always gets integer ranges. Every
sampler is seeded. TPE, GP and CMA-ES maximize the task's score; NSGA-II maximizes
the task's two objectives (quality, speed-up), and the result's best is still the
best score.

The baseline plan is enqueued as the first trial of a new study, so the search
always measures the uncompressed reference and the samplers see it.

With ``storage`` (e.g. ``"sqlite:///search.db"``) the study is persisted and
reopened (``load_if_exists``) under ``study_name`` (by default one derived from the
task), so a killed search resumes: the study's finished trials count toward the
budget, in trial order (the first ``budget`` of them where the study holds more),
and only the remaining ones run; their metrics come from
the trial (stored as a user attribute), so they are not measured again. Trials a
killed process left running are marked failed. One process at a time per study.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from mscgym.agents.base import Agent
from mscgym.agents.evaluator import Evaluator
from mscgym.compiler.errors import MSCError
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task
from mscgym.utils.paths import check_storage_url

SAMPLERS = ("tpe", "gp", "cmaes", "nsga2")


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class OptunaAgent(Agent):
    """Bayesian / evolutionary search with Optuna; see the module docstring."""

    name = "optuna"

    def __init__(self, *, sampler: str = "tpe", seed: int = 0, storage: str | None = None,
                 study_name: str | None = None,
                 sampler_options: Mapping[str, Any] | None = None, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        if sampler not in SAMPLERS:
            raise MSCError(f"optuna agent: unknown sampler {sampler!r}; expected one of "
                           f"{list(SAMPLERS)}")
        if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise MSCError("optuna agent: sampler 'cmaes' needs the 'cmaes' package "
                           "(pip install cmaes)")
        if storage is not None:
            check_storage_url(storage, "optuna storage")
        super().__init__(seed=seed, progress=progress, logdir=logdir,
                         options={"sampler": sampler, "storage": storage,
                                  "study_name": study_name,
                                  "sampler_options": dict(sampler_options or {})})
        self.sampler = sampler
        self.storage = storage
        self.study_name = study_name
        self.sampler_options = dict(sampler_options or {})

    @property
    def multi_objective(self) -> bool:
        return self.sampler == "nsga2"

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        classes = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
                   "cmaes": optuna.samplers.CmaEsSampler,
                   "nsga2": optuna.samplers.NSGAIISampler}
        try:
            return classes[self.sampler](seed=self.seed, **self.sampler_options)
        except TypeError as err:
            raise MSCError(f"optuna agent: bad sampler_options for {self.sampler!r}: {err}"
                           ) from None

    def distributions(self, task: Task) -> dict[str, BaseDistribution]:
        """One Optuna distribution over choice indices per dimension (see module doc)."""
        dists: dict[str, BaseDistribution] = {}
        for dim in task.space:
            ordered = self.sampler == "cmaes" or all(_numeric(c) for c in dim.choices)
            if ordered:
                dists[dim.name] = IntDistribution(0, len(dim.choices) - 1)
            else:
                dists[dim.name] = CategoricalDistribution(list(range(len(dim.choices))))
        return dists

    def _open_study(self, task: Task) -> tuple[optuna.Study, str]:
        identity = fingerprint(task.describe())
        name = self.study_name or f"mscgym-{task.tool}-{identity[:16]}"
        directions = ["maximize", "maximize"] if self.multi_objective else ["maximize"]
        where = f"optuna study {name!r} ({self.storage or 'in memory'})"
        try:
            study = optuna.create_study(storage=self.storage, study_name=name,
                                        load_if_exists=True, sampler=self._make_sampler(),
                                        directions=directions)
        except (ImportError, ValueError, RuntimeError, SQLAlchemyError) as err:
            raise MSCError(f"{where}: cannot open the storage ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from None
        if len(study.directions) != len(directions):
            raise MSCError(f"{where} has {len(study.directions)} objective(s); sampler "
                           f"{self.sampler!r} needs {len(directions)}")
        owner = study.user_attrs.get("mscgym_task")
        if owner is None and not study.trials:
            study.set_user_attr("mscgym_task", identity)
        elif owner != identity:
            raise MSCError(f"{where} was made for another task (or none); use another "
                           f"study_name or storage")
        return study, name

    def _resume(self, study: optuna.Study, task: Task, evaluator: Evaluator) -> int:
        """Take the study's finished trials as the first steps; return how many."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for trial in finished[:evaluator.budget]:
            plan = task.space.decode([trial.params[d.name] for d in task.space])
            stored = trial.user_attrs.get("metrics")
            if stored is None:
                evaluator.evaluate(plan, phase="resumed")
            else:
                evaluator.record(plan, Metrics.from_json(stored), cached=True, phase="resumed")
        return min(len(finished), evaluator.budget)

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        study, name = self._open_study(task)
        if not study.trials:
            study.enqueue_trial(dict(zip(
                [d.name for d in task.space], task.space.encode(task.space.baseline_plan()),
                strict=True)))
        resumed = self._resume(study, task, evaluator)
        dists = self.distributions(task)
        while not evaluator.done:
            trial = study.ask(dists)
            try:
                plan = task.space.decode([trial.params[d.name] for d in task.space])
                entry = evaluator.evaluate(plan, phase=self.sampler)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("plan", entry["plan"])
            trial.set_user_attr("metrics", entry["metrics"])
            trial.set_user_attr("score", entry["score"])
            study.tell(trial, entry["objectives"] if self.multi_objective else entry["score"])
        return {"study_name": name, "resumed_trials": resumed, "sampler": self.sampler}
