"""``mscgym plot``: history and Pareto PNGs from a search history JSON (written by
``mscgym search --history``), a directory of records and an Optuna study; bad input
is refused with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from PIL import Image

from mscgym.agents import create_agent
from mscgym.cli import main
from mscgym.plots import (
    PlotData,
    PlotError,
    Point,
    load_history,
    load_source,
    make_plots,
    pareto_front,
    plan_summary,
    plot_pareto,
)
from mscgym.tasks.task import Task

SEARCH = ["search", "--task", "prune", "--model", "digits-cnn", "--agent", "random",
          "--budget", "3", "--profile-repeat", "5", "--no-progress"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a search's record (best.json) and history (history.json)."""
    root = tmp_path_factory.mktemp("search")
    assert main([*SEARCH, "--record", str(root / "best.json"),
                 "--history", str(root / "history.json")]) == 0
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An Optuna study the optuna agent wrote, in a fresh SQLite file."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('study') / 'search.db'}"
    task = Task("digits-cnn", "prune", profile_repeat=5)
    create_agent("optuna", storage=storage, study_name="prune-cnn", progress=False
                 ).search(task, 3)
    return storage


def _assert_pngs(paths: list[str], stem: str) -> None:
    assert [Path(p).name for p in paths] == [f"{stem}-history.png", f"{stem}-pareto.png"]
    for path in paths:
        assert Path(path).stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
            image.verify()
    assert not [p for p in Path(paths[0]).parent.iterdir() if p.name.startswith(".tmp-")]


def test_plots_from_a_search_history(searched: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    history = searched / "history.json"
    data = load_history(history)
    assert len(data.points) == 3 and data.quality_label == "accuracy"
    assert "random on prune digits-cnn" in data.title
    assert main(["plot", str(history), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    _assert_pngs(printed, "history")


def test_plots_from_a_record_directory(searched: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    shutil.copy(searched / "best.json", records / "a.json")
    shutil.copy(searched / "best.json", records / "b.json")
    assert len(load_source(str(records)).points) == 2
    _assert_pngs(make_plots(str(records), tmp_path / "out"), "records")


def test_plots_from_an_optuna_study(study: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = load_source(study)
    assert len(data.points) == 3 and data.title == "optuna study prune-cnn"
    assert main(["plot", study, "--study", "prune-cnn", "--out", str(tmp_path)]) == 0
    _assert_pngs(capsys.readouterr().out.split(), "prune-cnn")


def test_pareto_front_keeps_only_undominated_plans(searched: Path) -> None:
    data = load_history(searched / "history.json")
    front = pareto_front(data)
    assert front
    for point in data.points:
        if point not in front:
            assert any(f.latency_ms <= point.latency_ms and data.quality(f) >= data.quality(point)
                       for f in front)


def test_bad_input_is_refused(searched: Path, study: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"history": []}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    (tmp_path / "nothing").mkdir()
    cases = [
        ([str(tmp_path / "missing.json")], "no such file"),
        ([str(searched / "best.json")], "not a search history"),
        ([str(empty)], "history is empty"),
        ([str(garbage)], "not valid JSON"),
        ([str(tmp_path / "nothing")], "holds no .json files"),
        ([f"sqlite:///{tmp_path / 'none.db'}"], "does not exist"),
        ([study, "--study", "other"], "has no study 'other'"),
        ([str(searched / "history.json"), "--study", "x"], "--study applies"),
    ]
    for args, message in cases:
        assert main(["plot", *args, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_study_not_written_by_mscgym_is_refused(study: str) -> None:
    foreign = optuna.create_study(storage=study, study_name="foreign")
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(PlotError, match="name one with --study"):
        load_source(study)
    with pytest.raises(PlotError, match="only studies written by mscgym"):
        load_source(study, "foreign")


def test_plan_summary_counts_quantized_layers_and_pruned_groups() -> None:
    plan = {"quantize:a": "int8_channel_minmax", "quantize:b": "float",
            "quantize:c": "int4w_channel_minmax", "quantize:d": "uint8a_channel_minmax",
            "prune:a": 0.5, "prune:b": 0.5, "prune:c": 0.7, "prune:d": 1.0}
    assert plan_summary(plan) == "1/4 int4, 2/4 int8, 2 pruned to 0.5, 1 to 0.7"
    assert plan_summary({"quantize:a": "float", "prune:a": 1.0}) == "baseline"


def test_pareto_has_one_front_per_task(searched: Path, tmp_path: Path) -> None:
    data = load_history(searched / "history.json")
    fast = [Point(p.step, p.score, p.latency_ms / 100, p.accuracy, p.distill_loss,
                  "quantize other-model", "1/4 int8") for p in data.points]
    mixed = PlotData("mixed", "mixed", [*data.points, *fast])
    assert mixed.tasks == [data.points[0].task, "quantize other-model"]
    assert all(p.label for p in data.points)
    assert pareto_front(mixed.of_task("quantize other-model")) == pareto_front(
        PlotData("x", "x", fast))
    single = Image.open(plot_pareto(data, str(tmp_path / "one.png")))
    double = Image.open(plot_pareto(mixed, str(tmp_path / "two.png")))
    assert double.size[1] > 1.5 * single.size[1]


def test_a_study_with_user_added_trials_is_plotted(study: str, tmp_path: Path) -> None:
    loaded = optuna.load_study(study_name="prune-cnn", storage=study)
    first = loaded.trials[0]
    loaded.add_trial(optuna.trial.create_trial(params=first.params,
                                               distributions=first.distributions, value=0.5))
    data = load_source(study, "prune-cnn")
    assert len(data.points) == 3 and data.skipped == 1
    assert "1 trial without metrics skipped" in data.title
    _assert_pngs(make_plots(study, tmp_path, "prune-cnn"), "prune-cnn")
