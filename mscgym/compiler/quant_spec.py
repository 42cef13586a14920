"""Quantization parameters as every codegen consumes them.

The quantizer (in ``mscgym.tools``) decides them; each codegen applies them its own
way: fake-quant on torch, quantize/dequantize pairs in Relax and QDQ nodes in ONNX.
They live here, below the tools, so that codegen never imports a tool.

A layer (a node name) is quantized by quantizing its data inputs, its ``weight`` and
(for an int8 kernel) its output; a node absent from the plan stays float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCNode

_DTYPES = {"int8": (8, True), "uint8": (8, False), "int4": (4, True), "uint4": (4, False),
           "int32": (32, True)}  # int32: biases of int8 kernels only (see bias_params)


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: ``q = clamp(round(x / scale) + zero_point)``.

    ``axis`` is None for per-tensor, else the channel axis of per-channel scales.
    """

    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise MSCError(f"quant dtype {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise MSCError("quant scale and zero_point must be non-empty and of equal length")
        if self.axis is None and len(self.scale) != 1:
            raise MSCError("per-tensor quantization takes exactly one scale")
        if any(not np.isfinite(s) or s <= 0 for s in self.scale):
            raise MSCError(f"quant scales must be finite and positive, got {self.scale[:4]}...")
        low, high = self.qrange
        if any(z < low or z > high for z in self.zero_point):
            raise MSCError(f"zero points must lie in [{low}, {high}] for {self.dtype}")

    @property
    def bits(self) -> int:
        return _DTYPES[self.dtype][0]

    @property
    def signed(self) -> bool:
        return _DTYPES[self.dtype][1]

    @property
    def qrange(self) -> tuple[int, int]:
        bits, signed = _DTYPES[self.dtype]
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def scale_array(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float32)

    def zero_point_array(self) -> np.ndarray:
        return np.asarray(self.zero_point, dtype=np.int32)

    def broadcast_shape(self, ndim: int) -> tuple[int, ...]:
        """Shape that broadcasts the per-channel params against a tensor of rank ``ndim``."""
        if self.axis is None:
            return ()
        shape = [1] * ndim
        shape[self.axis % ndim] = len(self.scale)
        return tuple(shape)

    def quantize(self, x: np.ndarray, axis: int | None = None) -> np.ndarray:
        """The integers ``x`` stores as (int64), per channel along ``axis`` (default: the
        params' own): the one rounding every codegen and the numpy reference share."""
        shape = [1] * x.ndim
        axis = self.axis if axis is None else axis
        if axis is not None:
            shape[axis % x.ndim] = len(self.scale)
        scale = self.scale_array().reshape(shape)
        zero = self.zero_point_array().reshape(shape)
        low, high = self.qrange
        return np.clip(np.round(x / scale) + zero, low, high).astype(np.int64)

    def fake_quant(self, x: np.ndarray) -> np.ndarray:
        """Quantize then dequantize ``x`` in numpy (the reference every runner must match)."""
        shape = self.broadcast_shape(x.ndim)
        scale = self.scale_array().reshape(shape)
        zero = self.zero_point_array().reshape(shape)
        return ((self.quantize(x) - zero) * scale).astype(x.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": list(self.scale),
                "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "quant params") -> QuantParams:
        missing = {"dtype", "scale", "zero_point"} - set(data)
        if missing:
            raise MSCError(f"{where}: missing keys {sorted(missing)}")
        try:
            return cls(str(data["dtype"]), tuple(float(s) for s in data["scale"]),
                       tuple(int(z) for z in data["zero_point"]), data.get("axis"))
        except MSCError as err:
            raise MSCError(f"{where}: {err}") from None
        except (TypeError, ValueError) as err:
            raise MSCError(f"{where}: malformed value ({err})") from None


@dataclass(frozen=True)
class LayerQuant:
    """How one layer is quantized: its data inputs, its weight, and its output.

    ``input`` is the data input 0 (the only one of a conv or linear); ``extra_inputs``
    are data inputs 1, 2, ... (``None`` where one stays float): both operands of a
    residual add, every operand of a concat. ``output`` quantizes the layer's output
    *after its fused activation* (see :func:`fused_output`): what an int8 kernel writes.
    ``bias`` is the int32 quantization the int8 runtime applies to the bias
    (:func:`bias_params`); the torch and Relax codegens apply it only when the plan says so.
    In JSON the roles are ``input``, ``input1``, ``input2``, ..., ``weight``,
    ``bias_int32``, ``output``.
    """

    input: QuantParams | None = None
    weight: QuantParams | None = None
    extra_inputs: tuple[QuantParams | None, ...] = ()
    output: QuantParams | None = None
    bias: QuantParams | None = None

    def input_params(self, index: int) -> QuantParams | None:
        """The params of data input ``index`` (None: that input stays float)."""
        if index == 0:
            return self.input
        if 0 < index <= len(self.extra_inputs):
            return self.extra_inputs[index - 1]
        return None

    def activations(self) -> dict[str, QuantParams]:
        """Every planned activation role -> its params (``input``, ``input1``, ``output``)."""
        out: dict[str, QuantParams] = {}
        for index in range(len(self.extra_inputs) + 1):
            params = self.input_params(index)
            if params is not None:
                out[input_role(index)] = params
        if self.output is not None:
            out["output"] = self.output
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {role: p.to_json() for role, p in self.activations().items()}
        if self.weight is not None:
            out["weight"] = self.weight.to_json()
        if self.bias is not None:
            out[BIAS_ROLE] = self.bias.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> LayerQuant:
        unknown = {k for k in data
                   if k not in ("weight", "output", BIAS_ROLE) and role_index(k) is None}
        if unknown:
            raise MSCError(f"{where}: unknown keys {sorted(unknown)} (expected input, input1, "
                           "..., weight, output)")

        def parse(role: str) -> QuantParams | None:
            return QuantParams.from_json(data[role], f"{where}.{role}") if role in data else None

        count = max((role_index(k) or 0 for k in data), default=0)
        return cls(parse("input"), parse("weight"),
                   tuple(parse(input_role(i)) for i in range(1, count + 1)), parse("output"),
                   parse(BIAS_ROLE))


BIAS_ROLE = "bias_int32"
"""Strategy/JSON role of the int32 bias params (``bias`` names the float weight itself)."""


def input_role(index: int) -> str:
    """The strategy role of data input ``index``: ``input``, ``input1``, ``input2``, ..."""
    return "input" if index == 0 else f"input{index}"


def role_index(role: str) -> int | None:
    """The data input index a role names (None for ``weight``/``output``/others)."""
    if role == "input":
        return 0
    digits = role.removeprefix("input")
    if digits != role and digits.isdigit() and digits[0] != "0":
        return int(digits)
    return None


FUSED_ACTIVATIONS = ("nn.relu", "clip")
"""Ops an int8 runtime folds into the producing kernel's requantization (ONNX Runtime's
ReluQuantFusion / ClipQuantFusion, TensorRT's conv+relu fusion)."""


def fused_output(graph: MSCGraph, node: MSCNode) -> str:
    """The tensor an int8 kernel for ``node`` writes: its output, followed through a chain
    of relu/clip nodes that are each the single consumer of the previous tensor.

    Every codegen quantizes a layer's ``output`` role at this tensor, so the runtime sees
    ``kernel -> relu -> Q`` and fuses all three.
    """
    tensor = node.output.name
    while tensor not in graph.output_names:
        consumers = graph.find_consumers(tensor)
        if (len(consumers) != 1 or consumers[0].optype not in FUSED_ACTIVATIONS
                or len(consumers[0].outputs) != 1 or consumers[0].inputs[0] != tensor):
            break
        tensor = consumers[0].output.name
    return tensor


def is_global_average_pool(graph: MSCGraph, node: MSCNode) -> bool:
    """A ``mean`` over the two spatial axes of a 4-D NCHW tensor, kept as 1x1: what torch's
    ``adaptive_avg_pool2d(1)`` exports to. The ONNX codegen writes it as
    GlobalAveragePool, which ONNX Runtime runs int8 (ReduceMean has no int8 kernel)."""
    if node.optype != "mean" or len(node.inputs) != 1 or not node.attrs.get("keepdims"):
        return False
    rank = graph.find_tensor(node.inputs[0]).ndim
    axes = node.attrs.get("axis") or []
    return rank == 4 and sorted(int(a) % rank for a in axes) == [2, 3]


def bias_params(graph: MSCGraph, node: MSCNode, layer: LayerQuant | None) -> QuantParams | None:
    """The int32 quantization an int8 runtime applies to the bias of ``node``, or None.

    ONNX Runtime's QLinearConv / QGemm add the bias as int32 with scale
    ``input_scale * weight_scale`` (zero point 0), so the ONNX codegen stores it that way
    for a conv / 2-D linear whose data input (per tensor) and weight (per tensor or per
    output channel) are 8-bit. The Quantizer records these params as the layer's ``bias_int32``
    role, and the torch and Relax codegens fake-quantize the bias with them, so every
    runner computes the deployed model's numbers.
    """
    if (layer is None or layer.input is None or layer.weight is None
            or "bias" not in node.weights or layer.input.axis is not None
            or layer.input.bits != 8 or layer.weight.bits != 8
            or layer.weight.axis not in (None, 0)):
        return None
    if node.optype == "msc.linear_bias":
        if graph.find_tensor(node.inputs[0]).ndim != 2:  # MatMul + float Add in ONNX
            return None
    elif node.optype != "msc.conv2d_bias":
        return None
    scale = (layer.input.scale_array() * layer.weight.scale_array()).astype(np.float32)
    channels = node.weights["bias"].shape[0]
    if layer.weight.axis is not None:
        scale = np.broadcast_to(scale, (channels,))
    return QuantParams("int32", tuple(float(v) for v in scale), (0,) * len(scale),
                       None if layer.weight.axis is None else 0)


def output_points(graph: MSCGraph, plan: QuantPlan) -> dict[str, QuantParams]:
    """Tensor -> params of every planned ``output`` role, at its :func:`fused_output`."""
    points: dict[str, QuantParams] = {}
    for name, layer in plan.items():
        if layer.output is not None:
            tensor = fused_output(graph, graph.find_node(name))
            if points.setdefault(tensor, layer.output) != layer.output:
                raise MSCError(f"quant plan: two layers quantize the output {tensor!r} "
                               "with different params")
    return points


QuantPlan = dict[str, LayerQuant]
"""Node name -> how that layer is quantized."""
