"""The leaderboard's fixed tasks: model, tool, runner and the quality bound, by name.

A leaderboard compares agents only if everyone searches the same problems, so the
tasks are fixed here and named ``TOOL/MODEL`` (onnxruntime) or ``TOOL/MODEL/RUNNER``.
Every task is scored by ``latency_under_accuracy``: the digits models (8x8, and the
32x32 ones where one image costs over a millisecond) have labels and allow at most one
point of accuracy drop; the ImageNet-sized models have no labels, so
their bound is a stated distillation loss (KL of the outputs against the float model).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.metrics import Metrics

if TYPE_CHECKING:
    from mscgym.tasks.task import Task

SCORER = "latency_under_accuracy"
MAX_DROP = 0.01
"""Largest accuracy drop (one point) a plan may have on the labelled tasks."""
MAX_DISTILL_LOSS = 0.005
"""Largest distillation loss a plan may have on the unlabelled tasks: uniform int8
quantization of resnet18 stays well below it, pruning mobilenetv2 to half its channels
does not, so the search has to trade layers against each other."""
MIN_AGREEMENT = 0.75
"""Smallest top-1 agreement with the float model on the 12 held-out crops (9 of 12) a
plan of an unlabelled task may have, the second bound there. The BatchNorm-calibrated
ImageNet models are untrained, so their top-1 is fragile: uniform int8 of resnet18 keeps
9 to 11 of 12 at a distillation loss far below the first bound."""
RUNNER_OPTIONS: dict[str, dict[str, Any]] = {"onnxruntime": {"intra_op_threads": 1}}
"""Runner options every board task is measured with: a task's own default today
(:data:`mscgym.tasks.measure.DEFAULT_RUNNER_OPTIONS`, one ONNX Runtime intra-op thread,
why there), stated here so the board stays the same problem if that default changes."""
SEED = 0
"""Tasks and agents are seeded with this; a submission may not change it."""
DEFAULT_PROFILE_REPEAT = 30


@dataclass(frozen=True)
class LeaderboardTask:
    """One fixed problem: compress ``model`` with ``tool``, measured on ``runner``."""

    model: str
    tool: str
    runner: str = "onnxruntime"
    max_drop: float | None = MAX_DROP
    max_distill_loss: float | None = None
    min_agreement: float | None = None

    @property
    def name(self) -> str:
        base = f"{self.tool}/{self.model}"
        return base if self.runner == "onnxruntime" else f"{base}/{self.runner}"

    @property
    def bound(self) -> str:
        """The quality bound in words, for tables."""
        if self.max_drop is not None:
            return f"accuracy drop <= {self.max_drop:g}"
        agreement = ("" if self.min_agreement is None
                     else f", top-1 agreement >= {self.min_agreement:g}")
        return f"distill loss <= {self.max_distill_loss:g}{agreement}"

    def scorer_options(self) -> dict[str, float]:
        if self.max_drop is not None:
            return {"max_drop": self.max_drop}
        options = {"max_distill_loss": float(self.max_distill_loss or 0.0)}
        if self.min_agreement is not None:
            options["min_agreement"] = float(self.min_agreement)
        return options

    def build(self, profile_repeat: int = DEFAULT_PROFILE_REPEAT) -> Task:
        """A fresh Task (own cache), so no agent profits from another's measurements."""
        from mscgym.tasks.task import Task  # torch and TVM load when a task is built

        return Task(self.model, self.tool, scorer=SCORER, scorer_options=self.scorer_options(),
                    runner=self.runner, runner_options=RUNNER_OPTIONS.get(self.runner, {}),
                    seed=SEED, profile_repeat=profile_repeat)

    def feasible(self, metrics: Metrics, baseline: Metrics) -> bool:
        """Whether ``metrics`` keep the task's quality bound (the scorer's own test)."""
        if self.max_drop is not None:
            if metrics.accuracy is None or baseline.accuracy is None:
                raise MSCError(f"leaderboard task {self.name!r} is accuracy-bound but the "
                               "metrics have no accuracy")
            return baseline.accuracy - metrics.accuracy - self.max_drop <= 0
        agreement = metrics.extra.get("top1_agreement")
        if self.min_agreement is not None and agreement is not None:
            # metrics measured before agreement was recorded are judged on the loss alone
            if agreement < self.min_agreement:
                return False
        return metrics.distill_loss - float(self.max_distill_loss or 0.0) <= 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "tool": self.tool,
                "runner": self.runner, "runner_options": RUNNER_OPTIONS.get(self.runner, {}),
                "scorer": SCORER, "scorer_options": self.scorer_options()}


def _distill_bound(model: str, tool: str) -> LeaderboardTask:
    return LeaderboardTask(model, tool, max_drop=None, max_distill_loss=MAX_DISTILL_LOSS,
                           min_agreement=MIN_AGREEMENT)


_ALL = (
    LeaderboardTask("digits-cnn", "quantize"),
    LeaderboardTask("digits-cnn", "prune"),
    LeaderboardTask("digits-resnet", "prune"),
    LeaderboardTask("digits-mobilenet", "compress"),
    LeaderboardTask("digits-transformer", "quantize"),
    LeaderboardTask("digits32-resnet20", "quantize"),
    LeaderboardTask("digits32-resnet20", "prune"),
    LeaderboardTask("digits32-resnet20", "compress"),
    LeaderboardTask("digits32-mobilenetv2", "compress"),
    _distill_bound("resnet18", "quantize"),
    _distill_bound("mobilenetv2", "prune"),
    _distill_bound("resnet18", "compress"),
    LeaderboardTask("digits-cnn", "quantize", runner="tvm"),
    LeaderboardTask("digits-resnet", "prune", runner="tvm"),
)
TASKS: dict[str, LeaderboardTask] = {task.name: task for task in _ALL}
QUICK_TASKS = ("quantize/digits-cnn", "prune/digits-cnn")


def get_tasks(names: Iterable[str]) -> list[LeaderboardTask]:
    """The named tasks in the given order; an unknown or repeated name is an MSCError."""
    tasks: list[LeaderboardTask] = []
    for name in names:
        if name not in TASKS:
            raise MSCError(f"unknown leaderboard task {name!r}; expected one of {list(TASKS)}")
        if TASKS[name] in tasks:
            raise MSCError(f"leaderboard task {name!r} is named twice")
        tasks.append(TASKS[name])
    if not tasks:
        raise MSCError("the leaderboard needs at least one task")
    return tasks
