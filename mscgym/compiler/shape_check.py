"""Check what a graph declares against what its ops compute, node by node.

A graph file declares every tensor's shape and dtype, and the codegens trust those
declarations (FLOP counts, buffer sizes, reshape targets come from them). A hand-edited
or tampered file could declare a conv output of ``[N, 16, 10**12, 10**12]`` or 33
output channels over 32-channel weights, and nothing would notice until a framework
failed deep inside (or silently computed something else). :func:`check_graph` infers
the output shape of every conv, pool, linear and shape-preserving elementwise node from
its inputs, weights and attributes, checks attribute types, and raises a
:class:`GraphError` naming the node and what was expected. Symbolic dims (the batch)
are compared by name; a dim that cannot be known here is not compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from mscgym.compiler.dims import Dim
from mscgym.compiler.errors import GraphError
from mscgym.compiler.graph import MSCGraph, MSCNode

CONV = ("nn.conv2d", "msc.conv2d_bias")
POOL = ("nn.max_pool2d", "nn.avg_pool2d")
LINEAR = ("msc.linear", "msc.linear_bias")
SAME_SHAPE = ("nn.relu", "clip", "sigmoid", "tanh", "nn.gelu", "nn.silu", "nn.softmax",
              "nn.log_softmax", "exp", "sqrt", "negative", "abs", "erf", "nn.gelu_tanh")
"""Ops whose output has the shape and dtype of their (first) input."""

_INT_LISTS = {"strides": (1, 2), "dilation": (1, 2), "padding": (0, (2, 4)),
              "pool_size": (1, 2), "output_padding": (0, 2)}
"""Attribute -> (smallest allowed item, allowed lengths) for the 2-D ops' int lists."""


def _is_int(value: Any) -> bool:
    return type(value) is int


def check_attrs(node: MSCNode) -> None:
    """Types of the attributes the 2-D ops read: int lists, ``groups``, ``ceil_mode``."""
    for key, (least, lengths) in _INT_LISTS.items():
        if key not in node.attrs:
            continue
        value = node.attrs[key]
        sizes = lengths if isinstance(lengths, tuple) else (lengths,)
        if (not isinstance(value, list) or len(value) not in sizes
                or not all(_is_int(v) and v >= least for v in value)):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{value!r}, expected a list of {' or '.join(map(str, sizes))} "
                             f"integers >= {least}")
    if "groups" in node.attrs and not (_is_int(node.attrs["groups"]) and node.attrs["groups"] >= 1):
        raise GraphError(f"node {node.name!r} ({node.optype}): attribute 'groups' is "
                         f"{node.attrs['groups']!r}, expected an integer >= 1")
    for key in ("ceil_mode", "count_include_pad"):
        if key in node.attrs and not isinstance(node.attrs[key], bool):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{node.attrs[key]!r}, expected true or false")
    for key in ("data_layout", "kernel_layout", "layout", "out_layout", "out_dtype"):
        # out_dtype None is Relax's "the input's dtype" (TVM's ONNX importer writes it)
        if key in node.attrs and not isinstance(node.attrs[key], str) and not (
                key == "out_dtype" and node.attrs[key] is None):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{node.attrs[key]!r}, expected a string")


def _pads(padding: list[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from Relax's 2- or 4-item padding."""
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    return padding[0], padding[1], padding[2], padding[3]


def _window(size: Dim, kernel: int, stride: int, dilation: int, before: int, after: int,
            ceil_mode: bool = False) -> Dim | None:
    """Output length of a sliding window (None when ``size`` is symbolic)."""
    if not _is_int(size):
        return None
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0:
        return -1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1  # the last window must start inside the input or its leading padding
    return out


def _compare(node: MSCNode, what: str, declared: tuple[Dim, ...],
             expected: list[Dim | None]) -> None:
    if len(declared) != len(expected):
        raise GraphError(f"node {node.name!r} ({node.optype}): {what} has rank "
                         f"{len(declared)} {list(declared)}, expected rank {len(expected)}")
    for axis, (have, want) in enumerate(zip(declared, expected, strict=True)):
        if want is None or (_is_int(have) != _is_int(want)):
            continue  # unknown here, or one side symbolic: cannot compare
        if have != want:
            shown = ["?" if w is None else w for w in expected]
            raise GraphError(f"node {node.name!r} ({node.optype}): {what} is {list(declared)}, "
                             f"but its inputs, weights and attributes give {shown} "
                             f"(axis {axis})")


def _nchw(node: MSCNode, shape: tuple[Dim, ...], what: str) -> tuple[Dim, ...]:
    if len(shape) != 4:
        raise GraphError(f"node {node.name!r} ({node.optype}): {what} is {list(shape)}, "
                         "expected a 4-D NCHW tensor")
    return shape


def _conv(graph: MSCGraph, node: MSCNode) -> None:
    if (node.attrs.get("data_layout", "NCHW"), node.attrs.get("kernel_layout", "OIHW")) != (
            "NCHW", "OIHW") or "weight" not in node.weights:
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    weight = node.weights["weight"].shape
    if len(weight) != 4:
        raise GraphError(f"node {node.name!r} ({node.optype}): weight is {list(weight)}, "
                         "expected 4-D OIHW")
    out_c, in_per_group, kh, kw = weight
    groups = node.attrs.get("groups", 1)
    if _is_int(c) and c != in_per_group * groups:
        raise GraphError(f"node {node.name!r} ({node.optype}): input has {c} channels, but "
                         f"the weight {list(weight)} with groups={groups} reads "
                         f"{in_per_group * groups}")
    if out_c % groups:
        raise GraphError(f"node {node.name!r} ({node.optype}): {out_c} output channels do "
                         f"not divide into groups={groups}")
    if "bias" in node.weights:
        _compare(node, "bias", node.weights["bias"].shape, [out_c])
    strides = node.attrs.get("strides", [1, 1])
    dilation = node.attrs.get("dilation", [1, 1])
    top, left, bottom, right = _pads(node.attrs.get("padding", [0, 0, 0, 0]))
    expected = [n, out_c, _window(h, kh, strides[0], dilation[0], top, bottom),
                _window(w, kw, strides[1], dilation[1], left, right)]
    _compare(node, "output", node.output.shape, expected)


def _pool(graph: MSCGraph, node: MSCNode) -> None:
    if node.attrs.get("layout", "NCHW") != "NCHW":
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    kh, kw = node.attrs.get("pool_size", [1, 1])
    strides = node.attrs.get("strides", [1, 1])
    dilation = node.attrs.get("dilation", [1, 1])
    top, left, bottom, right = _pads(node.attrs.get("padding", [0, 0, 0, 0]))
    ceil = bool(node.attrs.get("ceil_mode", False))
    expected = [n, c, _window(h, kh, strides[0], dilation[0], top, bottom, ceil),
                _window(w, kw, strides[1], dilation[1], left, right, ceil)]
    _compare(node, "output", node.output.shape, expected)


def _linear(graph: MSCGraph, node: MSCNode) -> None:
    if "weight" not in node.weights or node.weights["weight"].layout not in ("OI", ""):
        return
    data = graph.node_inputs(node)[0].shape
    weight = node.weights["weight"].shape
    if len(weight) != 2 or not data:
        raise GraphError(f"node {node.name!r} ({node.optype}): weight is {list(weight)} over "
                         f"input {list(data)}, expected a 2-D [out, in] weight")
    out_f, in_f = weight
    if _is_int(data[-1]) and data[-1] != in_f:
        raise GraphError(f"node {node.name!r} ({node.optype}): input has {data[-1]} features, "
                         f"but the weight {list(weight)} reads {in_f}")
    if "bias" in node.weights:
        _compare(node, "bias", node.weights["bias"].shape, [out_f])
    _compare(node, "output", node.output.shape, [*data[:-1], out_f])


def _same_shape(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    _compare(node, "output", node.output.shape, list(source.shape))
    if node.output.dtype != source.dtype:
        raise GraphError(f"node {node.name!r} ({node.optype}): output dtype is "
                         f"{node.output.dtype!r}, but its input {source.name!r} is "
                         f"{source.dtype!r} (the op keeps the dtype)")


_RULES: Mapping[str, Callable[[MSCGraph, MSCNode], None]] = {
    **dict.fromkeys(CONV, _conv), **dict.fromkeys(POOL, _pool),
    **dict.fromkeys(LINEAR, _linear), **dict.fromkeys(SAME_SHAPE, _same_shape),
}


def check_graph(graph: MSCGraph) -> None:
    """Raise GraphError at the first node whose attributes have the wrong type or whose
    declared output (or bias) shape is not what its op computes from its inputs."""
    for node in graph.nodes:
        if node.optype == "input":
            continue
        check_attrs(node)
        rule = _RULES.get(node.optype)
        if rule is not None and node.inputs:
            rule(graph, node)
