"""Replay and validate a record: rebuild its task and model, then check what it claims.

A record is only worth keeping if someone else can get the same model back from it.
``task_from_record`` rebuilds the task from the record's description and refuses a
record whose model weights, data or search space are not the ones it was made with;
``replay`` rebuilds the compressed model and checks its tool strategies against the
recorded ones; ``validate`` replays too, re-measures the plan and compares every metric
with the tolerances of the policy in :mod:`mscgym.records.policy` (which the record may
only tighten), re-measures the baseline and recomputes the score from the recorded
metrics, so a record cannot vouch for itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.records.policy import (
    PAIRED_SPEEDUP_TOLERANCE,
    SCORE_REL_TOL,
    effective_tolerances,
    latency_repeat,
)
from mscgym.records.record import Record, RecordError, load_record
from mscgym.runtime.runner import RunnerUnavailableError
from mscgym.tasks.description import DescriptionError, as_json
from mscgym.tasks.measure import run_outputs
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.sources import TaskData
from mscgym.tasks.spaces import PlanError
from mscgym.tasks.task import Compressed, Task
from mscgym.tools.losses import distill_loss
from mscgym.tools.registry import replay_view

RecordLike = Record | str | os.PathLike[str]

_TOLERANCE_KEYS = ("abs", "rel", "iqr")


def _resolve(record: RecordLike) -> tuple[Record, str]:
    """The record (loaded when given a path) and how error messages name it."""
    if isinstance(record, Record):
        return record, "record"
    return load_record(record), f"record {os.fspath(record)}"


def task_from_record(record: RecordLike, data: TaskData | None = None) -> Task:
    """Rebuild the task a record was made on, refusing one that does not match it.

    The model must be a zoo name or an existing file; its weights, the data and the
    search space must hash or compare equal to the recorded ones, and the plan must fit
    the space, since otherwise a replay would silently measure a different problem.
    """
    return _rebuild_task(*_resolve(record), data)


def _rebuild_task(record: Record, where: str, data: TaskData | None,
                  validating: bool = False) -> Task:
    """:meth:`Task.from_description` of the record's task, its errors named by the
    record, and the plan checked against the rebuilt space."""
    desc = record.task
    repeat = None
    profile = desc.get("profile", {})
    if validating and isinstance(profile, dict):
        # never re-measure latency with fewer runs than the policy's floor
        recorded = profile.get("repeat", 30)
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            repeat = latency_repeat(recorded)
    try:
        task = Task.from_description(desc, data=data, profile_repeat=repeat, seed=record.seed)
    except (RunnerUnavailableError, zoo.ZooCacheError) as err:
        raise RecordError(f"{where}: cannot rebuild the task here: {err}") from None
    except DescriptionError as err:
        raise RecordError(f"{where}: {err}") from None
    except (MSCError, TypeError, ValueError) as err:
        # TypeError/ValueError: a recorded setting of the wrong type (e.g. a string repeat).
        raise RecordError(f"{where}: cannot rebuild the task: {err}") from None
    try:
        task.space.validate(record.plan)
    except PlanError as err:
        raise RecordError(f"{where}: plan does not fit the task: {err}") from None
    return task


def _first_difference(recorded: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> str:
    for key in sorted(set(recorded) | set(rebuilt), key=str):
        if recorded.get(key) != rebuilt.get(key):
            return (f"{key!r}: recorded {_short(recorded.get(key))}, "
                    f"rebuilt {_short(rebuilt.get(key))}")
    return "they differ"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def check_strategies(recorded: Mapping[str, Any], rebuilt: Mapping[str, Any],
                     where: str = "record") -> None:
    """Raise RecordError naming the tool whose rebuilt strategy differs from the record."""
    rebuilt = as_json(rebuilt)
    for tool in sorted(set(recorded) | set(rebuilt)):
        if tool not in rebuilt or tool not in recorded:
            side = "record" if tool in recorded else "rebuilt model"
            raise RecordError(f"{where}: {tool} strategy differs: only the {side} has one")
        # each tool declares what must agree (mscgym.tools.registry: replay_view)
        old, new = replay_view(tool, recorded[tool]), replay_view(tool, rebuilt[tool])
        if old != new:
            detail = (_first_difference(old, new) if isinstance(old, dict)
                      and isinstance(new, dict) else f"recorded {_short(old)}, "
                      f"rebuilt {_short(new)}")
            raise RecordError(f"{where}: {tool} strategy differs from the record at {detail}")


@dataclass
class ReplayResult:
    """The rebuilt model of a record and what it computes on the task's evaluation inputs."""

    record: Record
    task: Task
    model: Compressed
    outputs: np.ndarray
    accuracy: float | None
    distill_loss: float

    @property
    def accuracy_matches(self) -> bool:
        """Whether the replayed accuracy is exactly the recorded one."""
        return self.accuracy == self.record.metrics.accuracy


def replay(record: RecordLike, data: TaskData | None = None) -> ReplayResult:
    """Rebuild the record's compressed model, check its strategies, and run it."""
    record, where = _resolve(record)
    task = _rebuild_task(record, where, data)
    model = task.compressed(record.plan)
    check_strategies(record.strategies, model.strategies, where)
    outputs = run_outputs(model, task.data, task.measurement)
    accuracy = None
    if task.data.eval_labels is not None:
        accuracy = float(np.mean(outputs.argmax(-1) == task.data.eval_labels))
    return ReplayResult(record, task, model, outputs, accuracy,
                        distill_loss(task.teacher_outputs(), outputs))


@dataclass
class ValidationRow:
    """One metric: recorded and re-measured values, the tolerance, the allowed difference."""

    metric: str
    recorded: float | None
    measured: float | None
    tolerance: dict[str, float]
    allowed: float | None
    holds: bool
    paired: ValidationRow | None = None
    """On the ``latency_ms`` row: the paired speed-up's own check, which ``holds`` includes."""

    def to_json(self) -> dict[str, Any]:
        out = {"metric": self.metric, "recorded": self.recorded, "measured": self.measured,
               "tolerance": dict(self.tolerance), "allowed": self.allowed, "holds": self.holds}
        if self.paired is not None:
            out["paired"] = self.paired.to_json()
        return out


@dataclass
class ScoreCheck:
    """The recorded score against the task's score of the recorded metrics (with the
    recorded baseline), and the recorded baseline against a re-measured one."""

    recorded: float
    recomputed: float | None
    baseline_failed: list[str]
    problem: str | None = None

    @property
    def holds(self) -> bool:
        return (self.problem is None and self.recomputed is not None
                and _same_score(self.recorded, self.recomputed) and not self.baseline_failed)

    def describe(self) -> str:
        if self.problem is not None:
            return f"score {self.recorded:.6g} cannot be checked: {self.problem}"
        verdict = []
        if self.recomputed is not None and not _same_score(self.recorded, self.recomputed):
            verdict.append(f"recorded {self.recorded:.6g}, but the recorded metrics score "
                           f"{self.recomputed:.6g}")
        if self.baseline_failed:
            verdict.append("the recorded baseline does not hold when re-measured ("
                           + ", ".join(self.baseline_failed) + ")")
        return "score " + ("; ".join(verdict) if verdict else
                           f"{self.recorded:.6g} holds (recomputed from the recorded metrics, "
                           "baseline re-measured)")

    def to_json(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "recomputed": self.recomputed,
                "baseline_failed": list(self.baseline_failed), "problem": self.problem,
                "holds": self.holds}


def _same_score(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SCORE_REL_TOL, abs_tol=1e-12) or (
        math.isinf(a) and a == b)


@dataclass
class ValidationReport:
    """Per-metric verdicts of re-measuring a record's plan, and the score's verdict."""

    where: str
    rows: list[ValidationRow]
    measured: Metrics
    score: ScoreCheck | None = None
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [row.metric for row in self.rows if not row.holds]

    @property
    def all_hold(self) -> bool:
        return not self.failed and (self.score is None or self.score.holds)

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "all_hold": self.all_hold,
                "rows": [row.to_json() for row in self.rows], "skipped": list(self.skipped),
                "score": None if self.score is None else self.score.to_json()}


_NUMERIC_METRICS = tuple(f.name for f in fields(Metrics)
                         if f.name not in ("runner", "device", "target", "extra"))


def _tolerance(metric: str, tolerance: Any, where: str) -> dict[str, float]:
    if metric not in _NUMERIC_METRICS:
        raise RecordError(f"{where}: tolerances name {metric!r}, which is not a numeric metric "
                          f"({', '.join(_NUMERIC_METRICS)})")
    if not isinstance(tolerance, dict):
        raise RecordError(f"{where}: tolerance of {metric!r} must be an object with "
                          f"{list(_TOLERANCE_KEYS)}, got {tolerance!r}")
    unknown = sorted(set(tolerance) - set(_TOLERANCE_KEYS))
    if unknown:
        raise RecordError(f"{where}: tolerance of {metric!r} has unknown keys {unknown}; "
                          f"expected some of {list(_TOLERANCE_KEYS)}")
    if "iqr" in tolerance and metric != "latency_ms":
        raise RecordError(f"{where}: tolerance 'iqr' of {metric!r} applies only to latency_ms")
    for key, value in tolerance.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RecordError(f"{where}: tolerance {key!r} of {metric!r} must be a number "
                              f">= 0, got {value!r}")
    return {key: float(value) for key, value in tolerance.items()}


def _metric_order(metrics: Any) -> list[str]:
    return sorted(metrics, key=lambda m: (
        _NUMERIC_METRICS.index(m) if m in _NUMERIC_METRICS else len(_NUMERIC_METRICS), m))


def record_tolerances(record: Record, where: str = "record") -> dict[str, dict[str, float]]:
    """The record's tolerances, checked, in metric order."""
    return {m: _tolerance(m, record.tolerances[m], where)
            for m in _metric_order(record.tolerances)}


def validation_tolerances(record: Record, where: str = "record"
                          ) -> dict[str, dict[str, float]]:
    """What validation checks, in metric order: the policy for the record's runner,
    tightened (never widened) by the record's own tolerances."""
    tolerances = effective_tolerances(str(record.task.get("runner")),
                                      record_tolerances(record, where))
    return {m: tolerances[m] for m in _metric_order(tolerances)}


def check_metric(metric: str, recorded: Metrics, measured: Metrics,
                 tolerance: Mapping[str, float]) -> ValidationRow:
    """Compare one metric: it holds when ``|measured - recorded| <= max(abs, rel*|recorded|,
    iqr*recorded_iqr)`` (``iqr`` for latency only), or when both are missing.

    ``latency_ms`` also checks the recorded paired speed-up, the timing the score rests
    on, with :data:`~mscgym.records.policy.PAIRED_SPEEDUP_TOLERANCE` (a record made before
    pairing has none, and there is nothing more to check)."""
    tol = dict(tolerance)
    old, new = getattr(recorded, metric), getattr(measured, metric)
    if old is None or new is None:
        return ValidationRow(metric, old, new, tol, None, old is None and new is None)
    allowed = max(tol.get("abs", 0.0), tol.get("rel", 0.0) * abs(float(old)))
    if "iqr" in tol:
        allowed = max(allowed, tol["iqr"] * float(recorded.latency_iqr_ms))
    holds = abs(float(new) - float(old)) <= allowed
    paired = None
    if metric == "latency_ms" and recorded.paired_speedup is not None:
        paired = check_metric("paired_speedup", recorded, measured, PAIRED_SPEEDUP_TOLERANCE)
        holds = holds and paired.holds
    return ValidationRow(metric, old, new, tol, allowed, holds, paired)


def _check_score(record: Record, task: Task, tolerances: Mapping[str, Mapping[str, float]],
                 where: str) -> ScoreCheck:
    """Recompute the recorded score from the recorded metrics and baseline, and check
    the recorded baseline against one measured now (the score's quality bound rests on
    it). Its latency is checked only when the score's speed-up rests on it: a paired
    speed-up was timed against the baseline in the plan's own window and is checked
    with the plan's metrics, while the baseline timed alone drifts with the host."""
    baseline_json = record.extra.get("baseline")
    if not isinstance(baseline_json, dict):
        return ScoreCheck(record.score, None, [], "the record stores no baseline "
                          "(key 'extra.baseline')")
    try:
        baseline = Metrics.from_json(baseline_json)
    except (TypeError, ValueError) as err:
        raise RecordError(f"{where}: key 'extra.baseline' is malformed ({err})") from None
    try:
        recomputed = task.scorer.score(record.metrics, baseline)
    except MSCError as err:
        return ScoreCheck(record.score, None, [], f"the scorer refuses the recorded "
                          f"metrics ({err})")
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise RecordError(f"{where}: the recorded metrics cannot be scored ({err})") from None
    measured = task.baseline
    paired = record.metrics.paired_speedup is not None
    failed = [m for m, tol in tolerances.items()
              if not (paired and m == "latency_ms")
              and not check_metric(m, baseline, measured, tol).holds]
    return ScoreCheck(record.score, recomputed, failed)


def validate(record: RecordLike, data: TaskData | None = None,
             skip: Collection[str] = ()) -> ValidationReport:
    """Replay the record (its strategies must be rebuilt exactly), re-measure its plan
    (no cache) and check every metric with the policy's tolerances (the record may only
    tighten them), re-measure the baseline and recompute the score; see the module doc.

    ``skip`` names metrics not to compare, for the plan and the baseline alike: latency
    re-measured on another machine, or on a loaded one, says nothing about the record.
    """
    record, where = _resolve(record)
    tolerances = validation_tolerances(record, where)
    unknown = sorted(set(skip) - set(tolerances))
    if unknown:
        raise RecordError(f"{where}: cannot skip {', '.join(map(repr, unknown))}: validation "
                          f"checks {', '.join(tolerances)}")
    tolerances = {m: tol for m, tol in tolerances.items() if m not in skip}
    task = _rebuild_task(record, where, data, validating=True)
    score = _check_score(record, task, tolerances, where)
    measured, strategies = task.evaluate_full(record.plan, use_cache=False)
    check_strategies(record.strategies, strategies, where)
    rows = [check_metric(m, record.metrics, measured, tol) for m, tol in tolerances.items()]
    return ValidationReport(where, rows, measured, score, skipped=sorted(skip))
