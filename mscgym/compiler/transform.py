"""``msc_transform``: the entry point MSC's users start from.

It normalizes a Relax module (weights bound as named constants, batch norm folded,
weight layout ops folded), translates it to an MSCGraph and proposes a config for
``create_runtime_manager`` that the user can edit (runner, device). Given a ``target``,
it splits the module where the target lacks ops (:mod:`mscgym.compiler.partition`):
one MSCGraph per region the target runs, the rest left to TVM in the host module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tvm

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
    tensor); ``names`` gives their framework names (e.g. torch state_dict keys), which
    name the graph's nodes. ``optimized_mod`` has the weights bound.

    With ``target`` (a runner name), the module is partitioned for it:
    ``optimized_mod`` is the host module (one function per region or TVM segment,
    ``main`` calling them in order), ``msc_graph`` the list of region MSCGraphs, and the
    config names ``target`` as the runner; ``create_runtime_manager`` runs the whole.
    """
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
