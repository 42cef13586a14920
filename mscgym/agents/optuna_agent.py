"""Optuna search: TPE (default), GP, CMA-ES or NSGA-II over the space's choices.

Each dimension is one Optuna parameter named after it, a ``CategoricalDistribution``
over the dimension's choice values (``"int8_channel_minmax"``, ``0.5``, ...), so a
study reads like the plans it holds: ``trial.params`` is a plan, and a user can
``optuna.load_study(...)`` and go on with ``study.optimize`` in their own code
(``trial.suggest_categorical(name, choices)``), or plot it with ``optuna.visualization``.
CMA-ES models only numbers, so it alone gets integer ranges over choice indices. Every
sampler is seeded. TPE, GP and CMA-ES maximize the task's score; NSGA-II maximizes the
task's two objectives (quality, speed-up), and the result's best is still the best score.

The baseline plan is the first trial of a new study, so the search always measures the
uncompressed reference and the samplers see it; its measurement is stored with the
study (user attribute ``mscgym_baseline``), so a resumed study scores old and new plans
against the same baseline instead of a newly measured one.

With ``storage`` (e.g. ``"sqlite:///search.db"``) the study is persisted and
reopened (``load_if_exists``) under ``study_name`` (by default one derived from the
task), so a killed search resumes: the study's finished trials count toward the
budget, in trial order (the first ``budget`` of them where the study holds more),
and only the remaining ones run; their metrics come from the trial (stored as a user
attribute), so they are not measured again; trials a user added without metrics are
measured. Trials a killed process left running are marked failed. One process at a
time per study.
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
        """One Optuna distribution per dimension (see the module docstring)."""
        dists: dict[str, BaseDistribution] = {}
        for dim in task.space:
            if self.sampler == "cmaes":
                dists[dim.name] = IntDistribution(0, len(dim.choices) - 1)
            else:
                dists[dim.name] = CategoricalDistribution(list(dim.choices))
        return dists

    def _params(self, task: Task, plan: Mapping[str, Any]) -> dict[str, Any]:
        """The trial params that stand for ``plan``."""
        if self.sampler == "cmaes":
            return dict(zip([d.name for d in task.space], task.space.encode(plan), strict=True))
        return dict(task.space.validate(plan))

    def _plan(self, task: Task, trial: Any) -> dict[str, Any]:
        """The plan trial params stand for; params of another space are a clear error."""
        params = trial.params
        missing = [d.name for d in task.space if d.name not in params]
        if missing:
            raise MSCError(f"optuna trial {trial.number} has no params for {missing[:3]}"
                           f"{'...' if len(missing) > 3 else ''}; it was not made for this "
                           "task's search space")
        if self.sampler == "cmaes":
            return task.space.decode([params[d.name] for d in task.space])
        return task.space.validate({d.name: params[d.name] for d in task.space})

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

    def _prepare(self, task: Task) -> None:
        self._study, self._name = self._open_study(task)
        stored = self._study.user_attrs.get("mscgym_baseline")
        if stored is not None:
            task.adopt_baseline(Metrics.from_json(stored))

    def _start(self, task: Task, evaluator: Evaluator) -> None:
        """Take the study's finished trials as the first steps, then the baseline plan
        unless a resumed trial was it (a new study's first trial always is)."""
        study = self._study
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for trial in finished[:evaluator.budget]:
            plan = self._plan(task, trial)
            stored = trial.user_attrs.get("metrics")
            if stored is None:
                evaluator.evaluate(plan, phase="resumed")
            else:
                evaluator.record(plan, Metrics.from_json(stored), cached=True, phase="resumed")
        self._resumed = min(len(finished), evaluator.budget)
        baseline = task.space.baseline_plan()
        if not evaluator.done and not evaluator.seen(baseline):
            study.enqueue_trial(self._params(task, baseline))
            self._ask_and_tell(study, task, evaluator, baseline=True)
        if "mscgym_baseline" not in study.user_attrs:
            study.set_user_attr("mscgym_baseline", task.baseline.to_json())

    def _ask_and_tell(self, study: optuna.Study, task: Task, evaluator: Evaluator,
                      baseline: bool = False) -> None:
        """One trial: ask the sampler (or the enqueued baseline), evaluate, tell."""
        trial = study.ask(self.distributions(task))
        try:
            if baseline:
                entry = evaluator.evaluate_baseline()
            else:
                entry = evaluator.evaluate(self._plan(task, trial), phase=self.sampler)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("plan", entry["plan"])
        trial.set_user_attr("metrics", entry["metrics"])
        trial.set_user_attr("score", entry["score"])
        study.tell(trial, entry["objectives"] if self.multi_objective else entry["score"])

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        while not evaluator.done:
            self._ask_and_tell(self._study, task, evaluator)
        return {"study_name": self._name, "resumed_trials": self._resumed,
                "sampler": self.sampler}
