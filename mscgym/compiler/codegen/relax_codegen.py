"""MSCGraph -> TVM Relax: the bindings ``from_relax`` read, emitted again.

Without a quant plan the result is structurally equal to the normalized source module;
with one, planned layers get QDQ on their planned data inputs and (fused) output and a
fake-quantized weight (the numpy reference every runner shares).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tvm
from tvm import relax

from mscgym.compiler.codegen.common import weight_value
from mscgym.compiler.errors import GraphError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode
from mscgym.compiler.normalize import named_const
from mscgym.compiler.ops import SUPPORTED_OPS
from mscgym.compiler.quant_spec import QuantParams, QuantPlan, output_points
from mscgym.compiler.relax_codec import SymbolTable, decode_prim, make_attrs

_CONV_OPS = {"nn.conv2d": "relax.nn.conv2d", "msc.conv2d_bias": "relax.nn.conv2d",
             "nn.conv2d_transpose": "relax.nn.conv2d_transpose",
             "msc.conv2d_transpose_bias": "relax.nn.conv2d_transpose"}


class _RelaxEmitter:
    """Emits the bindings of each node; quantized layers get QDQ on their data input and
    a fake-quantized weight (the numpy reference every runner shares)."""

    def __init__(self, graph: MSCGraph, params: Mapping[str, Any], quant: QuantPlan) -> None:
        self.graph = graph
        self.params = params
        self.quant = quant
        self.symbols = SymbolTable()
        self.bb = relax.BlockBuilder()

    def weight(self, node: MSCNode, role: str) -> np.ndarray:
        data = weight_value(self.graph, node, role, self.params)
        layer = self.quant.get(node.name)
        if role == "weight" and layer is not None and layer.weight is not None:
            data = layer.weight.fake_quant(data.astype(np.float32))
        if role == "bias" and layer is not None and layer.bias is not None:
            data = layer.bias.fake_quant(data.astype(np.float32))
        return data

    def const(self, node: MSCNode, role: str, data: np.ndarray | None = None) -> relax.Expr:
        value = self.weight(node, role) if data is None else data
        return named_const(value, node.weight_alias.get(role))

    def qdq(self, data: relax.Expr, spec: QuantParams) -> relax.Expr:
        scale = relax.const(spec.scale_array())
        zero = relax.const(spec.zero_point_array().astype(spec.dtype))
        axis = -1 if spec.axis is None else spec.axis
        quantized = self.bb.emit(relax.op.quantize(data, scale, zero, axis, spec.dtype))
        return self.bb.emit(relax.op.dequantize(quantized, scale, zero, axis, "float32"))

    def emit(self, node: MSCNode, ins: list[relax.Expr]) -> relax.Expr:
        layer = self.quant.get(node.name)
        if layer is not None:
            specs = [layer.input_params(i) for i in range(len(ins))]
            ins = [x if spec is None else self.qdq(x, spec) for x, spec in zip(ins, specs,
                                                                              strict=True)]
        bb, optype = self.bb, node.optype
        attrs = make_attrs(node.attrs_type, node.attrs, self.symbols)
        if optype in _CONV_OPS and not node.args:  # constant kernel (+ bias)
            out = bb.emit(relax.Call(tvm.ir.Op.get(_CONV_OPS[optype]),
                                     [ins[0], self.const(node, "weight")], attrs))
            if optype.startswith("nn."):
                return out
            bias = self.weight(node, "bias").reshape(1, -1, 1, 1)
            return bb.emit(relax.op.add(out, self.const(node, "bias", bias)))
        if optype in ("msc.linear", "msc.linear_bias"):
            weight = np.ascontiguousarray(self.weight(node, "weight").T)
            out = bb.emit(relax.Call(tvm.ir.Op.get("relax.matmul"),
                                     [ins[0], self.const(node, "weight", weight)], attrs))
            if optype == "msc.linear":
                return out
            return bb.emit(relax.op.add(out, self.const(node, "bias")))
        if optype == "msc.batch_norm":
            stats = [self.const(node, r) for r in ("gamma", "beta", "mean", "var")]
            out = bb.emit(relax.Call(tvm.ir.Op.get("relax.nn.batch_norm"), [ins[0], *stats],
                                     attrs))
            return bb.emit(relax.TupleGetItem(out, 0))
        op_name = f"relax.{optype}"
        if op_name not in SUPPORTED_OPS:
            raise UnsupportedOpError(op_name, node.name, "to_relax")

        def decode(arg: dict[str, Any]) -> relax.Expr:
            kind = arg["kind"]
            if kind == "input":
                return ins[arg["index"]]
            if kind == "weight":
                return self.const(node, arg["role"])
            if kind == "shape":
                return relax.ShapeExpr(self.symbols.shape(arg["value"]))
            if kind == "prim":
                return decode_prim(arg)
            if kind == "tuple":
                return relax.Tuple([decode(a) for a in arg["items"]])
            raise GraphError(f"node {node.name!r}: unknown argument kind {kind!r}")

        args = [decode(a) for a in node.args]
        return bb.emit(relax.Call(tvm.ir.Op.get(op_name), args, attrs))


def to_relax(
    graph: MSCGraph,
    params: Mapping[str, Any],
    entry_name: str = "main",
    quant: QuantPlan | None = None,
) -> tvm.IRModule:
    """Build the Relax module of ``graph`` with ``params`` bound as named constants.

    With ``quant``, the planned layers are quantized (QDQ on inputs, fake-quantized
    weights); without it the result is structurally equal to the normalized source.
    """
    unknown = sorted(set(quant or {}) - {n.name for n in graph.nodes})
    if unknown:
        raise GraphError(f"quant plan names nodes {unknown} that graph {graph.name!r} lacks")
    emitter = _RelaxEmitter(graph, params, quant or {})
    outputs = output_points(graph, quant or {})
    values: dict[str, relax.Expr] = {}
    inputs = []
    for tensor in graph.get_inputs():
        shape = emitter.symbols.shape(tensor.shape)
        var = relax.Var(tensor.name, relax.TensorType(shape, tensor.dtype))
        values[tensor.name] = var
        inputs.append(var)
    bb = emitter.bb
    with bb.function(entry_name, inputs, attrs=dict(graph.func_attrs)):
        with bb.dataflow():
            for node in graph.nodes:
                if node.optype == "input":
                    continue
                value = emitter.emit(node, [values[t] for t in node.inputs])
                if node.outputs[0].name in outputs:
                    value = emitter.qdq(value, outputs[node.outputs[0].name])
                values[node.outputs[0].name] = value
            results = [values[t] for t in graph.output_names]
            ret = relax.Tuple(results) if graph.return_tuple else results[0]
            output = bb.emit_output(ret)
        bb.emit_func_output(output)
    # The builder binds the result to a fresh output var (``gv = lv15``); canonical form
    # binds the last call to it directly, as normalization leaves the source module.
    return relax.transform.CanonicalizeBindings()(bb.get())


