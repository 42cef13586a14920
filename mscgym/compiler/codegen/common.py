"""What every codegen shares: weight lookup checked against the graph's declaration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mscgym.compiler.errors import GraphError
from mscgym.compiler.graph import MSCGraph, MSCNode


def weight_value(
    graph: MSCGraph, node: MSCNode, role: str, params: Mapping[str, Any]
) -> np.ndarray:
    """The value of weight ``role`` of ``node`` as numpy, checked against its declared shape.

    ``params`` may hold numpy arrays, torch tensors or TVM tensors: every codegen takes
    the weights in whatever form the user has them.
    """
    tensor = node.weights.get(role)
    if tensor is None:
        raise GraphError(f"node {node.name!r} ({node.optype}) has no weight {role!r}; "
                         f"it has {sorted(node.weights)}")
    if tensor.name not in params:
        raise GraphError(f"graph {graph.name!r}: no value for weight {tensor.name!r} "
                         f"of node {node.name!r}")
    value = params[tensor.name]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    data = np.asarray(value)
    if tuple(data.shape) != tuple(tensor.shape):
        raise GraphError(f"weight {tensor.name!r} of node {node.name!r} has shape "
                         f"{tuple(data.shape)}, the graph says {tuple(tensor.shape)}")
    return data
