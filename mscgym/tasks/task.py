"""Task: model + data + tool + search space + scorer, and ``evaluate(plan) -> Metrics``.

A task is what an agent searches. It builds the compressed model a plan describes
with the real tools (pruner, quantizer, distiller), measures it on a real runner
(accuracy and distillation loss on held-out data, latency with ``profile``), and
caches everything by fingerprint: calibration once per (graph, choice), results once
per (model, data, plan, runner).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.manager import calibrate_quantizer, calibrate_tool
from mscgym.runtime.registry import create_runner
from mscgym.tasks.cache import EvaluationCache, fingerprint
from mscgym.tasks.description import check_described, task_arguments
from mscgym.tasks.kinds import kind_order, kind_tools, task_kinds
from mscgym.tasks.measure import (
    Compressed,
    Measurement,
    Reference,
    batched,
    measure,
    reference_outputs,
)
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.scorers import Scorer, get_scorer
from mscgym.tasks.sources import ModelSource, Params, TaskData, params_hash, resolve_model
from mscgym.tasks.spaces import (
    DENSITY_CHOICES,
    QUANT_CHOICES,
    Dimension,
    SearchSpace,
)
from mscgym.tasks.tool_plans import quantizer_holding
from mscgym.tools import MSC_TOOL, create_tool
from mscgym.tools.distiller import TeacherOutputs
from mscgym.tools.losses import distill_loss
from mscgym.tools.quantizer import DEFAULT_INCLUDE, Quantizer, compose_plan
from mscgym.tools.registry import ToolContext, ToolStep, apply_tools, tool_spec

EpochCallback = Callable[[int, float], None]

DISTILL_CHOICES: dict[str, tuple[Any, ...]] = {
    "temperature": (1.0, 2.0, 4.0, 8.0),
    "epochs": (1, 2, 3),
    "alpha": (0.0, 0.5, 0.9),
    "lr": (0.0005, 0.001, 0.003),
    "intermediate": ("none", "auto"),
}
DISTILL_BASELINE = {"temperature": 4.0, "epochs": 1, "alpha": 0.5, "lr": 0.001,
                    "intermediate": "none"}
RECOVERY_CHOICES: dict[str, tuple[Any, ...]] = {"epochs": (0, 1, 2), "lr": (0.001, 0.003)}
"""Compress tasks with labelled training data fine-tune the pruned model from the float
teacher (AMC's recipe) for this many epochs at this learning rate; 0 epochs is the
baseline. Without labels (ImageNet crops) there is no recovery dimension."""


PERCENTILES: tuple[float, ...] = (99.9, 99.99, 99.999)
"""Percentiles the ``calibrate:percentile`` dimension offers to percentile calibration."""
DEFAULT_QUANT_CHOICE = "int8_channel_minmax"
"""The plan a quantize search starts from when float is not on offer."""


def allows_float_fallback(scorer: Scorer) -> bool:
    """Whether keeping a layer float is a choice the search may make under ``scorer``.

    Only a scorer that rewards compression (speed-up or size) while it bounds or weighs
    quality can prefer a float layer for a reason; under a pure quality scorer
    (``distill_loss``, ``accuracy``) float is unbeatable, so the search would always
    return the unquantized model. There the space searches how to quantize instead.
    """
    if scorer.name == "latency_under_accuracy":
        return True
    if scorer.name == "weighted":
        weights = dict(scorer.options.get("weights", {"speedup": 0.1}))
        return any(float(weights.get(term, 0.0)) != 0.0 for term in ("speedup", "size"))
    return False


def quantizer_config(choice: str, percentile: float | None = None) -> dict[str, Any]:
    """The quantizer config that one per-layer quantization choice stands for
    (``percentile`` sets the percentile of percentile calibration)."""
    config = _choice_config(choice)
    if percentile is not None and config["activation"]["method"] == "percentile":
        config["activation"]["percentile"] = float(percentile)
    return config


def _choice_config(choice: str) -> dict[str, Any]:
    if choice == "int8_tensor_minmax":
        return {"weight": {"dtype": "int8", "per_channel": False},
                "activation": {"dtype": "int8", "method": "minmax"}}
    if choice == "uint8a_channel_minmax":
        return {"weight": {"dtype": "int8", "per_channel": True},
                "activation": {"dtype": "uint8", "symmetric": False, "method": "minmax"}}
    if choice == "int4w_channel_minmax":
        return {"weight": {"dtype": "int4", "per_channel": True},
                "activation": {"dtype": "int8", "method": "minmax"}}
    prefix = "int8_channel_"
    if choice.startswith(prefix) and choice[len(prefix):] in ("minmax", "percentile", "entropy",
                                                                "mse"):
        return {"weight": {"dtype": "int8", "per_channel": True},
                "activation": {"dtype": "int8", "method": choice[len(prefix):]}}
    raise MSCError(f"unknown quantization choice {choice!r}; expected one of {QUANT_CHOICES}")


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
        self.source: ModelSource = resolve_model(model, data, example_inputs)
        self.scorer = get_scorer(scorer, **dict(scorer_options or {}))
        self.runner = runner
        self.device = device
        self.runner_options = dict(runner_options or {})
        create_runner(runner, device, self.runner_options)
        self.seed = int(seed)
        self.profile_repeat = int(profile_repeat)
        self.profile_warmup = int(profile_warmup)
        self.quant_choices = tuple(quant_choices)
        for choice in self.quant_choices:
            if choice != "float":
                quantizer_config(choice)
        self.float_fallback = allows_float_fallback(self.scorer)
        self.densities = tuple(float(d) for d in densities)
        if any(not 0 < d <= 1 for d in self.densities):
            raise MSCError(f"densities must lie in (0, 1], got {self.densities}")
        self.student: Mapping[str, Any] | Compressed = (
            student if isinstance(student, Compressed) else dict(student or {"prune": 0.5}))
        self._identity: dict[str, Any] | None = None
        self._graph_identity: str | None = None
        self.cache = EvaluationCache(cache_dir)
        self._calibrations: dict[str, QuantPlan] = {}
        self._pools: dict[str, Quantizer] = {}
        self._teacher_outputs: np.ndarray | None = None
        self._teacher_train_outputs = TeacherOutputs()  # shared by every plan's fine-tuning
        self._baseline: Metrics | None = None
        self._reference: Reference | None = None
        self._sensitivity: dict[str, float] | None = None
        self.space = self._build_space()
        self.evaluations = 0
        self.eval_seconds = 0.0

    # -- identity -----------------------------------------------------------------------
    @property
    def graph(self) -> MSCGraph:
        return self.source.graph

    @property
    def params(self) -> Params:
        return self.source.params

    @property
    def data(self) -> TaskData:
        return self.source.data

    def _identity_hashes(self) -> dict[str, Any]:
        """The hashes of the task's weights, data and student, computed once.

        A task's model, data and student do not change after construction, and hashing
        them (resnet18: 45 MB of weights, 150 MB of calibration and evaluation data) on
        every ``plan_key`` was most of an uncached evaluation's overhead.
        """
        if self._identity is None:
            self._identity = {"weight_hash": self.source.weight_hash,
                              "data_hash": self.data.data_hash,
                              "student": self._student_json()}
        return self._identity

    def _graph_key(self, graph: MSCGraph, params: Params) -> str:
        """Fingerprint of a (graph, weights) pair; the task's own is computed once."""
        if graph is self.graph and params is self.params:
            if self._graph_identity is None:
                self._graph_identity = fingerprint({
                    "graph": graph.to_json(),
                    "params": self._identity_hashes()["weight_hash"]})
            return self._graph_identity
        return fingerprint({"graph": graph.to_json(), "params": params_hash(params)})

    def describe(self) -> dict[str, Any]:
        """What identifies this task in a record."""
        file = {"model_file": self.source.file} if self.source.file is not None else {}
        identity = self._identity_hashes()
        return {
            "model": self.source.model_id,
            **file,
            "weight_hash": identity["weight_hash"],
            "data": self.data.data_id,
            "data_hash": identity["data_hash"],
            "tool": self.tool,
            "space": self.space.to_json(),
            "scorer": self.scorer.to_json(),
            "runner": self.runner,
            "device": self.device,
            "runner_options": dict(self.runner_options),
            "profile": {"repeat": self.profile_repeat, "warmup": self.profile_warmup},
            "student": copy.deepcopy(identity["student"]),  # the caller may edit it
            "seed": self.seed,
        }

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

    def _student_json(self) -> dict[str, Any]:
        if isinstance(self.student, Compressed):
            return {"graph": self.student.graph.name,
                    "weight_hash": params_hash(self.student.params),
                    "quantized": sorted(self.student.quant)}
        return dict(self.student)

    # -- search space -------------------------------------------------------------------
    def quantizable_layers(self, graph: MSCGraph | None = None) -> list[str]:
        graph = graph or self.graph
        return [n.name for n in graph.nodes if n.optype in DEFAULT_INCLUDE]

    def prune_groups(self) -> list[list[str]]:
        """Prunable channel groups (layers that must keep the same channels), in order."""
        pruner = create_tool(MSC_TOOL.PRUNE, self.graph, self.params, {"density": 1.0})
        return [list(g.members) for g in pruner.analysis.prunable()]

    def _build_space(self) -> SearchSpace:
        """The dimensions of each of the kind's tools, in pipeline order (each tool's
        space builder is declared with the tool in :mod:`mscgym.tools.registry`)."""
        dims: list[Dimension] = []
        for name in kind_tools(self.tool):
            dims.extend(tool_spec(name).build_space(self))
        if not dims:
            raise MSCError(f"model {self.source.model_id!r} has nothing to {self.tool}")
        return SearchSpace(dims)

    # -- building the compressed model ---------------------------------------------------

    def calibration(self, graph: MSCGraph, params: Params, choice: str,
                    percentile: float | None = None) -> QuantPlan:
        """Per-layer quant params for ``choice`` on every quantizable layer (cached)."""
        config = quantizer_config(choice, percentile)
        key = fingerprint({"graph": self._graph_key(graph, params), "choice": choice,
                           "config": config, "data": self._identity_hashes()["data_hash"]})
        if key not in self._calibrations:
            quantizer = calibrate_quantizer(graph, params, config, self.data.calibration)
            self._calibrations[key] = quantizer.quant_plan()
        return self._calibrations[key]

    def quant_plan(self, graph: MSCGraph, params: Params, choices: Mapping[str, str],
                   percentile: float | None = None) -> QuantPlan:
        """The plan of per-layer choices; a layer's choice covers its activations too (its
        output, the residual adds and pools between int8 layers), planned by the Quantizer
        for the task's runner from one calibration pool (:func:`compose_plan`)."""
        if all(choice == "float" for choice in choices.values()):
            return {}
        target = "tensorrt" if self.runner == "tensorrt" else "onnxruntime"
        layers = {layer: None if choice == "float" else quantizer_config(choice, percentile)
                  for layer, choice in choices.items()}
        return compose_plan(self._calibration_pool(graph, params), layers, target)

    def _calibration_pool(self, graph: MSCGraph, params: Params) -> Quantizer:
        """A quantizer that observed every tensor any plan may calibrate (cached)."""
        key = fingerprint({"graph": self._graph_key(graph, params), "pool": True,
                           "data": self._identity_hashes()["data_hash"]})
        if key not in self._pools:
            pool = create_tool(MSC_TOOL.QUANTIZE, graph, params, {})
            pool.watch_all()
            calibrate_tool(pool, self.data.calibration)
            self._pools[key] = pool
        return self._pools[key]

    def _train_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.data.train_inputs is not None:
            return self.data.train_inputs, self.data.train_labels
        return np.concatenate(self.data.calibration), None

    def _student_steps(self) -> tuple[MSCGraph, Params, list[tuple[str, ToolStep]]]:
        """Where distillation starts: the given student (its quant plan as a quantizer
        step), or the float model and the ``student`` recipe's steps
        ({"prune": density, "quantize": choice})."""
        if isinstance(self.student, Compressed):
            student = self.student
            return student.graph, student.params, [("quantize", lambda g, p, c: (
                quantizer_holding(g, p, student.quant)))]
        recipe = self.student
        density = float(recipe.get("prune", 1.0))
        choice = recipe.get("quantize")
        steps: list[tuple[str, ToolStep]] = [("prune", self._plan_step("prune", {
            f"prune:{g[0]}": density for g in self.prune_groups()}))]
        if choice:
            steps.append(("quantize", lambda g, p, c: tool_spec("quantize").build_tool(
                self, {f"quantize:{layer}": choice for layer in self.quantizable_layers(g)},
                g, p, c)))
        return self.graph, self.params, steps

    def _plan_step(self, name: str, choices: Mapping[str, Any]) -> ToolStep:
        """The step that makes tool ``name`` from ``choices`` over the graph it gets."""
        spec = tool_spec(name)
        return lambda graph, params, context: spec.build_tool(self, choices, graph, params,
                                                              context)

    def _tool_context(self, on_epoch: EpochCallback | None) -> ToolContext:
        return ToolContext(teacher=(self.graph, self.params), train_data=self._train_data,
                           eval_fn=self._epoch_probe(on_epoch),
                           teacher_outputs=self._teacher_train_outputs)

    def _epoch_probe(self, on_epoch: EpochCallback | None) -> Any:
        """The distiller's per-epoch ``eval_fn``: the student's distillation loss against
        the teacher on the evaluation inputs, handed to ``on_epoch(epoch, loss)``."""
        if on_epoch is None:
            return None
        epochs = iter(range(1, 1 << 30))

        def probe(student: Any) -> float:
            outputs = batched(lambda x: student(torch.from_numpy(x)), self.data.eval_inputs)
            loss = distill_loss(self.teacher_outputs(), outputs)
            on_epoch(next(epochs), loss)
            return loss

        return probe

    def compressed(self, plan: Mapping[str, Any], on_epoch: EpochCallback | None = None
                   ) -> Compressed:
        """Build the model ``plan`` describes (no measurement)."""
        plan = self.space.validate(plan)
        graph, params = self.graph, self.params
        steps: list[tuple[str, ToolStep]] = []
        if self.tool == "distill":
            graph, params, steps = self._student_steps()
        for name in kind_order(self.tool):
            prefixes = tool_spec(name).dimension_prefixes
            choices = {k: v for k, v in plan.items() if k.split(":", 1)[0] in prefixes}
            if choices:
                steps.append((name, self._plan_step(name, choices)))
        applied = apply_tools(graph, params, steps, self._tool_context(on_epoch))
        return Compressed(applied.graph, applied.params, applied.quant, applied.strategies())

    def sensitivity(self) -> dict[str, float]:
        """Output error when only that layer is int8-quantized (per-channel, minmax)."""
        if self._sensitivity is None:
            from mscgym.tools.sensitivity import layer_sensitivity

            plan = self.calibration(self.graph, self.params, "int8_channel_minmax")
            rows = layer_sensitivity(self.graph, self.params, plan, self.data.calibration[0])
            self._sensitivity = {row["layer"]: float(row["error"]) for row in rows}
        return self._sensitivity

    # -- measuring --------------------------------------------------------------------
    def teacher_outputs(self) -> np.ndarray:
        """Float model outputs on the evaluation inputs (torch codegen, computed once)."""
        if self._teacher_outputs is None:
            self._teacher_outputs = reference_outputs(self.graph, self.params,
                                                      self.data.eval_inputs)
        return self._teacher_outputs

    @property
    def measurement(self) -> Measurement:
        return Measurement(self.runner, self.device, dict(self.runner_options),
                           self.profile_repeat, self.profile_warmup, self.seed)

    def measure(self, model: Compressed) -> Metrics:
        """Accuracy, distillation loss and latency of ``model`` on the task's runner; the
        latency is timed paired with the uncompressed model (built once per task), so
        ``paired_speedup`` compares the two in the same window."""
        how = self.measurement
        reference = self._reference
        if reference is None or reference.how != how:
            reference = self._reference = Reference(Compressed(self.graph, self.params, {}), how)
        return measure(model, self.data, self.teacher_outputs(), how, reference)

    def plan_key(self, plan: Mapping[str, Any]) -> str:
        return fingerprint({"task": {k: v for k, v in self.describe().items()
                                     if k not in ("scorer", "space")},
                            "plan": self.space.validate(plan)})

    def evaluate_full(self, plan: Mapping[str, Any], use_cache: bool = True,
                      on_epoch: EpochCallback | None = None
                      ) -> tuple[Metrics, dict[str, Any]]:
        """Metrics and resulting tool strategies of ``plan``, cached by fingerprint.

        ``on_epoch(epoch, distill_loss)`` is called after each fine-tuning epoch of a
        distillation plan (schedulers such as ASHA stop bad trials on it)."""
        plan = self.space.validate(plan)
        key = self.plan_key(plan)
        if use_cache:
            cached = self.cache.get(key)
            if cached is not None:
                return Metrics.from_json(cached["metrics"]), cached["strategies"]
        start = time.perf_counter()
        model = self.compressed(plan, on_epoch)
        metrics = self.measure(model)
        self.eval_seconds += time.perf_counter() - start
        self.evaluations += 1
        self.cache.put(key, {"metrics": metrics.to_json(), "strategies": model.strategies})
        return metrics, model.strategies

    def evaluate(self, plan: Mapping[str, Any], use_cache: bool = True) -> Metrics:
        """Metrics of ``plan`` (cached by fingerprint unless ``use_cache`` is False)."""
        return self.evaluate_full(plan, use_cache)[0]

    @property
    def baseline(self) -> Metrics:
        """Metrics of the uncompressed plan (the float model for quantize/prune)."""
        if self._baseline is None:
            if self.tool == "distill" or (self.tool != "prune" and not self.float_fallback):
                # the uncompressed model is not a plan of this space: measure it directly
                self._baseline = self.measure(Compressed(self.graph, self.params, {}))
            else:
                self._baseline = self.evaluate(self.space.baseline_plan())
        return self._baseline

    def adopt_baseline(self, metrics: Metrics) -> None:
        """Score against ``metrics``, a baseline measured earlier (stored with a study,
        sweep or record), instead of measuring it again: plans scored in another process
        keep their scores. Where the baseline is a plan of the space, the cache answers
        that plan with the same measurement."""
        self._baseline = metrics
        plan = self.space.baseline_plan()
        if self.tool != "distill" and (self.tool == "prune" or self.float_fallback):
            self.cache.put(self.plan_key(plan), {"metrics": metrics.to_json(), "strategies": {}})

    def score(self, metrics: Metrics) -> float:
        return self.scorer.score(metrics, self.baseline)

    def objectives(self, metrics: Metrics) -> tuple[float, float]:
        return self.scorer.objectives(metrics, self.baseline)
