"""``msc_transform``: the entry point MSC's users start from.

It normalizes a Relax module (weights bound as named constants, batch norm folded,
weight layout ops folded), translates it to an MSCGraph and proposes a config for
``create_runtime_manager`` that the user can edit (runner, device). Given a ``target``,
it splits the module where the target lacks ops (:mod:`mscgym.compiler.partition`):
one MSCGraph per region the target runs, the rest left to TVM in the host module.

Layer names: the nodes are named after their weights' source names. A module from
TVM's ``from_exported_program`` carries no spans, only torch.export's placeholder names
(``p_conv1_weight`` for ``conv1.weight``, ``b_`` for buffers), so without ``names`` the
placeholders are read back to ``conv1.weight`` (node ``conv1``). Dots inside the module
path are underscores there too (``p_layer1_0_conv1_weight`` -> ``layer1_0_conv1``);
the exact path needs ``names`` (:func:`exported_names`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import tvm
from tvm import relax

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import from_relax
from mscgym.compiler.normalize import normalize
from mscgym.compiler.partition import partition, segments_of


def msc_transform(
    mod: tvm.IRModule,
    params: Mapping[str, Any] | None = None,
    entry_name: str = "main",
    names: Mapping[str, str] | None = None,
    target: str | None = None,
) -> tuple[tvm.IRModule, MSCGraph | list[MSCGraph], dict[str, Any]]:
    """Return ``(optimized_mod, msc_graph, msc_config)`` for ``mod[entry_name]``.

    ``params`` binds the weights, in any form TVM users hold them
    (``relax.frontend.detach_params`` output, or parameter name -> tvm, numpy or torch
    tensor); ``names`` gives their framework names (e.g. torch state_dict keys, see
    :func:`exported_names`), which name the graph's nodes; without it torch.export's
    placeholder names are read back (:func:`placeholder_names`). ``optimized_mod`` has
    the weights bound.

    With ``target`` (a runner name), the module is partitioned for it:
    ``optimized_mod`` is the host module (one function per region or TVM segment,
    ``main`` calling them in order), ``msc_graph`` the list of region MSCGraphs, and the
    config names ``target`` as the runner; ``create_runtime_manager`` runs the whole.
    """
    if names is None and entry_name in [gv.name_hint for gv in mod.get_global_vars()]:
        names = placeholder_names(mod[entry_name])
    optimized = normalize(mod, params, entry_name, names)
    if target is None:
        graph, _ = from_relax(optimized, entry_name=entry_name)
        config = {"runner": "tvm", "device": "cpu", "entry": entry_name, "graph": graph.name}
        return optimized, graph, config
    host = partition(optimized, target, entry_name)
    graphs = [from_relax(tvm.IRModule({"main": seg.func}),
                         graph_name=f"{entry_name}.{seg.name}")[0]
              for seg in segments_of(host) if seg.is_region]
    device = "cuda" if target == "tensorrt" else "cpu"  # TensorRT runs on CUDA only
    config = {"runner": target, "device": device, "entry": "main", "graph": entry_name}
    return host, graphs, config


_PLACEHOLDER = re.compile(
    r"^[pb]_(?P<owner>.+)_(?P<role>weight|bias|running_mean|running_var|gamma|beta)$")


def placeholder_names(func: relax.Function) -> dict[str, str]:
    """Source names of the weight parameters torch.export named (``p_<path>_<role>`` for
    parameters, ``b_`` for buffers): ``p_conv1_weight`` -> ``conv1.weight``. Other
    parameters keep their own names."""
    num_input = (int(func.attrs["num_input"]) if func.attrs is not None
                 and "num_input" in func.attrs else 0)
    names = {}
    for param in func.params[num_input:]:
        match = _PLACEHOLDER.match(param.name)
        if match:
            names[param.name] = f"{match['owner']}.{match['role']}"
    return names


def exported_names(exported: Any) -> dict[str, str]:
    """The exact source names of a ``torch.export.ExportedProgram``'s weight parameters
    (placeholder -> state_dict key), to pass as ``msc_transform(..., names=...)``."""
    return {spec.arg.name: spec.target for spec in exported.graph_signature.input_specs
            if spec.target is not None}
