"""The Tune trainable: one trial evaluates one plan of a task rebuilt in the worker.

Each trial reports once, when the plan is measured: ``score`` (the task's scorer
against the driver's baseline, what the searcher maximizes), ``metrics`` (the
Metrics JSON), ``plan``, ``cached`` (answered from the worker's task cache) and
``task_key`` (which task it measured, so a resumed experiment can be checked).

Distillation trials also report after every fine-tuning epoch, with ``score`` set to
minus the student's distillation loss at that epoch (``intermediate`` true), so ASHA
(``scheduler="asha"``) can stop a trial whose student lags the others at the same
epoch; the final report carries the task's real score, which is what the searcher and
the result use.

Building a task (translating the model, loading data, calibrating) costs seconds, so a
worker process keeps the tasks it built: trials on a reused actor (the sweep sets
``reuse_actors``) skip that cost and share the task's calibration and result caches.
"""

from __future__ import annotations

from typing import Any

from mscgym.tasks.cache import fingerprint
from mscgym.tasks.task import Task
from mscgym.tune.deps import import_tune
from mscgym.tune.space import config_plan
from mscgym.tune.spec import TaskSpec, spec_baseline, task_from_spec

_WORKER_TASKS: dict[str, Task] = {}
"""Tasks this worker process built, by spec fingerprint (see the module docstring)."""


def worker_task(spec: TaskSpec) -> Task:
    """The task ``spec`` describes, built once per worker process."""
    key = fingerprint(spec)
    if key not in _WORKER_TASKS:
        _WORKER_TASKS[key] = task_from_spec(spec)
    return _WORKER_TASKS[key]


def evaluate_trial(config: dict[str, Any], spec: TaskSpec) -> None:
    """Tune function trainable: evaluate the plan ``config`` stands for and report it."""
    tune = import_tune()
    task = worker_task(spec)
    plan = config_plan(task.space, config)
    before = task.evaluations

    def report_epoch(epoch: int, loss: float) -> None:
        tune.report({"score": -loss, "distill_loss": loss, "epoch": epoch,
                     "intermediate": True, "task_key": spec["key"]})

    metrics, _ = task.evaluate_full(plan, on_epoch=report_epoch)
    tune.report({
        "intermediate": False,
        "score": task.scorer.score(metrics, spec_baseline(spec)),
        "metrics": metrics.to_json(),
        "plan": plan,
        "cached": task.evaluations == before,
        "task_key": spec["key"],
    })
