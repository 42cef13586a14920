"""A task as JSON that a Ray worker turns back into the same Task.

Trials run in other processes (possibly other machines), so the driver cannot hand
them its Task object: it sends the task's description instead, and each worker
rebuilds the task from it. That only works for what a description can name: a zoo
model or a model file, zoo data, and a student given as a recipe; anything held only
in the driver's memory is refused up front, before Ray starts. The worker checks that
its rebuilt task describes itself exactly as the driver's did (weights, data, space,
scorer, runner, ...), so no trial ever measures a different problem.

The spec also carries the driver's baseline metrics, so every trial scores against
the same baseline the driver scores with, and the driver's cache directory (if any),
so workers and driver share evaluations on disk.
"""

from __future__ import annotations

import os
from typing import Any

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.description import DescriptionError, as_json
from mscgym.tasks.measure import Compressed
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.sources import TaskData, zoo_data_for
from mscgym.tasks.task import Task

TaskSpec = dict[str, Any]


def _model_arg(model_id: str) -> str:
    if model_id in zoo.list_models() or os.path.isfile(model_id):
        return model_id
    raise MSCError(
        f"ray sweep: model {model_id!r} exists only in this process (a torch module or an "
        "in-memory graph), and Ray workers rebuild the task from its description; pass a "
        f"zoo model ({', '.join(zoo.list_models())}) or a model file (.onnx, or a graph "
        "saved with graph.export) instead")


def _data_arg(model_id: str, data_id: str) -> TaskData | None:
    """The data Ray workers rebuild the task with (zoo data only: they get no arrays)."""
    try:
        return zoo_data_for(model_id, data_id)
    except MSCError as err:
        raise MSCError(f"ray sweep: {err}") from None


def task_spec(task: Task) -> TaskSpec:
    """The JSON a worker rebuilds ``task`` from; MSCError if a worker could not."""
    desc = as_json(task.describe())
    _model_arg(desc["model"])
    _data_arg(desc["model"], desc["data"])
    if isinstance(task.student, Compressed):
        raise MSCError("ray sweep: the distillation student was given as a built model, which "
                       "Ray workers cannot rebuild; give the student as a recipe such as "
                       "{'prune': 0.5, 'quantize': 'int8_channel_minmax'}")
    directory = task.cache.directory
    return {"task": desc, "key": fingerprint(desc),
            "cache_dir": None if directory is None else os.path.abspath(directory),
            "baseline": as_json(task.baseline.to_json())}


def spec_baseline(spec: TaskSpec) -> Metrics:
    """The driver's baseline metrics, which every trial scores against."""
    return Metrics.from_json(spec["baseline"])


def task_from_spec(spec: TaskSpec) -> Task:
    """Rebuild the task ``spec`` describes, refusing one that describes itself differently."""
    desc = spec["task"]
    _model_arg(desc["model"])
    try:
        return Task.from_description(desc, data=_data_arg(desc["model"], desc["data"]),
                                     cache_dir=spec["cache_dir"], exact=True)
    except DescriptionError as err:
        raise MSCError(f"ray worker: {err}; the model file or the zoo cache changed since "
                       "the sweep started") from None
