"""Build the model a plan describes with the real tools, for one task.

The builder owns what building needs and keeps across plans: the calibration pool and
the calibrations of the task's graph (once per (graph, choice)), the float teacher's
outputs (on the evaluation inputs, and on the training inputs for every plan's
fine-tuning), and the distillation student. A plan's choices become tools through the
builders each tool declares in :mod:`mscgym.tools.registry`, and the tools apply through
:func:`~mscgym.tools.registry.apply_tools`, as in the runtime manager and the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.manager import calibrate_quantizer, calibrate_tool
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.choices import quantizer_config
from mscgym.tasks.identity import TaskIdentity
from mscgym.tasks.kinds import kind_order
from mscgym.tasks.measure import Compressed, batched, reference_outputs
from mscgym.tasks.sources import Params
from mscgym.tasks.tool_plans import quantizer_holding
from mscgym.tools import MSC_TOOL, create_tool
from mscgym.tools.distiller import TeacherOutputs
from mscgym.tools.losses import distill_loss
from mscgym.tools.prune_recalibration import FloatObservation
from mscgym.tools.pruner import Pruner
from mscgym.tools.quantizer import DEFAULT_INCLUDE, Quantizer, compose_plan
from mscgym.tools.registry import ToolContext, ToolStep, apply_tools, tool_spec

EpochCallback = Callable[[int, float], None]
"""``on_epoch(epoch, distill_loss)``, called after each fine-tuning epoch of a plan."""


class CompressionBuilder:
    """Builds the compressed models of one task kind over the task's identity.

    ``runner`` decides the form of the quantizer's activation plan (TensorRT's symmetric
    int8 or ONNX Runtime's x86 form). The tools' plan builders read their options from
    the task, which each build therefore names.
    """

    def __init__(self, identity: TaskIdentity, kind: str, runner: str) -> None:
        self.identity = identity
        self.kind = kind
        self.quant_target = "tensorrt" if runner == "tensorrt" else "onnxruntime"
        self._calibrations: dict[str, QuantPlan] = {}
        self._pools: dict[str, Quantizer] = {}
        self._teacher_outputs: np.ndarray | None = None
        self._float_observation: FloatObservation | None = None  # see _calibrate
        self._teacher_train_outputs = TeacherOutputs()  # shared by every plan's fine-tuning
        self._sensitivity: dict[str, float] | None = None

    # -- what the tools act on ----------------------------------------------------------
    def quantizable_layers(self, graph: MSCGraph | None = None) -> list[str]:
        graph = graph or self.identity.graph
        return [n.name for n in graph.nodes if n.optype in DEFAULT_INCLUDE]

    def prune_groups(self) -> list[list[str]]:
        """Prunable channel groups (layers that must keep the same channels), in order."""
        pruner = create_tool(MSC_TOOL.PRUNE, self.identity.graph, self.identity.params,
                             {"density": 1.0})
        return [list(g.members) for g in pruner.analysis.prunable()]

    # -- quantization ---------------------------------------------------------------------
    def calibration(self, graph: MSCGraph, params: Params, choice: str,
                    percentile: float | None = None) -> QuantPlan:
        """Per-layer quant params for ``choice`` on every quantizable layer (cached)."""
        config = quantizer_config(choice, percentile)
        key = fingerprint({"graph": self.identity.graph_key(graph, params), "choice": choice,
                           "config": config, "data": self.identity.data_hash})
        if key not in self._calibrations:
            quantizer = calibrate_quantizer(graph, params, config,
                                            self.identity.data.calibration)
            self._calibrations[key] = quantizer.quant_plan()
        return self._calibrations[key]

    def quant_plan(self, graph: MSCGraph, params: Params, choices: Mapping[str, str],
                   percentile: float | None = None) -> QuantPlan:
        """The plan of per-layer choices; a layer's choice covers its activations too (its
        output, the residual adds and pools between int8 layers), planned by the Quantizer
        for the task's runner from one calibration pool (:func:`compose_plan`)."""
        if all(choice == "float" for choice in choices.values()):
            return {}
        layers = {layer: None if choice == "float" else quantizer_config(choice, percentile)
                  for layer, choice in choices.items()}
        return compose_plan(self._calibration_pool(graph, params), layers, self.quant_target)

    def _calibration_pool(self, graph: MSCGraph, params: Params) -> Quantizer:
        """A quantizer that observed every tensor any plan may calibrate (cached)."""
        key = fingerprint({"graph": self.identity.graph_key(graph, params), "pool": True,
                           "data": self.identity.data_hash})
        if key not in self._pools:
            pool = create_tool(MSC_TOOL.QUANTIZE, graph, params, {})
            pool.watch_all()
            calibrate_tool(pool, self.identity.data.calibration)
            self._pools[key] = pool
        return self._pools[key]

    def sensitivity(self) -> dict[str, float]:
        """Output error when only that layer is int8-quantized (per-channel, minmax)."""
        if self._sensitivity is None:
            from mscgym.tools.sensitivity import layer_sensitivity

            graph, params = self.identity.graph, self.identity.params
            plan = self.calibration(graph, params, "int8_channel_minmax")
            rows = layer_sensitivity(graph, params, plan, self.identity.data.calibration[0])
            self._sensitivity = {row["layer"]: float(row["error"]) for row in rows}
        return self._sensitivity

    # -- the teacher ------------------------------------------------------------------------
    def teacher_outputs(self) -> np.ndarray:
        """Float model outputs on the evaluation inputs (torch codegen, computed once)."""
        if self._teacher_outputs is None:
            self._teacher_outputs = reference_outputs(
                self.identity.graph, self.identity.params, self.identity.data.eval_inputs)
        return self._teacher_outputs

    def _train_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        data = self.identity.data
        if data.train_inputs is not None:
            return data.train_inputs, data.train_labels
        return np.concatenate(data.calibration), None

    def _calibrate(self, tool: Any) -> None:
        """MSC's calibration loop over the task's calibration batches (the pruner's
        recalibration; the quantizer is calibrated from the cached pool instead). The
        float model's statistics a pruner of the task's own graph gathers are the same
        for every plan, so the first plan's are kept and later plans calibrate from them."""
        shared = isinstance(tool, Pruner) and tool.graph is self.identity.graph
        if shared and self._float_observation is not None:
            tool.calibrate_from(self._float_observation)
            return
        calibrate_tool(tool, self.identity.data.calibration)
        if shared:
            self._float_observation = tool.float_observation

    def _tool_context(self, on_epoch: EpochCallback | None) -> ToolContext:
        return ToolContext(teacher=(self.identity.graph, self.identity.params),
                           calibrate=self._calibrate, train_data=self._train_data,
                           eval_fn=self._epoch_probe(on_epoch),
                           teacher_outputs=self._teacher_train_outputs)

    def _epoch_probe(self, on_epoch: EpochCallback | None) -> Any:
        """The distiller's per-epoch ``eval_fn``: the student's distillation loss against
        the teacher on the evaluation inputs, handed to ``on_epoch(epoch, loss)``."""
        if on_epoch is None:
            return None
        epochs = iter(range(1, 1 << 30))

        def probe(student: Any) -> float:
            outputs = batched(lambda x: student(torch.from_numpy(x)),
                              self.identity.data.eval_inputs)
            loss = distill_loss(self.teacher_outputs(), outputs)
            on_epoch(next(epochs), loss)
            return loss

        return probe

    # -- building ----------------------------------------------------------------------------
    def compressed(self, task: Any, plan: Mapping[str, Any],
                   on_epoch: EpochCallback | None = None) -> Compressed:
        """The model the (validated) ``plan`` of ``task`` describes: the kind's tools in
        their order, each made by its declared plan builder from the plan's choices."""
        graph, params = self.identity.graph, self.identity.params
        steps: list[tuple[str, ToolStep]] = []
        if self.kind == "distill":
            graph, params, steps = self._student_steps(task)
        for name in kind_order(self.kind):
            prefixes = tool_spec(name).dimension_prefixes
            choices = {k: v for k, v in plan.items() if k.split(":", 1)[0] in prefixes}
            if choices:
                steps.append((name, _plan_step(task, name, choices)))
        applied = apply_tools(graph, params, steps, self._tool_context(on_epoch))
        return Compressed(applied.graph, applied.params, applied.quant, applied.strategies())

    def _student_steps(self, task: Any) -> tuple[MSCGraph, Params, list[tuple[str, ToolStep]]]:
        """Where distillation starts: the given student (its quant plan as a quantizer
        step), or the float model and the ``student`` recipe's steps
        ({"prune": density, "quantize": choice})."""
        student = self.identity.student
        if isinstance(student, Compressed):
            return student.graph, student.params, [("quantize", lambda g, p, c: (
                quantizer_holding(g, p, student.quant)))]
        density = float(student.get("prune", 1.0))
        choice = student.get("quantize")
        steps: list[tuple[str, ToolStep]] = [("prune", _plan_step(task, "prune", {
            f"prune:{g[0]}": density for g in self.prune_groups()}))]
        if choice:
            steps.append(("quantize", lambda g, p, c: tool_spec("quantize").build_tool(
                task, {f"quantize:{layer}": choice for layer in self.quantizable_layers(g)},
                g, p, c)))
        return self.identity.graph, self.identity.params, steps


def _plan_step(task: Any, name: str, choices: Mapping[str, Any]) -> ToolStep:
    """The step that makes tool ``name`` from ``choices`` over the graph it gets."""
    spec = tool_spec(name)
    return lambda graph, params, context: spec.build_tool(task, choices, graph, params,
                                                          context)
