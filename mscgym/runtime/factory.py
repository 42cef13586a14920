"""``create_runtime_manager``: a RuntimeManager for a Relax module or an MSCGraph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tvm

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import from_relax
from mscgym.compiler.partition import is_partitioned
from mscgym.compiler.transform import placeholder_names
from mscgym.runtime.manager import PartitionedRuntimeManager, RuntimeManager
from mscgym.runtime.registry import DEVICES, runner_class

CONFIG_KEYS = ("runner", "device", "runner_options", "entry", "graph")


def create_runtime_manager(
    model: tvm.IRModule | MSCGraph,
    params: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> RuntimeManager | PartitionedRuntimeManager:
    """A RuntimeManager for a Relax module (as ``msc_transform`` returns it) or an MSCGraph.

    For a module, ``params`` binds the parameters of ``config["entry"]`` that are still
    unbound (``relax.frontend.detach_params`` output, or name -> tvm, numpy or torch
    tensors); the params of a module whose weights are already bound are not needed and
    are ignored, so ``create_runtime_manager(optimized_mod, params, msc_config)`` works
    as MSC wrote it. For an MSCGraph, ``params`` are its weights (graph naming).
    """
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise MSCError(f"runtime config: unknown keys {unknown}; expected {list(CONFIG_KEYS)}")
    runner_class(str(config.get("runner", "tvm")))
    device = config.get("device", "cpu")
    if device not in DEVICES:
        raise MSCError(f"runtime config: device {device!r} is not one of {list(DEVICES)}")
    if isinstance(model, MSCGraph):
        if params is None and model.weight_tensors():
            raise MSCError(f"create_runtime_manager: graph {model.name!r} has weights; pass "
                           "its params")
        return RuntimeManager(model, dict(params or {}), config)
    if not isinstance(model, tvm.IRModule):
        raise MSCError(f"create_runtime_manager: expected a tvm.IRModule or an MSCGraph, got "
                       f"{type(model).__name__}")
    if is_partitioned(model):  # msc_transform(..., target=...): regions + TVM host
        return PartitionedRuntimeManager(model, config)
    entry = str(config.get("entry", "main"))
    unbound = _unbound(model, entry, params)
    # the weights get the names msc_transform gives them (torch.export placeholders read back)
    names = (placeholder_names(model[entry]) if unbound
             and entry in [gv.name_hint for gv in model.get_global_vars()] else None)
    graph, graph_params = from_relax(model, unbound, entry_name=entry, names=names)
    return RuntimeManager(graph, graph_params, config)


def _unbound(mod: tvm.IRModule, entry: str, params: Mapping[str, Any] | None) -> Any:
    """``params`` unless none of them is still a parameter of ``mod[entry]``."""
    if not params or entry not in [gv.name_hint for gv in mod.get_global_vars()]:
        return params
    func = mod[entry]
    if all(isinstance(v, list | tuple) for v in params.values()):  # detach_params output
        num_input = int(func.attrs["num_input"]) if func.attrs is not None and (
            "num_input" in func.attrs) else len(func.params)
        return params if len(func.params) > num_input else None
    names = {p.name for p in func.params}
    return params if names & set(params) else None
