"""Record: everything needed to rebuild and check one evaluated plan, as JSON.

A record names the task (model id and weight hash, data id and hash, tool, search
space, scorer, runner), the plan, the resulting tool strategies, the metrics with the
tolerances a re-measurement must meet, the package versions and the seed. Records
are written atomically and read back with strict validation: a tampered or
mismatched record is refused with an error naming the field.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.records.policy import DEFAULT_TOLERANCES
from mscgym.records.schema import RECORD_SCHEMA
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task
from mscgym.utils.files import atomic_write_text, read_json
from mscgym.utils.schema import check_document

SCHEMA = "mscgym.record"
SCHEMA_VERSION = 1

_PACKAGES = ("mscgym", "apache-tvm", "torch", "onnxruntime", "onnx", "numpy", "gymnasium",
             "optuna")
_REQUIRED = ("schema", "version", "task", "plan", "strategies", "metrics", "tolerances",
             "score", "seed", "versions")
_TASK_KEYS = ("model", "weight_hash", "data", "data_hash", "tool", "space", "scorer", "runner",
              "device")


class RecordError(MSCError):
    """A record file is malformed, tampered with, or does not match its task."""


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Record:
    """One evaluated plan of one task."""

    task: dict[str, Any]
    plan: dict[str, Any]
    strategies: dict[str, Any]
    metrics: Metrics
    score: float
    seed: int
    tolerances: dict[str, dict[str, float]] = field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_TOLERANCES)))
    versions: dict[str, str] = field(default_factory=package_versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "task": self.task,
            "plan": self.plan,
            "strategies": self.strategies,
            "metrics": self.metrics.to_json(),
            "tolerances": self.tolerances,
            "score": self.score,
            "seed": self.seed,
            "versions": self.versions,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> Record:
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a JSON object")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise RecordError(f"{where}: missing keys {missing}")
        if data["schema"] != SCHEMA:
            raise RecordError(f"{where}: schema is {data['schema']!r}, expected {SCHEMA!r}")
        if data["version"] != SCHEMA_VERSION:
            raise RecordError(f"{where}: record version {data['version']!r} is not supported "
                              f"(expected {SCHEMA_VERSION})")
        task = data["task"]
        if not isinstance(task, dict):
            raise RecordError(f"{where}: key 'task' must be a JSON object")
        missing = [k for k in _TASK_KEYS if k not in task]
        if missing:
            raise RecordError(f"{where}: key 'task' misses keys {missing}")
        for key in ("plan", "strategies", "metrics", "tolerances", "versions"):
            if not isinstance(data[key], dict):
                raise RecordError(f"{where}: key {key!r} must be a JSON object")
        if not isinstance(data.get("extra", {}), dict):
            raise RecordError(f"{where}: key 'extra' must be a JSON object")
        try:
            metrics = Metrics.from_json(data["metrics"])
        except TypeError as err:
            raise RecordError(f"{where}: key 'metrics' is malformed ({err})") from None
        for key in ("score", "seed"):
            if isinstance(data[key], bool) or not isinstance(data[key], int | float):
                raise RecordError(f"{where}: key {key!r} must be a number, got {data[key]!r}")
        check_document(data, RECORD_SCHEMA, RecordError, where)
        return cls(task=task, plan=data["plan"], strategies=data["strategies"], metrics=metrics,
                   score=float(data["score"]), seed=int(data["seed"]),
                   tolerances=data["tolerances"], versions=data["versions"],
                   extra=dict(data.get("extra", {})))

    def save(self, path: str | os.PathLike[str]) -> str:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True))
        return os.fspath(path)


def load_record(path: str | os.PathLike[str]) -> Record:
    data = read_json(path, RecordError, "record")
    return Record.from_json(data, f"record {os.fspath(path)}")


def make_record(task: Task, plan: dict[str, Any], metrics: Metrics | None = None,
                extra: dict[str, Any] | None = None) -> Record:
    """The record of ``plan`` on ``task`` (evaluating it if ``metrics`` is not given)."""
    plan = task.space.validate(plan)
    measured, strategies = task.evaluate_full(plan)
    metrics = metrics or measured
    return Record(task=task.describe(), plan=plan, strategies=strategies, metrics=metrics,
                  score=task.score(metrics), seed=task.seed,
                  extra={"baseline": task.baseline.to_json(), **(extra or {})})
