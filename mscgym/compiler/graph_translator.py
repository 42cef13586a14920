"""Translate TVM Relax into MSCGraph (``from_relax``); ``to_relax`` lives in the Relax codegen.

``from_relax`` normalizes the module (see :mod:`mscgym.compiler.normalize`) and turns
each binding of the entry function into a node, grouping the layer patterns tools
reason about (conv2d + bias, dense + bias, eval batch norm) into single nodes.
``to_relax`` (in :mod:`mscgym.compiler.codegen.relax_codegen`, re-exported here under
MSC's name) emits exactly the normalized bindings again, so the round trip is
structurally equal to the normalized input. Frameworks come in through
:mod:`mscgym.compiler.frontend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from mscgym.compiler.codegen.relax_codegen import to_relax
from mscgym.compiler.errors import GraphError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.normalize import ParamValue, const_name, const_value, normalize
from mscgym.compiler.ops import SUPPORTED_OPS, weight_role
from mscgym.compiler.relax_codec import (
    encode_attrs,
    encode_prim,
    encode_shape,
    is_prim,
)
from mscgym.utils.naming import NameSet

Params = dict[str, np.ndarray]

__all__ = ["Params", "from_relax", "to_relax"]

_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "gamma", "beta")
_UNSUPPORTED = "unsupported:"
# A conv with a constant kernel, and the composite it forms with a following bias add.
_CONV_BIAS = {"relax.nn.conv2d": "msc.conv2d_bias",
              "relax.nn.conv2d_transpose": "msc.conv2d_transpose_bias"}


# --------------------------------------------------------------------------------------
# Relax -> MSCGraph
# --------------------------------------------------------------------------------------
class _GraphBuilder:
    """Walks the bindings of one normalized Relax function and collects nodes."""

    def __init__(self, func: relax.Function, graph_name: str,
                 sources: Mapping[str, str] | None = None) -> None:
        self.func = func
        self.graph_name = graph_name
        self.sources = dict(sources or {})
        self.unsupported: list[tuple[str, str]] = []
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
        origin = self.sources.get(var.name)
        name = self.names.unique(origin) if origin else self._node_name(optype, inputs, source)
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
                after_unsupported = isinstance(value, relax.TupleGetItem) and str(
                    self.tensor_of.get(value.tuple_value, "")).startswith(_UNSUPPORTED)
                self._skip_unsupported(var, UnsupportedOpError(
                    type(value).__name__, var.name, "from_relax"), report=not after_unsupported)
                continue
            try:
                consumed = self._translate_call(var, value, nxt, uses.get(var, 0))
            except UnsupportedOpError as err:
                self._skip_unsupported(var, err)
                continue
            if consumed:
                skip.add(index + 1)
        if self.unsupported:
            raise UnsupportedOpError.of(self.unsupported, "from_relax")
        if outputs is None:
            outputs = [self._input_ref(body.body, "function output")]
        attrs = {str(k): _plain(v) for k, v in (func.attrs or {}).items()}
        return MSCGraph(self.graph_name, self.nodes, self.input_names, outputs, attrs,
                        return_tuple=return_tuple)

    def _skip_unsupported(self, var: relax.Var, err: UnsupportedOpError,
                          report: bool = True) -> None:
        """Note an unsupported binding (by its source node where known) and stand in a
        placeholder for its value, so translation goes on and reports every such op."""
        for op, node in err.unsupported if report else ():
            entry = (op, self.sources.get(node, node))
            if entry not in self.unsupported:
                self.unsupported.append(entry)
        if var not in self.tensor_of:
            name = self.names.unique(f"{_UNSUPPORTED}{var.name}")
            self.tensor_of[var] = name
            self._position[name] = (len(self.nodes), MSCNode(name, _UNSUPPORTED, [], []))

    def _translate_call(self, var: relax.Var, call: relax.Call, nxt: Any, uses: int) -> bool:
        """Add the node for ``call``; True when it also consumed the next binding."""
        op_name = call.op.name
        optype = op_name.removeprefix("relax.")
        if op_name in _CONV_BIAS and self._is_const(call.args[1]):
            weight = call.args[1]
            add = self._bias_add(var, nxt, uses)
            attrs = encode_attrs(call.attrs)
            out_shape = var.ty.shape
            channels = (out_shape[1] if attrs[0].get("out_layout", "NCHW") == "NCHW"
                        and out_shape is not None and len(out_shape) == 4 else None)
            bias_ok = (add is not None and isinstance(channels, tvm.tirx.IntImm)
                       and tuple(add.args[1].ty.shape) == (1, int(channels), 1, 1))
            weights = [("weight", const_value(weight), const_name(weight),
                        attrs[0]["kernel_layout"])]
            inputs = [self._input_ref(call.args[0], var.name)]
            if bias_ok:
                bias = add.args[1]
                weights.append(("bias", const_value(bias).reshape(int(channels)),
                                const_name(bias), "O"))
                self._add_node(_CONV_BIAS[op_name], nxt.var, inputs, [], attrs, weights,
                               const_name(weight))
                return True
            self._add_node(optype, var, inputs, [], attrs, weights, const_name(weight))
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
    sources: Mapping[str, str] | None = None,
) -> tuple[MSCGraph, Params]:
    """Translate ``mod[entry_name]`` to an MSCGraph and its weights.

    ``params`` binds function parameters (by name) as weights; ``names`` gives their
    framework names (e.g. torch state_dict keys), which name the nodes. ``sources`` maps
    binding var names to the source model's node names (the ONNX frontend's), which then
    name the nodes and the errors. The weights come back keyed by the graph's weight
    tensor names (``conv1.weight``). Every unsupported op is collected and reported in
    one UnsupportedOpError.
    """
    normalized = normalize(mod, params, entry_name, names)
    builder = _GraphBuilder(normalized[entry_name], graph_name or entry_name, sources)
    graph = builder.translate()
    return graph, builder.params
