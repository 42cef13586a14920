"""MSCGraph -> ONNX, with QuantizeLinear/DequantizeLinear (QDQ) nodes for a QuantPlan.

The model is built directly with ``onnx.helper``; its value names are the graph's tensor
names (graph inputs keep theirs, node outputs are ``<node>:0``) and its weights are
initializers named by the weight tensors (``conv1.weight``), so a runner or a person can
find every layer of the source model in it.

Quantization follows the QDQ format that ONNX Runtime and TensorRT both consume:

* each planned data input of a layer (``input``, ``input1``, ...: both operands of a
  residual add) goes through ``QuantizeLinear -> DequantizeLinear`` (one pair per tensor
  and params, shared by all consumers);
* a planned ``output`` gets the pair on the layer's fused output (after its relu/clip,
  :func:`~mscgym.compiler.quant_spec.fused_output`), before any consumer's own pair, so
  ONNX Runtime sees ``DQ -> Conv -> Relu -> Q`` and fuses it into ``QLinearConv`` (a
  ``mean`` over H and W is written as GlobalAveragePool, which it runs int8 too);
* its weight is stored pre-quantized as an integer initializer (``<weight>_quantized``)
  followed by ``DequantizeLinear`` (per-channel along the plan's axis);
* the bias of an 8-bit conv / 2-D linear is stored as int32 with scale
  ``input_scale * weight_scale`` and zero point 0, as ONNX Runtime's QDQ fusion expects;
* 4-bit weights are INT4/UINT4 initializers (opset 21); 4-bit activations are a clip to
  the 4-bit range plus an 8-bit pair with the same scale and zero point (exactly the same
  fake-quant), since neither ONNX Runtime's kernels nor TensorRT take int4 activations;
* an 8-bit conv / linear / matmul whose output reaches only quantized layers whose data
  inputs share one per-tensor params ``P``, through ops that commute with fake-quant
  (relu, clip, max pooling and pure data movement), gets ``Q(P) -> DQ`` on its output too.
  That pair changes no value (re-quantizing on the same grid is idempotent and those ops
  are monotone or move data only) but lets ONNX Runtime fuse the layer into an int8
  kernel with int8 output (``QLinearConv``); without it, a conv runs as a float Conv on
  dequantized weights and only Gemm/MatMul still fuse (``QGemm`` / ``MatMulIntegerToFloat``
  with float output). 4-bit layers get no such pair: ONNX Runtime has no 4-bit conv or
  gemm kernels to fuse them into.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mscgym.compiler.codegen.common import weight_value
from mscgym.compiler.dims import Dim, eval_dim
from mscgym.compiler.errors import GraphError, MSCError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.ops import COMPOSITE, RESIZE_COORDINATES, SUPPORTED_OPS
from mscgym.compiler.quant_spec import (
    LayerQuant,
    QuantParams,
    QuantPlan,
    fused_output,
    is_global_average_pool,
    output_points,
)
from mscgym.utils.files import atomic_write_bytes
from mscgym.utils.naming import NameSet

_WHERE = "onnx codegen"
_MIN_OPSET = 18  # reduce ops take their axes as an input from opset 18 on
_DEFAULT_OPSET = 20
_INT4_OPSET = 21
_QTYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
           "int4": TensorProto.INT4, "uint4": TensorProto.UINT4}
_UNARY = {"nn.relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log",
          "sqrt": "Sqrt", "negative": "Neg", "abs": "Abs", "erf": "Erf"}
_BINARY = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
           "maximum": "Max", "minimum": "Min"}
_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}
_KERNELS = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias", "matmul")
# Ops g with fq(g(fq(x))) == fq(g(x)) for per-tensor fake-quant fq: output requantization
# through them changes no value.
_QUANT_TRANSPARENT = ("nn.relu", "clip", "nn.max_pool2d", "reshape", "flatten", "squeeze",
                      "expand_dims", "permute_dims", "broadcast_to")


def _elem_type(dtype: str, where: str) -> int:
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except TypeError:
        raise MSCError(f"{where}: dtype {dtype!r} has no ONNX tensor type") from None


def _dtype_name(value: Any) -> str:
    """A dtype attribute as JSON holds it: a dtype string or ``{"dtype": ...}``."""
    return str(value["dtype"]) if isinstance(value, dict) else str(value)


class _Builder:
    """Emits the ONNX nodes and initializers of one MSCGraph."""

    def __init__(
        self,
        graph: MSCGraph,
        params: Mapping[str, Any],
        quant: QuantPlan,
        opset: int,
        batch: int | None,
        quantize_bias: bool,
    ) -> None:
        self.graph = graph
        self.params = params
        self.quant = quant
        self.opset = opset
        self.batch = batch
        self.quantize_bias = quantize_bias
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.names = NameSet()  # ONNX value and initializer names in use
        self.node_names: set[str] = set()
        self.raw: dict[str, str] = {}  # MSC tensor -> ONNX value its producer writes
        self.value: dict[str, str] = {}  # MSC tensor -> ONNX value its float consumers read
        self.qdq: dict[tuple[str, QuantParams], str] = {}
        self.weight_inputs: dict[str, str] = {}
        self.fused: set[str] = set()  # nodes an earlier node's emitter already wrote
        self.outputs = output_points(graph, quant)  # fused output tensor -> params

    # -- names, constants, nodes ---------------------------------------------------------
    def const(self, base: str, data: np.ndarray) -> str:
        name = self.names.unique(base)
        array = np.require(data, requirements="C")  # ascontiguousarray makes 0-d arrays 1-d
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, base: str, values: list[int]) -> str:
        return self.const(base, np.asarray(values, dtype=np.int64))

    def emit(self, op_type: str, inputs: list[str], name: str, outputs: list[str] | None = None,
             **attrs: Any) -> str:
        """Add one ONNX node; returns its (first) output, a fresh name unless given."""
        outs = outputs or [self.names.unique(f"{name}:out")]
        node_name, index = name, 1
        while node_name in self.node_names:
            node_name, index = f"{name}_{index}", index + 1
        self.node_names.add(node_name)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0]

    def dims(self, shape: tuple[Dim, ...]) -> list[Dim]:
        """``shape`` with symbolic dims (names or expressions) evaluated when batch is fixed."""
        if self.batch is None:
            return list(shape)
        return [int(eval_dim(d, lambda _name: self.batch)) for d in shape]

    # -- operands --------------------------------------------------------------------------
    def weight(self, node: MSCNode, role: str) -> np.ndarray:
        data = weight_value(self.graph, node, role, self.params)
        return data.astype(node.weights[role].dtype, copy=False)

    def weight_input(self, node: MSCNode, role: str) -> str:
        """The float initializer of a weight, named by its tensor (added once)."""
        data = self.weight(node, role)
        name = node.weights[role].name
        if name not in self.weight_inputs:
            self.weight_inputs[name] = self.const(name, data)
        return self.weight_inputs[name]

    def quantized_weight(self, node: MSCNode, data: np.ndarray, qp: QuantParams,
                         base: str, axis: int | None) -> str:
        """An integer initializer of ``data`` quantized by ``qp``, then DequantizeLinear."""
        if axis is not None and len(qp.scale) != data.shape[axis]:
            raise MSCError(f"quant plan for node {node.name!r}: {len(qp.scale)} weight "
                           f"scales for {data.shape[axis]} channels on axis {axis}")
        q = qp.quantize(data, axis)
        qname = self.names.unique(f"{base}_quantized")
        self.initializers.append(self._int_tensor(qname, qp.dtype, q))
        return self._dequantize(qname, qp, base, axis, data.dtype)

    def _int_tensor(self, name: str, dtype: str, values: np.ndarray) -> TensorProto:
        if dtype in ("int8", "uint8"):
            return numpy_helper.from_array(values.astype(dtype), name)
        return helper.make_tensor(name, _QTYPES[dtype], list(values.shape),
                                  values.flatten().tolist())

    def _qparams(self, qp: QuantParams, base: str, float_dtype: Any) -> tuple[str, str]:
        per_channel = qp.axis is not None
        scale = qp.scale_array().astype(float_dtype)
        zero = qp.zero_point_array()
        scale_name = self.const(f"{base}_scale", scale if per_channel else scale.reshape(()))
        zname = self.names.unique(f"{base}_zero_point")
        self.initializers.append(
            self._int_tensor(zname, qp.dtype, zero if per_channel else zero.reshape(())))
        return scale_name, zname

    def _dequantize(self, qname: str, qp: QuantParams, base: str, axis: int | None,
                    float_dtype: Any) -> str:
        scale, zero = self._qparams(qp, base, float_dtype)
        attrs = {"axis": axis} if axis is not None else {}
        out = self.names.unique(f"{base}_dequantized")
        return self.emit("DequantizeLinear", [qname, scale, zero], f"{base}/DequantizeLinear",
                         [out], **attrs)

    def quantize_tensor(self, tensor: str, qp: QuantParams) -> str:
        """``Q -> DQ`` on an activation; one pair per (tensor, params).

        4-bit params are applied as a clip to their range followed by an 8-bit pair with
        the same scale and zero point, which is the same fake-quant exactly (the clip
        bounds lie on the grid): ONNX Runtime's QDQ fusion would otherwise feed int4
        tensors to int8 kernels and to MaxPool, and TensorRT takes int4 weights only.
        """
        key = (tensor, qp)
        if key in self.qdq:
            return self.qdq[key]
        float_dtype = np.dtype(self.graph.find_tensor(tensor).dtype)
        # What the tensor's float consumers read: its own output requantization, if planned,
        # comes first on every runner.
        source = self.value[tensor]
        container = qp
        if qp.bits == 4:
            source = self._clip_to_range(tensor, source, qp, float_dtype)
            container = QuantParams("int8" if qp.signed else "uint8", qp.scale,
                                    qp.zero_point, qp.axis)
        scale, zero = self._qparams(container, tensor, float_dtype)
        attrs = {"axis": qp.axis} if qp.axis is not None else {}
        q = self.emit("QuantizeLinear", [source, scale, zero], f"{tensor}/QuantizeLinear",
                      [self.names.unique(f"{tensor}_quantized")], **attrs)
        out = self.names.unique(f"{tensor}_dequantized")
        self.qdq[key] = self.emit("DequantizeLinear", [q, scale, zero],
                                  f"{tensor}/DequantizeLinear", [out], **attrs)
        return self.qdq[key]

    def _clip_to_range(self, tensor: str, value: str, qp: QuantParams, float_dtype: Any
                       ) -> str:
        ndim = self.graph.find_tensor(tensor).ndim
        shape = qp.broadcast_shape(ndim)
        low, high = qp.qrange
        scale = qp.scale_array().astype(np.float64)
        zero = qp.zero_point_array().astype(np.float64)
        bounds = [self.const(f"{tensor}_{label}",
                             ((bound - zero) * scale).astype(float_dtype).reshape(shape))
                  for label, bound in (("qmin", low), ("qmax", high))]
        floor = self.emit("Max", [value, bounds[0]], f"{tensor}/clip_qmin")
        return self.emit("Min", [floor, bounds[1]], f"{tensor}/clip_qmax")

    def layer(self, node: MSCNode) -> LayerQuant | None:
        return self.quant.get(node.name)

    def data(self, node: MSCNode, index: int) -> str:
        """The ONNX value node input ``index`` reads (fake-quantized if the plan says so)."""
        tensor = node.inputs[index]
        layer = self.layer(node)
        params = None if layer is None else layer.input_params(index)
        if params is not None:
            return self.quantize_tensor(tensor, params)
        return self.value[tensor]

    def operand(self, node: MSCNode, arg: dict[str, Any], dtype: str | None = None) -> str:
        """The ONNX value of one argument of a primitive node (prims in ``dtype``)."""
        kind = arg["kind"]
        if kind == "input":
            return self.data(node, arg["index"])
        if kind == "weight":
            if arg["role"] == "weight" and node.optype == "matmul":
                return self.kernel_weight(node, self.weight(node, "weight"), lambda axis: axis)
            return self.weight_input(node, arg["role"])
        if kind == "prim":
            value = float(arg["value"]) if arg["dtype"].startswith("float") else int(arg["value"])
            return self.const(f"{node.name}/const", np.asarray(value, dtype=dtype or arg["dtype"]))
        raise GraphError(f"node {node.name!r} ({node.optype}): argument of kind {kind!r} "
                         "cannot be an operand")

    def source(self, node: MSCNode) -> MSCTensor:
        """The tensor of a node's data operand: its first argument, else its first input."""
        arg = node.args[0] if node.args else {"kind": "input", "index": 0}
        if arg["kind"] == "weight":
            return node.weights[arg["role"]]
        if arg["kind"] != "input":
            raise GraphError(f"node {node.name!r} ({node.optype}): first argument of kind "
                             f"{arg['kind']!r} is not a tensor")
        return self.graph.find_tensor(node.inputs[arg["index"]])

    def x(self, node: MSCNode) -> str:
        """The ONNX value of a node's data operand (see :meth:`source`)."""
        return self.operand(node, node.args[0]) if node.args else self.data(node, 0)

    def kernel_weight(self, node: MSCNode, data: np.ndarray, axis_map: Callable[[int], int]
                      ) -> str:
        """The ``weight`` operand of a conv/linear/matmul: float, or pre-quantized + DQ."""
        layer = self.layer(node)
        name = node.weights["weight"].name
        if layer is None or layer.weight is None:
            if name not in self.weight_inputs:
                self.weight_inputs[name] = self.const(name, data)
            return self.weight_inputs[name]
        qp = layer.weight
        axis = None if qp.axis is None else axis_map(qp.axis % data.ndim)
        self._check_int4(node, qp)
        return self.quantized_weight(node, data, qp, name, axis)

    def bias(self, node: MSCNode) -> str:
        """The bias of a conv / 2-D linear: int32 + DQ when input and weight are 8-bit.

        That is what ONNX Runtime's int8 kernels take (it costs at most half a step of
        ``input_scale * weight_scale``); 4-bit layers have no such kernels, so there the
        bias stays float and exact.
        """
        layer = self.layer(node)
        data = self.weight(node, "bias")
        if (not self.quantize_bias or layer is None or layer.input is None
                or layer.weight is None or layer.input.axis is not None
                or layer.input.bits != 8 or layer.weight.bits != 8
                or layer.weight.axis not in (None, 0)):
            return self.weight_input(node, "bias")
        channels = data.shape[0]
        scale = (layer.input.scale_array() * layer.weight.scale_array()).astype(data.dtype)
        per_channel = layer.weight.axis is not None
        if per_channel:
            scale = np.broadcast_to(scale, (channels,))
        else:
            scale = scale.reshape(())
        bound = np.iinfo(np.int32)
        q = np.clip(np.round(data / scale), bound.min, bound.max).astype(np.int32)
        base = node.weights["bias"].name
        names = [self.const(f"{base}_quantized", q), self.const(f"{base}_scale", scale),
                 self.const(f"{base}_zero_point", np.zeros(scale.shape, np.int32))]
        attrs = {"axis": 0} if per_channel else {}
        return self.emit("DequantizeLinear", names, f"{base}/DequantizeLinear",
                         [self.names.unique(f"{base}_dequantized")], **attrs)

    def _check_int4(self, node: MSCNode, qp: QuantParams) -> None:
        if qp.bits == 4 and self.opset < _INT4_OPSET:
            raise MSCError(f"quant plan for node {node.name!r}: {qp.dtype} needs ONNX opset "
                           f">= {_INT4_OPSET}, the model is built at opset {self.opset}")

    # -- output requantization --------------------------------------------------------
    def downstream_params(self, tensor: str) -> QuantParams | None:
        """The one per-tensor params every use of ``tensor`` is fake-quantized with.

        Follows ops through which fake-quant commutes; None when some use stays float.
        """
        if tensor in self.graph.output_names:
            return None
        found: set[QuantParams] = set()
        consumers = self.graph.find_consumers(tensor)
        if not consumers:
            return None
        for consumer in consumers:
            layer = self.layer(consumer)
            uses = [i for i, name in enumerate(consumer.inputs) if name == tensor]
            planned = [None if layer is None else layer.input_params(i) for i in uses]
            if all(p is not None for p in planned):
                if any(p.axis is not None for p in planned):
                    return None
                found.update(planned)
            elif (consumer.optype in _QUANT_TRANSPARENT and consumer.inputs == [tensor]
                  and len(consumer.outputs) == 1):
                params = self.downstream_params(consumer.output.name)
                if params is None:
                    return None
                found.add(params)
            else:
                return None
        return found.pop() if len(found) == 1 else None

    def finish_node(self, node: MSCNode) -> None:
        """Publish the node's outputs: ``Q -> DQ`` on a planned (fused) output, else on a
        quantized kernel's output where requantizing it is exact."""
        for tensor in node.outputs:
            self.value[tensor.name] = self.raw[tensor.name] = tensor.name
        if node.output.name in self.outputs:
            params = self.outputs[node.output.name]
            self.value[node.output.name] = self.quantize_tensor(node.output.name, params)
            return
        layer = self.layer(node)
        if (node.optype in _KERNELS and layer is not None and layer.input is not None
                and layer.weight is not None and layer.input.bits == layer.weight.bits == 8):
            params = self.downstream_params(node.output.name)
            # A relu/clip behind the kernel whose consumers quantize with zero point at the
            # range's minimum folds into their Q (ONNX Runtime's ReluQuantFusion /
            # ClipQuantFusion): the kernel already ends in a Q, another pair only costs.
            folds = (fused_output(self.graph, node) != node.output.name and params is not None
                     and params.zero_point[0] == params.qrange[0])
            if params is not None and params.bits == 8 and not folds:
                self.value[node.output.name] = self.quantize_tensor(node.output.name, params)


# ------------------------------------------------------------------------------------------
# Op emitters: each writes the node's outputs under their MSC tensor names.
# ------------------------------------------------------------------------------------------
Emitter = Callable[[_Builder, MSCNode], None]


def _unsupported(node: MSCNode, detail: str = "") -> UnsupportedOpError:
    op = f"{node.optype} ({detail})" if detail else node.optype
    return UnsupportedOpError(op, node.name, _WHERE)


def _out(node: MSCNode) -> list[str]:
    return [node.output.name]


def _pads(padding: list[int], node: MSCNode) -> list[int]:
    """Relax 2-D padding (1, 2 or 4 values: top, left, bottom, right) as ONNX pads.

    ONNX orders pads [x1_begin, x2_begin, x1_end, x2_end], i.e. [top, left, bottom, right].
    """
    if len(padding) == 1:
        return list(padding) * 4
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    if len(padding) == 4:
        return list(padding)
    raise GraphError(f"node {node.name!r}: padding {padding} has {len(padding)} values, "
                     "expected 1, 2 or 4")


def _check_layout(node: MSCNode, **expected: str) -> None:
    for key, want in expected.items():
        got = node.attrs.get(key) or want
        if got != want:
            raise _unsupported(node, f"{key} {got}, only {want}")


def _kernel_outputs(b: _Builder, node: MSCNode) -> list[str] | None:
    """Where a conv/linear/matmul writes: the node's output, or a temporary to cast from
    when its ``out_dtype`` differs from the input's dtype (see :func:`_finish_kernel`)."""
    return _out(node) if node.output.dtype == b.source(node).dtype else None


def _finish_kernel(b: _Builder, node: MSCNode, value: str) -> None:
    if node.output.dtype != b.source(node).dtype:
        b.emit("Cast", [value], f"{node.name}/Cast", _out(node),
               to=_elem_type(node.output.dtype, f"node {node.name!r}"))


def _kernel_inputs(b: _Builder, node: MSCNode) -> list[str]:
    """Data, kernel (a graph value when computed, else the planned initializer) and bias
    of a conv / transposed conv, in ONNX's input order."""
    if node.args:  # kernel computed by the graph
        return [b.data(node, 0), b.data(node, 1)]
    inputs = [b.data(node, 0), b.kernel_weight(node, b.weight(node, "weight"),
                                               lambda axis: axis)]
    if "bias" in node.weights:
        inputs.append(b.bias(node))
    return inputs


def _conv(b: _Builder, node: MSCNode) -> None:
    _check_layout(node, data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW")
    attrs = node.attrs
    value = b.emit("Conv", _kernel_inputs(b, node), node.name, _kernel_outputs(b, node),
                   strides=list(attrs["strides"]), pads=_pads(attrs["padding"], node),
                   dilations=list(attrs["dilation"]), group=int(attrs["groups"]))
    _finish_kernel(b, node, value)


def _conv_transpose(b: _Builder, node: MSCNode) -> None:
    """Relax conv2d_transpose as ONNX ConvTranspose: both take an IOHW kernel, the same
    pads order and output_padding, so the output sizes agree."""
    _check_layout(node, data_layout="NCHW", kernel_layout="IOHW", out_layout="NCHW")
    attrs = node.attrs
    inputs = _kernel_inputs(b, node)
    extra = [int(p) for p in attrs.get("output_padding") or [0, 0]]
    value = b.emit("ConvTranspose", inputs, node.name, _kernel_outputs(b, node),
                   strides=list(attrs["strides"]), pads=_pads(attrs["padding"], node),
                   dilations=list(attrs["dilation"]), group=int(attrs["groups"]),
                   output_padding=extra)
    _finish_kernel(b, node, value)


def _linear(b: _Builder, node: MSCNode) -> None:
    """x @ W.T + b: Gemm(transB=1) on 2-D input, else MatMul with W.T stored + Add."""
    weight = b.weight(node, "weight")
    outputs = _kernel_outputs(b, node)
    has_bias = "bias" in node.weights
    if b.source(node).ndim == 2:
        inputs = [b.data(node, 0), b.kernel_weight(node, weight, lambda axis: axis)]
        if has_bias:
            inputs.append(b.bias(node))
        value = b.emit("Gemm", inputs, node.name, outputs, transB=1)
    else:
        transposed = np.ascontiguousarray(weight.T)
        value = b.emit("MatMul", [b.data(node, 0), b.kernel_weight(node, transposed,
                                                                   lambda axis: 1 - axis)],
                       f"{node.name}/MatMul" if has_bias else node.name,
                       None if has_bias else outputs)
        if has_bias:
            value = b.emit("Add", [value, b.weight_input(node, "bias")], node.name, outputs)
    _finish_kernel(b, node, value)


def _batch_norm(b: _Builder, node: MSCNode) -> None:
    attrs = node.attrs
    if attrs.get("training"):
        raise _unsupported(node, "training mode, which normalizes by batch statistics")
    gamma, beta = b.weight(node, "gamma"), b.weight(node, "beta")
    if not attrs.get("scale", True):
        gamma = np.ones_like(gamma)
    if not attrs.get("center", True):
        beta = np.zeros_like(beta)
    mean, var = b.weight(node, "mean"), b.weight(node, "var")
    eps = float(attrs.get("epsilon", 1e-5))
    rank = len(b.source(node).shape)
    axis = int(attrs.get("axis", 1)) % rank
    if axis == 1:
        names = [b.const(node.weights[r].name, v)
                 for r, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        b.emit("BatchNormalization", [b.x(node), *names], node.name, _out(node),
               epsilon=eps)
        return
    shape = [1] * rank
    shape[axis] = -1
    scale = (gamma / np.sqrt(var + eps)).astype(gamma.dtype)
    shift = (beta - mean * scale).astype(gamma.dtype)
    scaled = b.emit("Mul", [b.x(node), b.const(f"{node.name}.scale",
                                                      scale.reshape(shape))], f"{node.name}/Mul")
    b.emit("Add", [scaled, b.const(f"{node.name}.shift", shift.reshape(shape))], node.name,
           _out(node))


def _arg_ints(node: MSCNode, arg: dict[str, Any]) -> list[int]:
    """The integers of a literal argument (a prim or a tuple of prims)."""
    if arg["kind"] == "tuple":
        return [v for item in arg["items"] for v in _arg_ints(node, item)]
    if arg["kind"] == "prim" and not arg["dtype"].startswith("float"):
        return [int(arg["value"])]
    raise _unsupported(node, f"non-literal integer argument {arg}")


def _primitive_inputs(b: _Builder, node: MSCNode) -> list[str]:
    return [b.operand(node, a, node.output.dtype) for a in node.args]


def _unary(op_type: str) -> Emitter:
    def emit(b: _Builder, node: MSCNode) -> None:
        b.emit(op_type, [b.x(node)], node.name, _out(node))
    return emit


def _binary(op_type: str) -> Emitter:
    def emit(b: _Builder, node: MSCNode) -> None:
        b.emit(op_type, _primitive_inputs(b, node), node.name, _out(node))
    return emit


def _scalar(b: _Builder, node: MSCNode, label: str, value: float) -> str:
    return b.const(f"{node.name}/{label}", np.asarray(value, dtype=node.output.dtype))


def _rsqrt(b: _Builder, node: MSCNode) -> None:
    root = b.emit("Sqrt", [b.x(node)], f"{node.name}/Sqrt")
    b.emit("Reciprocal", [root], node.name, _out(node))


def _square(b: _Builder, node: MSCNode) -> None:
    x = b.x(node)
    b.emit("Mul", [x, x], node.name, _out(node))


def _silu(b: _Builder, node: MSCNode) -> None:
    x = b.x(node)
    gate = b.emit("Sigmoid", [x], f"{node.name}/Sigmoid")
    b.emit("Mul", [x, gate], node.name, _out(node))


def _gelu(approximate: str) -> Emitter:
    """Gelu from opset 20; before that its erf (or tanh) formula."""

    def emit(b: _Builder, node: MSCNode) -> None:
        x = b.x(node)
        if b.opset >= 20:
            b.emit("Gelu", [x], node.name, _out(node), approximate=approximate)
            return
        if approximate == "tanh":
            cube = b.emit("Mul", [x, b.emit("Mul", [x, x], f"{node.name}/square")],
                          f"{node.name}/cube")
            inner = b.emit("Add", [x, b.emit("Mul", [cube, _scalar(b, node, "c", 0.044715)],
                                             f"{node.name}/scale_cube")], f"{node.name}/inner")
            arg = b.emit("Mul", [inner, _scalar(b, node, "k", math.sqrt(2.0 / math.pi))],
                         f"{node.name}/arg")
            core = b.emit("Tanh", [arg], f"{node.name}/Tanh")
        else:
            arg = b.emit("Mul", [x, _scalar(b, node, "k", 1.0 / math.sqrt(2.0))],
                         f"{node.name}/arg")
            core = b.emit("Erf", [arg], f"{node.name}/Erf")
        one_plus = b.emit("Add", [core, _scalar(b, node, "one", 1.0)], f"{node.name}/one_plus")
        half_x = b.emit("Mul", [x, _scalar(b, node, "half", 0.5)], f"{node.name}/half_x")
        b.emit("Mul", [half_x, one_plus], node.name, _out(node))

    return emit


def _clip(b: _Builder, node: MSCNode) -> None:
    inputs = [b.x(node)]
    for label, arg in (("min", node.args[1]), ("max", node.args[2])):
        if arg["kind"] != "prim":
            raise _unsupported(node, f"non-literal {label} bound")
        value = float(arg["value"])
        inputs.append("" if math.isinf(value) else _scalar(b, node, label, value))
    while inputs[-1] == "":
        inputs.pop()
    b.emit("Clip", inputs, node.name, _out(node))


class _DimValue:
    """A run-time dim (1-element int64 tensor) that arithmetic on builds ONNX nodes for.

    ``eval_dim`` evaluates a symbolic dim expression (``"s77 * 8"``) with these in place
    of the names, so the expression becomes Shape/Add/Sub/Mul/Div nodes.
    """

    def __init__(self, b: _Builder, node: MSCNode, value: str) -> None:
        self.b, self.node, self.value = b, node, value

    def _apply(self, op_type: str, other: _DimValue | int, reverse: bool = False) -> _DimValue:
        rhs = (other.value if isinstance(other, _DimValue)
               else self.b.ints(f"{self.node.name}/dim", [int(other)]))
        operands = [rhs, self.value] if reverse else [self.value, rhs]
        return _DimValue(self.b, self.node,
                         self.b.emit(op_type, operands, f"{self.node.name}/dim_{op_type}"))

    def __add__(self, other: _DimValue | int) -> _DimValue:
        return self._apply("Add", other)

    def __radd__(self, other: int) -> _DimValue:
        return self._apply("Add", other, reverse=True)

    def __sub__(self, other: _DimValue | int) -> _DimValue:
        return self._apply("Sub", other)

    def __rsub__(self, other: int) -> _DimValue:
        return self._apply("Sub", other, reverse=True)

    def __mul__(self, other: _DimValue | int) -> _DimValue:
        return self._apply("Mul", other)

    def __rmul__(self, other: int) -> _DimValue:
        return self._apply("Mul", other, reverse=True)

    def __floordiv__(self, other: _DimValue | int) -> _DimValue:  # dims are >= 0: Div floors
        return self._apply("Div", other)

    def __rfloordiv__(self, other: int) -> _DimValue:
        return self._apply("Div", other, reverse=True)


def _symbol_size(b: _Builder, node: MSCNode, symbol: str) -> _DimValue:
    """The run-time size of the named dim ``symbol``, read with Shape from a tensor with it."""
    for tensor in [*node.inputs, *b.graph.input_names]:
        shape = b.graph.find_tensor(tensor).shape
        if symbol in shape:
            axis = shape.index(symbol)
            return _DimValue(b, node, b.emit("Shape", [b.value[tensor]], f"{node.name}/{symbol}",
                                             start=axis, end=axis + 1))
    raise GraphError(f"node {node.name!r}: no tensor of the graph has a dim named {symbol!r}, "
                     "so its size is unknown at run time")


def _shape_operand(b: _Builder, node: MSCNode, dims: list[Dim], keep: int) -> str:
    """The int64 shape operand of a Reshape (``keep=0``) or an Expand (``keep=1``).

    A symbolic dim the input has at the matching position (same index for Reshape,
    right-aligned for Expand) becomes ``keep``, which both ops read as "the input's dim";
    for Reshape one other symbolic dim becomes -1; any further ones are computed at run
    time from the shapes of tensors that carry their names.
    """
    source = b.source(node).shape
    offset = len(dims) - len(source) if keep == 1 else 0
    if keep == 0 and 0 in dims:
        raise _unsupported(node, "reshape to a zero-size dimension")
    target: list[Dim] = []
    for index, dim in enumerate(b.dims(tuple(dims))):
        position = index - offset
        same = isinstance(dim, str) and 0 <= position < len(source) and source[position] == dim
        target.append(keep if same else dim)
    symbolic = [i for i, d in enumerate(target) if isinstance(d, str)]
    if keep == 0 and len(symbolic) == 1 and -1 not in target:
        target[symbolic[0]] = -1
        symbolic = []
    if not symbolic:
        return b.ints(f"{node.name}/shape", [int(d) for d in target])
    pieces = []
    for dim in target:
        size = eval_dim(dim, lambda name: _symbol_size(b, node, name))
        pieces.append(size.value if isinstance(size, _DimValue)
                      else b.ints(f"{node.name}/dim", [int(size)]))
    return b.emit("Concat", pieces, f"{node.name}/shape", axis=0)


def _shape_arg(node: MSCNode) -> list[Dim]:
    shape = next((a for a in node.args if a["kind"] == "shape"), None)
    return list(shape["value"]) if shape is not None else list(node.output.shape)


def _reshape(b: _Builder, node: MSCNode) -> None:
    b.emit("Reshape", [b.x(node), _shape_operand(b, node, _shape_arg(node), keep=0)],
           node.name, _out(node))


def _broadcast_to(b: _Builder, node: MSCNode) -> None:
    if tuple(_shape_arg(node)) == tuple(b.source(node).shape):  # e.g. the inputs of Sum
        b.emit("Identity", [b.x(node)], node.name, _out(node))
        return
    b.emit("Expand", [b.x(node), _shape_operand(b, node, _shape_arg(node), keep=1)],
           node.name, _out(node))


def _flatten(b: _Builder, node: MSCNode) -> None:
    b.emit("Reshape", [b.x(node), b.ints(f"{node.name}/shape", [-1])], node.name,
           _out(node))


def _permute_dims(b: _Builder, node: MSCNode) -> None:
    axes = node.attrs.get("axes")
    rank = len(b.source(node).shape)
    perm = [int(a) % rank for a in axes] if axes is not None else list(range(rank))[::-1]
    b.emit("Transpose", [b.x(node)], node.name, _out(node), perm=perm)


def _concat(b: _Builder, node: MSCNode) -> None:
    items = node.args[0]["items"] if node.args[0]["kind"] == "tuple" else node.args
    inputs = [b.operand(node, item, node.output.dtype) for item in items]
    axis = node.attrs.get("axis")
    if axis is None:
        flat = b.ints(f"{node.name}/flat", [-1])
        inputs = [b.emit("Reshape", [x, flat], f"{node.name}/flatten") for x in inputs]
        axis = 0
    b.emit("Concat", inputs, node.name, _out(node), axis=int(axis))


def _strided_slice(b: _Builder, node: MSCNode) -> None:
    axes, begin, end = (_arg_ints(node, a) for a in node.args[1:4])
    steps = _arg_ints(node, node.args[4]) if len(node.args) > 4 else [1] * len(axes)
    inputs = [b.x(node), b.ints(f"{node.name}/starts", begin),
              b.ints(f"{node.name}/ends", end), b.ints(f"{node.name}/axes", axes),
              b.ints(f"{node.name}/steps", steps)]
    b.emit("Slice", inputs, node.name, _out(node))


def _squeeze(b: _Builder, node: MSCNode) -> None:
    source = b.source(node).shape
    axes = node.attrs.get("axis")
    candidates = range(len(source)) if axes is None else [int(a) % len(source) for a in axes]
    # Relax drops a listed axis only where it is 1 (or symbolic); a static non-1 axis stays.
    kept = [a for a in candidates if source[a] == 1 or (axes is not None
                                                        and isinstance(source[a], str))]
    if len(source) - len(kept) != node.output.ndim:
        raise GraphError(f"node {node.name!r}: squeezing axes {kept} of {source} does not "
                         f"give the rank of {node.output}")
    b.emit("Squeeze", [b.x(node), b.ints(f"{node.name}/axes", kept)], node.name,
           _out(node))


def _expand_dims(b: _Builder, node: MSCNode) -> None:
    axes = [int(a) for a in node.attrs["axis"]]
    b.emit("Unsqueeze", [b.x(node), b.ints(f"{node.name}/axes", axes)], node.name,
           _out(node))


def _take(b: _Builder, node: MSCNode) -> None:
    data, indices = _primitive_inputs(b, node)
    source = b.source(node).shape
    axis = node.attrs.get("axis")
    if axis is None:  # take from the flattened tensor
        data = b.emit("Reshape", [data, b.ints(f"{node.name}/flat", [-1])],
                      f"{node.name}/flatten")
        static = all(isinstance(d, int) for d in source)
        size = math.prod(int(d) for d in source) if static else None
        axis = 0
    else:
        axis = int(axis)
        dim = source[axis % len(source)]
        size = dim if isinstance(dim, int) else None
    mode = node.attrs.get("mode", "fast")
    if mode in ("clip", "wrap"):
        if size is None:
            raise _unsupported(node, f"take mode {mode!r} along a symbolic dim")
        index_arg = node.args[1]
        index_dtype = (b.graph.find_tensor(node.inputs[index_arg["index"]]).dtype
                       if index_arg["kind"] == "input" else node.weights[index_arg["role"]].dtype)
        if mode == "clip":
            low = b.const(f"{node.name}/low", np.asarray(0, index_dtype))
            high = b.const(f"{node.name}/high", np.asarray(size - 1, index_dtype))
            indices = b.emit("Clip", [indices, low, high], f"{node.name}/clip_indices")
        else:
            indices = b.emit("Mod", [indices, b.const(f"{node.name}/size",
                                                      np.asarray(size, index_dtype))],
                             f"{node.name}/wrap_indices")
    b.emit("Gather", [data, indices], node.name, _out(node), axis=axis)


def _reduce(op_type: str) -> Emitter:
    def emit(b: _Builder, node: MSCNode) -> None:
        if op_type == "ReduceMean" and is_global_average_pool(b.graph, node):
            b.emit("GlobalAveragePool", [b.x(node)], node.name, _out(node))
            return
        inputs = [b.x(node)]
        axes = node.attrs.get("axis")
        keepdims = int(bool(node.attrs.get("keepdims", False)))
        extra: dict[str, Any] = {}
        if axes is not None and len(axes) == 0:
            extra["noop_with_empty_axes"] = 1
        elif axes is not None:
            inputs.append(b.ints(f"{node.name}/axes", [int(a) for a in axes]))
        b.emit(op_type, inputs, node.name, _out(node), keepdims=keepdims, **extra)
    return emit


def _softmax(op_type: str) -> Emitter:
    def emit(b: _Builder, node: MSCNode) -> None:
        b.emit(op_type, [b.x(node)], node.name, _out(node),
               axis=int(node.attrs.get("axis", -1)))
    return emit


def _layer_norm(b: _Builder, node: MSCNode) -> None:
    rank = len(b.source(node).shape)
    axes = sorted(int(a) % rank for a in node.attrs["axes"])
    if axes != list(range(axes[0], rank)):
        raise _unsupported(node, f"normalizing axes {node.attrs['axes']}, not trailing ones")
    gamma = (b.weight_input(node, "gamma") if node.attrs.get("scale", True)
             else b.const(f"{node.name}.gamma", np.ones_like(b.weight(node, "gamma"))))
    inputs = [b.x(node), gamma]
    if node.attrs.get("center", True):
        inputs.append(b.weight_input(node, "beta"))
    b.emit("LayerNormalization", inputs, node.name, _out(node), axis=axes[0],
           epsilon=float(node.attrs.get("epsilon", 1e-5)))


def _pool(op_type: str) -> Emitter:
    def emit(b: _Builder, node: MSCNode) -> None:
        attrs = node.attrs
        _check_layout(node, layout="NCHW", out_layout="NCHW")
        extra: dict[str, Any] = {"dilations": list(attrs["dilation"])}
        if op_type == "AveragePool":
            extra["count_include_pad"] = int(bool(attrs.get("count_include_pad", False)))
            if b.opset < 19:  # AveragePool takes dilations from opset 19 on
                if any(d != 1 for d in extra.pop("dilations")):
                    raise _unsupported(node, f"dilated average pooling at opset {b.opset}")
        b.emit(op_type, [b.x(node)], node.name, _out(node),
               kernel_shape=list(attrs["pool_size"]), strides=list(attrs["strides"]),
               pads=_pads(attrs["padding"], node),
               ceil_mode=int(bool(attrs.get("ceil_mode", False))), **extra)
    return emit


def _adaptive_avg_pool2d(b: _Builder, node: MSCNode) -> None:
    _check_layout(node, layout="NCHW", out_layout="NCHW")
    source, target = b.source(node).shape[2:], node.output.shape[2:]
    if tuple(target) == (1, 1):
        b.emit("GlobalAveragePool", [b.x(node)], node.name, _out(node))
        return
    static = all(isinstance(d, int) for d in (*source, *target))
    if not static or any(s % t for s, t in zip(source, target, strict=True)):
        raise _unsupported(node, f"output size {list(target)} from input {list(source)}; "
                           "only a global pool or an exact divisor is supported")
    kernel = [s // t for s, t in zip(source, target, strict=True)]
    b.emit("AveragePool", [b.x(node)], node.name, _out(node), kernel_shape=kernel,
           strides=kernel)


def _avg_pool3d(b: _Builder, node: MSCNode) -> None:
    """Relax avg_pool3d; its padding (front, top, left, back, bottom, right) is ONNX's order."""
    attrs = node.attrs
    _check_layout(node, layout="NCDHW", out_layout="NCDHW")
    pads = [int(p) for p in attrs["padding"]]
    pads = pads * (6 // len(pads)) if len(pads) in (1, 3) else pads
    extra: dict[str, Any] = {}
    dilation = [int(d) for d in attrs["dilation"]]
    if any(d != 1 for d in dilation):
        if b.opset < 19:
            raise _unsupported(node, f"dilated average pooling at opset {b.opset}")
        extra["dilations"] = dilation
    b.emit("AveragePool", [b.x(node)], node.name, _out(node),
           kernel_shape=list(attrs["pool_size"]), strides=list(attrs["strides"]), pads=pads,
           ceil_mode=int(bool(attrs.get("ceil_mode", False))),
           count_include_pad=int(bool(attrs.get("count_include_pad", False))), **extra)


def _pad(b: _Builder, node: MSCNode) -> None:
    """Relax nn.pad ((before, after) per axis) as ONNX Pad (all befores, then all afters)."""
    attrs = node.attrs
    mode = str(attrs.get("pad_mode", "constant"))
    if mode != "constant":
        raise _unsupported(node, f"pad mode {mode!r}")
    widths = [int(w) for w in attrs["pad_width"]]
    pads = widths[0::2] + widths[1::2]
    value = _scalar(b, node, "value", float(attrs.get("pad_value", 0.0)))
    b.emit("Pad", [b.x(node), b.ints(f"{node.name}/pads", pads), value], node.name,
           _out(node), mode="constant")


def _only_use(b: _Builder, node: MSCNode, optype: str) -> MSCNode | None:
    """The single consumer of ``node`` when it is a float ``optype`` node reading it first."""
    if node.output.name in b.graph.output_names or b.layer(node) is not None:
        return None
    consumers = b.graph.find_consumers(node.output.name)
    if len(consumers) != 1 or consumers[0].optype != optype or b.layer(consumers[0]):
        return None
    use = consumers[0]
    return use if use.inputs and use.inputs[0] == node.output.name else None


def _scalar_weight(b: _Builder, node: MSCNode) -> float | None:
    """The value of a binary node's right operand when it is a one-element constant."""
    if len(node.args) != 2 or node.args[1]["kind"] != "weight":
        return None
    value = b.weight(node, node.args[1]["role"])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _lrn_chain(b: _Builder, square: MSCNode) -> tuple[list[MSCNode], dict[str, Any]] | None:
    """The nodes and ONNX LRN attributes of a local response normalization starting at
    ``square`` (x * x), in the forms TVM imports it: from ONNX LRN (expand_dims, padded
    avg_pool3d) and from torch's LocalResponseNorm (reshape, pad, avg_pool3d); then
    squeeze, * alpha, + bias, ** beta and x / that. None when the nodes differ anywhere."""
    x = square.inputs[0] if square.inputs else None
    source = b.graph.find_tensor(x) if x is not None else None
    if (source is None or square.inputs != [x, x] or len(source.shape) != 4
            or any(a["kind"] != "input" for a in square.args)):
        return None
    chain = [square]
    lift = _only_use(b, square, "expand_dims") or _only_use(b, square, "reshape")
    if lift is None or list(lift.output.shape) != [source.shape[0], 1, *source.shape[1:]]:
        return None
    chain.append(lift)
    before = after = 0
    pad = _only_use(b, lift, "nn.pad")
    if pad is not None:
        widths = [int(w) for w in pad.attrs.get("pad_width", [])]
        if (len(widths) != 10 or any(widths[i] for i in (0, 1, 2, 3, 6, 7, 8, 9))
                or pad.attrs.get("pad_mode", "constant") != "constant"
                or float(pad.attrs.get("pad_value", 0.0)) != 0.0):
            return None
        before, after = widths[4], widths[5]
        chain.append(pad)
    pool = _only_use(b, chain[-1], "nn.avg_pool3d")
    if pool is None:
        return None
    attrs = pool.attrs
    pads = [int(v) for v in attrs["padding"]]
    pads = pads * (6 // len(pads)) if len(pads) in (1, 3) else pads
    size = int(attrs["pool_size"][0])
    before, after = before + pads[0], after + pads[3]
    if (list(attrs["pool_size"][1:]) != [1, 1] or list(attrs["strides"]) != [1, 1, 1]
            or any(int(d) != 1 for d in attrs["dilation"]) or attrs.get("ceil_mode")
            or any(pads[i] for i in (1, 2, 4, 5))
            or (not attrs.get("count_include_pad") and (pads[0] or pads[3]))
            or before + after != size - 1 or not isinstance(source.shape[1], int)):
        return None
    chain.append(pool)
    squeeze = _only_use(b, pool, "squeeze")
    if squeeze is None or [int(a) for a in squeeze.attrs.get("axis") or []] != [1]:
        return None
    chain.append(squeeze)
    values = {}
    for optype, key in (("multiply", "alpha"), ("add", "bias"), ("power", "beta")):
        step = _only_use(b, chain[-1], optype)
        value = _scalar_weight(b, step) if step is not None else None
        if value is None:
            return None
        values[key] = value
        chain.append(step)
    divide = next(iter(b.graph.find_consumers(chain[-1].output.name)), None)
    if (chain[-1].output.name in b.graph.output_names
            or len(b.graph.find_consumers(chain[-1].output.name)) != 1
            or divide is None or divide.optype != "divide" or b.layer(divide) is not None
            or divide.inputs != [x, chain[-1].output.name]
            or any(a["kind"] != "input" for a in divide.args)):
        return None
    chain.append(divide)
    return chain, {"before": before, "after": after, "size": size, **values}


def _multiply(b: _Builder, node: MSCNode) -> None:
    """Mul; or, at the square that starts TVM's lowering of LRN, the LRN as
    ``x / (bias + conv1x1(x * x, band)) ** beta`` (beta 0.75 and 0.5 as square roots).

    The band matrix holds ``alpha / size`` where an input channel lies in an output
    channel's window: the window sum becomes a 1x1 Conv, which ORT runs in its blocked
    layout next to the other convs. Measured at opset 20 on ORT 1.32 (1 thread, AlexNet-style
    LRN on 48x55x55) both alternatives are far slower: the AveragePool-19 kernel over the
    channel window takes ~7x the time of AveragePool-11's, and ORT's LRN kernel more still.
    """
    found = _lrn_chain(b, node) if b.layer(node) is None else None
    if found is None:
        _binary("Mul")(b, node)
        return
    chain, attrs = found
    x = b.data(node, 0)
    source = b.graph.find_tensor(node.inputs[0])
    channels, dtype = int(source.shape[1]), np.dtype(source.dtype)
    offset = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # c_in - c_out
    band = ((offset >= -attrs["before"]) & (offset <= attrs["after"])).astype(dtype)
    band *= dtype.type(attrs["alpha"] / attrs["size"])
    square = b.emit("Mul", [x, x], f"{node.name}/square")
    window = b.emit("Conv", [square, b.const(f"{node.name}/band",
                                             band.reshape(channels, channels, 1, 1))],
                    f"{node.name}/window_sum")
    shifted = b.emit("Add", [window, _scalar_of(b, node, "bias", attrs["bias"], dtype)],
                     f"{node.name}/shift")
    if attrs["beta"] == 0.75:  # the usual beta: ORT's Pow with a fractional exponent is
        # its slowest step, two square roots are cheap (and within an ulp or two)
        root = b.emit("Sqrt", [shifted], f"{node.name}/sqrt")
        scale = b.emit("Mul", [root, b.emit("Sqrt", [root], f"{node.name}/quartic_root")],
                       f"{node.name}/power")
    elif attrs["beta"] == 0.5:
        scale = b.emit("Sqrt", [shifted], f"{node.name}/power")
    else:
        scale = b.emit("Pow", [shifted, _scalar_of(b, node, "beta", attrs["beta"], dtype)],
                       f"{node.name}/power")
    b.emit("Div", [x, scale], chain[-1].name, _out(chain[-1]))
    b.fused.update(n.name for n in chain[1:])


def _scalar_of(b: _Builder, node: MSCNode, label: str, value: float, dtype: np.dtype) -> str:
    return b.const(f"{node.name}/{label}", np.asarray(value, dtype=dtype))


def _stack_sum(b: _Builder, node: MSCNode, axis: int) -> MSCNode | None:
    """The float ``sum`` over the stacked axis that is the stack's only use, if any: TVM
    imports ONNX Sum (of several tensors) as that pair, which is one ONNX Sum again."""
    if node.output.name in b.graph.output_names or b.layer(node) is not None:
        return None
    consumers = b.graph.find_consumers(node.output.name)
    if len(consumers) != 1:
        return None
    reduce = consumers[0]
    axes = reduce.attrs.get("axis")
    rank = node.output.ndim
    if (reduce.optype != "sum" or b.layer(reduce) is not None or axes is None
            or [int(a) % rank for a in axes] != [axis % rank]
            or reduce.attrs.get("keepdims", False)
            or reduce.output.dtype != node.output.dtype):
        return None
    return reduce


def _stack(b: _Builder, node: MSCNode) -> None:
    items = node.args[0]["items"] if node.args[0]["kind"] == "tuple" else node.args
    axis = node.attrs.get("axis")
    axis = 0 if axis is None else int(axis)
    total = _stack_sum(b, node, axis)
    if total is not None:
        b.emit("Sum", [b.operand(node, item, node.output.dtype) for item in items], total.name,
               _out(total))
        b.fused.add(total.name)
        return
    where = b.ints(f"{node.name}/axes", [axis])
    parts = [b.emit("Unsqueeze", [b.operand(node, item, node.output.dtype), where],
                    f"{node.name}/Unsqueeze") for item in items]
    b.emit("Concat", parts, node.name, _out(node), axis=axis)


_ONNX_RESIZE = {"nearest_neighbor": "nearest", "linear": "linear", "cubic": "cubic"}
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize_coords(out_size: int, in_size: int, mode: str) -> np.ndarray:
    """Input coordinates of the output positions (float32, scale in/out as TVM has it)."""
    out = np.arange(out_size, dtype=np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        if mode == "pytorch_half_pixel" and out_size == 1:
            return np.zeros(1, np.float32)
        return (out + np.float32(0.5)) * scale - np.float32(0.5)
    if mode == "align_corners":
        if out_size == 1:
            return np.zeros(1, np.float32)
        return out * (np.float32(in_size - 1) / np.float32(out_size - 1))
    if mode == "asymmetric":
        return out * scale
    return (out + np.float32(0.5)) * scale  # tf_half_pixel_for_nn


def _nearest_mode_for_round(node: MSCNode, source: tuple[Dim, ...]) -> str:
    """The ONNX nearest_mode that picks the same pixels as Relax's ``round`` (half to even,
    which ONNX lacks) for this node's static sizes."""
    sizes = [*source[2:], *node.output.shape[2:]]
    if not all(isinstance(d, int) for d in sizes):
        raise _unsupported(node, "rounding 'round' over symbolic spatial sizes")
    coordinate = str(node.attrs["coordinate_transformation_mode"])
    wanted = []
    candidates = {mode: [] for mode in _NEAREST_MODES}
    for in_size, out_size in zip(source[2:], node.output.shape[2:], strict=True):
        coords = _resize_coords(int(out_size), int(in_size), coordinate)
        wanted.append(np.round(coords))
        candidates["round_prefer_floor"].append(np.ceil(coords - 0.5))
        candidates["round_prefer_ceil"].append(np.floor(coords + 0.5))
        candidates["floor"].append(np.floor(coords))
        candidates["ceil"].append(np.ceil(coords))
    for mode, picks in candidates.items():
        if all(np.array_equal(p, w) for p, w in zip(picks, wanted, strict=True)):
            return mode
    raise _unsupported(node, "rounding 'round' (half to even), which no ONNX nearest_mode "
                       "reproduces for these sizes")


def _resize(b: _Builder, node: MSCNode) -> None:
    """Relax image.resize2d as ONNX Resize with output ``sizes`` over axes 2 and 3, so the
    scale is in/out exactly as TVM computes it."""
    attrs = node.attrs
    _check_layout(node, layout="NCHW")
    method = str(attrs["method"])
    coordinate = str(attrs["coordinate_transformation_mode"])
    if method not in _ONNX_RESIZE:
        raise _unsupported(node, f"method {method!r}")
    if coordinate not in RESIZE_COORDINATES:
        raise _unsupported(node, f"coordinate transformation {coordinate!r}")
    out_dtype = attrs.get("out_dtype")
    if out_dtype and _dtype_name(out_dtype) != node.output.dtype:
        raise _unsupported(node, f"output dtype {out_dtype}")
    extra: dict[str, Any] = {}
    if method == "nearest_neighbor":
        rounding = str(attrs.get("rounding_method") or "")
        rounding = rounding or ("round" if coordinate == "align_corners" else "floor")
        if rounding == "round":
            rounding = _nearest_mode_for_round(node, b.source(node).shape)
        if rounding not in _NEAREST_MODES:
            raise _unsupported(node, f"rounding {rounding!r}")
        extra["nearest_mode"] = rounding
    elif method == "cubic":
        extra["cubic_coeff_a"] = float(attrs.get("cubic_alpha", -0.75))
        extra["exclude_outside"] = int(attrs.get("cubic_exclude", 0))
    target = b.dims(tuple(node.output.shape[2:]))
    source = b.source(node).shape[2:]
    if all(isinstance(d, int) and d > 0 for d in (*source, *target)) and all(
            t % s == 0 for s, t in zip(source, target, strict=True)):
        # Integer upscaling as constant scales: ORT then runs it as its blocked-layout
        # (NCHWc) Upsample next to NCHWc convs instead of reordering around a Resize. The
        # input coordinates agree up to float rounding: ORT divides by the scale out/in,
        # TVM multiplies by in/out.
        factors = [1.0, 1.0, *(t / s for s, t in zip(source, target, strict=True))]
        scales = b.const(f"{node.name}/scales", np.asarray(factors, np.float32))
        b.emit("Resize", [b.x(node), "", scales], node.name, _out(node),
               mode=_ONNX_RESIZE[method], coordinate_transformation_mode=coordinate, **extra)
        return
    if all(isinstance(d, int) for d in target):
        sizes = b.ints(f"{node.name}/sizes", [int(d) for d in target])
    else:
        pieces = []
        for dim in target:
            size = eval_dim(dim, lambda name: _symbol_size(b, node, name))
            pieces.append(size.value if isinstance(size, _DimValue)
                          else b.ints(f"{node.name}/size", [int(size)]))
        sizes = b.emit("Concat", pieces, f"{node.name}/sizes", axis=0)
    b.emit("Resize", [b.x(node), "", "", sizes], node.name, _out(node), axes=[2, 3],
           mode=_ONNX_RESIZE[method], coordinate_transformation_mode=coordinate, **extra)


def _matmul(b: _Builder, node: MSCNode) -> None:
    value = b.emit("MatMul", _primitive_inputs(b, node), node.name, _kernel_outputs(b, node))
    _finish_kernel(b, node, value)


def _astype(b: _Builder, node: MSCNode) -> None:
    dtype = _dtype_name(node.attrs["dtype"])
    b.emit("Cast", [b.x(node)], node.name, _out(node),
           to=_elem_type(dtype, f"node {node.name!r}"))


_EMITTERS: dict[str, Emitter] = {
    "msc.conv2d_bias": _conv,
    "nn.conv2d": _conv,
    "msc.linear": _linear,
    "msc.linear_bias": _linear,
    "msc.batch_norm": _batch_norm,
    "nn.batch_norm": _batch_norm,
    **{op: _unary(onnx_op) for op, onnx_op in _UNARY.items()},
    **{op: _binary(onnx_op) for op, onnx_op in _BINARY.items()},
    "multiply": _multiply,
    **{op: _reduce(onnx_op) for op, onnx_op in _REDUCE.items()},
    "rsqrt": _rsqrt,
    "square": _square,
    "nn.silu": _silu,
    "nn.gelu": _gelu("none"),
    "nn.gelu_tanh": _gelu("tanh"),
    "clip": _clip,
    "reshape": _reshape,
    "broadcast_to": _broadcast_to,
    "flatten": _flatten,
    "permute_dims": _permute_dims,
    "concat": _concat,
    "strided_slice": _strided_slice,
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "take": _take,
    "nn.softmax": _softmax("Softmax"),
    "nn.log_softmax": _softmax("LogSoftmax"),
    "nn.layer_norm": _layer_norm,
    "nn.max_pool2d": _pool("MaxPool"),
    "nn.avg_pool2d": _pool("AveragePool"),
    "nn.adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "matmul": _matmul,
    "astype": _astype,
    "msc.conv2d_transpose_bias": _conv_transpose,
    "nn.conv2d_transpose": _conv_transpose,
    "nn.avg_pool3d": _avg_pool3d,
    "nn.pad": _pad,
    "stack": _stack,
    "image.resize2d": _resize,
}

EMITTED_OPTYPES = frozenset(_EMITTERS)
"""The MSC optypes this codegen writes as ONNX (what the onnxruntime runner can run)."""


def _check_plan(graph: MSCGraph, quant: QuantPlan) -> None:
    for name, layer in quant.items():
        if name not in graph:
            raise MSCError(f"quant plan names node {name!r}, which graph {graph.name!r} lacks")
        node = graph.find_node(name)
        if layer.input is not None and not node.inputs:
            raise MSCError(f"quant plan quantizes the input of node {name!r}, which has none")
        if len(layer.extra_inputs) >= max(len(node.inputs), 1):
            raise MSCError(f"quant plan quantizes input {len(layer.extra_inputs)} of node "
                           f"{name!r}, which has {len(node.inputs)} inputs")
        if layer.weight is not None and node.optype not in _KERNELS:
            raise MSCError(f"quant plan quantizes the weight of node {name!r} ({node.optype}); "
                           f"only {', '.join(_KERNELS)} have a quantizable weight")
        if layer.weight is not None and "weight" not in node.weights:
            raise MSCError(f"quant plan quantizes the weight of node {name!r}, which has no "
                           "constant weight")


def to_onnx(
    graph: MSCGraph,
    params: Mapping[str, np.ndarray],
    quant: QuantPlan | None = None,
    opset: int | None = None,
    batch: int | None = None,
    quantize_bias: bool = True,
) -> onnx.ModelProto:
    """Build the ONNX model of ``graph`` with ``params`` as initializers.

    ``opset`` defaults to 20, or 21 when the plan has 4-bit tensors (INT4 needs it):
    ONNX Runtime 1.32 mis-infers QuantizeLinear output types after a Reshape at opset
    21, so the lowest opset that expresses the plan is the safe default.

    ``quant`` adds QDQ nodes for its layers (see the module docstring). ``batch`` fixes
    every symbolic dim to that size; otherwise they stay symbolic (``dim_param``).
    ``quantize_bias=False`` keeps biases float, for consumers (TensorRT) that do not take
    int32 DequantizeLinear inputs. The model passes ``onnx.checker`` with ``full_check``.
    """
    if opset is None:
        four_bit = any(p is not None and p.bits == 4 for layer in (quant or {}).values()
                       for p in (layer.input, layer.weight))
        opset = _INT4_OPSET if four_bit else _DEFAULT_OPSET
    if not _MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise MSCError(f"onnx codegen supports opsets {_MIN_OPSET}.."
                       f"{onnx.defs.onnx_opset_version()}, got {opset}")
    if batch is not None and batch < 1:
        raise MSCError(f"onnx codegen: batch must be >= 1, got {batch}")
    quant = dict(quant or {})
    _check_plan(graph, quant)
    builder = _Builder(graph, params, quant, opset, batch, quantize_bias)
    inputs = []
    for tensor in graph.get_inputs():
        builder.names.reserve(tensor.name)
        builder.value[tensor.name] = builder.raw[tensor.name] = tensor.name
        inputs.append(_value_info(builder, tensor))
    for node in graph.nodes:
        for tensor in node.outputs:
            builder.names.reserve(tensor.name)
    for node in graph.nodes:
        if node.optype == "input":
            continue
        known = node.optype in COMPOSITE or f"relax.{node.optype}" in SUPPORTED_OPS
        emitter = _EMITTERS.get(node.optype)
        if emitter is None or not known:
            raise UnsupportedOpError(node.optype, node.name, _WHERE)
        if node.name not in builder.fused:
            emitter(builder, node)
        builder.finish_node(node)
    outputs = [_value_info(builder, t) for t in graph.get_outputs()]
    onnx_graph = helper.make_graph(builder.nodes, graph.name, inputs, outputs,
                                   builder.initializers)
    model = helper.make_model_gen_version(onnx_graph, producer_name="mscgym",
                                          opset_imports=[helper.make_opsetid("", opset)])
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise MSCError(f"onnx codegen built an invalid model for graph {graph.name!r}: "
                       f"{err}") from err
    return model


def _value_info(builder: _Builder, tensor: MSCTensor) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(tensor.name, _elem_type(tensor.dtype, tensor.name),
                                         builder.dims(tensor.shape))


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` atomically: a reader never sees a half-written file."""
    atomic_write_bytes(path, model.SerializeToString())
