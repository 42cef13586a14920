"""Plots of a search: score per evaluation with the best so far, and the Pareto front.

Three sources give the same points (one per evaluated plan, in order): a search
history JSON (``SearchResult.to_json()``, as ``mscgym search --history`` and the
leaderboard write), a directory of record JSONs, or an Optuna study written by the
optuna agent (``sqlite:///search.db`` and the study name). The Pareto front is over
latency (lower is better) and quality: accuracy where every plan has one, else the
negative distillation loss, so both axes read "up and left is better".

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch) and written atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mscgym.compiler.errors import MSCError
from mscgym.records.record import load_record
from mscgym.utils.files import atomic_write, read_json


class PlotError(MSCError):
    """The plot input is missing, empty, or not a history, record directory or study."""


@dataclass(frozen=True)
class Point:
    """One evaluated plan."""

    step: int
    score: float
    latency_ms: float
    accuracy: float | None
    distill_loss: float


@dataclass
class PlotData:
    """The points of one search, with a title and a file-name stem for its plots."""

    title: str
    stem: str
    points: list[Point]

    @property
    def labelled(self) -> bool:
        return all(p.accuracy is not None for p in self.points)

    @property
    def quality_label(self) -> str:
        return "accuracy" if self.labelled else "-distill loss"

    def quality(self, point: Point) -> float:
        if self.labelled:
            return float(point.accuracy)  # type: ignore[arg-type]
        return -point.distill_loss


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlotError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _point(step: int, score: Any, metrics: Any, where: str) -> Point:
    if not isinstance(metrics, dict):
        raise PlotError(f"{where}: metrics must be a JSON object, got {type(metrics).__name__}")
    accuracy = metrics.get("accuracy")
    return Point(step=step, score=_number(score, where, "score"),
                 latency_ms=_number(metrics.get("latency_ms"), where, "metrics.latency_ms"),
                 accuracy=None if accuracy is None else _number(accuracy, where,
                                                                "metrics.accuracy"),
                 distill_loss=_number(metrics.get("distill_loss"), where,
                                      "metrics.distill_loss"))


def load_history(path: str | os.PathLike[str]) -> PlotData:
    """Points of a search history JSON (``SearchResult.to_json()``)."""
    where = f"history {os.fspath(path)}"
    data = read_json(path, PlotError, "history")
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise PlotError(f"{where}: not a search history (expected a JSON object with a "
                        "'history' list, as SearchResult.to_json() writes)")
    points = []
    for index, entry in enumerate(data["history"]):
        if not isinstance(entry, dict):
            raise PlotError(f"{where}: history[{index}] must be a JSON object")
        points.append(_point(index, entry.get("score"), entry.get("metrics"),
                             f"{where}: history[{index}]"))
    if not points:
        raise PlotError(f"{where}: the history is empty (the search evaluated no plan)")
    record = data.get("best_record")
    task = record.get("task") if isinstance(record, dict) else None
    task = task if isinstance(task, dict) else {}
    title = (f"{data.get('agent') or 'search'} on {task.get('tool', '?')} "
             f"{task.get('model', '?')} (budget {data.get('budget', len(points))})")
    return PlotData(title, Path(path).stem, points)


def load_records(directory: str | os.PathLike[str]) -> PlotData:
    """Points of every record JSON under ``directory`` (recursively, in path order)."""
    root = Path(directory)
    paths = sorted(p for p in root.rglob("*.json") if p.is_file())
    if not paths:
        raise PlotError(f"record directory {os.fspath(directory)}: holds no .json files")
    points = []
    for step, path in enumerate(paths):
        record = load_record(path)
        points.append(_point(step, record.score, record.metrics.to_json(), f"record {path}"))
    return PlotData(f"{len(points)} records in {root.name or root.resolve().name}",
                    root.resolve().name, points)


def _sqlite_file(storage: str) -> str | None:
    match = re.fullmatch(r"sqlite:///(.+)", storage)
    return match.group(1) if match else None


def load_study(storage: str, study_name: str | None = None) -> PlotData:
    """Points of the finished trials of an Optuna study written by the optuna agent."""
    import optuna

    where = f"optuna storage {storage}"
    path = _sqlite_file(storage)
    if path is not None and not os.path.isfile(path):
        raise PlotError(f"{where}: the database file {path} does not exist")
    names = optuna.get_all_study_names(storage=storage)
    if study_name is None:
        if len(names) != 1:
            raise PlotError(f"{where}: holds studies {names}; name one with --study")
        study_name = names[0]
    if study_name not in names:
        raise PlotError(f"{where}: has no study {study_name!r}; it holds {names}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False,
                              states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise PlotError(f"{where}: study {study_name!r} has no finished trials")
    points = []
    for step, trial in enumerate(trials):
        attrs = trial.user_attrs
        if "metrics" not in attrs or "score" not in attrs:
            raise PlotError(f"{where}: trial {trial.number} of study {study_name!r} has no "
                            "'metrics'/'score' user attributes; only studies written by "
                            "mscgym's optuna agent can be plotted")
        points.append(_point(step, attrs["score"], attrs["metrics"],
                             f"{where}: trial {trial.number}"))
    return PlotData(f"optuna study {study_name}", re.sub(r"[^A-Za-z0-9.+-]+", "_", study_name),
                    points)


def load_source(source: str, study: str | None = None) -> PlotData:
    """A history JSON file, a directory of records, or an Optuna storage URL."""
    if "://" in source:
        return load_study(source, study)
    if study is not None:
        raise PlotError(f"--study applies to an Optuna storage URL (sqlite:///...), not to "
                        f"{source}")
    if os.path.isdir(source):
        return load_records(source)
    if not os.path.exists(source):
        raise PlotError(f"plot input {source}: no such file or directory")
    return load_history(source)


def pareto_front(data: PlotData) -> list[Point]:
    """The points no other point beats in both latency (lower) and quality (higher),
    fastest first."""
    def dominates(a: Point, b: Point) -> bool:
        qa, qb = data.quality(a), data.quality(b)
        return (a.latency_ms <= b.latency_ms and qa >= qb
                and (a.latency_ms < b.latency_ms or qa > qb))

    front = [p for p in data.points if not any(dominates(o, p) for o in data.points)]
    return sorted(front, key=lambda p: (p.latency_ms, -data.quality(p)))


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return path


def plot_history(data: PlotData, path: str) -> str:
    """Score of each evaluated plan and the best score so far, against the step."""
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.add_subplot()
    steps = [p.step for p in data.points]
    scores = [p.score for p in data.points]
    best = [max(scores[:i + 1]) for i in range(len(scores))]
    axes.scatter(steps, scores, s=18, color="tab:blue", alpha=0.7, label="score")
    axes.step(steps, best, where="post", color="tab:red", linewidth=2, label="best so far")
    if min(scores) < 0:
        axes.set_yscale("symlog", linthresh=1.0)
    axes.set_xlabel("evaluation")
    axes.set_ylabel("score (higher is better)")
    axes.set_title(data.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_pareto(data: PlotData, path: str) -> str:
    """Quality against latency of every plan, the Pareto front highlighted."""
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter([p.latency_ms for p in data.points], [data.quality(p) for p in data.points],
                 s=18, color="tab:gray", alpha=0.6, label="plans")
    front = pareto_front(data)
    axes.plot([p.latency_ms for p in front], [data.quality(p) for p in front], "o-",
              color="tab:red", markersize=6, drawstyle="steps-post", label="Pareto front")
    axes.set_xlabel("latency (ms, lower is better)")
    axes.set_ylabel(f"{data.quality_label} (higher is better)")
    axes.set_title(data.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    return _save(figure, path)


def make_plots(source: str, out: str | os.PathLike[str], study: str | None = None
               ) -> list[str]:
    """Write ``<stem>-history.png`` and ``<stem>-pareto.png`` of ``source`` into ``out``."""
    data = load_source(source, study)
    out = os.fspath(out)
    return [plot_history(data, os.path.join(out, f"{data.stem}-history.png")),
            plot_pareto(data, os.path.join(out, f"{data.stem}-pareto.png"))]
