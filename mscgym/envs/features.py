"""Per-dimension observation features, as AMC and HAQ describe a layer to an agent."""

from __future__ import annotations

import math

import numpy as np

from mscgym.compiler.analysis import graph_costs
from mscgym.tasks.task import Task

FEATURES = (
    "position", "is_conv", "is_depthwise", "is_linear", "is_prune", "is_quantize", "is_distill",
    "in_channels", "out_channels", "kernel", "stride", "flops_share", "params_share",
    "sensitivity", "previous_action",
)
"""Names of the observation vector's entries, all scaled into [0, 1]."""


def _log_scale(value: float) -> float:
    return min(math.log2(value + 1.0) / 12.0, 1.0)


def layer_features(task: Task) -> np.ndarray:
    """A (len(space), len(FEATURES)) float32 table; ``previous_action`` is left 0.

    Layer shape features come from the graph, costs from the FLOPs analysis, and
    sensitivity from quantizing one layer at a time (normalized to the worst layer).
    """
    graph = task.graph
    costs = {c.name: c for c in graph_costs(graph)}
    total_flops = max(sum(c.flops for c in costs.values()), 1)
    total_params = max(sum(c.params for c in costs.values()), 1)
    sensitivity = task.sensitivity()
    worst = max(sensitivity.values(), default=0.0) or 1.0
    dims = list(task.space)
    table = np.zeros((len(dims), len(FEATURES)), dtype=np.float32)
    for row, dim in enumerate(dims):
        values = dict.fromkeys(FEATURES, 0.0)
        values["position"] = row / max(len(dims) - 1, 1)
        values[f"is_{dim.tool}"] = 1.0
        if dim.target in graph:
            node = graph.find_node(dim.target)
            weight = node.weights.get("weight")
            if weight is not None and len(weight.shape) == 4:
                groups = int(node.attrs.get("groups", 1))
                values["is_depthwise" if groups > 1 else "is_conv"] = 1.0
                values["in_channels"] = _log_scale(int(weight.shape[1]) * groups)
                values["out_channels"] = _log_scale(int(weight.shape[0]))
                values["kernel"] = min(int(weight.shape[2]) / 7.0, 1.0)
                values["stride"] = min(int(node.attrs.get("strides", [1])[0]) / 4.0, 1.0)
            elif weight is not None:
                values["is_linear"] = 1.0
                values["in_channels"] = _log_scale(int(weight.shape[1]))
                values["out_channels"] = _log_scale(int(weight.shape[0]))
            cost = costs.get(node.name)
            if cost is not None:
                values["flops_share"] = cost.flops / total_flops
                values["params_share"] = cost.params / total_params
            values["sensitivity"] = sensitivity.get(node.name, 0.0) / worst
        table[row] = [min(max(values[f], 0.0), 1.0) for f in FEATURES]
    return table
