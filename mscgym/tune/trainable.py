"""The Tune trainable: one trial evaluates one plan of a task rebuilt in the worker.

Each trial reports once, when the plan is measured: ``score`` (the task's scorer
against the driver's baseline, what the searcher maximizes), ``metrics`` (the
Metrics JSON), ``plan``, ``cached`` (answered from the worker's task cache) and
``task_key`` (which task it measured, so a resumed experiment can be checked).

Distillation trials report once too. The Distiller can call back after every epoch
(``eval_fn`` of ``Distiller.distill``), but ``Task.evaluate`` runs it without one and
offers no hook to pass one in, and an intermediate ``score`` would need the student's
latency, which only the final measurement has; so ASHA (``scheduler="asha"``) sees one
result per trial and stops nothing early until Task exposes per-epoch results.

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
    metrics = task.evaluate(plan)
    tune.report({
        "score": task.scorer.score(metrics, spec_baseline(spec)),
        "metrics": metrics.to_json(),
        "plan": plan,
        "cached": task.evaluations == before,
        "task_key": spec["key"],
    })
