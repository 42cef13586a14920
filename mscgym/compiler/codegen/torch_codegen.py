"""Torch codegen: an MSCGraph (and an optional quant plan) as a trainable ``torch.nn.Module``.

The module is a ``torch.fx.GraphModule`` built node by node, never from source text: graph
inputs become placeholders, weights ``get_attr`` nodes and ops ``call_function`` nodes. Each
weight is registered under its graph tensor name (``layer1.0.conv1.weight``), split on dots
into submodules, so ``state_dict()`` keys are the graph's weight names and trained weights
go back into the graph unchanged (:func:`weights_from_torch`). Names come from model files
(``fire2/squeeze1x1_w_0``, ``Constant@81``, ``136_1``): a path whose parts are not all plain
attribute names is registered under a safe path made from it, and state-dict hooks show
and take the graph's own name (the alias) in its place, so ``state_dict()`` keys stay the
user's names. Nothing from a file is ever pasted into source: fx names its nodes itself.

Ops follow Relax semantics (the graph's ground truth), e.g. Relax padding is
``[top, left, bottom, right]`` and ``flatten`` flattens every dim. Quantized layers get
:class:`FakeQuantize` modules on their planned data inputs, weight and (fused) output;
these match
``QuantParams.fake_quant`` bit for bit and pass gradients straight through, so the module
can be fine-tuned (distillation) with quantization in the loop.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from mscgym.compiler.codegen.common import weight_value
from mscgym.compiler.dims import eval_dim
from mscgym.compiler.errors import GraphError, MSCError, UnsupportedOpError
from mscgym.compiler.graph import MSCGraph, MSCNode
from mscgym.compiler.ops import RESIZE_COORDINATES, RESIZE_ROUNDINGS
from mscgym.compiler.quant_spec import (
    LayerQuant,
    QuantParams,
    QuantPlan,
    input_role,
    output_points,
)

_WHERE = "torch codegen"

_TORCH_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}

_UNARY: dict[str, Callable[..., Any]] = {
    "nn.relu": F.relu, "nn.gelu": F.gelu, "nn.silu": F.silu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "negative": torch.neg, "abs": torch.abs, "erf": torch.erf,
    "square": torch.square,
}
_BINARY: dict[str, Callable[..., Any]] = {
    "add": torch.add, "subtract": torch.sub, "multiply": torch.mul, "divide": torch.div,
    "power": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum,
}
_REDUCE: dict[str, Callable[..., Any]] = {
    "mean": torch.mean, "sum": torch.sum, "max": torch.amax, "min": torch.amin,
}
# Statistics of a normalization layer are state, not something training should change.
_BUFFER_ROLES = frozenset({"mean", "var"})
_ATTR_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


# --------------------------------------------------------------------------------------
# Fake quantization
# --------------------------------------------------------------------------------------
class _FakeQuantFunction(torch.autograd.Function):
    """Quantize -> dequantize with a straight-through gradient inside the integer range.

    ``torch.fake_quantize_per_*`` multiplies by ``1 / scale``, which differs from the
    reference ``x / scale`` at rounding ties; dividing keeps every runner bit-identical.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                qmin: int, qmax: int) -> torch.Tensor:
        q = torch.round(x / scale) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return ((torch.clamp(q, qmin, qmax) - zero_point) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


class FakeQuantize(nn.Module):
    """Fake-quantizes a tensor of rank ``ndim`` with ``params`` (scales as buffers).

    The buffers are not persistent: ``state_dict()`` holds exactly the graph's weights.
    """

    def __init__(self, params: QuantParams, ndim: int) -> None:
        super().__init__()
        self.params = params
        shape = params.broadcast_shape(ndim)
        self.qmin, self.qmax = params.qrange
        self.register_buffer("scale", torch.from_numpy(params.scale_array().reshape(shape)),
                             persistent=False)
        zero = params.zero_point_array().astype(np.float32).reshape(shape)
        self.register_buffer("zero_point", torch.from_numpy(zero), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FakeQuantFunction.apply(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.params.axis is None else f"axis={self.params.axis}"
        return f"{self.params.dtype}, {axis}"


# --------------------------------------------------------------------------------------
# Runtime helpers the generated graph calls (Relax semantics torch has no single op for)
# --------------------------------------------------------------------------------------
def _strided_slice(x: torch.Tensor, axes: list[int], begin: list[int], end: list[int],
                   strides: list[int]) -> torch.Tensor:
    """Relax strided_slice: per-axis Python slicing, negative strides included."""
    index: list[Any] = [slice(None)] * x.dim()
    for axis, start, stop, step in zip(axes, begin, end, strides, strict=True):
        if step > 0:
            index[axis] = slice(start, stop, step)
            continue
        picked = range(*slice(start, stop, step).indices(x.shape[axis]))
        x = torch.index_select(x, axis, torch.tensor(list(picked), device=x.device))
    return x[tuple(index)]


def _take(x: torch.Tensor, indices: torch.Tensor, axis: int | None, mode: str) -> torch.Tensor:
    """Relax take: gather along ``axis`` (the flattened tensor when None)."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis %= x.dim()
    size = x.shape[axis]
    if mode == "clip":
        indices = indices.clamp(0, size - 1)
    elif mode == "wrap":
        indices = indices.remainder(size)
    else:  # "fast": in-bounds indices; negative ones count from the end, as in numpy
        indices = torch.where(indices < 0, indices + size, indices)
    picked = torch.index_select(x, axis, indices.reshape(-1).long())
    return picked.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])


def _max_pool2d_padded(x: torch.Tensor, kernel: list[int], strides: list[int],
                       dilation: list[int], pads: list[int]) -> torch.Tensor:
    """Max pool over ``x`` padded by ``pads`` (left, right, top, bottom).

    TVM pads with the lowest finite value, which a window of padding alone returns.
    """
    lowest = torch.finfo(x.dtype).min
    return F.max_pool2d(F.pad(x, pads, value=lowest), kernel, strides, 0, dilation)


def _avg_pool2d_padded(x: torch.Tensor, kernel: list[int], strides: list[int],
                       pads: list[int], extra: list[int], count_include_pad: bool,
                       ) -> torch.Tensor:
    """Average pool with explicit padding; the divisor counts what TVM counts.

    ``pads`` (left, right, top, bottom) is the layer's padding, ``extra`` the right and
    bottom cells ceil mode adds; the divisor counts input cells, plus padding cells when
    ``count_include_pad``, never the ceil-mode cells.
    """
    cells = F.pad(torch.ones_like(x[:1, :1]), pads, value=1.0 if count_include_pad else 0.0)
    cells = F.pad(cells, [0, extra[0], 0, extra[1]])
    total = F.avg_pool2d(F.pad(x, [pads[0], pads[1] + extra[0], pads[2], pads[3] + extra[1]]),
                         kernel, strides)
    return total / F.avg_pool2d(cells, kernel, strides)


def _crop2d(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return x[..., top:top + height, left:left + width]


_RESIZE_EPS = 1e-5  # TVM's guard for floor/ceil rounding of nearest-neighbour coordinates


def _source_coords(out_size: int, in_size: int, mode: str, device: torch.device
                   ) -> torch.Tensor:
    """Input coordinate of each output position, as ONNX Resize (and TVM) define ``mode``.

    Computed in float32 with the scale ``in/out`` from the sizes, as TVM computes it.
    """
    out = torch.arange(out_size, dtype=torch.float32, device=device)
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size,
                                                                       dtype=torch.float32)
    if mode == "half_pixel":
        return (out + 0.5) * scale - 0.5
    if mode == "pytorch_half_pixel":
        return (out + 0.5) * scale - 0.5 if out_size > 1 else torch.zeros_like(out)
    if mode == "align_corners":
        if out_size == 1:
            return torch.zeros_like(out)
        return out * (torch.tensor(in_size - 1, dtype=torch.float32) / (out_size - 1))
    if mode == "asymmetric":
        return out * scale
    if mode == "tf_half_pixel_for_nn":
        return (out + 0.5) * scale
    raise MSCError(f"{_WHERE}: resize coordinate transformation {mode!r} is not supported")


def _nearest_index(coords: torch.Tensor, rounding: str, size: int) -> torch.Tensor:
    if rounding == "round":
        index = torch.round(coords)  # half to even, like TVM's round on LLVM
    elif rounding == "round_prefer_floor":
        index = torch.ceil(coords - 0.5)
    elif rounding == "round_prefer_ceil":
        index = torch.floor(coords + 0.5)
    elif rounding == "floor":
        index = torch.floor(coords + _RESIZE_EPS)
    elif rounding == "ceil":
        index = torch.ceil(coords - _RESIZE_EPS)
    else:
        raise MSCError(f"{_WHERE}: resize rounding {rounding!r} is not supported")
    return index.long().clamp(0, size - 1)


def _cubic_weights(t: torch.Tensor, alpha: float) -> list[torch.Tensor]:
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 (TVM's spline)."""
    t2, t3 = t * t, t * t * t
    return [alpha * (t3 - 2 * t2 + t), (alpha + 2) * t3 - (3 + alpha) * t2 + 1,
            -(alpha + 2) * t3 + (3 + 2 * alpha) * t2 - alpha * t, -alpha * t3 + alpha * t2]


def _resize_axis(x: torch.Tensor, axis: int, out_size: int, method: str, coordinate: str,
                 rounding: str, alpha: float, exclude: bool) -> torch.Tensor:
    """Resize ``x`` along one spatial axis; linear and cubic resizing are separable.

    Taps outside the input read its edge, as TVM clamps them.
    """
    in_size = x.shape[axis]
    coords = _source_coords(out_size, in_size, coordinate, x.device)
    if method == "nearest_neighbor":
        return torch.index_select(x, axis, _nearest_index(coords, rounding, in_size))
    low = torch.floor(coords)
    frac = coords - low
    low = low.long()
    if method == "linear":
        offsets, weights = [0, 1], [1 - frac, frac]
    else:
        offsets, weights = [-1, 0, 1, 2], _cubic_weights(frac, alpha)
        if exclude:
            weights = [torch.where((low + o < 0) | (low + o > in_size - 1), 0.0, w)
                       for o, w in zip(offsets, weights, strict=True)]
            total = sum(weights)
            weights = [w / total for w in weights]
    shape = [1] * x.dim()
    shape[axis] = out_size
    out = None
    for offset, weight in zip(offsets, weights, strict=True):
        tap = torch.index_select(x, axis, (low + offset).clamp(0, in_size - 1))
        term = tap * weight.to(x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


def _resize2d(x: torch.Tensor, size: list[int], method: str, coordinate: str, rounding: str,
              alpha: float = -0.75, exclude: bool = False) -> torch.Tensor:
    """Relax ``image.resize2d`` (NCHW; nearest, linear or cubic) with ONNX's coordinates."""
    out = _resize_axis(x, 2, int(size[0]), method, coordinate, rounding, alpha, exclude)
    return _resize_axis(out, 3, int(size[1]), method, coordinate, rounding, alpha, exclude)


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------
@cache
def _reserved() -> frozenset[str]:
    """Attribute names every GraphModule already has (``graph``, ``forward``, ``to``...)."""
    return frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))


def _usable(part: str) -> bool:
    return bool(_ATTR_PART.fullmatch(part)) and not keyword.iskeyword(part) and (
        part not in _reserved())


def _safe_part(part: str) -> str:
    """A usable attribute name made from ``part``: other characters become ``_``, a name
    that starts with a digit (and is not all digits) gets a leading ``_``, a keyword or a
    GraphModule attribute a trailing one."""
    if _usable(part):
        return part
    safe = re.sub(r"[^A-Za-z0-9_]", "_", part) or "_"
    if safe[0].isdigit() and not safe.isdigit():
        safe = f"_{safe}"
    while not _usable(safe):
        safe = f"{safe}_"
    return safe


def _free(root: nn.Module, parts: list[str]) -> bool:
    """Whether ``parts`` can be registered under ``root``: scopes are (or can become)
    submodules and the leaf is not taken."""
    owner: nn.Module | None = root
    for part in parts[:-1]:
        if owner is None:
            return True
        child = owner._modules.get(part)
        if child is None and hasattr(owner, part):
            return False
        owner = child
    return owner is None or not hasattr(owner, parts[-1])


def _install(root: nn.Module, path: str, value: nn.Module | torch.Tensor) -> str:
    """Register ``value`` (parameter, buffer or module) under ``root``; returns its path.

    ``path`` (a graph name) is used as is where every dotted part is a plain attribute
    name; otherwise its parts are made safe (:func:`_safe_part`), and where that path is
    taken too the leaf gets a ``_1``, ``_2``... suffix.
    """
    parts = [_safe_part(p) for p in path.split(".")]
    leaf, index = parts[-1], 1
    while not _free(root, parts):
        parts[-1], index = f"{leaf}_{index}", index + 1
    owner = root
    for part in parts[:-1]:
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    if isinstance(value, nn.Parameter):
        owner.register_parameter(parts[-1], value)
    elif isinstance(value, torch.Tensor):
        owner.register_buffer(parts[-1], value)
    else:
        owner.add_module(parts[-1], value)
    return ".".join(parts)


def _alias_state_dict(module: nn.Module, aliases: Mapping[str, str]) -> None:
    """State-dict hooks that show each renamed weight (module path -> graph name) under its
    graph name, the alias, and take it back under that name: ``state_dict()`` keys stay the
    user's names."""
    to_graph = dict(aliases)
    to_module = {graph: path for path, graph in to_graph.items()}

    def rename_out(_module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        for path, graph in to_graph.items():
            if prefix + path in state:
                state[prefix + graph] = state.pop(prefix + path)

    def rename_in(_module: nn.Module, state: dict[str, Any], prefix: str, *_args: Any) -> None:
        for graph, path in to_module.items():
            if prefix + graph in state:
                state[prefix + path] = state.pop(prefix + graph)

    module.register_state_dict_post_hook(rename_out)
    module.register_load_state_dict_pre_hook(rename_in)


# --------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------
class _Builder:
    """Emits the fx graph of one MSCGraph, registering weights and quantizers on ``root``."""

    def __init__(self, graph: MSCGraph, params: Mapping[str, Any], quant: QuantPlan) -> None:
        self.graph = graph
        self.params = params
        self.quant = quant
        self.root = nn.Module()
        self.fx = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.symbol_dims: dict[str, tuple[str, int]] = {}
        self.symbol_nodes: dict[str, fx.Node] = {}
        self.weight_nodes: dict[str, fx.Node] = {}
        self.outputs: dict[str, QuantParams] = {}
        self.aliases: dict[str, str] = {}  # module path -> graph weight name, where renamed

    def build(self) -> fx.GraphModule:
        unknown = sorted(set(self.quant) - {n.name for n in self.graph.nodes})
        if unknown:
            raise MSCError(f"{_WHERE}: quant plan names nodes {unknown} that graph "
                           f"{self.graph.name!r} does not have")
        self.outputs = output_points(self.graph, self.quant)
        for index, tensor in enumerate(self.graph.get_inputs()):
            self.env[tensor.name] = self.fx.placeholder(f"input_{index}")
            for axis, dim in enumerate(tensor.shape):
                if isinstance(dim, str):
                    self.symbol_dims.setdefault(dim, (tensor.name, axis))
        for node in self.graph.nodes:
            if node.optype == "input":
                continue
            if len(node.outputs) != 1:
                raise UnsupportedOpError(f"{node.optype} with {len(node.outputs)} outputs",
                                         node.name, _WHERE)
            value = self._emit(node)
            if node.output.name in self.outputs:
                value = self._fake_quant(node, value, self.outputs[node.output.name], "output",
                                         node.output.ndim)
            self.env[node.output.name] = value
        results = [self.env[name] for name in self.graph.output_names]
        self.fx.output(tuple(results) if self.graph.return_tuple else results[0])
        self.fx.lint()
        module = fx.GraphModule(self.root, self.fx)
        if self.aliases:
            _alias_state_dict(module, self.aliases)
        module.msc_weight_paths = {graph: path for path, graph in self.aliases.items()}
        return module

    # -- values ------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, name: str | None = None,
              **kwargs: Any) -> fx.Node:
        return self.fx.create_node("call_function", fn, args, kwargs, name=name)

    def _weight(self, node: MSCNode, role: str) -> fx.Node:
        """The weight ``role`` of ``node`` as a graph value, fake-quantized if planned."""
        if role not in node.weights:
            raise GraphError(f"{_WHERE}: node {node.name!r} ({node.optype}) has no weight "
                             f"{role!r}; it has {sorted(node.weights)}")
        tensor = node.weights[role]
        if tensor.name not in self.weight_nodes:
            path = _install(self.root, tensor.name, self._weight_value(node, role))
            if path != tensor.name:
                self.aliases[path] = tensor.name
            self.weight_nodes[tensor.name] = self.fx.get_attr(path)
        value = self.weight_nodes[tensor.name]
        plan = self.quant.get(node.name)
        if role == "weight" and plan is not None and plan.weight is not None:
            return self._fake_quant(node, value, plan.weight, "weight", tensor.ndim)
        if role == "bias" and plan is not None and plan.bias is not None:
            return self._fake_quant(node, value, plan.bias, "bias", tensor.ndim)
        return value

    def _weight_value(self, node: MSCNode, role: str) -> torch.Tensor:
        tensor = node.weights[role]
        data = torch.from_numpy(np.array(weight_value(self.graph, node, role, self.params)))
        data = data.to(_torch_dtype(tensor.dtype, node))
        if data.is_floating_point() and data.dim() > 0 and role not in _BUFFER_ROLES:
            return nn.Parameter(data)
        return data

    def _fake_quant(self, node: MSCNode, value: fx.Node, params: QuantParams, what: str,
                    ndim: int) -> fx.Node:
        path = _install(self.root, f"{node.name}.{what}_quant", FakeQuantize(params, ndim))
        return self.fx.call_module(path, (value,))

    def _inputs(self, node: MSCNode) -> list[fx.Node]:
        values = [self.env[name] for name in node.inputs]
        plan = self.quant.get(node.name, LayerQuant())
        if len(plan.extra_inputs) + (plan.input is not None) > len(values):
            raise MSCError(f"{_WHERE}: quant plan quantizes {len(plan.activations())} inputs "
                           f"of node {node.name!r}, which has {len(values)}")
        for index, name in enumerate(node.inputs):
            params = plan.input_params(index)
            if params is not None:
                ndim = self.graph.find_tensor(name).ndim
                values[index] = self._fake_quant(node, values[index], params,
                                                 input_role(index), ndim)
        if plan.weight is not None and "weight" not in node.weights:
            raise MSCError(f"{_WHERE}: quant plan quantizes the weight of node {node.name!r} "
                           f"({node.optype}), which has no 'weight' (it has "
                           f"{sorted(node.weights)})")
        return values

    def _dim(self, node: MSCNode, dim: int | str) -> int | fx.Node:
        """A shape entry: a static dim, or its expression over runtime sizes of input dims."""
        if isinstance(dim, int):
            return dim

        def size_of(name: str) -> fx.Proxy:
            if name not in self.symbol_dims:
                raise MSCError(f"{_WHERE}: node {node.name!r} uses symbolic dim {name!r}, "
                               "which is no dimension of a graph input")
            if name not in self.symbol_nodes:
                tensor_name, axis = self.symbol_dims[name]
                self.symbol_nodes[name] = self.fx.call_method("size",
                                                              (self.env[tensor_name], axis))
            return fx.Proxy(self.symbol_nodes[name])

        value = eval_dim(dim, size_of)
        return value.node if isinstance(value, fx.Proxy) else value

    def _decode(self, node: MSCNode, arg: dict[str, Any], ins: list[fx.Node]) -> Any:
        kind = arg.get("kind")
        if kind == "input":
            return ins[arg["index"]]
        if kind == "weight":
            return self._weight(node, arg["role"])
        if kind == "shape":
            return [self._dim(node, d) for d in arg["value"]]
        if kind == "prim":
            return float(arg["value"]) if arg["dtype"].startswith("float") else int(arg["value"])
        if kind == "tuple":
            return [self._decode(node, item, ins) for item in arg["items"]]
        raise GraphError(f"{_WHERE}: node {node.name!r} has an argument of unknown kind "
                         f"{kind!r}")

    # -- ops ---------------------------------------------------------------------------
    def _emit(self, node: MSCNode) -> fx.Node:
        optype = node.optype
        ins = self._inputs(node)
        if optype in ("msc.conv2d_bias", "nn.conv2d"):
            return self._conv2d(node, ins)
        if optype in ("msc.conv2d_transpose_bias", "nn.conv2d_transpose"):
            return self._conv2d_transpose(node, ins)
        if optype in ("msc.linear", "msc.linear_bias"):
            bias = self._weight(node, "bias") if optype == "msc.linear_bias" else None
            self._check_out_dtype(node)
            return self._call(F.linear, ins[0], self._weight(node, "weight"), bias,
                              name=node.name)
        if optype == "msc.batch_norm":
            return self._batch_norm(node, ins)
        emitter = _EMITTERS.get(optype)
        if emitter is None:
            raise UnsupportedOpError(optype, node.name, _WHERE)
        args = [self._decode(node, arg, ins) for arg in node.args]
        return emitter(self, node, args)

    def _in_shape(self, node: MSCNode) -> tuple[int | str, ...]:
        """Shape of the node's data operand: its first argument (an input or a constant,
        e.g. an Unsqueeze of a constant), else its first input."""
        arg = node.args[0] if node.args else {"kind": "input", "index": 0}
        if arg["kind"] == "weight":
            return node.weights[arg["role"]].shape
        if arg["kind"] == "tuple":
            arg = arg["items"][0]
            if arg["kind"] == "weight":
                return node.weights[arg["role"]].shape
        if arg["kind"] != "input" or not node.inputs:
            raise GraphError(f"{_WHERE}: node {node.name!r} ({node.optype}) has no tensor "
                             "operand to take a shape from")
        return self.graph.find_tensor(node.inputs[arg["index"]]).shape

    def _check_out_dtype(self, node: MSCNode) -> None:
        out_dtype = node.attrs.get("out_dtype")
        in_dtype = self.graph.find_tensor(node.inputs[0]).dtype
        if out_dtype and str(out_dtype) != in_dtype:
            raise UnsupportedOpError(f"{node.optype} from {in_dtype} to {out_dtype}", node.name,
                                     _WHERE)

    def _check_layout(self, node: MSCNode, **expected: str) -> None:
        for key, want in expected.items():
            got = node.attrs.get(key) or want
            if got != want:
                raise UnsupportedOpError(f"{node.optype} with {key}={got} (only {want})",
                                         node.name, _WHERE)

    def _conv2d(self, node: MSCNode, ins: list[fx.Node]) -> fx.Node:
        self._check_layout(node, data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW")
        self._check_out_dtype(node)
        if node.args:
            data, weight = (self._decode(node, arg, ins) for arg in node.args)
        else:
            data, weight = ins[0], self._weight(node, "weight")
        bias = self._weight(node, "bias") if node.optype == "msc.conv2d_bias" else None
        top, left, bottom, right = _padding4(node.attrs["padding"])
        if (top, left) != (bottom, right):
            data = self._call(F.pad, data, [left, right, top, bottom])
            top = left = 0
        attrs = node.attrs
        return self._call(F.conv2d, data, weight, bias, list(attrs["strides"]), [top, left],
                          list(attrs["dilation"]), int(attrs["groups"]), name=node.name)

    def _conv2d_transpose(self, node: MSCNode, ins: list[fx.Node]) -> fx.Node:
        """Relax conv2d_transpose (IOHW kernel); asymmetric padding crops a pad-0 result."""
        self._check_layout(node, data_layout="NCHW", kernel_layout="IOHW", out_layout="NCHW")
        self._check_out_dtype(node)
        if node.args:
            data, weight = (self._decode(node, arg, ins) for arg in node.args)
        else:
            data, weight = ins[0], self._weight(node, "weight")
        bias = (self._weight(node, "bias") if node.optype == "msc.conv2d_transpose_bias"
                else None)
        attrs = node.attrs
        top, left, bottom, right = _padding4(attrs["padding"])
        strides, dilation = list(attrs["strides"]), list(attrs["dilation"])
        extra = [int(p) for p in attrs.get("output_padding") or [0, 0]]
        groups = int(attrs["groups"])
        if (top, left) == (bottom, right):
            return self._call(F.conv_transpose2d, data, weight, bias, strides, [top, left],
                              extra, groups, dilation, name=node.name)
        full = self._call(F.conv_transpose2d, data, weight, bias, strides, [0, 0], extra,
                          groups, dilation)
        height, width = (self._dim(node, d) for d in node.output.shape[2:])
        return self._call(_crop2d, full, top, left, height, width, name=node.name)

    def _batch_norm(self, node: MSCNode, ins: list[fx.Node]) -> fx.Node:
        attrs = node.attrs
        rank = len(self._in_shape(node))
        axis = int(attrs["axis"]) % rank
        data = ins[0] if axis == 1 else self._call(torch.movedim, ins[0], axis, 1)
        gamma = self._weight(node, "gamma") if attrs.get("scale", True) else None
        beta = self._weight(node, "beta") if attrs.get("center", True) else None
        out = self._call(F.batch_norm, data, self._weight(node, "mean"),
                         self._weight(node, "var"), gamma, beta, False, 0.0,
                         float(attrs["epsilon"]), name=node.name)
        return out if axis == 1 else self._call(torch.movedim, out, 1, axis)

    def _pool2d(self, node: MSCNode, args: list[Any], is_max: bool) -> fx.Node:
        self._check_layout(node, layout="NCHW", out_layout="NCHW")
        attrs = node.attrs
        kernel, strides = list(attrs["pool_size"]), list(attrs["strides"])
        dilation, ceil_mode = list(attrs["dilation"]), bool(attrs["ceil_mode"])
        include_pad = bool(attrs["count_include_pad"])
        top, left, bottom, right = _padding4(attrs["padding"])
        if not is_max and dilation != [1, 1]:
            raise UnsupportedOpError(f"avg_pool2d with dilation {dilation}", node.name, _WHERE)
        spatial, out_spatial = self._in_shape(node)[2:], node.output.shape[2:]
        extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        native = (top, left) == (bottom, right) and all(
            2 * p <= k for p, k in zip((top, left), kernel, strict=True))
        extra = [0, 0]  # cells ceil mode adds after the right and bottom padding
        if ceil_mode:
            # Relax decides the output size; take it from the graph rather than a formula.
            if not all(isinstance(d, int) for d in (*spatial, *out_spatial)):
                raise UnsupportedOpError(f"{node.optype} in ceil mode over symbolic spatial "
                                         "dims", node.name, _WHERE)
            fits = zip(spatial, out_spatial, extents, strides, (top, left), (bottom, right),
                       strict=True)
            need = [max(0, (out - 1) * s + e - (size + p0 + p1))
                    for size, out, e, s, p0, p1 in fits]
            extra = need[::-1]
            native = native and all(
                _torch_ceil_size(size, e, s, p) == out for size, out, e, s, p in
                zip(spatial, out_spatial, extents, strides, (top, left), strict=True))
        if native:
            if is_max:
                return self._call(F.max_pool2d, args[0], kernel, strides, [top, left], dilation,
                                  ceil_mode, name=node.name)
            return self._call(F.avg_pool2d, args[0], kernel, strides, [top, left], ceil_mode,
                              include_pad, name=node.name)
        if is_max:
            pads = [left, right + extra[0], top, bottom + extra[1]]
            return self._call(_max_pool2d_padded, args[0], kernel, strides, dilation, pads,
                              name=node.name)
        return self._call(_avg_pool2d_padded, args[0], kernel, strides,
                          [left, right, top, bottom], extra, include_pad, name=node.name)


def _padding4(padding: list[int]) -> tuple[int, int, int, int]:
    """Relax 2-D padding as (top, left, bottom, right) from its 1-, 2- or 4-element forms."""
    values = [int(p) for p in padding]
    if len(values) == 1:
        values *= 4
    elif len(values) == 2:
        values *= 2
    top, left, bottom, right = values
    return top, left, bottom, right


def _torch_ceil_size(size: int, extent: int, stride: int, pad: int) -> int:
    """Output size of a torch pool in ceil mode (its last window starts inside the input)."""
    out = -(-(size + 2 * pad - extent) // stride) + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def _torch_dtype(dtype: str, node: MSCNode) -> torch.dtype:
    if dtype not in _TORCH_DTYPES:
        raise UnsupportedOpError(f"dtype {dtype}", node.name, _WHERE)
    return _TORCH_DTYPES[dtype]


def _normalized_axes(axes: list[int] | None, rank: int) -> list[int]:
    return list(range(rank)) if axes is None else [int(a) % rank for a in axes]


# -- emitters for single Relax ops: (builder, node, decoded args) -> fx value ---------------
Emitter = Callable[[_Builder, MSCNode, list[Any]], fx.Node]


def _unary(fn: Callable[..., Any], **kwargs: Any) -> Emitter:
    return lambda b, node, args: b._call(fn, args[0], name=node.name, **kwargs)


def _binary(fn: Callable[..., Any]) -> Emitter:
    def emit(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
        if fn is torch.div and not node.output.dtype.startswith(("float", "bfloat")):
            raise UnsupportedOpError(f"divide of {node.output.dtype}", node.name, _WHERE)
        return b._call(fn, args[0], args[1], name=node.name)
    return emit


def _reduce(fn: Callable[..., Any]) -> Emitter:
    def emit(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
        axes = _normalized_axes(node.attrs.get("axis"), len(b._in_shape(node)))
        if not axes:
            return args[0]
        return b._call(fn, args[0], axes, bool(node.attrs.get("keepdims", False)),
                       name=node.name)
    return emit


def _reshape(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    # Relax's reshape (the IR's): a 0 in the target is the input's dim at that axis
    target = next((a["value"] for a in node.args if a["kind"] == "shape"), [])
    source = b._in_shape(node)
    shape = [b._dim(node, source[i]) if _is_zero(d) and i < len(source) else v
             for i, (d, v) in enumerate(zip(target, args[1], strict=True))] or args[1]
    return b._call(torch.reshape, args[0], shape, name=node.name)


def _is_zero(dim: Any) -> bool:
    return type(dim) is int and dim == 0


def _broadcast_to(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    return b._call(torch.broadcast_to, args[0], args[1], name=node.name)


def _permute_dims(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    rank = len(b._in_shape(node))
    axes = node.attrs.get("axes")
    order = list(range(rank))[::-1] if axes is None else [int(a) for a in axes]
    return b._call(torch.permute, args[0], order, name=node.name)


def _concat(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    axis = node.attrs.get("axis")  # None: Relax requires 1-D inputs, joined end to end
    return b._call(torch.cat, args[0], 0 if axis is None else int(axis), name=node.name)


def _flatten(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    return b._call(torch.flatten, args[0], name=node.name)


def _squeeze(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    axis = node.attrs.get("axis")
    if axis is None:
        return b._call(torch.squeeze, args[0], name=node.name)
    return b._call(torch.squeeze, args[0], tuple(int(a) for a in axis), name=node.name)


def _resize2d_op(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    attrs = node.attrs
    b._check_layout(node, layout="NCHW")
    method, coordinate = str(attrs["method"]), str(attrs["coordinate_transformation_mode"])
    rounding = str(attrs.get("rounding_method") or "")
    if method not in ("nearest_neighbor", "linear", "cubic"):
        raise UnsupportedOpError(f"image.resize2d with method {method!r}", node.name, _WHERE)
    if coordinate not in RESIZE_COORDINATES:
        raise UnsupportedOpError(f"image.resize2d with coordinate transformation "
                                 f"{coordinate!r}", node.name, _WHERE)
    if method == "nearest_neighbor":
        rounding = rounding or ("round" if coordinate == "align_corners" else "floor")
        if rounding not in RESIZE_ROUNDINGS:
            raise UnsupportedOpError(f"image.resize2d with rounding {rounding!r}", node.name,
                                     _WHERE)
    out_dtype = attrs.get("out_dtype")
    if out_dtype and _dtype_name(out_dtype) != node.output.dtype:
        raise UnsupportedOpError(f"image.resize2d to {out_dtype}", node.name, _WHERE)
    return b._call(_resize2d, args[0], args[1], method, coordinate, rounding,
                   float(attrs.get("cubic_alpha", -0.75)), bool(attrs.get("cubic_exclude", 0)),
                   name=node.name)


def _dtype_name(value: Any) -> str:
    return str(value["dtype"]) if isinstance(value, dict) else str(value)


def _avg_pool3d(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    """Relax avg_pool3d (NCDHW; padding front, top, left, back, bottom, right)."""
    attrs = node.attrs
    b._check_layout(node, layout="NCDHW", out_layout="NCDHW")
    kernel, strides = list(attrs["pool_size"]), list(attrs["strides"])
    pads = [int(p) for p in attrs["padding"]]
    pads = pads * (6 // len(pads)) if len(pads) in (1, 3) else pads
    begin, end = pads[:3], pads[3:]
    include_pad, ceil_mode = bool(attrs["count_include_pad"]), bool(attrs["ceil_mode"])
    if any(int(d) != 1 for d in attrs["dilation"]) or ceil_mode:
        raise UnsupportedOpError("nn.avg_pool3d with dilation or ceil mode", node.name, _WHERE)
    if begin == end and all(2 * p <= k for p, k in zip(begin, kernel, strict=True)):
        return b._call(F.avg_pool3d, args[0], kernel, strides, begin, False, include_pad,
                       name=node.name)
    if not include_pad:
        raise UnsupportedOpError("nn.avg_pool3d with asymmetric padding excluded from the "
                                 "count", node.name, _WHERE)
    padded = b._call(F.pad, args[0], [begin[2], end[2], begin[1], end[1], begin[0], end[0]])
    return b._call(F.avg_pool3d, padded, kernel, strides, name=node.name)


def _pad(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    """Relax nn.pad: ``pad_width`` is (before, after) per axis from the first; torch's F.pad
    takes them from the last axis."""
    attrs = node.attrs
    mode = str(attrs.get("pad_mode", "constant"))
    if mode != "constant":
        raise UnsupportedOpError(f"nn.pad in mode {mode!r}", node.name, _WHERE)
    widths = [int(w) for w in attrs["pad_width"]]
    pairs = [widths[i:i + 2] for i in range(0, len(widths), 2)]
    flat = [w for pair in reversed(pairs) for w in pair]
    value = float(attrs.get("pad_value", 0.0))
    return b._call(F.pad, args[0], flat, "constant", value, name=node.name)


def _stack(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    axis = node.attrs.get("axis")
    return b._call(torch.stack, args[0], 0 if axis is None else int(axis), name=node.name)


def _expand_dims(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    out_rank = len(b._in_shape(node)) + len(node.attrs["axis"])
    value = args[0]
    for axis in sorted(_normalized_axes(node.attrs["axis"], out_rank)):
        value = b._call(torch.unsqueeze, value, axis)
    return value


def _strided_slice_op(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    data, axes, begin, end = args[:4]
    strides = args[4] if len(args) > 4 else [1] * len(axes)
    rank = len(b._in_shape(node))
    return b._call(_strided_slice, data, _normalized_axes(axes, rank), begin, end, strides,
                   name=node.name)


def _take_op(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    axis = node.attrs.get("axis")
    return b._call(_take, args[0], args[1], None if axis is None else int(axis),
                   str(node.attrs.get("mode", "fast")), name=node.name)


def _softmax(fn: Callable[..., Any]) -> Emitter:
    return lambda b, node, args: b._call(fn, args[0], int(node.attrs["axis"]), name=node.name)


def _layer_norm(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    shape = b._in_shape(node)
    axes = sorted(_normalized_axes(node.attrs["axes"], len(shape)))
    normalized = [shape[a] for a in axes]
    if axes != list(range(len(shape) - len(axes), len(shape))) or not all(
            isinstance(d, int) for d in normalized):
        raise UnsupportedOpError(f"nn.layer_norm over axes {node.attrs['axes']} of {shape} "
                                 "(only static trailing axes)", node.name, _WHERE)
    # TVM's legalization applies gamma and beta whatever ``center``/``scale`` say; so do we.
    return b._call(F.layer_norm, args[0], normalized, args[1], args[2],
                   float(node.attrs["epsilon"]), name=node.name)


def _adaptive_avg_pool2d(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    b._check_layout(node, layout="NCHW", out_layout="NCHW")
    size = node.attrs.get("output_size")
    if size is None:
        return args[0]
    size = [int(s) for s in size] * (2 if len(size) == 1 else 1)
    return b._call(F.adaptive_avg_pool2d, args[0], size, name=node.name)


def _matmul(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    b._check_out_dtype(node)
    return b._call(torch.matmul, args[0], args[1], name=node.name)


def _clip(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    return b._call(torch.clamp, args[0], args[1], args[2], name=node.name)


def _astype(b: _Builder, node: MSCNode, args: list[Any]) -> fx.Node:
    dtype = _torch_dtype(str(node.attrs["dtype"]), node)
    return b.fx.create_node("call_method", "to", (args[0], dtype), name=node.name)


_EMITTERS: dict[str, Emitter] = {
    **{op: _unary(fn) for op, fn in _UNARY.items()},
    "nn.gelu_tanh": _unary(F.gelu, approximate="tanh"),
    **{op: _binary(fn) for op, fn in _BINARY.items()},
    **{op: _reduce(fn) for op, fn in _REDUCE.items()},
    "reshape": _reshape,
    "broadcast_to": _broadcast_to,
    "permute_dims": _permute_dims,
    "concat": _concat,
    "flatten": _flatten,
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "strided_slice": _strided_slice_op,
    "take": _take_op,
    "nn.softmax": _softmax(F.softmax),
    "nn.log_softmax": _softmax(F.log_softmax),
    "nn.layer_norm": _layer_norm,
    "nn.max_pool2d": lambda b, node, args: b._pool2d(node, args, is_max=True),
    "nn.avg_pool2d": lambda b, node, args: b._pool2d(node, args, is_max=False),
    "nn.adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "matmul": _matmul,
    "clip": _clip,
    "astype": _astype,
    "image.resize2d": _resize2d_op,
    "nn.avg_pool3d": _avg_pool3d,
    "nn.pad": _pad,
    "stack": _stack,
}


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def to_torch(
    graph: MSCGraph,
    params: Mapping[str, np.ndarray | torch.Tensor],
    quant: QuantPlan | None = None,
) -> torch.nn.Module:
    """Build ``graph`` as a trainable ``torch.fx.GraphModule`` with ``params`` as weights.

    Weights are ``nn.Parameter`` (batch-norm statistics, scalars and integer constants are
    buffers) named by the graph's weight tensor names, so ``state_dict()`` has exactly the
    keys of ``params``. ``quant`` fake-quantizes the data input and ``weight`` of each
    node it names. Returns a tuple of outputs when ``graph.return_tuple``, else a tensor.
    """
    return _Builder(graph, params, dict(quant or {})).build()


def weights_from_torch(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The (possibly trained) weights of a :func:`to_torch` module, keyed like ``params``."""
    return {name: value.detach().cpu().numpy().copy()
            for name, value in module.state_dict().items()}
