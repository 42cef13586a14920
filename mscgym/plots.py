"""Plots of a search: score per evaluation with the best so far, and the Pareto front.

Three sources give the same points (one per evaluated plan, in order): a search
history JSON (``SearchResult.to_json()``, as ``mscgym search --history`` and the
leaderboard write), a directory of record JSONs, or an Optuna study written by the
optuna agent (``sqlite:///search.db`` and the study name). The Pareto front is over
latency (lower is better) and quality: accuracy where every plan has one, else the
negative distillation loss, so both axes read "up and left is better". Plans of
different tasks (a record directory may mix models) never share a front: each task gets
its own panel. Points on a front are labelled with a summary of their plan
("3/4 int8, 2 pruned to 0.5"). Trials a user added to a study without mscgym's metrics
are skipped, and the title says how many.

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
from matplotlib.ticker import ScalarFormatter

from mscgym.compiler.errors import MSCError
from mscgym.records.record import load_record
from mscgym.utils.files import atomic_write, read_json
from mscgym.utils.pareto import pareto_indices


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
    task: str = ""
    label: str = ""


@dataclass
class PlotData:
    """The points of one search, with a title and a file-name stem for its plots."""

    title: str
    stem: str
    points: list[Point]
    skipped: int = 0

    @property
    def tasks(self) -> list[str]:
        """The tasks the points belong to, in order of first appearance."""
        return list(dict.fromkeys(p.task for p in self.points))

    def of_task(self, task: str) -> PlotData:
        """The points of one task only."""
        return PlotData(task or self.title, self.stem,
                        [p for p in self.points if p.task == task])

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


def plan_summary(plan: Any) -> str:
    """A short description of a plan: "12/20 int8, 3 pruned to 0.5, 1 to 0.7".

    Quantized layers are counted by their integer form (int8, int4), pruned groups by
    density; distillation settings and other knobs are left out. A plan that changes
    nothing reads "baseline".
    """
    if not isinstance(plan, dict):
        return ""
    quantized: dict[str, int] = {}
    layers = 0
    densities: dict[float, int] = {}
    for name, value in plan.items():
        tool = str(name).split(":", 1)[0]
        if tool == "quantize":
            layers += 1
            if value != "float":
                kind = "int4" if str(value).startswith("int4") else "int8"
                quantized[kind] = quantized.get(kind, 0) + 1
        elif tool == "prune" and isinstance(value, int | float) and value < 1.0:
            densities[float(value)] = densities.get(float(value), 0) + 1
    parts = [f"{count}/{layers} {kind}" for kind, count in sorted(quantized.items())]
    for index, (density, count) in enumerate(sorted(densities.items())):
        parts.append(f"{count} pruned to {density:g}" if index == 0
                     else f"{count} to {density:g}")
    return ", ".join(parts) or "baseline"


def _point(step: int, score: Any, metrics: Any, where: str, task: str = "",
           plan: Any = None) -> Point:
    if not isinstance(metrics, dict):
        raise PlotError(f"{where}: metrics must be a JSON object, got {type(metrics).__name__}")
    accuracy = metrics.get("accuracy")
    return Point(step=step, score=_number(score, where, "score"), task=task,
                 label=plan_summary(plan),
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
    record = data.get("best_record")
    task = record.get("task") if isinstance(record, dict) else None
    task = task if isinstance(task, dict) else {}
    name = f"{task.get('tool', '?')} {task.get('model', '?')}"
    points = []
    for index, entry in enumerate(data["history"]):
        if not isinstance(entry, dict):
            raise PlotError(f"{where}: history[{index}] must be a JSON object")
        points.append(_point(index, entry.get("score"), entry.get("metrics"),
                             f"{where}: history[{index}]", name, entry.get("plan")))
    if not points:
        raise PlotError(f"{where}: the history is empty (the search evaluated no plan)")
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
        task = f"{record.task.get('tool', '?')} {record.task.get('model', '?')}"
        if record.task.get("runner") not in (None, "onnxruntime"):
            task += f" ({record.task['runner']})"
        points.append(_point(step, record.score, record.metrics.to_json(), f"record {path}",
                             task, record.plan))
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
    skipped = 0
    for trial in trials:
        attrs = trial.user_attrs
        if "metrics" not in attrs or "score" not in attrs:
            skipped += 1  # added by the user's own study.optimize, without mscgym's metrics
            continue
        points.append(_point(len(points), attrs["score"], attrs["metrics"],
                             f"{where}: trial {trial.number}", study_name,
                             attrs.get("plan", trial.params)))
    if not points:
        raise PlotError(f"{where}: no trial of study {study_name!r} has 'metrics'/'score' "
                        "user attributes; only studies written by mscgym's optuna agent "
                        "can be plotted")
    title = f"optuna study {study_name}"
    if skipped:
        title += f" ({skipped} trial{'s' if skipped > 1 else ''} without metrics skipped)"
    return PlotData(title, re.sub(r"[^A-Za-z0-9.+-]+", "_", study_name), points, skipped)


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
    fastest first (Optuna computes the front: :func:`mscgym.utils.pareto.pareto_indices`)."""
    values = [(p.latency_ms, data.quality(p)) for p in data.points]
    front = [data.points[i] for i in pareto_indices(values, ("minimize", "maximize"))]
    return sorted(front, key=lambda p: (p.latency_ms, -data.quality(p)))


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return path


def _readable_scores(axes: Any, scores: list[float]) -> None:
    """A y axis that reads where scores go negative (plans outside a quality bound score
    ``-1 - violation``): symmetric-log scale with plain numbers, not powers of ten, and
    the zero line marked, so feasible (>= 0) and infeasible plans are told apart."""
    if min(scores) >= 0:
        return
    axes.set_yscale("symlog", linthresh=1.0, linscale=1.0)
    axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    axes.text(0.01, 0.0, " bound", transform=axes.get_yaxis_transform(), va="bottom",
              fontsize=8)


def plot_history(data: PlotData, path: str) -> str:
    """Score of each evaluated plan and the best score so far, against the step."""
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.add_subplot()
    steps = [p.step for p in data.points]
    scores = [p.score for p in data.points]
    best = [max(scores[:i + 1]) for i in range(len(scores))]
    axes.scatter(steps, scores, s=18, color="tab:blue", alpha=0.7, label="score")
    axes.step(steps, best, where="post", color="tab:red", linewidth=2, label="best so far")
    _readable_scores(axes, scores)
    axes.set_xlabel("evaluation")
    axes.set_ylabel("score (higher is better)")
    axes.set_title(data.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_pareto(data: PlotData, path: str) -> str:
    """Quality against latency of every plan, one panel and one front per task (plans of
    different models never share a front), front points labelled with their plan."""
    tasks = data.tasks
    figure = Figure(figsize=(7, 4.2 * len(tasks)), layout="constrained")
    for index, task in enumerate(tasks):
        part = data.of_task(task)
        axes = figure.add_subplot(len(tasks), 1, index + 1)
        axes.scatter([p.latency_ms for p in part.points],
                     [part.quality(p) for p in part.points],
                     s=18, color="tab:gray", alpha=0.6, label="plans")
        front = pareto_front(part)
        axes.plot([p.latency_ms for p in front], [part.quality(p) for p in front], "o-",
                  color="tab:red", markersize=6, drawstyle="steps-post", label="Pareto front")
        for point in front:
            if point.label:
                axes.annotate(point.label, (point.latency_ms, part.quality(point)),
                              textcoords="offset points", xytext=(4, 4), fontsize=7)
        axes.set_xlabel("latency (ms, lower is better)")
        axes.set_ylabel(f"{part.quality_label} (higher is better)")
        axes.set_title(data.title if len(tasks) == 1 else task)
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    if len(tasks) > 1:
        figure.suptitle(data.title)
    return _save(figure, path)


def make_plots(source: str, out: str | os.PathLike[str], study: str | None = None
               ) -> list[str]:
    """Write ``<stem>-history.png`` and ``<stem>-pareto.png`` of ``source`` into ``out``."""
    data = load_source(source, study)
    out = os.fspath(out)
    return [plot_history(data, os.path.join(out, f"{data.stem}-history.png")),
            plot_pareto(data, os.path.join(out, f"{data.stem}-pareto.png"))]
