"""Task: model + data + tool + search space + scorer, and ``evaluate(plan) -> Metrics``.

A task is what an agent searches. It is a small object over pieces that each do one
job: the identity of its model, data and student (:mod:`~mscgym.tasks.identity`), the
search space of its kind (:func:`~mscgym.tasks.kinds.kind_space`), the builder of the
compressed model a plan describes (:mod:`~mscgym.tasks.builder`), the measurer that
times it paired with the float model on a real runner (:mod:`~mscgym.tasks.measure`),
the evaluation cache (:mod:`~mscgym.tasks.cache`) and the scoring against the baseline
(:mod:`~mscgym.tasks.scoring`). Everything is cached by fingerprint: calibration once
per (graph, choice), results once per (model, data, plan, runner).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.tasks.builder import CompressionBuilder, EpochCallback
from mscgym.tasks.cache import EvaluationCache, Evaluations, fingerprint
from mscgym.tasks.choices import (
    DEFAULT_QUANT_CHOICE,
    DISTILL_BASELINE,
    DISTILL_CHOICES,
    PERCENTILES,
    RECOVERY_CHOICES,
    checked_densities,
    checked_quant_choices,
    quantizer_config,
)
from mscgym.tasks.description import check_described, task_arguments
from mscgym.tasks.identity import Student, TaskIdentity
from mscgym.tasks.kinds import kind_space, task_kinds
from mscgym.tasks.measure import (
    Compressed,
    Measurement,
    Measurer,
    Reference,
    measuring_options,
)
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.scorers import Scorer, get_scorer
from mscgym.tasks.scoring import Scoring
from mscgym.tasks.sources import ModelSource, Params, TaskData, resolve_model
from mscgym.tasks.spaces import DENSITY_CHOICES, QUANT_CHOICES, SearchSpace

__all__ = ["DEFAULT_QUANT_CHOICE", "DISTILL_BASELINE", "DISTILL_CHOICES", "PERCENTILES",
           "RECOVERY_CHOICES", "Compressed", "EpochCallback", "Task", "quantizer_config"]


class Task:
    """One compression problem; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tool: str = "quantize",
        *,
        data: TaskData | None = None,
        scorer: str | Scorer = "latency_under_accuracy",
        scorer_options: Mapping[str, Any] | None = None,
        runner: str = "onnxruntime",
        device: str = "cpu",
        runner_options: Mapping[str, Any] | None = None,
        seed: int = 0,
        profile_repeat: int = 30,
        profile_warmup: int = 5,
        quant_choices: Sequence[str] = QUANT_CHOICES,
        densities: Sequence[float] = DENSITY_CHOICES,
        student: Mapping[str, Any] | Compressed | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        example_inputs: Sequence[torch.Tensor] | None = None,
    ) -> None:
        if tool not in task_kinds():
            raise MSCError(f"unknown task tool {tool!r}; expected one of {list(task_kinds())}")
        self.tool = tool
        self.identity = TaskIdentity(resolve_model(model, data, example_inputs), student)
        self.scoring = Scoring(get_scorer(scorer, **dict(scorer_options or {})), tool,
                               self._measure_baseline)
        self.measurer = Measurer(
            Measurement(runner, device, measuring_options(runner, runner_options),
                        int(profile_repeat), int(profile_warmup), int(seed)),
            Compressed(self.graph, self.params, {}), self.data)
        self.quant_choices = checked_quant_choices(quant_choices)
        self.densities = checked_densities(densities)
        self.builder = CompressionBuilder(self.identity, tool, runner)
        self.results = Evaluations(cache_dir)
        self.space: SearchSpace = kind_space(tool, self)

    @classmethod
    def from_description(cls, description: Mapping[str, Any], *, data: TaskData | None = None,
                         cache_dir: str | os.PathLike[str] | None = None,
                         profile_repeat: int | None = None, seed: int = 0,
                         exact: bool = False) -> Task:
        """The task :meth:`describe` described, rebuilt and checked (the inverse of
        ``describe``): the model from its zoo name or file, ``data`` or the data the
        description names, the tool options its space offers. A DescriptionError (an
        MSCError) refuses a description that cannot be rebuilt here, or whose rebuilt
        task has other weights, data or space (with ``exact``: differs at any key).
        ``profile_repeat`` replaces the described repeat; ``seed`` is used where the
        description names none."""
        args = task_arguments(description, data, seed)
        if profile_repeat is not None:
            args["profile_repeat"] = profile_repeat
        task = cls(args.pop("model"), args.pop("tool"), cache_dir=cache_dir, **args)
        check_described(description, task, exact)
        return task

    # -- identity ---------------------------------------------------------------------------
    @property
    def source(self) -> ModelSource:
        return self.identity.source

    @property
    def graph(self) -> MSCGraph:
        return self.identity.graph

    @property
    def params(self) -> Params:
        return self.identity.params

    @property
    def data(self) -> TaskData:
        return self.identity.data

    @property
    def student(self) -> Student:
        return self.identity.student

    def describe(self) -> dict[str, Any]:
        """What identifies this task in a record."""
        how = self.measurement
        return {
            **self.identity.describe(),
            "tool": self.tool,
            "space": self.space.to_json(),
            "scorer": self.scorer.to_json(),
            "runner": how.runner,
            "device": how.device,
            "runner_options": dict(how.runner_options),
            "profile": {"repeat": how.repeat, "warmup": how.warmup},
            "student": self.identity.student_json(),
            "seed": how.seed,
        }

    def plan_key(self, plan: Mapping[str, Any]) -> str:
        return fingerprint({"task": {k: v for k, v in self.describe().items()
                                     if k not in ("scorer", "space")},
                            "plan": self.space.validate(plan)})

    # -- what the space is over (read by the tools' space and plan builders) -----------------
    def quantizable_layers(self, graph: MSCGraph | None = None) -> list[str]:
        return self.builder.quantizable_layers(graph)

    def prune_groups(self) -> list[list[str]]:
        """Prunable channel groups (layers that must keep the same channels), in order."""
        return self.builder.prune_groups()

    def calibration(self, graph: MSCGraph, params: Params, choice: str,
                    percentile: float | None = None) -> QuantPlan:
        """Per-layer quant params for ``choice`` on every quantizable layer (cached)."""
        return self.builder.calibration(graph, params, choice, percentile)

    def quant_plan(self, graph: MSCGraph, params: Params, choices: Mapping[str, str],
                   percentile: float | None = None) -> QuantPlan:
        """The plan of per-layer choices (:meth:`CompressionBuilder.quant_plan`)."""
        return self.builder.quant_plan(graph, params, choices, percentile)

    def sensitivity(self) -> dict[str, float]:
        """Output error when only that layer is int8-quantized (per-channel, minmax)."""
        return self.builder.sensitivity()

    def teacher_outputs(self) -> np.ndarray:
        """Float model outputs on the evaluation inputs (torch codegen, computed once)."""
        return self.builder.teacher_outputs()

    # -- building and measuring -----------------------------------------------------------
    def compressed(self, plan: Mapping[str, Any], on_epoch: EpochCallback | None = None
                   ) -> Compressed:
        """Build the model ``plan`` describes (no measurement)."""
        return self.builder.compressed(self, self.space.validate(plan), on_epoch)

    @property
    def measurement(self) -> Measurement:
        return self.measurer.how

    @property
    def runner(self) -> str:
        return self.measurer.how.runner

    @property
    def device(self) -> str:
        return self.measurer.how.device

    @property
    def runner_options(self) -> dict[str, Any]:
        return dict(self.measurer.how.runner_options)

    @property
    def seed(self) -> int:
        return self.measurer.how.seed

    @property
    def profile_repeat(self) -> int:
        return self.measurer.how.repeat

    @property
    def profile_warmup(self) -> int:
        return self.measurer.how.warmup

    @property
    def _reference(self) -> Reference | None:
        """The float model's session every evaluation is timed against (once built)."""
        return self.measurer.reference

    def measure(self, model: Compressed) -> Metrics:
        """Accuracy, distillation loss and latency of ``model`` on the task's runner; the
        latency is timed paired with the uncompressed model (built once per task), so
        ``paired_speedup`` compares the two in the same window."""
        return self.measurer.measure(model, self.teacher_outputs())

    # -- evaluating (cached) ----------------------------------------------------------------
    @property
    def cache(self) -> EvaluationCache:
        return self.results.cache

    @cache.setter
    def cache(self, cache: EvaluationCache) -> None:
        self.results.cache = cache

    @property
    def evaluations(self) -> int:
        """Evaluations this task computed (cache hits not counted)."""
        return self.results.count

    @property
    def eval_seconds(self) -> float:
        return self.results.seconds

    def evaluate_full(self, plan: Mapping[str, Any], use_cache: bool = True,
                      on_epoch: EpochCallback | None = None
                      ) -> tuple[Metrics, dict[str, Any]]:
        """Metrics and resulting tool strategies of ``plan``, cached by fingerprint.

        ``on_epoch(epoch, distill_loss)`` is called after each fine-tuning epoch of a
        distillation plan (schedulers such as ASHA stop bad trials on it)."""
        plan = self.space.validate(plan)

        def compute() -> tuple[Metrics, dict[str, Any]]:
            model = self.compressed(plan, on_epoch)
            return self.measure(model), model.strategies

        return self.results.evaluate(self.plan_key(plan), compute, use_cache)

    def evaluate(self, plan: Mapping[str, Any], use_cache: bool = True) -> Metrics:
        """Metrics of ``plan`` (cached by fingerprint unless ``use_cache`` is False)."""
        return self.evaluate_full(plan, use_cache)[0]

    # -- scoring --------------------------------------------------------------------------
    @property
    def scorer(self) -> Scorer:
        return self.scoring.scorer

    @property
    def float_fallback(self) -> bool:
        """Whether keeping a layer float is a choice (:func:`allows_float_fallback`)."""
        return self.scoring.float_fallback

    def _measure_baseline(self) -> Metrics:
        if self.scoring.baseline_is_plan:
            return self.evaluate(self.space.baseline_plan())
        # the uncompressed model is not a plan of this space: measure it directly
        return self.measure(Compressed(self.graph, self.params, {}))

    @property
    def baseline(self) -> Metrics:
        """Metrics of the uncompressed plan (the float model for quantize/prune)."""
        return self.scoring.baseline

    def adopt_baseline(self, metrics: Metrics) -> None:
        """Score against ``metrics``, a baseline measured earlier (stored with a study,
        sweep or record), instead of measuring it again: plans scored in another process
        keep their scores. Where the baseline is a plan of the space, the cache answers
        that plan with the same measurement."""
        self.scoring.adopt(metrics)
        if self.scoring.baseline_is_plan:
            self.results.store(self.plan_key(self.space.baseline_plan()), metrics, {})

    def score(self, metrics: Metrics) -> float:
        return self.scoring.score(metrics)

    def objectives(self, metrics: Metrics) -> tuple[float, float]:
        return self.scoring.objectives(metrics)
