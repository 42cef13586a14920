"""``msc_transform``: the entry point MSC's users start from.

It normalizes a Relax module (weights bound as named constants, batch norm folded,
weight layout ops folded), translates it to an MSCGraph and proposes a config for
``create_runtime_manager`` that the user can edit (runner, device).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tvm

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import from_relax
from mscgym.compiler.normalize import ParamValue, normalize


def msc_transform(
    mod: tvm.IRModule,
    params: Mapping[str, ParamValue] | None = None,
    entry_name: str = "main",
    names: Mapping[str, str] | None = None,
) -> tuple[tvm.IRModule, MSCGraph, dict[str, Any]]:
    """Return ``(optimized_mod, msc_graph, msc_config)`` for ``mod[entry_name]``.

    ``params`` binds function parameters (by name) as weights; ``names`` gives their
    framework names (e.g. torch state_dict keys), which name the graph's nodes.
    ``optimized_mod`` has the weights bound, so it needs no params any more.
    """
    optimized = normalize(mod, params, entry_name, names)
    graph, _ = from_relax(optimized, entry_name=entry_name)
    config = {"runner": "tvm", "device": "cpu", "entry": entry_name, "graph": graph.name}
    return optimized, graph, config
