"""RuntimeManager: one graph, its tools, and a runner, behind MSC's API.

The manager owns the float graph and weights, asks each tool how it changes the model
(pruning transforms the graph, quantization yields a plan the codegens apply), builds
the result on the configured runner, and shows tools the tensors they watch by
building the graph with those tensors as extra outputs. That keeps tools independent
of runners: the quantizer calibrates the same way on torch, TVM and ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
import tvm
from tvm import relax

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import from_relax
from mscgym.compiler.partition import fallback_ops, host_value, retype, segments_of, stitch
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.profiling import LatencyStats, profile_runner
from mscgym.runtime.registry import create_runner
from mscgym.runtime.runner import BaseRunner
from mscgym.tools import MSC_TOOL, BaseTool
from mscgym.tools.registry import (
    ToolContext,
    apply_tools,
    new_tool,
    tool_name,
    tool_spec,
)
from mscgym.utils.files import atomic_write_text, read_json

Params = dict[str, np.ndarray]
RunInputs = np.ndarray | torch.Tensor | Sequence[Any] | Mapping[str, Any]

logger = logging.getLogger("mscgym.runtime")
"""Builds and runs are logged at debug level (MSC's "runtime" verbosity shows them)."""


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
        self._tools: dict[str, BaseTool] = {}
        self._runner: BaseRunner | None = None
        self._watched: list[str] = []
        self.quant: QuantPlan = {}

    # -- tools ------------------------------------------------------------------------
    def create_tool(
        self, kind: MSC_TOOL | str, config: Mapping[str, Any] | None = None
    ) -> BaseTool:
        """Create (or replace) the tool of ``kind`` over the graph as the tools before it
        in pipeline order leave it; a tool that needs the teacher gets the float source
        (the student is the compressed graph)."""
        name = tool_name(kind)
        order = tool_spec(name).order
        earlier = {k: t for k, t in self._tools.items() if tool_spec(k).order < order}
        base = apply_tools(self._source_graph, self._source_params, earlier)
        tool = new_tool(name, base.graph, base.params, config,
                        ToolContext(teacher=(self._source_graph, self._source_params)))
        self._tools[name] = tool
        return tool

    def get_tool(self, kind: MSC_TOOL | str) -> BaseTool:
        name = tool_name(kind)
        if name not in self._tools:
            raise MSCError(f"no {name} tool; call create_tool({name!r}, config) first")
        return self._tools[name]

    # -- building and running ---------------------------------------------------------
    def load_model(self, reuse_weights: bool = False) -> None:
        """(Re)build the model on the runner with every tool's current effect.

        ``reuse_weights`` keeps the weights the manager holds now (e.g. after
        ``update_weights``); otherwise the tools start from the source weights again.
        """
        if not reuse_weights:
            self.params = dict(self._source_params)
        # The manager calibrates and trains its tools in MSC's loop, so the context is
        # empty: each tool applies what it has (a distiller its quantizer's fake-quant).
        applied = apply_tools(self._source_graph, self.params, self._tools)
        graph, quant = applied.graph, applied.quant
        self.graph, self.params, self.quant = graph, dict(applied.params), quant
        self._watched = sorted({t for tool in self._tools.values() for t in tool.watched_tensors()})
        build_graph = graph.with_outputs(self._watched)
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


def _input_arrays(names: list[str], inputs: RunInputs, what: str) -> list[np.ndarray]:
    """``inputs`` (one array, a sequence, or a mapping by name) as numpy arrays in the order
    of ``names``; ``what`` names the model in errors."""
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise MSCError(f"run: missing inputs {missing} ({what} inputs: {names})")
        values = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray | torch.Tensor):
        values = [inputs]
    else:
        values = list(inputs)
    if len(values) != len(names):
        raise MSCError(f"run: got {len(values)} inputs, {what} takes {len(names)}")
    return [value.detach().cpu().numpy() if isinstance(value, torch.Tensor)
            else np.asarray(value) for value in values]


def _as_input_list(graph: MSCGraph, inputs: RunInputs) -> list[np.ndarray]:
    names = graph.input_names
    arrays = []
    for name, array in zip(names, _input_arrays(names, inputs, f"graph {graph.name!r}"),
                           strict=True):
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
    _calibration_loop(manager, quantizer, batches)
    return quantizer


def calibrate_tool(tool: BaseTool, batches: Sequence[Any], runner: str = "torch") -> None:
    """MSC's calibration loop for a tool made elsewhere (over its own graph): what
    :class:`~mscgym.tools.registry.ToolContext` ``calibrate`` does for the pipeline."""
    manager = RuntimeManager(tool.graph, tool.params, {"runner": runner})
    manager._tools[tool_name(tool.kind)] = tool
    _calibration_loop(manager, tool, batches)


def _calibration_loop(manager: RuntimeManager, tool: Any, batches: Sequence[Any]) -> None:
    manager.load_model()
    batches = _leading(manager.graph, batches, getattr(tool, "calibration_samples", None))
    while not tool.calibrated:
        for batch in batches:
            manager.run(batch)
        tool.calibrate()


def _leading(graph: MSCGraph, batches: Sequence[Any], samples: int | None) -> Sequence[Any]:
    """The first batches that hold ``samples`` samples (all of them for None): a tool
    that needs only a few (the pruner's recalibration) does not run the whole set."""
    if samples is None:
        return batches
    kept, seen = [], 0
    for batch in batches:
        if seen >= samples:
            break
        kept.append(batch)
        seen += len(_input_arrays(graph.input_names, batch, f"graph {graph.name!r}")[0])
    return kept


class ToolGroup:
    """One tool over the regions of a partitioned model: one strategy, keyed by the
    user's layer names, whichever region a layer landed in."""

    def __init__(self, kind: MSC_TOOL, tools: Mapping[str, BaseTool], model: str) -> None:
        self.kind = kind
        self.tools = dict(tools)
        self.model = model

    @property
    def calibrated(self) -> bool:
        return all(getattr(tool, "calibrated", True) for tool in self.tools.values())

    def calibrate(self) -> None:
        """One calibration pass in every region still calibrating."""
        for tool in self.tools.values():
            if not getattr(tool, "calibrated", True):
                tool.calibrate()

    def strategy(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for tool in self.tools.values():
            merged.update(tool.strategy())
        return merged

    def set_strategy(self, strategy: Mapping[str, Any]) -> None:
        """Hand each region the entries of the layers it holds; a layer in no region is
        an error naming it."""
        owners = layer_owners({region: tool.graph for region, tool in self.tools.items()},
                              strategy, f"{self.kind.value} strategy of {self.model!r}")
        for region, tool in self.tools.items():
            tool.set_strategy({k: v for k, v in strategy.items() if owners[k] == region})

    def quant_plan(self) -> QuantPlan:
        plan: QuantPlan = {}
        for tool in self.tools.values():
            plan.update(tool.quant_plan())
        return plan

    def save_strategy(self, path: str | os.PathLike[str]) -> str:
        """One strategy file for the whole model (the format a single tool writes)."""
        first = next(iter(self.tools.values()))
        document = {"tool": self.kind.value, "version": first.strategy_version,
                    "graph": self.model, "strategy": self.strategy()}
        atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True))
        return os.fspath(path)

    def load_strategy(self, path: str | os.PathLike[str]) -> None:
        document = read_json(path, MSCError, "strategy file")
        if not isinstance(document, dict) or document.get("tool") != self.kind.value or (
                not isinstance(document.get("strategy"), dict)):
            raise MSCError(f"strategy file {os.fspath(path)}: expected a {self.kind.value} "
                           "strategy ({'tool', 'version', 'graph', 'strategy'})")
        self.set_strategy(document["strategy"])


def layer_owners(graphs: Mapping[str, MSCGraph], layers: Sequence[str] | Mapping[str, Any],
                 where: str) -> dict[str, str]:
    """The region holding each of ``layers``; a layer no region holds, or one whose name
    two regions share (a node without a source name, e.g. an unnamed ``relu``), is an
    error naming it."""
    holders: dict[str, list[str]] = {}
    for region, graph in graphs.items():
        for node in graph.nodes:
            holders.setdefault(node.name, []).append(region)
    unknown = sorted(name for name in layers if name not in holders)
    if unknown:
        raise MSCError(f"{where}: layers {unknown} are in no region")
    shared = {name: holders[name] for name in layers if len(holders[name]) > 1}
    if shared:
        raise MSCError(f"{where}: layer names {shared} are in more than one region")
    return {name: holders[name][0] for name in layers}


class _Chain:
    """The partitioned model as ``profile_runner`` times it: one run = every segment."""

    name = "partitioned"

    def __init__(self, manager: PartitionedRuntimeManager) -> None:
        self.manager = manager
        self.device = manager.device
        self.target = f"{manager.runner_name}+tvm"

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.manager.run(inputs)

    def synchronize(self) -> None:
        for region in self.manager.regions.values():
            region.runner.synchronize()


class PartitionedRuntimeManager:
    """Runs a host module from ``msc_transform(..., target=...)``: each region (an
    MSCGraph) on the target runner through its own :class:`RuntimeManager`, the calls the
    target lacks on TVM (Relax VM on the CPU), tensors passed between them by DLPack where
    the memory allows it. Tools see one model: one tool over every region."""

    def __init__(self, host: tvm.IRModule, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.runner_name = str(self.config.get("runner", "tvm"))
        self.device = str(self.config.get("device", "cpu"))
        self.model = str(self.config.get("graph", "main"))
        self.host = host
        self.segments = segments_of(host)
        self.regions: dict[str, RuntimeManager] = {}
        for seg in self.segments:
            if seg.is_region:
                graph, params = from_relax(tvm.IRModule({"main": seg.func}),
                                           graph_name=f"{self.model}.{seg.name}")
                self.regions[seg.name] = RuntimeManager(graph, params, {
                    "runner": self.runner_name, "device": self.device,
                    "runner_options": self.config.get("runner_options", {})})
        self._host_funcs: dict[str, Any] = {}
        self._host_vms: dict[Any, Any] = {}
        self._tools: dict[MSC_TOOL, Any] = {}

    # -- what the partition did ------------------------------------------------------
    @property
    def graphs(self) -> list[MSCGraph]:
        return [manager.graph for manager in self.regions.values()]

    def partition_report(self) -> dict[str, Any]:
        """How many regions run on the target, and which ops fell back to TVM."""
        return {"target": self.runner_name, "regions": len(self.regions),
                "host_segments": sum(not seg.is_region for seg in self.segments),
                "order": [f"{seg.name}:{seg.target}" for seg in self.segments],
                "fallback_ops": fallback_ops(self.host)}

    # -- tools ------------------------------------------------------------------------
    def create_tool(self, kind: MSC_TOOL | str, config: Mapping[str, Any] | None = None
                    ) -> Any:
        """One tool of ``kind`` over every region: a :class:`ToolGroup` for quantize and
        collect (per-layer entries of the config go to the region holding the layer), a
        :class:`~mscgym.tools.pruner.PartitionPruner` for prune (channel groups followed
        through the host calls), a
        :class:`~mscgym.tools.region_distiller.PartitionDistiller` for distill (the whole
        model trained end to end, gradients through the host calls by TVM)."""
        kind = MSC_TOOL(kind)
        if kind is MSC_TOOL.PRUNE:
            return self._create_pruner(config)
        if kind is MSC_TOOL.DISTILL:
            return self._create_distiller(config)
        config = dict(config or {})
        layers = dict(config.pop("layers", {}) or {})
        owners = layer_owners({name: m.graph for name, m in self.regions.items()}, layers,
                              f"{kind.value} config of {self.model!r}")
        tools = {}
        for name, manager in self.regions.items():
            own = {k: v for k, v in layers.items() if owners[k] == name}
            tools[name] = manager.create_tool(kind, {**config, **({"layers": own} if own else {})})
        self._tools[kind] = ToolGroup(kind, tools, self.model)
        return self._tools[kind]

    def _create_pruner(self, config: Mapping[str, Any] | None) -> Any:
        from mscgym.tools.pruner import PartitionPruner, RegionPrune

        sources = {name: (m._source_graph, m._source_params) for name, m in self.regions.items()}
        plan = PartitionPruner(stitch(self.host, sources, self.model), dict(config or {}))
        for name, manager in self.regions.items():
            graph, params = sources[name]
            manager._tools[MSC_TOOL.PRUNE] = RegionPrune(plan, name, graph, params)
        self._tools[MSC_TOOL.PRUNE] = plan
        return plan

    def _create_distiller(self, config: Mapping[str, Any] | None) -> Any:
        from mscgym.tools.region_distiller import PartitionDistiller, RegionDistill, RegionModel

        sources = {name: (m._source_graph, m._source_params) for name, m in self.regions.items()}
        students, quant = {}, {}
        for name, manager in self.regions.items():
            graph, params = sources[name]
            quant[name] = {}
            for kind in (MSC_TOOL.PRUNE, MSC_TOOL.QUANTIZE):  # the tools before distill
                tool = manager._tools.get(kind)
                if tool is not None:
                    graph, params = tool.transform(graph, params)
                    quant[name].update(tool.quant_plan())
            students[name] = (graph, params)
        student = RegionModel(stitch(self.host, students, self.model),
                              {name: graph for name, (graph, _) in students.items()}, quant,
                              self._host_functions())
        teacher = RegionModel(stitch(self.host, sources, self.model),
                              {name: graph for name, (graph, _) in sources.items()}, {},
                              {s.name: s.func for s in self.segments if not s.is_region})
        distiller = PartitionDistiller(self.host["main"], student, teacher, dict(config or {}))
        for name, manager in self.regions.items():
            graph, params = students[name]
            manager._tools[MSC_TOOL.DISTILL] = RegionDistill(distiller, name, graph, params)
        self._tools[MSC_TOOL.DISTILL] = distiller
        return distiller

    def _host_functions(self) -> dict[str, relax.Function]:
        """Each host segment's function, re-inferred for the shapes pruning leaves."""
        pruner = self._tools.get(MSC_TOOL.PRUNE)
        return {seg.name: seg.func if pruner is None
                else retype(seg.func, pruner.host_shapes(seg.name))
                for seg in self.segments if not seg.is_region}

    def get_tool(self, kind: MSC_TOOL | str) -> Any:
        kind = MSC_TOOL(kind)
        if kind not in self._tools:
            raise MSCError(f"no {kind.value} tool; call create_tool({kind.value!r}, config) first")
        return self._tools[kind]

    @property
    def quant(self) -> QuantPlan:
        plan: QuantPlan = {}
        for manager in self.regions.values():
            plan.update(manager.quant)
        return plan

    # -- building and running ---------------------------------------------------------
    def load_model(self, reuse_weights: bool = False) -> None:
        """Build every region on the target (with the tools' effect) and the host
        segments on TVM (again only when pruning changed the shapes they take)."""
        for manager in self.regions.values():
            manager.load_model(reuse_weights)
        self._host_funcs = {}
        for name, func in self._host_functions().items():
            func = func.with_attr("global_symbol", "main")
            key = (name, tuple(str(param.ty) for param in func.params))
            if key not in self._host_vms:
                executable = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
                self._host_vms[key] = relax.VirtualMachine(executable, tvm.cpu())
            self._host_funcs[name] = key
        logger.debug("built %d regions on %s and %d host segments on tvm", len(self.regions),
                     self.runner_name, len(self._host_vms))

    def run(self, inputs: RunInputs) -> list[np.ndarray]:
        """Run the model: each segment in order, values passed between them."""
        main = self.host["main"]
        arrays = _host_inputs(main, inputs)
        env: dict[Any, Any] = dict(zip(main.params, arrays, strict=True))
        for block in main.body.blocks:
            for binding in block.bindings:
                env[binding.var] = self._evaluate(binding.value, env)
        result = host_value(main.body.body, env, "partitioned run")
        values = list(result) if isinstance(result, tuple) else [result]
        return [np.asarray(v) for v in values]

    def _evaluate(self, value: relax.Expr, env: Mapping[Any, Any]) -> Any:
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
            name = value.op.name_hint
            args = [host_value(a, env, "partitioned run") for a in value.args]
            returns_tuple = isinstance(self.host[value.op].ret_ty, relax.TupleType)
            if name in self.regions:
                outputs = self.regions[name].run([np.asarray(a) for a in args])
                return tuple(outputs) if returns_tuple else outputs[0]
            out = self._host_vms[self._host_funcs[name]]["main"](*[_to_tvm(a) for a in args])
            return tuple(_from_tvm(o) for o in out) if returns_tuple else _from_tvm(out)
        return host_value(value, env, "partitioned run")

    def profile(self, repeat: int = 100, warmup: int = 10, batch: int = 1,
                inputs: RunInputs | None = None) -> LatencyStats:
        """Latency of one run of the whole model (every region and host segment)."""
        main = self.host["main"]
        arrays = (_host_inputs(main, inputs) if inputs is not None
                  else _example_host_inputs(main, batch))
        return profile_runner(cast(BaseRunner, _Chain(self)), arrays, repeat=repeat,
                              warmup=warmup)

    def export(self, folder: str | os.PathLike[str]) -> list[str]:
        """One file per region graph (JSON + safetensors weights), the host module as
        TVMScript, and each region's built artifact."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        written = [self._write_host(folder)]
        suffix = {"tvm": ".so", "onnxruntime": ".onnx", "tensorrt": ".onnx",
                  "torch": ".safetensors"}[self.runner_name]
        for manager in self.regions.values():
            path = os.path.join(folder, f"{manager.graph.name}.json")
            manager.graph.export(path, params=manager.params)
            written.append(path)
            written.append(manager.export(os.path.join(folder, manager.graph.name + suffix)))
        return written

    def visualize(self, folder: str | os.PathLike[str], fmt: str = "prototxt") -> list[str]:
        """One drawing per region graph (``prototxt`` or ``dot``) plus the host as
        TVMScript, which shows where each region is called."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        written = [self._write_host(folder)]
        for graph in self.graphs:
            path = os.path.join(folder, f"{graph.name}.{fmt}")
            graph.visualize(path)
            written.append(path)
        return written

    def _write_host(self, folder: str) -> str:
        path = os.path.join(folder, f"{self.model}.host.py")
        atomic_write_text(path, self.host.script(show_meta=False))
        return path


def _to_tvm(array: np.ndarray) -> tvm.runtime.Tensor:
    """A TVM tensor over ``array``'s memory when TVM can take it (C-contiguous, 64-byte
    aligned), else a copy."""
    array = np.ascontiguousarray(array)
    if array.ctypes.data % 64 == 0:
        return tvm.runtime.from_dlpack(array)
    return tvm.runtime.tensor(array)


def _from_tvm(tensor: tvm.runtime.Tensor) -> np.ndarray:
    """A numpy view of a TVM CPU tensor (DLPack, no copy)."""
    return np.from_dlpack(tensor)


def _host_inputs(main: relax.Function, inputs: RunInputs) -> list[np.ndarray]:
    names = [p.name for p in main.params]
    arrays = _input_arrays(names, inputs, "the model")
    return [np.ascontiguousarray(array, dtype=str(param.ty.dtype))
            for param, array in zip(main.params, arrays, strict=True)]


def _example_host_inputs(main: relax.Function, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = []
    for param in main.params:
        shape = [int(d) if isinstance(d, tvm.tirx.IntImm) else batch for d in param.ty.shape]
        arrays.append(rng.standard_normal(shape).astype(str(param.ty.dtype)))
    return arrays
