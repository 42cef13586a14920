"""Measure a compressed model: accuracy and distillation loss on held-out inputs, latency
and size. Shared by tasks (every evaluation) and the pipeline (every stage)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mscgym.compiler.analysis import graph_summary
from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import LayerQuant, QuantPlan
from mscgym.runtime.manager import example_inputs
from mscgym.runtime.profiling import LatencyStats, profile_paired, profile_runner
from mscgym.runtime.registry import create_runner
from mscgym.runtime.runner import BaseRunner
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.sources import Params, TaskData
from mscgym.tools.losses import distill_loss


@dataclass
class Compressed:
    """The model a plan describes: graph, weights, quant plan, and tool strategies."""

    graph: MSCGraph
    params: Params
    quant: QuantPlan
    strategies: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """Where and how to measure: runner, device, profiling settings."""

    runner: str = "onnxruntime"
    device: str = "cpu"
    runner_options: Mapping[str, Any] = field(default_factory=dict)
    repeat: int = 30
    warmup: int = 5
    seed: int = 0


DEFAULT_RUNNER_OPTIONS: dict[str, dict[str, Any]] = {"onnxruntime": {"intra_op_threads": 1}}
"""Runner options a task measures with unless it is given others. ONNX Runtime runs one
intra-op thread: with its default pools (one per session, a thread per core) the float
reference and the candidate of one paired measurement disturbed each other even on an
idle 2-core machine, and a plan's speed-up did not re-measure in a fresh process (a
digits32-resnet20 plan: 2.55x in its search, 0.73-0.80x when validated; pinned,
1.12-1.20x in three runs). Pass ``intra_op_threads`` to measure other settings."""


def measuring_options(runner: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` over the runner's measuring defaults (:data:`DEFAULT_RUNNER_OPTIONS`)."""
    return {**DEFAULT_RUNNER_OPTIONS.get(runner, {}), **dict(given or {})}


EVAL_BATCH = 256
"""Largest evaluation batch of a model whose batch dim is dynamic."""


def static_batch(graph: MSCGraph) -> int | None:
    """The fixed batch of a graph whose first input has a static leading dim (most
    published ONNX files are exported at batch 1), else None."""
    inputs = graph.get_inputs()
    if not inputs:
        return None
    shape = inputs[0].shape
    return shape[0] if shape and isinstance(shape[0], int) else None


def batched(fn: Callable[[np.ndarray], Any], inputs: np.ndarray, batch: int = EVAL_BATCH,
            fixed: bool = False) -> np.ndarray:
    """Concatenated outputs of ``fn`` over ``inputs`` in batches (first output only).

    With ``fixed`` every call gets exactly ``batch`` rows, as a model with a static batch
    requires: a short last chunk is padded by repeating its last row, and the padded
    rows' outputs are dropped.
    """
    parts = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            chunk = inputs[i:i + batch]
            rows = len(chunk)
            if fixed and rows < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - rows, axis=0)])
            value = fn(np.ascontiguousarray(chunk))
            if isinstance(value, tuple | list):
                value = value[0]
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            parts.append(np.asarray(value)[:rows])
    return np.concatenate(parts)


def graph_batched(graph: MSCGraph, fn: Callable[[np.ndarray], Any],
                  inputs: np.ndarray) -> np.ndarray:
    """:func:`batched` in chunks the graph accepts: its static batch, else EVAL_BATCH."""
    fixed = static_batch(graph)
    return batched(fn, inputs, fixed or EVAL_BATCH, fixed=fixed is not None)


def reference_outputs(graph: MSCGraph, params: Params, inputs: np.ndarray,
                      quant: QuantPlan | None = None) -> np.ndarray:
    """Outputs of the graph's torch codegen (the float teacher when ``quant`` is None)."""
    module = to_torch(graph, params, quant).eval()
    return graph_batched(graph, lambda x: module(torch.from_numpy(x)), inputs)


def top1_agreement(teacher: np.ndarray, outputs: np.ndarray) -> float:
    """Fraction of inputs whose argmax over the last axis matches the teacher's."""
    if teacher.shape != outputs.shape:
        raise ValueError(f"teacher outputs {teacher.shape} and student outputs "
                         f"{outputs.shape} differ in shape")
    return float(np.mean(teacher.argmax(-1) == outputs.argmax(-1)))


def model_size_bytes(model: Compressed) -> int:
    """Bytes of the weights as deployed: quantized weights at their bit width (+ scales)."""
    total = 0
    for node in model.graph.nodes:
        layer: LayerQuant | None = model.quant.get(node.name)
        for role, tensor in node.weights.items():
            count = tensor.numel()
            if role == "weight" and layer is not None and layer.weight is not None:
                total += (count * layer.weight.bits + 7) // 8 + 8 * len(layer.weight.scale)
            else:
                total += count * np.dtype(tensor.dtype).itemsize
    return int(total)


def build_runner(model: Compressed, how: Measurement) -> BaseRunner:
    """``model`` built on the measurement's runner and device."""
    runner = create_runner(how.runner, how.device, dict(how.runner_options))
    runner.build(model.graph, model.params, model.quant)
    return runner


def run_outputs(model: Compressed, data: TaskData, how: Measurement) -> np.ndarray:
    """First outputs of ``model`` on the evaluation inputs, batched as ``measure`` does."""
    runner = build_runner(model, how)
    return graph_batched(model.graph, lambda x: runner.run([x])[0], data.eval_inputs)


class Reference:
    """The uncompressed model, built once on the measurement's runner, that every
    evaluation of a task is timed against (:func:`measure`).

    Building it once keeps one session loaded for the whole search, so pairing costs
    its timed runs and nothing else.
    """

    def __init__(self, model: Compressed, how: Measurement) -> None:
        self.model = model
        self.how = how
        self.runner = build_runner(model, how)
        self.inputs = example_inputs(model.graph, 1, how.seed)

    def is_model(self, model: Compressed) -> bool:
        """Whether ``model`` is the reference itself (the same graph and weights, no
        quantization): then it is timed alone and its paired speed-up is exactly 1."""
        return (model.graph is self.model.graph and model.params is self.model.params
                and not model.quant)


class Measurer:
    """Measures a task's models on one :class:`Measurement`, each timed paired with the
    uncompressed model, whose session (:class:`Reference`) is built on first use and kept
    for the whole search."""

    def __init__(self, how: Measurement, float_model: Compressed, data: TaskData) -> None:
        create_runner(how.runner, how.device, dict(how.runner_options))  # refuse it now
        self.how = how
        self.float_model = float_model
        self.data = data
        self.reference: Reference | None = None

    def measure(self, model: Compressed, teacher: np.ndarray) -> Metrics:
        """:func:`measure` of ``model`` against the ``teacher`` outputs, timed paired with
        the uncompressed model."""
        if self.reference is None:
            self.reference = Reference(self.float_model, self.how)
        return measure(model, self.data, teacher, self.how, self.reference)


def _latency(runner: BaseRunner, model: Compressed, how: Measurement,
             reference: Reference | None) -> tuple[LatencyStats, float | None]:
    """The model's latency stats and its paired speed-up over ``reference`` (None when
    there is no reference; 1 when the model is the reference)."""
    inputs = example_inputs(model.graph, 1, how.seed)
    if reference is None or reference.is_model(model):
        stats = profile_runner(runner, inputs, repeat=how.repeat, warmup=how.warmup)
        return stats, None if reference is None else 1.0
    paired = profile_paired(reference.runner, reference.inputs, runner, inputs,
                            repeat=how.repeat, warmup=how.warmup)
    return paired.candidate, paired.speedup


def measure(model: Compressed, data: TaskData, teacher: np.ndarray,
            how: Measurement, reference: Reference | None = None) -> Metrics:
    """Accuracy, distillation loss against ``teacher`` outputs, latency and size.

    With a ``reference`` (the uncompressed model) the latency is timed paired with it and
    the metrics carry ``paired_speedup``; ``latency_ms`` stays the model's own median.
    """
    if reference is not None and reference.how != how:
        raise MSCError("measure: the reference was built for another measurement "
                       f"({reference.how}) than this one ({how})")
    runner = (reference.runner if reference is not None and reference.is_model(model)
              else build_runner(model, how))
    outputs = graph_batched(model.graph, lambda x: runner.run([x])[0], data.eval_inputs)
    accuracy = None
    if data.eval_labels is not None:
        accuracy = float(np.mean(outputs.argmax(-1) == data.eval_labels))
    # Without labels, the share of held-out inputs whose top-1 class is the teacher's is
    # the quality a user sees; with labels it is reported alongside accuracy.
    agreement = top1_agreement(teacher, outputs)
    stats, paired_speedup = _latency(runner, model, how, reference)
    totals = graph_summary(model.graph)["totals"]
    return Metrics(
        distill_loss=distill_loss(teacher, outputs),
        accuracy=accuracy,
        latency_ms=stats.median_ms,
        latency_p90_ms=stats.p90_ms,
        latency_iqr_ms=stats.iqr_ms,
        size_bytes=model_size_bytes(model),
        params=int(totals["params"]),
        flops=int(totals["flops"]),
        runner=how.runner,
        device=how.device,
        target=stats.target,
        paired_speedup=paired_speedup,
        extra={"top1_agreement": agreement},
    )
