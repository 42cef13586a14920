"""Translate between TVM Relax and MSCGraph, and bring torch / ONNX models in through Relax.

``from_relax`` normalizes the module (see :mod:`mscgym.compiler.normalize`) and turns
each binding of the entry function into a node, grouping the layer patterns tools
reason about (conv2d + bias, dense + bias, eval batch norm) into single nodes.
``to_relax`` emits exactly the normalized bindings again, so the round trip is
structurally equal to the normalized input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import tvm
import tvm_ffi
from tvm import relax

from mscgym.compiler.errors import GraphError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.normalize import ParamValue, const_name, const_value, named_const, normalize
from mscgym.compiler.ops import SUPPORTED_OPS, weight_role
from mscgym.compiler.quant_spec import QuantParams, QuantPlan
from mscgym.compiler.relax_codec import (
    SymbolTable,
    decode_prim,
    encode_attrs,
    encode_prim,
    encode_shape,
    is_prim,
    make_attrs,
)
from mscgym.utils.naming import NameSet

Params = dict[str, np.ndarray]

_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "gamma", "beta")


# --------------------------------------------------------------------------------------
# Relax -> MSCGraph
# --------------------------------------------------------------------------------------
class _GraphBuilder:
    """Walks the bindings of one normalized Relax function and collects nodes."""

    def __init__(self, func: relax.Function, graph_name: str) -> None:
        self.func = func
        self.graph_name = graph_name
        self.nodes: list[MSCNode] = []
        self.params: Params = {}
        self.tensor_of: dict[Any, str] = {}
        self.names = NameSet()
        self.input_names: list[str] = []
        self._position: dict[str, tuple[int, MSCNode]] = {}

    # -- naming -----------------------------------------------------------------------
    def _node_name(self, optype: str, inputs: list[str], source: str | None) -> str:
        if source:
            head, _, tail = source.rpartition(".")
            base = head if head and tail in _PARAM_SUFFIXES else source
            return self.names.unique(base)
        short = optype.rsplit(".", 1)[-1].replace("msc.", "")
        scope = ""
        if inputs:
            # The latest producer scopes the node: a residual add joins the block that
            # computed its branch, not the earlier block its shortcut comes from.
            producer = max((self._position[t] for t in inputs), key=lambda p: p[0])[1]
            scope = producer.scope if producer.optype != "input" else ""
        return self.names.unique(f"{scope}.{short}" if scope else short)

    # -- helpers ----------------------------------------------------------------------
    def _tensor(self, name: str, ty: Any, where: str, layout: str = "") -> MSCTensor:
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise GraphError(f"{where}: expected a tensor of known rank, got {ty}")
        return MSCTensor(name, str(ty.dtype), encode_shape(ty.shape, where), layout)

    def _input_ref(self, var: relax.Var, where: str) -> str:
        if var not in self.tensor_of:
            raise UnsupportedOpError(f"value {var.name} of non-tensor type", where)
        return self.tensor_of[var]

    def _add_node(
        self,
        optype: str,
        var: relax.Var,
        inputs: list[str],
        args: list[dict[str, Any]],
        attrs: tuple[dict[str, Any], str],
        weights: list[tuple[str, np.ndarray, str | None, str]],
        source: str | None = None,
    ) -> MSCNode:
        name = self._node_name(optype, inputs, source)
        fields, attrs_type = attrs
        layout = fields.get("out_layout", "")
        output = self._tensor(f"{name}:0", var.ty, f"node {name!r}",
                              layout if isinstance(layout, str) else "")
        node = MSCNode(name, optype, inputs, [output], fields, args, attrs_type=attrs_type)
        for role, data, alias, layout in weights:
            tensor = MSCTensor(f"{name}.{role}", str(data.dtype), tuple(data.shape), layout)
            node.weights[role] = tensor
            if alias:
                node.weight_alias[role] = alias
            self.params[tensor.name] = data
        self._append(node)
        self.tensor_of[var] = output.name
        return node

    def _append(self, node: MSCNode) -> None:
        for tensor in node.outputs:
            self._position[tensor.name] = (len(self.nodes), node)
        self.nodes.append(node)

    # -- patterns ---------------------------------------------------------------------
    @staticmethod
    def _is_const(expr: Any) -> bool:
        return isinstance(expr, tvm.ir.expr.GenericConst)

    def _bias_add(self, var: relax.Var, nxt: Any, uses: int) -> Any:
        """The bias-add binding that completes a conv2d/matmul, if it is next and matches."""
        if uses != 1 or nxt is None or not isinstance(nxt.value, relax.Call):
            return None
        add = nxt.value
        if (getattr(add.op, "name", "") != "relax.add" or not self._is_const(add.args[1])
                or not add.args[0].same_as(var)):
            return None
        return add

    def translate(self) -> MSCGraph:
        func = self.func
        for param in func.params:
            name = self.names.unique(param.name)
            tensor = self._tensor(name, param.ty, f"input {name!r}")
            self._append(MSCNode(name, "input", [], [tensor]))
            self.tensor_of[param] = name
            self.input_names.append(name)

        body = func.body
        if len(body.blocks) != 1:
            raise GraphError(f"function of graph {self.graph_name!r} has {len(body.blocks)} "
                             "binding blocks; expected one")
        block = body.blocks[0]
        bindings = list(block.bindings)
        uses = _count_uses(bindings, body.body)
        skip: set[int] = set()
        outputs: list[str] | None = None
        return_tuple = False
        for index, binding in enumerate(bindings):
            if index in skip:
                continue
            var, value = binding.var, binding.value
            nxt = bindings[index + 1] if index + 1 < len(bindings) else None
            if isinstance(value, relax.Tuple) and var.same_as(body.body):
                outputs = [self._input_ref(v, "function output") for v in value.fields]
                return_tuple = True
                continue
            if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
                kind = type(value).__name__
                raise UnsupportedOpError(kind, var.name, "from_relax")
            consumed = self._translate_call(var, value, nxt, uses.get(var, 0))
            if consumed:
                skip.add(index + 1)
        if outputs is None:
            outputs = [self._input_ref(body.body, "function output")]
        attrs = {str(k): _plain(v) for k, v in (func.attrs or {}).items()}
        return MSCGraph(self.graph_name, self.nodes, self.input_names, outputs, attrs,
                        return_tuple=return_tuple)

    def _translate_call(self, var: relax.Var, call: relax.Call, nxt: Any, uses: int) -> bool:
        """Add the node for ``call``; True when it also consumed the next binding."""
        op_name = call.op.name
        optype = op_name.removeprefix("relax.")
        if op_name == "relax.nn.conv2d" and self._is_const(call.args[1]):
            weight = call.args[1]
            add = self._bias_add(var, nxt, uses)
            channels = const_value(weight).shape[0]
            bias_ok = add is not None and tuple(add.args[1].ty.shape) == (1, channels, 1, 1)
            attrs = encode_attrs(call.attrs)
            weights = [("weight", const_value(weight), const_name(weight),
                        attrs[0]["kernel_layout"])]
            inputs = [self._input_ref(call.args[0], var.name)]
            if bias_ok:
                bias = add.args[1]
                weights.append(("bias", const_value(bias).reshape(channels), const_name(bias),
                                "O"))
                self._add_node("msc.conv2d_bias", nxt.var, inputs, [], attrs, weights,
                               const_name(weight))
                return True
            self._add_node("nn.conv2d", var, inputs, [], attrs, weights, const_name(weight))
            return False
        if (op_name == "relax.matmul" and self._is_const(call.args[1])
                and len(call.args[1].ty.shape) == 2):
            weight = call.args[1]
            data = const_value(weight).T
            add = self._bias_add(var, nxt, uses)
            bias_ok = add is not None and tuple(add.args[1].ty.shape) == (data.shape[0],)
            attrs = encode_attrs(call.attrs)
            weights = [("weight", np.ascontiguousarray(data), const_name(weight), "OI")]
            inputs = [self._input_ref(call.args[0], var.name)]
            if bias_ok:
                bias = add.args[1]
                weights.append(("bias", const_value(bias), const_name(bias), "O"))
                self._add_node("msc.linear_bias", nxt.var, inputs, [], attrs, weights,
                               const_name(weight))
                return True
            self._add_node("msc.linear", var, inputs, [], attrs, weights, const_name(weight))
            return False
        if op_name == "relax.nn.batch_norm":
            return self._batch_norm(var, call, nxt, uses)
        if op_name not in SUPPORTED_OPS:
            raise UnsupportedOpError(op_name, var.name, "from_relax")
        self._primitive(var, call, optype)
        return False

    def _batch_norm(self, var: relax.Var, call: relax.Call, nxt: Any, uses: int) -> bool:
        item = nxt.value if nxt is not None else None
        consts = call.args[1:]
        if (uses != 1 or not isinstance(item, relax.TupleGetItem) or item.index != 0
                or not item.tuple_value.same_as(var)
                or not all(self._is_const(c) for c in consts)):
            raise UnsupportedOpError("relax.nn.batch_norm (not eval-mode with constant "
                                     "statistics)", var.name, "from_relax")
        roles = ("gamma", "beta", "mean", "var")
        weights = [(r, const_value(c), const_name(c), "O")
                   for r, c in zip(roles, consts, strict=True)]
        inputs = [self._input_ref(call.args[0], var.name)]
        self._add_node("msc.batch_norm", nxt.var, inputs, [], encode_attrs(call.attrs),
                       weights, const_name(consts[0]))
        return True

    def _primitive(self, var: relax.Var, call: relax.Call, optype: str) -> None:
        inputs: list[str] = []
        weights: list[tuple[str, np.ndarray, str | None, str]] = []
        source = None

        def encode(arg: Any, position: int) -> dict[str, Any]:
            nonlocal source
            if isinstance(arg, relax.Var):
                inputs.append(self._input_ref(arg, var.name))
                return {"kind": "input", "index": len(inputs) - 1}
            if self._is_const(arg):
                role = weight_role(optype, position)
                name = const_name(arg)
                weights.append((role, const_value(arg), name, ""))
                source = source or name
                return {"kind": "weight", "role": role}
            if isinstance(arg, relax.ShapeExpr):
                return {"kind": "shape", "value": list(encode_shape(arg.values, var.name))}
            if is_prim(arg):
                return encode_prim(arg, var.name)
            if isinstance(arg, relax.Tuple):
                return {"kind": "tuple", "items": [encode(a, position) for a in arg.fields]}
            raise UnsupportedOpError(f"{call.op.name} with a {type(arg).__name__} argument",
                                     var.name, "from_relax")

        args = [encode(a, i) for i, a in enumerate(call.args)]
        self._add_node(optype, var, inputs, args, encode_attrs(call.attrs), weights, source)


def _count_uses(bindings: Sequence[Any], result: Any) -> dict[Any, int]:
    uses: dict[Any, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1
        elif isinstance(expr, relax.Call):
            for a in expr.args:
                visit(a)
        elif isinstance(expr, relax.Tuple):
            for f in expr.fields:
                visit(f)
        elif isinstance(expr, relax.TupleGetItem):
            visit(expr.tuple_value)

    for binding in bindings:
        visit(binding.value)
    visit(result)
    return uses


def _plain(value: Any) -> Any:
    if isinstance(value, tvm.tirx.IntImm):
        return int(value.value)
    if isinstance(value, tvm_ffi.Map | dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, int | str | float | bool):
        return value
    raise GraphError(f"function attribute value {value!r} cannot be kept in an MSCGraph")


def from_relax(
    mod: tvm.IRModule,
    params: Mapping[str, ParamValue] | None = None,
    entry_name: str = "main",
    names: Mapping[str, str] | None = None,
    graph_name: str | None = None,
) -> tuple[MSCGraph, Params]:
    """Translate ``mod[entry_name]`` to an MSCGraph and its weights.

    ``params`` binds function parameters (by name) as weights; ``names`` gives their
    framework names (e.g. torch state_dict keys), which name the nodes. The weights
    come back keyed by the graph's weight tensor names (``conv1.weight``).
    """
    normalized = normalize(mod, params, entry_name, names)
    builder = _GraphBuilder(normalized[entry_name], graph_name or entry_name)
    graph = builder.translate()
    return graph, builder.params


# --------------------------------------------------------------------------------------
# MSCGraph -> Relax
# --------------------------------------------------------------------------------------
def weight_value(
    graph: MSCGraph, node: MSCNode, role: str, params: Mapping[str, Any]
) -> np.ndarray:
    """The value of one weight of ``node``, checked against the graph's declaration."""
    tensor = node.weights[role]
    if tensor.name not in params:
        raise GraphError(f"graph {graph.name!r}: no value for weight {tensor.name!r} "
                         f"of node {node.name!r}")
    value = params[tensor.name]
    data = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if tuple(data.shape) != tuple(tensor.shape):
        raise GraphError(f"weight {tensor.name!r} of node {node.name!r} has shape "
                         f"{tuple(data.shape)}, the graph says {tuple(tensor.shape)}")
    return data


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
        if layer is not None and layer.input is not None:
            ins = [self.qdq(ins[0], layer.input), *ins[1:]]
        bb, optype = self.bb, node.optype
        attrs = make_attrs(node.attrs_type, node.attrs, self.symbols)
        if optype in ("msc.conv2d_bias", "nn.conv2d"):
            out = bb.emit(relax.Call(tvm.ir.Op.get("relax.nn.conv2d"),
                                     [ins[0], self.const(node, "weight")], attrs))
            if optype == "nn.conv2d":
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
                values[node.outputs[0].name] = emitter.emit(node, [values[t] for t in node.inputs])
            results = [values[t] for t in graph.output_names]
            ret = relax.Tuple(results) if graph.return_tuple else results[0]
            output = bb.emit_output(ret)
        bb.emit_func_output(output)
    return bb.get()


# --------------------------------------------------------------------------------------
# Frontends: torch and ONNX through TVM's own importers
# --------------------------------------------------------------------------------------
def from_torch(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    dynamic_batch: bool = True,
    graph_name: str | None = None,
) -> tuple[MSCGraph, Params]:
    """torch module -> ``torch.export`` -> TVM's ``from_exported_program`` -> MSCGraph.

    With ``dynamic_batch`` the leading dim of every input is exported symbolic, so the
    same graph serves batch-1 latency and batched evaluation and training.
    """
    from tvm.relax.frontend.torch import from_exported_program

    model = model.eval()
    example_inputs = tuple(example_inputs)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
        # torch.export specializes size-1 dims, so trace the batch at size 2.
        example_inputs = tuple(x.expand(2, *x.shape[1:]).contiguous() if x.shape[0] == 1 else x
                               for x in example_inputs)
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    mod = from_exported_program(exported, keep_params_as_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    param_vars = [p.name for p in func.params[num_input:]]
    params = dict(zip(param_vars, detached.get("main", []), strict=True))
    names = {spec.arg.name: spec.target for spec in exported.graph_signature.input_specs
             if spec.target is not None}
    name = graph_name or type(model).__name__
    return from_relax(mod, params, names=names, graph_name=name)


def from_onnx(
    model_or_path: Any, graph_name: str | None = None
) -> tuple[MSCGraph, Params]:
    """ONNX model (or file path) -> TVM's ``from_onnx`` -> MSCGraph."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    if isinstance(model_or_path, str | os.PathLike):
        model = onnx.load(os.fspath(model_or_path))
        name = graph_name or os.path.splitext(os.path.basename(model_or_path))[0]
    else:
        model = model_or_path
        name = graph_name or (model.graph.name or "onnx")
    onnx.checker.check_model(model)
    mod = relax_from_onnx(model, keep_params_in_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"]) if "num_input" in (func.attrs or {}) else len(
        model.graph.input) - len(detached.get("main", []))
    param_vars = [p.name for p in func.params[num_input:]]
    params = dict(zip(param_vars, detached.get("main", []), strict=True))
    return from_relax(mod, params, graph_name=name)
