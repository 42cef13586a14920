"""The pieces a Task is made of, each on its own: scoring (baseline rule, the baseline
measured once or adopted), the evaluation log (cache, counters, on disk) and the checks
of the space options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mscgym.compiler.errors import MSCError
from mscgym.tasks.cache import Evaluations
from mscgym.tasks.choices import checked_densities, checked_quant_choices
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.scorers import get_scorer
from mscgym.tasks.scoring import Scoring


def _metrics(latency: float, accuracy: float = 0.9) -> Metrics:
    return Metrics(distill_loss=0.0, accuracy=accuracy, latency_ms=latency,
                   latency_p90_ms=latency, latency_iqr_ms=0.0, size_bytes=100, params=10,
                   flops=20, runner="onnxruntime", device="cpu")


@pytest.mark.parametrize(("kind", "scorer", "options", "is_plan"), [
    ("quantize", "latency_under_accuracy", {}, True),
    ("quantize", "accuracy", {}, False),
    ("quantize", "weighted", {"weights": {"accuracy": 1.0, "speedup": 0.0}}, False),
    ("quantize", "weighted", {"weights": {"size": 0.5}}, True),
    ("prune", "accuracy", {}, True),
    ("distill", "latency_under_accuracy", {}, False),
    ("compress", "distill_loss", {}, False),
])
def test_baseline_is_a_plan_only_where_the_uncompressed_model_is_one(
        kind: str, scorer: str, options: dict[str, object], is_plan: bool) -> None:
    scoring = Scoring(get_scorer(scorer, **options), kind, lambda: _metrics(1.0))
    assert scoring.baseline_is_plan is is_plan


def test_baseline_is_measured_once_and_an_adopted_one_replaces_it() -> None:
    calls: list[int] = []

    def measure() -> Metrics:
        calls.append(1)
        return _metrics(2.0)

    scoring = Scoring(get_scorer("latency_under_accuracy"), "quantize", measure)
    assert scoring.score(_metrics(1.0)) == pytest.approx(2.0)  # twice as fast, no drop
    assert scoring.score(_metrics(4.0)) == pytest.approx(0.5)
    assert len(calls) == 1
    scoring.adopt(_metrics(4.0))
    assert scoring.score(_metrics(1.0)) == pytest.approx(4.0)
    assert len(calls) == 1


def test_evaluations_cache_count_and_persist(tmp_path: Path) -> None:
    computed: list[str] = []

    def compute() -> tuple[Metrics, dict[str, object]]:
        computed.append("x")
        return _metrics(3.0), {"quantize": {"fc": {"bits": 8}}}

    log = Evaluations(tmp_path)
    first = log.evaluate("k", compute)
    assert log.evaluate("k", compute) == first
    assert (log.count, len(computed), log.cache.hits) == (1, 1, 1)
    log.evaluate("k", compute, use_cache=False)
    assert (log.count, len(computed)) == (2, 2)
    again = Evaluations(tmp_path)  # another process, same directory
    metrics, strategies = again.evaluate("k", compute)
    assert (again.count, len(computed)) == (0, 2)
    assert metrics == first[0] and strategies == first[1]


def test_space_options_are_checked_when_the_task_is_made() -> None:
    assert checked_quant_choices(["float", "int8_channel_mse"]) == ("float",
                                                                     "int8_channel_mse")
    with pytest.raises(MSCError, match="unknown quantization choice 'int3'"):
        checked_quant_choices(["int3"])
    assert checked_densities([1, 0.5]) == (1.0, 0.5)
    with pytest.raises(MSCError, match="densities must lie in"):
        checked_densities([0.0])


def test_prune_plans_of_a_task_calibrate_the_float_model_once(monkeypatch) -> None:
    """The float statistics recalibration needs are the same for every plan: a task runs
    MSC's calibration loop for its first pruned plan only, and a later plan's
    corrections are exactly those a fresh task computes for it."""
    from mscgym.tasks import builder
    from mscgym.tasks.task import Task

    loops: list[str] = []
    real = builder.calibrate_tool

    def counted(tool, batches) -> None:
        loops.append(type(tool).__name__)
        real(tool, batches)

    monkeypatch.setattr(builder, "calibrate_tool", counted)

    def task() -> Task:
        return Task("digits-resnet", "prune", runner="torch", profile_repeat=3)

    shared = task()
    groups = [d.name for d in shared.space if d.name.startswith("prune:")]
    first = {groups[0]: 0.5}
    second = {name: 0.7 for name in groups[1:]}
    shared.evaluate_full(shared.space.complete(first))
    _, strategies = shared.evaluate_full(shared.space.complete(second))
    assert loops == ["Pruner"]
    other = task()
    _, fresh = other.evaluate_full(other.space.complete(second))
    assert strategies["prune"] == fresh["prune"]
    assert "recalibration" in strategies["prune"]
