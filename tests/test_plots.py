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
from mscgym.plots import PlotError, load_history, load_source, make_plots, pareto_front
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
