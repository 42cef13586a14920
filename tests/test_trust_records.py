"""Trust, records: a record cannot vouch for itself. Tolerances come from the policy in
code (the record may only tighten them), validate replays the strategies, re-measures
the baseline and recomputes the score."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mscgym.cli import main
from mscgym.records import Record, RecordError, make_record, validate
from mscgym.records.policy import (
    DEFAULT_TOLERANCES,
    MIN_LATENCY_REPEAT,
    effective_tolerances,
    latency_repeat,
)
from mscgym.tasks.task import Task

METRICS = ["distill_loss", "accuracy", "latency_ms", "size_bytes", "params", "flops"]


@pytest.fixture(scope="module")
def record() -> Record:
    task = Task("digits-mlp", "prune", profile_repeat=3)
    first = task.space.dims[0].name
    return make_record(task, task.space.complete({first: 0.5}))


@pytest.fixture
def saved(record: Record, tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    def write(edit: Callable[[dict[str, Any]], None]) -> Path:
        data = copy.deepcopy(record.to_json())
        edit(data)
        path = tmp_path / "record.json"
        path.write_text(json.dumps(data))
        return path

    return write


def test_policy_only_tightens() -> None:
    loose = {"accuracy": {"abs": 1e12, "rel": 5.0}, "latency_ms": {"rel": 100.0}}
    tolerances = effective_tolerances("onnxruntime", loose)
    assert tolerances["accuracy"] == {"abs": 0.0}
    assert tolerances["latency_ms"] == DEFAULT_TOLERANCES["latency_ms"]
    assert effective_tolerances("onnxruntime", {}) == DEFAULT_TOLERANCES
    tight = effective_tolerances("onnxruntime", {"latency_ms": {"rel": 0.1}})
    assert tight["latency_ms"] == {"rel": 0.1, "iqr": 5.0}
    assert effective_tolerances("tensorrt", {})["accuracy"] == {"abs": 0.005}
    assert latency_repeat(3) == MIN_LATENCY_REPEAT and latency_repeat(500) == 500


@pytest.mark.parametrize("tolerances", [{}, {"accuracy": {"abs": 1e12}},
                                        {m: {"abs": 1e12} for m in DEFAULT_TOLERANCES}])
def test_faked_metrics_with_loose_tolerances_fail(saved: Callable[..., Path],
                                                  tolerances: dict[str, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def fake(data: dict[str, Any]) -> None:
        data["metrics"]["accuracy"] = 1.0
        data["metrics"]["size_bytes"] //= 10
        data["tolerances"] = tolerances

    path = saved(fake)
    report = validate(path)
    assert [row.metric for row in report.rows] == METRICS
    assert {"accuracy", "size_bytes"} <= set(report.failed)
    assert not report.all_hold
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "accuracy" in out and "do not hold" in out


def test_top_level_tolerance_is_refused(saved: Callable[..., Path]) -> None:
    path = saved(lambda d: d.update(tolerances={"abs": 1e12}))
    with pytest.raises(RecordError, match=rf"record {path}: key 'tolerances.abs': expected an "
                                          "object, got 1000000000000.0"):
        validate(path)


def test_faked_score_fails(saved: Callable[..., Path], capsys: pytest.CaptureFixture[str]
                           ) -> None:
    path = saved(lambda d: d.update(score=d["score"] + 1000.0))
    report = validate(path)
    assert report.score is not None and not report.score.holds
    assert "but the recorded metrics score" in report.score.describe()
    assert main(["validate", str(path)]) == 1
    assert "but the recorded metrics score" in capsys.readouterr().out


def test_faked_baseline_fails(saved: Callable[..., Path]) -> None:
    def fake(data: dict[str, Any]) -> None:
        data["extra"]["baseline"]["size_bytes"] *= 10
        data["extra"]["baseline"]["accuracy"] = 0.01

    report = validate(saved(fake))
    assert report.score is not None and not report.score.holds
    assert {"size_bytes", "accuracy"} <= set(report.score.baseline_failed)


def test_baseline_latency_is_not_checked_when_the_speedup_was_paired(
        saved: Callable[..., Path]) -> None:
    """The paired speed-up is re-measured with the plan; the baseline timed alone is not
    what the score rests on, so its drift (here faked x10) is no verdict on the record."""
    def fake(data: dict[str, Any]) -> None:
        assert data["metrics"]["paired_speedup"] is not None
        data["extra"]["baseline"]["latency_ms"] *= 10
        data["extra"]["baseline"]["accuracy"] = 0.01

    report = validate(saved(fake))
    assert report.score is not None and report.score.baseline_failed == ["accuracy"]


def test_missing_baseline_cannot_prove_the_score(saved: Callable[..., Path]) -> None:
    report = validate(saved(lambda d: d["extra"].pop("baseline")))
    assert not report.all_hold
    assert "stores no baseline (key 'extra.baseline')" in report.score.describe()


def test_tampered_strategy_fails_validate(saved: Callable[..., Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def tamper(data: dict[str, Any]) -> None:
        group = data["strategies"]["prune"]["groups"][0]
        group["keep"] = list(reversed(group["keep"]))

    path = saved(tamper)
    with pytest.raises(RecordError, match=rf"record {path}: prune strategy differs from the "
                                          "record at"):
        validate(path)
    assert main(["validate", str(path)]) == 2
    assert "prune strategy differs" in capsys.readouterr().err
