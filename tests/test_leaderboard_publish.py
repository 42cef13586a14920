"""The full board's outputs: the agents x tasks table, publishing it into the docs between
markers, and validation of records in a fresh process."""

from __future__ import annotations

from pathlib import Path

import pytest

from mscgym.compiler.errors import MSCError
from mscgym.leaderboard import FULL, RunResult, get_tasks, validate_fresh
from mscgym.leaderboard.report import PUBLISH_END, PUBLISH_START, publish, task_matrix
from mscgym.leaderboard.runner import Leaderboard, apply_validation


def _run(task: str, speed: float, feasible: bool, agent: str, validated: bool = True
         ) -> RunResult:
    return RunResult(agent=agent, task=task, budget=16, baseline_latency_ms=speed,
                     best_latency_ms=1.0, best_accuracy=0.9, best_distill_loss=0.0,
                     speedup=speed, feasible=feasible, best_score=speed, evaluations=16,
                     steps=16, wall_seconds=2.0, validated=validated,
                     problems=[] if validated else ["latency_ms does not hold"])


def _board() -> Leaderboard:
    tasks = ("quantize/digits-cnn", "prune/digits-cnn")
    runs = [_run(tasks[0], 2.0, True, "greedy"), _run(tasks[1], 8.0, True, "greedy"),
            _run(tasks[0], 3.0, False, "random"), _run(tasks[1], 1.0, True, "random",
                                                       validated=False)]
    config = FULL.__class__(tasks=tasks, agents=("greedy", "random"), budgets=(16,))
    return Leaderboard(config, get_tasks(tasks), runs, wall_seconds=600.0)


def test_task_matrix_has_a_column_per_task_and_the_geomean() -> None:
    header, _, first, second = task_matrix(_board().runs, 16)
    assert "`prune/digits-cnn`" in header and "`quantize/digits-cnn`" in header
    assert first.startswith("| 1 | greedy | 8.000x | 2.000x | **4.000x** | 2/2 | 32 |")
    assert "1.000x* (3.000x)" in second and "**1.000x**" in second  # infeasible counts 1.0
    assert second.endswith("| **no** |")  # one record did not validate


def test_publish_replaces_only_the_marked_section(tmp_path: Path) -> None:
    doc = tmp_path / "LEADERBOARD.md"
    doc.write_text(f"# Title\n\nbefore\n\n{PUBLISH_START}\nold table\n{PUBLISH_END}\n\nafter\n")
    publish(_board(), doc, "2026-12-02 05:30 UTC", "2 CPUs")
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "2026-12-02 05:30 UTC on 2 CPUs: 4 runs" in text
    assert "10.0 min in all" in text and "random on prune/digits-cnn" in text
    assert text.count(PUBLISH_START) == 1 and text.count(PUBLISH_END) == 1
    publish(_board(), doc, "later", "2 CPUs")  # publishing again replaces, never appends
    assert doc.read_text().count("**Budget 16**") == 1
    doc.write_text("# no markers\n")
    with pytest.raises(MSCError, match="no .*full-board:start"):
        publish(_board(), doc, "now", "2 CPUs")


def test_fresh_validation_reports_each_record(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{\"schema\": 1}")
    found = validate_fresh([missing, str(broken)])
    assert set(found) == {missing, str(broken)}
    for problems in found.values():
        assert len(problems) == 1 and problems[0].startswith("the record does not validate")
    run = apply_validation(_run("t", 1.0, True, "a"), found[missing])
    assert not run.validated and run.problems == found[missing]
    assert apply_validation(_run("t", 1.0, True, "a"), []).validated
