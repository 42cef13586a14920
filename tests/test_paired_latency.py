"""Paired latency: every evaluation is timed in the same rounds as the float model, scorers
use that paired speed-up, the float model's own is exactly 1, and records made before
pairing (no paired speed-up, the old choice order) still load, replay and validate.

No test here asserts a wall-clock time: only which ratio is used, how many runs were
timed, and what validation concludes from given numbers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from mscgym.agents import create_agent
from mscgym.leaderboard.entrants import UNIFORM_QUANT, make_agent, uniform_quant
from mscgym.records import load_record, make_record, validate
from mscgym.records.policy import PAIRED_SPEEDUP_TOLERANCE, policy_tolerances
from mscgym.records.replay import check_metric
from mscgym.runtime.manager import example_inputs
from mscgym.runtime.profiling import PAIRED_BLOCK, profile_paired
from mscgym.tasks.measure import Compressed, Measurement, build_runner
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.scorers import get_scorer, speedup
from mscgym.tasks.task import Task

OLD_QUANT_CHOICES = ("float", "int8_tensor_minmax", "int8_channel_minmax",
                     "int8_channel_percentile", "int8_channel_entropy", "int8_channel_mse",
                     "int4w_channel_minmax", "uint8a_channel_minmax")
"""The per-layer choices in the order records were written with before the fast forms
moved to the front."""


def _metrics(latency_ms: float, paired: float | None, loss: float = 0.0) -> Metrics:
    return Metrics(distill_loss=loss, accuracy=None, latency_ms=latency_ms,
                   latency_p90_ms=latency_ms, latency_iqr_ms=0.1, size_bytes=10, params=10,
                   flops=10, runner="onnxruntime", device="cpu", paired_speedup=paired)


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("digits-cnn", "quantize", profile_repeat=6, profile_warmup=1)


def test_scorers_use_the_paired_ratio_when_present() -> None:
    baseline = _metrics(10.0, 1.0)
    # timed alone, the candidate's median says 2x; paired with the float model, 3x
    candidate = _metrics(5.0, 3.0)
    assert speedup(candidate, baseline) == 3.0
    assert get_scorer("latency_under_accuracy").score(candidate, baseline) == 3.0
    assert get_scorer("latency_under_accuracy").objectives(candidate, baseline)[1] == 3.0
    weighted = get_scorer("weighted", weights={"speedup": 1.0})
    assert weighted.score(candidate, baseline) == 3.0
    # metrics from before pairing: the ratio of the medians, as before
    assert speedup(_metrics(5.0, None), _metrics(10.0, None)) == 2.0
    assert speedup(baseline, baseline) == 1.0
    # an infeasible plan stays infeasible whatever its speed-up
    assert get_scorer("latency_under_accuracy").score(_metrics(5.0, 3.0, loss=0.5),
                                                      baseline) < 0


def test_profile_paired_times_both_sides_in_the_same_rounds(task: Task) -> None:
    how = Measurement()
    fp32 = build_runner(Compressed(task.graph, task.params, {}), how)
    int8 = task.compressed(task.space.complete(
        {f"quantize:{layer}": "uint8a_channel_minmax" for layer in task.quantizable_layers()}))
    candidate = build_runner(int8, how)
    inputs = example_inputs(task.graph, 1, 0)
    stats = profile_paired(fp32, inputs, candidate, inputs, repeat=7, warmup=1)
    assert stats.reference.repeat == stats.candidate.repeat == 7
    assert len(stats.round_ratios) == math.ceil(7 / PAIRED_BLOCK)
    assert stats.speedup == pytest.approx(sorted(stats.round_ratios)[1])
    assert all(r > 0 for r in stats.round_ratios)
    assert stats.candidate.runner == "onnxruntime"


def test_baseline_paired_speedup_is_one_and_the_reference_is_kept(task: Task) -> None:
    baseline = task.baseline
    assert baseline.paired_speedup == 1.0
    reference = task._reference
    assert reference is not None
    plan = task.space.complete({f"quantize:{layer}": "uint8a_channel_minmax"
                                for layer in task.quantizable_layers()})
    metrics = task.evaluate(plan)
    assert metrics.paired_speedup is not None and metrics.paired_speedup > 0
    assert task.score(metrics) == metrics.paired_speedup  # feasible on digits-cnn
    assert task._reference is reference, "the float session is built once per task"
    again = task.measure(Compressed(task.graph, task.params, {}))
    assert again.paired_speedup == 1.0


def test_onnxruntime_tasks_measure_with_one_intra_op_thread_unless_told(task: Task) -> None:
    """Both sessions of a paired measurement run one intra-op thread by default (the
    reference's real session says so), the task's description records it, and a task
    given other options keeps them."""
    assert task.runner_options == {"intra_op_threads": 1}
    assert task.describe()["runner_options"] == {"intra_op_threads": 1}
    assert task.baseline.paired_speedup == 1.0
    reference = task._reference
    assert reference is not None
    session = reference.runner._session
    assert session.get_session_options().intra_op_num_threads == 1
    two = Task("digits-cnn", "quantize", runner_options={"intra_op_threads": 2},
               profile_repeat=3, profile_warmup=1)
    assert two.runner_options == {"intra_op_threads": 2}
    assert Task("digits-cnn", "quantize", runner="torch").runner_options == {}


def test_small_budgets_reach_uint8_activations_on_onnxruntime(task: Task) -> None:
    dim = task.space.dims[0]
    assert dim.choices[:3] == ("float", "uint8a_channel_minmax", "int8_channel_minmax")
    grid = create_agent("grid", progress=False).search(task, 2)
    assert [set(h["plan"].values()) for h in grid.history] == [
        {"float"}, {"uint8a_channel_minmax"}]
    uniform = make_agent("uniform-int8").search(task, 2)
    assert set(uniform.history[-1]["plan"].values()) == {"uint8a_channel_minmax"}
    assert uniform_quant(task, ("float", "int8_channel_minmax")) == UNIFORM_QUANT


def test_latency_check_covers_the_paired_speedup() -> None:
    tolerance = policy_tolerances("onnxruntime")["latency_ms"]
    recorded = _metrics(10.0, 3.0)
    # the median holds, the paired speed-up was overstated: latency_ms fails
    row = check_metric("latency_ms", recorded, _metrics(10.0, 1.2), tolerance)
    assert not row.holds and row.paired is not None and not row.paired.holds
    assert row.paired.tolerance == PAIRED_SPEEDUP_TOLERANCE
    assert check_metric("latency_ms", recorded, _metrics(10.0, 2.0), tolerance).holds
    # a record made before pairing: only the median is checked
    old = check_metric("latency_ms", _metrics(10.0, None), _metrics(10.0, 1.2), tolerance)
    assert old.holds and old.paired is None
    assert "paired" not in old.to_json()


def test_a_record_from_before_pairing_still_validates(tmp_path: Path) -> None:
    old_task = Task("digits-cnn", "quantize", profile_repeat=5, quant_choices=OLD_QUANT_CHOICES)
    plan = old_task.space.complete({"quantize:conv1": "int8_channel_minmax",
                                    "quantize:fc": "uint8a_channel_minmax"})
    data = make_record(old_task, plan).to_json()
    # as the record was written then: no paired speed-up, scored by the medians' ratio
    metrics = dataclasses.replace(Metrics.from_json(data["metrics"]), paired_speedup=None)
    baseline = dataclasses.replace(Metrics.from_json(data["extra"]["baseline"]),
                                   paired_speedup=None)
    for key, value in (("metrics", metrics), ("baseline", baseline)):
        value_json = value.to_json()
        del value_json["paired_speedup"]
        if key == "metrics":
            data["metrics"] = value_json
        else:
            data["extra"]["baseline"] = value_json
    data["score"] = old_task.scorer.score(metrics, baseline)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    loaded = load_record(path)
    assert loaded.metrics.paired_speedup is None
    assert [d["choices"] for d in loaded.task["space"]][0] == list(OLD_QUANT_CHOICES)
    report = validate(path, skip=["latency_ms"])  # a test must not hinge on timing
    assert report.all_hold, report.to_json()
    assert report.score is not None and report.score.holds
    assert report.measured.paired_speedup is not None  # re-measured paired all the same
