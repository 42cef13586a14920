"""Drawings of an MSCGraph: a Caffe-style prototxt for Netron and Graphviz dot.

Netron opens a text file of Caffe ``layer { ... }`` blocks as a network, and shows the
fields of any ``<something>_param { ... }`` block of a layer as its attributes; that is
where each node's attrs, weights and output tensors go. Tensor names are the layers'
tops and bottoms, so Netron draws the dataflow exactly as the graph has it. Every name
is written as an escaped string literal, so no name from a model can break the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.utils.files import atomic_write_text

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """``text`` as a double-quoted string literal of protobuf text format and dot."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    """A field name Netron's text reader accepts (attr names are identifiers already)."""
    if _IDENTIFIER.fullmatch(name):
        return name
    return "_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    return None


def _value(value: Any) -> str:
    """A text-format value: scalars as they are, flat lists as ``[a, b]``, the rest as JSON."""
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if isinstance(value, list) and value:
        items = [_scalar(v) for v in value]
        if all(item is not None for item in items):
            return "[" + ", ".join(items) + "]"
    return quote(json.dumps(value))


def _block(name: str, fields: list[tuple[str, Any]], indent: str) -> list[str]:
    lines = [f"{indent}{name} {{"]
    lines += [f"{indent}  {_key(k)}: {_value(v)}" for k, v in fields]
    lines.append(f"{indent}}}")
    return lines


def to_prototxt(graph: MSCGraph) -> str:
    """The graph as a Caffe-style prototxt that Netron opens.

    Inputs are ``input``/``input_shape`` pairs (a symbolic dim is written as -1); each
    other node is one ``layer`` whose ``type`` is its optype, with ``msc_param`` (attrs),
    ``weights_param`` (role -> weight tensor) and ``outputs_param`` (output tensors).
    """
    lines = [f"name: {quote(graph.name)}"]
    for tensor in graph.get_inputs():
        lines.append(f"input: {quote(tensor.name)}")
        lines.append("input_shape {")
        lines += [f"  dim: {dim if isinstance(dim, int) else -1}" for dim in tensor.shape]
        lines.append("}")
    for node in graph.nodes:
        if node.optype == "input":
            continue
        lines.append("layer {")
        lines.append(f"  name: {quote(node.name)}")
        lines.append(f"  type: {quote(node.optype)}")
        lines += [f"  bottom: {quote(ref)}" for ref in node.inputs]
        lines += [f"  top: {quote(t.name)}" for t in node.outputs]
        if node.attrs:
            lines += _block("msc_param", list(node.attrs.items()), "  ")
        if node.weights:
            lines += _block("weights_param",
                            [(role, str(t)) for role, t in node.weights.items()], "  ")
        lines += _block("outputs_param", [("tensor", str(t)) for t in node.outputs], "  ")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _dims(tensor: MSCTensor) -> str:
    return f"{tensor.dtype}[{','.join(str(d) for d in tensor.shape)}]"


def _dot_label(node: MSCNode) -> str:
    lines = [node.name, node.optype]
    lines += [_dims(t) for t in node.outputs]
    lines += [f"{role}: {_dims(t)}" for role, t in node.weights.items()]
    return quote("\n".join(lines))


def to_dot(graph: MSCGraph) -> str:
    """The graph in Graphviz dot: one box per node, one edge per tensor use.

    Node ids are the node names as quoted, escaped strings; each edge is labelled with
    the tensor it carries. Inputs are ellipses and the producers of graph outputs are
    drawn with a double border.
    """
    outputs = {graph.find_producer(name).name for name in graph.output_names}
    lines = [f"digraph {quote(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for node in graph.nodes:
        style = ["shape=ellipse"] if node.optype == "input" else []
        if node.name in outputs:
            style.append("peripheries=2")
        attrs = ", ".join([f"label={_dot_label(node)}", *style])
        lines.append(f"  {quote(node.name)} [{attrs}];")
    for node in graph.nodes:
        for ref in node.inputs:
            producer = graph.find_producer(ref)
            lines.append(f"  {quote(producer.name)} -> {quote(node.name)} [label={quote(ref)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


_WRITERS = {".prototxt": to_prototxt, ".dot": to_dot}


def write_visualization(graph: MSCGraph, path: str | os.PathLike[str]) -> None:
    """Write ``graph`` to ``path`` (atomically) in the format its suffix names."""
    suffix = Path(path).suffix
    writer = _WRITERS.get(suffix)
    if writer is None:
        raise MSCError(f"cannot visualize graph {graph.name!r} as {os.fspath(path)!r}: unknown "
                       f"suffix {suffix!r}, expected one of {sorted(_WRITERS)}")
    atomic_write_text(path, writer(graph))
