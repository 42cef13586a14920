"""Ray Tune sweeps: one real sweep on a local Ray (2 CPUs), its record validated, resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mscgym import zoo
from mscgym.agents import SearchResult
from mscgym.compiler.errors import MSCError
from mscgym.records import load_record, validate
from mscgym.tasks.sources import zoo_data
from mscgym.tasks.task import Task
from mscgym.tune import run_sweep, search_space

TRIALS = 6


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("digits-cnn", "quantize", profile_repeat=3)


@pytest.fixture(scope="module")
def sweep(task: Task, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Path, SearchResult]]:
    """One Optuna sweep of TRIALS trials on a local Ray, which is shut down afterwards."""
    ray = pytest.importorskip("ray")
    storage = tmp_path_factory.mktemp("ray")
    try:
        yield storage, run_sweep(task, num_samples=TRIALS, max_concurrent=2, num_cpus=2,
                                 storage_path=storage, name="digits-cnn", seed=0,
                                 progress=False)
    finally:
        ray.shutdown()


def test_search_space_has_a_choice_of_indices_per_dimension(task: Task) -> None:
    pytest.importorskip("ray")
    space = search_space(task)
    assert list(space) == [dim.name for dim in task.space]
    for dim in task.space:
        assert space[dim.name].categories == list(range(len(dim.choices)))


def test_an_in_memory_model_is_refused_before_ray_starts() -> None:
    entry = zoo.load("digits-cnn")
    task = Task(entry.model, "quantize", data=zoo_data(entry), profile_repeat=3)
    with pytest.raises(MSCError, match=r"model 'torch:\w+' exists only in this process .* "
                                       r"pass a zoo model \(digits-mlp, "):
        run_sweep(task, num_samples=2, progress=False)


def test_sweep_finds_and_records_a_valid_best_plan(task: Task, sweep: tuple[Path, SearchResult],
                                                   tmp_path: Path) -> None:
    storage, result = sweep
    assert result.agent == "ray" and result.budget == TRIALS
    assert result.extra["failed_trials"] == []
    assert result.extra["experiment_path"] == str(storage / "digits-cnn")
    assert len(result.history) == TRIALS
    assert result.history[0]["plan"] == task.space.baseline_plan()  # the first trial
    assert {entry["phase"] for entry in result.history} == {"ray:optuna"}
    scores = [entry["score"] for entry in result.history]
    best = result.history[scores.index(max(scores))]
    assert result.best_plan == best["plan"]
    assert result.extra["sweep_best_score"] == max(scores)
    # The best plan is measured again in this process; the record holds that measurement.
    assert result.best_metrics == task.evaluate(result.best_plan)
    assert result.best_score == task.score(result.best_metrics)
    assert result.evaluations >= 1

    path = result.best_record.save(tmp_path / "best.json")
    record = load_record(path)
    assert record.plan == result.best_plan and record.extra["agent"] == "ray"
    assert record.extra["options"]["search_alg"] == "optuna"
    report = validate(path, skip=["latency_ms"])  # a test must not hinge on timing
    assert report.all_hold, report.to_json()
    assert len(report.rows) == 5


def test_resume_restores_the_finished_experiment(task: Task,
                                                 sweep: tuple[Path, SearchResult]) -> None:
    storage, first = sweep
    result = run_sweep(task, num_samples=TRIALS, storage_path=storage, name="digits-cnn",
                       resume=True, progress=False)
    assert result.extra["resumed"] and result.extra["resumed_trials"] == TRIALS
    assert [e["plan"] for e in result.history] == [e["plan"] for e in first.history]
    assert {entry["phase"] for entry in result.history} == {"resumed"}
    assert result.evaluations == 0  # nothing measured again
    assert result.best_plan == first.best_plan


def test_without_ray_the_agent_says_how_to_install_it() -> None:
    """Import failure simulated in a fresh interpreter (``sys.modules['ray'] = None``)."""
    code = (
        "import sys\n"
        "import mscgym.agents, mscgym.tune.agent, mscgym.tune\n"
        "assert 'ray' not in sys.modules, 'importing mscgym.agents or mscgym.tune imported ray'\n"
        "sys.modules['ray'] = None\n"
        "from mscgym.agents import create_agent\n"
        "from mscgym.compiler.errors import MSCError\n"
        "try:\n"
        "    create_agent('ray')\n"
        "except MSCError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('no MSCError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Ray Tune sweeps need ray[tune], which is not installed; " \
           "pip install 'mscgym[tune]'" in proc.stdout


@pytest.fixture(scope="module")
def distill_task() -> Task:
    return Task("digits-mlp", "distill", profile_repeat=3, student={"prune": 0.5})


def test_distill_evaluation_reports_every_epoch(distill_task: Task) -> None:
    plan = distill_task.space.complete({"distill:epochs": 3})
    seen: list[tuple[int, float]] = []
    metrics, _ = distill_task.evaluate_full(plan, use_cache=False,
                                            on_epoch=lambda e, v: seen.append((e, v)))
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert seen[-1][1] == pytest.approx(metrics.distill_loss, rel=1e-3, abs=1e-4)


def test_asha_sweep_over_distillation_sees_intermediate_epochs(
        distill_task: Task, sweep: tuple[Path, SearchResult],
        tmp_path: Path) -> None:
    result = run_sweep(distill_task, num_samples=3, max_concurrent=2, num_cpus=2,
                       storage_path=tmp_path, name="distill", scheduler="asha", seed=0,
                       progress=False)
    assert result.extra["failed_trials"] == []
    finished = len(result.history)
    assert finished + len(result.extra["stopped_trials"]) == 3 and finished >= 1
    progress = [json.loads(line) for path in (tmp_path / "distill").glob("*/result.json")
                for line in path.read_text().splitlines()]
    epochs = [r for r in progress if r.get("intermediate")]
    assert epochs and all(r["score"] == -r["distill_loss"] for r in epochs)


def test_resumed_sweep_scores_against_the_stored_baseline(sweep: tuple[Path, SearchResult]
                                                          ) -> None:
    """A fresh task (as in a new process) adopts the baseline the first run stored in the
    experiment folder: resumed trials keep their scores, the summary its baseline."""
    storage, first = sweep
    stored = json.loads((storage / "digits-cnn" / "mscgym_baseline.json").read_text())
    assert stored == first.baseline_metrics.to_json()
    fresh = Task("digits-cnn", "quantize", profile_repeat=3)
    result = run_sweep(fresh, num_samples=TRIALS, storage_path=storage, name="digits-cnn",
                       resume=True, progress=False)
    assert fresh.baseline.to_json() == stored
    assert result.baseline_score == first.baseline_score
    assert [e["score"] for e in result.history] == [e["score"] for e in first.history]


def test_search_cli_takes_a_storage_path_for_ray_only(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from mscgym.cli import main

    args = ["search", "--task", "quantize", "--model", "digits-cnn", "--budget", "2",
            "--record", str(tmp_path / "best.json"), "--storage-path", str(tmp_path / "ray")]
    assert main([*args, "--agent", "random"]) == 2
    assert "--storage-path applies only to --agent ray" in capsys.readouterr().err
    assert not (tmp_path / "best.json").exists()
