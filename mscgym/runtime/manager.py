"""RuntimeManager: one graph, its tools, and a runner, behind MSC's API.

The manager owns the float graph and weights, asks each tool how it changes the model
(pruning transforms the graph, quantization yields a plan the codegens apply), builds
the result on the configured runner, and shows tools the tensors they watch by
building the graph with those tensors as extra outputs. That keeps tools independent
of runners: the quantizer calibrates the same way on torch, TVM and ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.profiling import LatencyStats, profile_runner
from mscgym.runtime.registry import create_runner
from mscgym.runtime.runner import BaseRunner
from mscgym.tools import MSC_TOOL, BaseTool, create_tool

Params = dict[str, np.ndarray]
RunInputs = np.ndarray | torch.Tensor | Sequence[Any] | Mapping[str, Any]

logger = logging.getLogger("mscgym.runtime")
"""Builds and runs are logged at debug level (MSC's "runtime" verbosity shows them)."""

_TOOL_ORDER = (MSC_TOOL.PRUNE, MSC_TOOL.QUANTIZE, MSC_TOOL.DISTILL, MSC_TOOL.COLLECT)


class RuntimeManager:
    """Runs one MSCGraph on one runner, with compression tools in the loop."""

    def __init__(self, graph: MSCGraph, params: Params, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.runner_name = str(self.config.get("runner", "tvm"))
        self.device = str(self.config.get("device", "cpu"))
        self.runner_options = dict(self.config.get("runner_options", {}))
        self._source_graph = graph
        self._source_params = {k: np.asarray(v) for k, v in params.items()}
        self.graph = graph
        self.params = dict(self._source_params)
        self._tools: dict[MSC_TOOL, BaseTool] = {}
        self._runner: BaseRunner | None = None
        self._watched: list[str] = []
        self.quant: QuantPlan = {}

    # -- tools ------------------------------------------------------------------------
    def create_tool(
        self, kind: MSC_TOOL | str, config: Mapping[str, Any] | None = None
    ) -> BaseTool:
        """Create (or replace) the tool of ``kind`` over the current float graph."""
        kind = MSC_TOOL(kind)
        base_graph, base_params = self._tool_input(kind)
        tool = create_tool(kind, base_graph, base_params, dict(config or {}))
        if kind is MSC_TOOL.DISTILL:
            # The student is the compressed graph above; the teacher is the float source.
            tool.set_teacher(self._source_graph, self._source_params)
        self._tools[kind] = tool
        return tool

    def get_tool(self, kind: MSC_TOOL | str) -> BaseTool:
        kind = MSC_TOOL(kind)
        if kind not in self._tools:
            raise MSCError(f"no {kind.value} tool; call create_tool({kind.value!r}, config) first")
        return self._tools[kind]

    def _tool_input(self, kind: MSC_TOOL) -> tuple[MSCGraph, Params]:
        """Each tool sees the graph as the tools before it in ``_TOOL_ORDER`` left it."""
        graph, params = self._source_graph, self._source_params
        for earlier in _TOOL_ORDER[: _TOOL_ORDER.index(kind)]:
            if earlier in self._tools:
                graph, params = self._tools[earlier].transform(graph, params)
        return graph, params

    # -- building and running ---------------------------------------------------------
    def load_model(self, reuse_weights: bool = False) -> None:
        """(Re)build the model on the runner with every tool's current effect.

        ``reuse_weights`` keeps the weights the manager holds now (e.g. after
        ``update_weights``); otherwise the tools start from the source weights again.
        """
        if not reuse_weights:
            self.params = dict(self._source_params)
        graph, params = self._source_graph, self.params
        quant: QuantPlan = {}
        for kind in _TOOL_ORDER:
            tool = self._tools.get(kind)
            if tool is None:
                continue
            if kind is MSC_TOOL.DISTILL and quant:
                tool.set_quant(quant)  # the student fine-tunes with the quantizer's fake-quant
            graph, params = tool.transform(graph, params)
            quant.update(tool.quant_plan())
        self.graph, self.params, self.quant = graph, dict(params), quant
        self._watched = sorted({t for tool in self._tools.values() for t in tool.watched_tensors()})
        build_graph = _with_extra_outputs(graph, self._watched)
        self._runner = create_runner(self.runner_name, self.device, self.runner_options)
        self._runner.build(build_graph, self.params, quant)
        logger.debug("built graph %r on %s/%s: %d quantized layers, %d watched tensors",
                     graph.name, self.runner_name, self.device, len(quant), len(self._watched))

    @property
    def runner(self) -> BaseRunner:
        if self._runner is None:
            raise MSCError("no model loaded; call load_model() first")
        return self._runner

    def run(self, inputs: RunInputs) -> list[np.ndarray]:
        """Run one batch; returns the graph outputs (watched tensors go to the tools)."""
        arrays = _as_input_list(self.graph, inputs)
        outputs = self.runner.run(arrays)
        logger.debug("ran %s on inputs %s", self.runner_name, [a.shape for a in arrays])
        n_out = len(self.graph.output_names)
        if self._watched:
            observed = dict(zip(self._watched, outputs[n_out:], strict=True))
            for tool in self._tools.values():
                wanted = set(tool.watched_tensors())
                if wanted:
                    tool.observe({k: v for k, v in observed.items() if k in wanted})
        return outputs[:n_out]

    def profile(self, repeat: int = 100, warmup: int = 10, batch: int = 1,
                inputs: RunInputs | None = None) -> LatencyStats:
        """Latency of one run on the runner's device (median, p90, spread)."""
        arrays = (_as_input_list(self.graph, inputs) if inputs is not None
                  else example_inputs(self.graph, batch))
        return profile_runner(self.runner, arrays, repeat=repeat, warmup=warmup)

    def update_weights(self, weights: Mapping[str, Any]) -> None:
        """Replace weights (graph naming) of the current model, e.g. after fine-tuning."""
        self.params.update(checked_weights(self.graph, weights))

    def export(self, path: str | os.PathLike[str]) -> str:
        """Write the built artifact of the runner (library, ONNX file, ...)."""
        return self.runner.export(os.fspath(path))


def _with_extra_outputs(graph: MSCGraph, tensors: list[str]) -> MSCGraph:
    if not tensors:
        return graph
    for name in tensors:
        graph.find_tensor(name)
    extended = graph.clone()
    extended.output_names = list(graph.output_names) + list(tensors)
    extended.return_tuple = True
    return extended


def _as_input_list(graph: MSCGraph, inputs: RunInputs) -> list[np.ndarray]:
    names = graph.input_names
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise MSCError(f"run: missing inputs {missing} (graph inputs: {names})")
        values = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray | torch.Tensor):
        values = [inputs]
    else:
        values = list(inputs)
    if len(values) != len(names):
        raise MSCError(f"run: got {len(values)} inputs, graph {graph.name!r} takes {len(names)}")
    arrays = []
    for name, value in zip(names, values, strict=True):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(
            value)
        expected = graph.find_tensor(name)
        static = [(i, d) for i, d in enumerate(expected.shape) if isinstance(d, int)]
        if array.ndim != expected.ndim or any(array.shape[i] != d for i, d in static):
            raise MSCError(f"run: input {name!r} has shape {array.shape}, expected "
                           f"{tuple(expected.shape)}")
        arrays.append(np.ascontiguousarray(array, dtype=expected.dtype))
    return arrays


def example_inputs(graph: MSCGraph, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Deterministic random inputs of the graph's shapes (symbolic dims = ``batch``)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in graph.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in tensor.shape]
        arrays.append(rng.standard_normal(shape).astype(tensor.dtype))
    return arrays


def checked_weights(graph: MSCGraph, weights: Mapping[str, Any],
                    where: str = "update_weights") -> Params:
    """``weights`` as float32 arrays, each checked to be a weight of ``graph`` with its
    declared shape (an error names the weight)."""
    known = graph.weight_tensors()
    checked: Params = {}
    for name, value in weights.items():
        if name not in known:
            raise MSCError(f"{where}: {name!r} is not a weight of graph {graph.name!r}")
        array = (value.detach().cpu().numpy() if isinstance(value, torch.Tensor)
                 else np.asarray(value))
        if tuple(array.shape) != tuple(known[name].shape):
            raise MSCError(f"{where}: {name!r} has shape {tuple(array.shape)}, expected "
                           f"{tuple(known[name].shape)}")
        checked[name] = array.astype(np.float32)
    return checked


def calibrate_quantizer(graph: MSCGraph, params: Params, config: Mapping[str, Any],
                        batches: Sequence[Any], runner: str = "torch") -> BaseTool:
    """MSC's calibration loop: run ``batches`` until the quantizer says it is calibrated."""
    manager = RuntimeManager(graph, params, {"runner": runner})
    quantizer = manager.create_tool(MSC_TOOL.QUANTIZE, dict(config))
    manager.load_model()
    while not quantizer.calibrated:
        for batch in batches:
            manager.run(batch)
        quantizer.calibrate()
    return quantizer
