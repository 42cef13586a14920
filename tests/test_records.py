"""Records: save/load, refusal of tampered records, replay and validation on a real task."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mscgym.records import (
    Record,
    RecordError,
    load_record,
    make_record,
    replay,
    task_from_record,
    validate,
)
from mscgym.tasks.task import Task

PLAN = {"quantize:conv1": "int8_channel_minmax", "quantize:conv2": "int8_channel_entropy",
        "quantize:fc": "int4w_channel_minmax"}


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("digits-cnn", "quantize", profile_repeat=5)


@pytest.fixture(scope="module")
def record(task: Task) -> Record:
    return make_record(task, task.space.complete(PLAN))


@pytest.fixture
def saved(record: Record, tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Write the record after ``edit`` changed its JSON; returns the path."""

    def write(edit: Callable[[dict[str, Any]], None]) -> Path:
        data = copy.deepcopy(record.to_json())
        edit(data)
        path = tmp_path / "record.json"
        path.write_text(json.dumps(data))
        return path

    return write


def test_save_load_round_trip(record: Record, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "best.json"
    assert record.save(path) == str(path)
    loaded = load_record(path)
    assert loaded.to_json() == json.loads(json.dumps(record.to_json()))
    assert loaded.metrics == record.metrics
    assert [p.name for p in path.parent.iterdir()] == ["best.json"]  # no temp file left


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set("version", value=99), "record version 99 is not supported"),
    (_set("schema", value="other"), "schema is 'other'"),
    (lambda d: d.pop("plan"), "missing keys ['plan']"),
    (lambda d: d["task"].pop("runner"), "key 'task' misses keys ['runner']"),
    (_set("score", value="high"), "key 'score' must be a number"),
    (_set("metrics", value={"accuracy": 1.0}), "key 'metrics' is malformed"),
    (_set("strategies", value=[]), "key 'strategies' must be a JSON object"),
], ids=["version", "schema", "missing-key", "missing-task-key", "score", "metrics",
        "strategies"])
def test_malformed_record_is_refused(saved: Callable[..., Path], edit: Any,
                                     message: str) -> None:
    path = saved(edit)
    with pytest.raises(RecordError) as err:
        load_record(path)
    assert str(err.value).startswith(f"record {path}: ")
    assert message in str(err.value)


def test_non_json_and_missing_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"schema": "mscgym.record", ')
    with pytest.raises(RecordError, match="not valid JSON"):
        load_record(path)
    with pytest.raises(RecordError, match="cannot be read"):
        load_record(tmp_path / "absent.json")


@pytest.mark.parametrize(("edit", "message"), [
    (_set("task", "weight_hash", value="0" * 64),
     "model weight hash does not match: recorded 0000"),
    (_set("task", "data_hash", value="f" * 64), "data hash does not match: recorded ffff"),
    (_set("plan", "quantize:bogus", value="float"),
     "plan does not fit the task: plan has unknown dimensions ['quantize:bogus']"),
    (_set("plan", "quantize:conv1", value="int3"), "'int3' for 'quantize:conv1' is not one"),
    (lambda d: d["task"]["space"][1]["choices"].pop(),
     "search space does not match the rebuilt task: dimension 'quantize:conv2' choices"),
    (_set("task", "model", value="torch:Net"), "'torch:Net' was an in-memory model"),
    (_set("task", "model", value="no-such-model"), "'no-such-model' is neither a zoo model"),
    (_set("task", "runner", value="mxnet"), "unknown runner 'mxnet'"),
], ids=["weight-hash", "data-hash", "unknown-layer", "bad-choice", "space", "in-memory",
        "unknown-model", "unknown-runner"])
def test_mismatched_record_is_refused(saved: Callable[..., Path], edit: Any,
                                      message: str) -> None:
    path = saved(edit)
    with pytest.raises(RecordError) as err:
        task_from_record(path)
    assert str(err.value).startswith(f"record {path}: ")
    assert message in str(err.value)


def test_replay_reproduces_the_recorded_accuracy(record: Record) -> None:
    result = replay(record)
    assert result.accuracy is not None
    assert result.accuracy == record.metrics.accuracy
    assert result.distill_loss == pytest.approx(record.metrics.distill_loss, rel=1e-9, abs=1e-12)
    assert result.outputs.shape == (len(result.task.data.eval_inputs), 10)
    assert sorted(result.model.quant) == ["conv1", "conv2", "fc"]


def test_replay_refuses_a_different_strategy(saved: Callable[..., Path]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["strategies"]["quantize"]["conv2"]["weight"]["scale"][0] *= 2

    path = saved(edit)
    with pytest.raises(RecordError) as err:
        replay(path)
    assert str(err.value).startswith(
        f"record {path}: quantize strategy differs from the record at 'conv2': recorded ")


def test_validate_holds_for_a_fresh_record(record: Record) -> None:
    report = validate(record, skip=["latency_ms"])  # a test must not hinge on timing
    assert report.all_hold, report.to_json()
    assert [row.metric for row in report.rows] == [
        "distill_loss", "accuracy", "size_bytes", "params", "flops"]
    assert report.skipped == ["latency_ms"]
    assert report.measured.accuracy == record.metrics.accuracy


def test_validate_flags_only_the_edited_metric(saved: Callable[..., Path]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["metrics"]["accuracy"] -= 0.01

    report = validate(saved(edit), skip=["latency_ms"])
    assert not report.all_hold
    assert report.failed == ["accuracy"]
    row = next(r for r in report.rows if r.metric == "accuracy")
    assert row.measured == pytest.approx(row.recorded + 0.01)


def test_validate_refuses_to_skip_an_unknown_metric(record: Record) -> None:
    with pytest.raises(RecordError, match="cannot skip 'speed': validation checks "
                                          "distill_loss, accuracy, latency_ms"):
        validate(record, skip=["speed"])


def test_validate_refuses_a_malformed_tolerance(saved: Callable[..., Path]) -> None:
    with pytest.raises(RecordError, match="tolerance of 'accuracy' has unknown keys"):
        validate(saved(_set("tolerances", "accuracy", value={"percent": 1})))
