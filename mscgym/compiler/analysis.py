"""Per-layer cost of an MSCGraph: parameter counts, MACs and FLOPs.

The numbers feed ``mscgym inspect`` and the size/compute terms of compression scores,
so they follow the usual conventions: a multiply-accumulate (conv, linear, matmul)
counts as 2 FLOPs, a bias add as 1 per output, an elementwise op as 1 per output,
pooling and reductions as 1 per element read, inference batch norm as 2 per element
(scale and shift), layer norm as 5 and softmax as 3 per element; a transposed conv
counts the MACs of scattering each input element over its kernel; a linear resize 7 per
output element (four taps weighted and summed), a cubic one 31 (sixteen taps); layout
ops (reshape, permute, concat, stack, pad, slices, casts, nearest resize) move data and
cost nothing. Symbolic batch dims are
resolved by the ``batch`` argument, so costs are per ``batch`` samples.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mscgym.compiler.dims import eval_dim
from mscgym.compiler.errors import GraphError, MSCError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, LAYOUT, REDUCE

_ELEMENTWISE = frozenset((*ELEMENTWISE_UNARY, *ELEMENTWISE_BINARY, "clip"))
_FREE = frozenset((*LAYOUT, "astype", "input", "nn.pad"))
_READS_INPUT = frozenset((*REDUCE, "nn.adaptive_avg_pool2d"))
_WINDOWED = frozenset(("nn.max_pool2d", "nn.avg_pool2d", "nn.avg_pool3d"))
_RESIZE_FLOPS = {"nearest_neighbor": 0, "linear": 7, "cubic": 31}
_PER_ELEMENT = {"nn.batch_norm": 2, "msc.batch_norm": 2, "nn.layer_norm": 5, "nn.softmax": 3,
                "nn.log_softmax": 3}
_CONV = frozenset(("nn.conv2d", "msc.conv2d_bias"))
_CONV_TRANSPOSE = frozenset(("nn.conv2d_transpose", "msc.conv2d_transpose_bias"))
_LINEAR = frozenset(("msc.linear", "msc.linear_bias"))
_MAC_OPS = _CONV | _CONV_TRANSPOSE | _LINEAR | {"matmul"}


@dataclass(frozen=True)
class LayerCost:
    """What one node stores and computes, for ``batch`` samples."""

    name: str
    optype: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int


def resolve_symbols(graph: MSCGraph, batch: int = 1) -> dict[str, int]:
    """Values of the graph's symbolic dims: a graph input's symbolic leading dim is ``batch``."""
    if type(batch) is not int or batch < 1:
        raise MSCError(f"batch must be an integer >= 1, got {batch!r}")
    return {t.shape[0]: batch for t in graph.get_inputs()
            if t.shape and isinstance(t.shape[0], str)}


def resolve_shape(tensor: MSCTensor, symbols: Mapping[str, int], node: str) -> tuple[int, ...]:
    """The tensor's shape with symbolic dims (names or expressions such as ``s0 * 8``) valued."""

    def value(name: str) -> int:
        if name not in symbols:
            raise MSCError(f"node {node!r}: tensor {tensor.name!r} has symbolic dim {name!r}, "
                           "which is not a graph input's batch dim; its cost is unknown")
        return symbols[name]

    return tuple(int(eval_dim(dim, value)) for dim in tensor.shape)


def node_params(node: MSCNode) -> int:
    """Elements stored in the node's weights (scalar constants included)."""
    return sum(t.numel() for t in node.weights.values())


def _operand_shapes(graph: MSCGraph, node: MSCNode, symbols: Mapping[str, int]) -> list[tuple]:
    """Shapes of a primitive node's call operands in order (inputs and constant weights)."""
    shapes = []
    for arg in node.args:
        if arg["kind"] == "input":
            tensor = graph.find_tensor(node.inputs[arg["index"]])
            shapes.append(resolve_shape(tensor, symbols, node.name))
        elif arg["kind"] == "weight":
            shapes.append(tuple(node.weights[arg["role"]].shape))
    return shapes


def _macs(graph: MSCGraph, node: MSCNode, out_elems: int, symbols: Mapping[str, int]) -> int:
    """Multiply-accumulates of the ops that have them (0 for every other op)."""
    if node.optype in _CONV | _CONV_TRANSPOSE:
        # The kernel is a constant weight or, when computed, the call's second operand.
        if "weight" in node.weights:
            kernel = node.weights["weight"].shape
        else:
            kernel = _operand_shapes(graph, node, symbols)[1]
        layout = node.attrs.get("kernel_layout", "OIHW")
        if node.optype in _CONV:
            # Each output element sums over (in_channels / groups) * kernel_h * kernel_w.
            return out_elems * (math.prod(kernel) // kernel[layout.index("O")])
        # Each input element is scattered over (out_channels / groups) * kernel_h * kernel_w.
        source = resolve_shape(graph.find_tensor(node.inputs[0]), symbols, node.name)
        return math.prod(source) * (math.prod(kernel) // kernel[layout.index("I")])
    if node.optype in _LINEAR:
        return out_elems * node.weights["weight"].shape[1]
    if node.optype == "matmul":
        left = _operand_shapes(graph, node, symbols)[0]
        return out_elems * left[-1]
    return 0


def layer_cost(graph: MSCGraph, node: MSCNode, symbols: Mapping[str, int]) -> LayerCost:
    """Parameters, MACs and FLOPs of ``node`` with symbolic dims valued by ``symbols``."""
    optype = node.optype
    out_shape = resolve_shape(node.output, symbols, node.name)
    out_elems = sum(math.prod(resolve_shape(t, symbols, node.name)) for t in node.outputs)
    macs = _macs(graph, node, out_elems, symbols)
    if optype in _MAC_OPS:
        flops = 2 * macs + (out_elems if "bias" in node.weights else 0)
    elif optype in _ELEMENTWISE:
        flops = out_elems
    elif optype in _READS_INPUT:
        flops = math.prod(resolve_shape(graph.find_tensor(node.inputs[0]), symbols, node.name))
    elif optype in _WINDOWED:
        flops = out_elems * math.prod(node.attrs["pool_size"])
    elif optype == "image.resize2d" and node.attrs.get("method") in _RESIZE_FLOPS:
        flops = out_elems * _RESIZE_FLOPS[node.attrs["method"]]
    elif optype in _PER_ELEMENT:
        flops = out_elems * _PER_ELEMENT[optype]
    elif optype in _FREE:
        flops = 0
    else:
        raise UnsupportedOpError(optype, node.name, "analysis (no cost model)")
    return LayerCost(node.name, optype, out_shape, node_params(node), macs, flops)


def _nbytes(tensor: MSCTensor) -> int:
    """Storage of a weight; sub-byte dtypes (int4) are packed."""
    width = re.match(r"[a-z]+?(\d+)", tensor.dtype)
    bits = 8 if tensor.dtype == "bool" else int(width.group(1)) if width else 0
    if not bits:
        raise MSCError(f"weight {tensor.name!r} has dtype {tensor.dtype!r} of unknown width")
    return math.ceil(tensor.numel() * bits / 8)


def graph_costs(graph: MSCGraph, batch: int = 1) -> list[LayerCost]:
    """The cost of every node but the inputs, in graph order."""
    symbols = resolve_symbols(graph, batch)
    return [layer_cost(graph, n, symbols) for n in graph.nodes if n.optype != "input"]


def graph_summary(
    graph: MSCGraph, params: Mapping[str, Any] | None = None, batch: int = 1
) -> dict[str, Any]:
    """Inputs, outputs, op-type counts, per-layer costs and totals, as plain JSON data.

    With ``params`` (weight name -> array, matching the graph) the totals also count the
    nonzero weights, which is what pruning and sparsity change.
    """
    layers = graph_costs(graph, batch)
    weight_tensors = graph.weight_tensors()
    totals: dict[str, Any] = {
        "nodes": len(layers),
        "params": sum(layer.params for layer in layers),
        "weight_bytes": sum(_nbytes(t) for t in weight_tensors.values()),
        "macs": sum(layer.macs for layer in layers),
        "flops": sum(layer.flops for layer in layers),
    }
    if params is not None:
        missing = sorted(set(weight_tensors) - set(params))
        if missing:
            raise GraphError(f"graph {graph.name!r}: params lack weights {missing}")
        totals["nonzero_params"] = sum(int(np.count_nonzero(np.asarray(params[name])))
                                       for name in weight_tensors)
    return {
        "name": graph.name,
        "batch": batch,
        "inputs": [t.to_json() for t in graph.get_inputs()],
        "outputs": [t.to_json() for t in graph.get_outputs()],
        "optypes": dict(sorted(Counter(layer.optype for layer in layers).items())),
        "layers": [{**asdict(layer), "output_shape": list(layer.output_shape)}
                   for layer in layers],
        "totals": totals,
    }
