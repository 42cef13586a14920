"""The quantizer: calibrates activation ranges on real runs and emits a QuantPlan.

Config (every key optional; validated up front, errors name the key and the
expected values)::

    {
      "weight": {"dtype": "int8" | "int4" | "uint8", "per_channel": true,
                 "symmetric": true, "method": "minmax" | "mse"},
      "activation": {"dtype": "int8" | "uint8", "symmetric": true,
                     "method": "minmax" | "percentile" | "entropy" | "mse",
                     "percentile": 99.99, "bins": 2048},
      "layers": {"<node>": {"skip": true}
                 | {"weight": {...overrides} | null, "activation": {...} | null}},
      "include": ["msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias"],
      "fp16_fallback": false,
      "target": "onnxruntime" | "tensorrt" | "generic"
    }

- ``target`` decides the form and the placement (:func:`int8_layout`). ``onnxruntime``
  (the default): uint8 asymmetric activations with int8 symmetric per-channel weights,
  the u8 x s8 form of x86 int8 kernels (VNNI ``vpdpbusd``, see :func:`x86_int8_isa`),
  with every activation between int8 kernels planned: kernel outputs (after a fused
  relu/clip), both operands of residual adds, concat (one shared scale), average pooling,
  sigmoid and mul, so ONNX Runtime runs QLinearConv / QLinearAdd / QGemm end to end.
  ``tensorrt``: symmetric int8 with TensorRT's placement. ``generic``: kernel inputs only.
  An activation section that names a dtype without ``symmetric`` gets int8 symmetric or
  uint8 asymmetric; ``{"dtype": "int8", "symmetric": true}`` keeps s8 on any target.

- ``"bits": 8`` (or 4 for weights) may stand for the dtype inside a section:
  8 -> ``int8``, 4 -> ``int4``; given together with ``dtype`` they must agree.
- A section set to ``null`` is not quantized (weight-only or activation-only).
- ``include`` lists the optypes quantized by default (the data input, first input,
  and the ``weight`` role when the node has one). A ``layers`` entry with overrides
  quantizes that node even if its optype is not included; ``skip`` keeps it float (also
  an add, concat or pool the target would plan). The activations around a layer follow
  its choice: a skipped kernel takes its output and the int8 ops that needed it with it.
- ``fp16_fallback``: skipped layers keep float compute with their weights rounded
  to float16 (``transform``), emulating an fp16 fallback on every runner.

Calibration follows MSC's loop: while not ``calibrated``, run the calibration
batches through the runtime manager (which shows the tool ``watched_tensors``) and
call ``calibrate()``. Pass 1 records ranges; the histogram methods (percentile,
entropy, mse) need a second pass that fills histograms over those ranges. See
:mod:`mscgym.tools.calibration` for the algorithms and the symmetric/asymmetric
conventions.

Strategy (JSON)::

    {"conv1": {"input": {"dtype": "int8", "scale": [0.0123], "zero_point": [0],
                         "axis": null, "method": "minmax"},
               "weight": {"dtype": "int8", "scale": [...], "zero_point": [...],
                          "axis": 0, "method": "minmax"}},
     "layer1.0.add": {"input": {...}, "input1": {...}},
     "layer1.0.conv2": {"input": {...}, "weight": {...}, "output": {...}},
     "fc": {"fallback": "float16"}}

Roles: ``input`` (data input 0), ``input1``, ``input2``, ... (further data inputs),
``weight``, ``bias_int32`` (the int32 bias an int8 kernel adds), ``output`` (the layer's
output after its fused relu/clip, where no consumer quantizes it already). MSC keyed such
tensors ``<tensor>-c-<consumer>``; here the consumer is the layer and the role names the
tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCNode
from mscgym.compiler.ops import COMPOSITE, SUPPORTED_OPS
from mscgym.compiler.quant_spec import (
    BIAS_ROLE,
    LayerQuant,
    QuantParams,
    QuantPlan,
    bias_params,
    fused_output,
    input_role,
    is_global_average_pool,
    role_index,
)
from mscgym.tools import calibration as cal
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError, check_shape
from mscgym.utils.cpu import cpu_flags

DEFAULT_INCLUDE = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias")
TARGETS = ("onnxruntime", "tensorrt", "generic")
CONV_OPTYPES = ("msc.conv2d_bias", "nn.conv2d")
# Ops an int8 runtime runs on integers when every data input arrives dequantized and the
# output is quantized: ONNX Runtime's QDQ selectors (BinarySelector: Add, Mul -> QLinearAdd /
# QLinearMul; InputVariadicSelector: Concat -> QLinearConcat; UnarySelector: AveragePool,
# GlobalAveragePool, Sigmoid -> QLinearAveragePool / QLinearGlobalAveragePool /
# QLinearSigmoid). ONNX Runtime has no QDQ fusion for ReduceMean, HardSwish, HardSigmoid,
# Sub, Div, LayerNormalization, Gelu or Erf: those stay float, with no Q/DQ around them.
INT8_OPS = {"add": 2, "multiply": 2, "concat": 0}  # optype -> data inputs (0: any)
# Single-input int8 ops: planned without an entry of their own, their input is the
# producer's ``output`` role and their output is quantized by their consumers.
UNARY_INT8_OPS = ("nn.avg_pool2d", "nn.adaptive_avg_pool2d", "sigmoid")
# Ops ONNX Runtime runs on int8 data by dropping the Q/DQ around them (DropQDQNodesSelector)
# or moving them past (QDQ propagation): a quantized consumer behind them covers their input.
INT8_TRANSPARENT = ("nn.max_pool2d", "reshape", "flatten", "squeeze", "expand_dims",
                    "permute_dims")
KNOWN_OPTYPES = frozenset({op.removeprefix("relax.") for op in SUPPORTED_OPS} | set(COMPOSITE))
FALLBACK_FP16 = "float16"

_WEIGHT_DEFAULTS: dict[str, Any] = {"dtype": "int8", "per_channel": True, "symmetric": True,
                                    "method": "minmax"}
_ACTIVATION_DEFAULTS: dict[str, Any] = {"dtype": "int8", "symmetric": True, "method": "minmax",
                                        "percentile": 99.99, "bins": 2048}
_TARGET_ACTIVATIONS: dict[str, dict[str, Any]] = {
    # x86 int8 kernels (VNNI vpdpbusd, AVX2 vpmaddubsw) multiply u8 activations by s8
    # weights; ONNX Runtime rewrites s8 activations to u8 where it can, and fuses the
    # relu/clip in front of a Q only when the zero point is the range's minimum.
    "onnxruntime": {"dtype": "uint8", "symmetric": False},
    "tensorrt": {"dtype": "int8", "symmetric": True},
    "generic": {"dtype": "int8", "symmetric": True},
}
_MIN_BINS, _MAX_BINS = 256, 1 << 16


# -- the declared shape of a config and a strategy (checked by check_shape) ---------------
def _object(properties: dict[str, Any], *, nullable: bool = False,
            required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object with exactly these keys (``nullable``: or null, a section kept float)."""
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object",
                              "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


_FLAG = {"type": "boolean"}
WEIGHT_SCHEMA = _object({
    "dtype": {"enum": list(cal.WEIGHT_DTYPES)}, "bits": {"enum": [4, 8]},
    "per_channel": _FLAG, "symmetric": _FLAG, "method": {"enum": list(cal.WEIGHT_METHODS)},
}, nullable=True)
ACTIVATION_SCHEMA = _object({
    "dtype": {"enum": list(cal.ACTIVATION_DTYPES)}, "bits": {"enum": [8]},
    "symmetric": _FLAG, "method": {"enum": list(cal.ACTIVATION_METHODS)},
    "percentile": {"type": "number", "exclusiveMinimum": 50, "maximum": 100},
    "bins": {"type": "integer", "minimum": _MIN_BINS, "maximum": _MAX_BINS},
}, nullable=True)
CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "quantizer config",
    **_object({
        "weight": WEIGHT_SCHEMA,
        "activation": ACTIVATION_SCHEMA,
        "layers": {"type": "object", "additionalProperties": _object(
            {"skip": _FLAG, "weight": WEIGHT_SCHEMA, "activation": ACTIVATION_SCHEMA})},
        "include": {"type": "array", "items": {"type": "string"}},
        "fp16_fallback": {"type": "boolean", "x-expected": "true or false"},
        "target": {"enum": list(TARGETS)},
    }),
}
"""Every key of a quantizer config; which layer names and optypes exist, and the rules
across keys (``skip`` alone, ``bits`` agreeing with ``dtype``), stay in code."""


def _params_schema(dtypes: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    return _object({"dtype": {"enum": list(dtypes)}, "scale": {"type": "array", "minItems": 1},
                    "zero_point": {"type": "array", "minItems": 1},
                    "axis": {"type": ["integer", "null"]},
                    "method": {"enum": [*methods, None]}},
                   required=("dtype", "scale", "zero_point"))


STRATEGY_LAYER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "quantizer strategy layer",
    "type": "object", "minProperties": 1,
    "properties": {
        "weight": _params_schema(cal.WEIGHT_DTYPES, cal.WEIGHT_METHODS),
        BIAS_ROLE: _params_schema(("int32",), cal.WEIGHT_METHODS),
        "fallback": {"const": FALLBACK_FP16},
    },
    "patternProperties": {r"^(input[0-9]*|output)$": _params_schema(
        cal.ACTIVATION_DTYPES, cal.ACTIVATION_METHODS)},
}
"""One layer's entry of a quantizer strategy: the parameters of each role. Which roles a
node has (its inputs, weight and bias) and the scales' values stay in code."""


@dataclass(frozen=True)
class WeightConfig:
    dtype: str
    per_channel: bool
    symmetric: bool
    method: str


@dataclass(frozen=True)
class ActivationConfig:
    dtype: str
    symmetric: bool
    method: str
    percentile: float
    bins: int


@dataclass(frozen=True)
class LayerConfig:
    """How one layer is calibrated; ``None`` sections stay float.

    ``roles`` maps each planned activation role (``input``, ``input1``, ..., ``output``)
    to the tensor whose observed values calibrate it.
    """

    node: str
    roles: dict[str, str]
    weight: WeightConfig | None
    activation: ActivationConfig | None

    @property
    def tensor(self) -> str:
        """The tensor of the data input (or first planned role)."""
        return self.roles.get("input", next(iter(self.roles.values()), ""))


def x86_int8_isa() -> list[str]:
    """The int8 dot-product ISA flags of this CPU (``/proc/cpuinfo``): VNNI decides how
    fast ONNX Runtime's u8 x s8 kernels are; empty where the file or flags are absent."""
    flags = cpu_flags()
    return [flag for flag in ("avx512_vnni", "avx_vnni", "avx512bw", "avx2", "amx_int8")
            if flag in flags]


def int8_layout(graph: MSCGraph, kernels: dict[str, bool], target: str,
                excluded: set[str] | frozenset[str] = frozenset()) -> dict[str, dict[str, str]]:
    """Where an int8 runtime needs activations quantized, given the quantized kernels.

    ``kernels`` maps each quantized conv/linear/matmul layer to whether it runs as an
    8-bit integer kernel (8-bit data input and weight). Returns node -> role -> the tensor
    that calibrates it:

    * every kernel with an activation: ``input`` (its data input);
    * ``onnxruntime``: an :data:`INT8_OPS` node (residual add, mul, concat) is planned,
      all its data inputs, when its fused output stays integer: every consumer quantizes
      it (*covers* it), through ops ONNX Runtime drops Q/DQ around, or is an average pool
      / global average pool / sigmoid (:data:`UNARY_INT8_OPS`) whose own output is
      covered. Planning runs from the outputs backwards, so a chain of residual blocks
      becomes int8 end to end; where a consumer stays float (a layer norm, a graph
      output), the op stays float too rather than paying a Q/DQ round trip for nothing.
      A concat's inputs share one scale (its output's range). A planned op or an 8-bit
      conv whose fused output is not covered gets an ``output`` role: ONNX Runtime fuses
      a conv into ``QLinearConv`` only with a Q after it (Gemm and MatMul have
      float-output kernels, so they need none), and a pool only with Q/DQ around it.
    * ``tensorrt``: the residual input of an add (the operand no kernel produced, so
      TensorRT fuses the add into the conv), every concat and pooling input; no outputs
      (TensorRT places requantization itself).
    * ``generic``: kernel inputs only.

    ``excluded`` names nodes that stay float whatever the rule says (``skip`` overrides).
    On ``onnxruntime`` no consumer quantizes the output of a float conv/linear (see
    :func:`_float_kernel_outputs`), so the float layer stays float there too.
    """
    if target not in TARGETS:
        raise ToolConfigError(f"quantizer config: target {target!r}: expected one of "
                              f"{list(TARGETS)}")
    blocked = _float_kernel_outputs(graph, kernels) if target == "onnxruntime" else set()
    kernels = {name: is_int8 for name, is_int8 in kernels.items()
               if graph.find_node(name).inputs[0] not in blocked}
    layout: dict[str, dict[str, str]] = {name: {"input": graph.find_node(name).inputs[0]}
                                         for name in kernels}
    if target == "generic":
        return layout
    planned: dict[str, set[int]] = {name: {0} for name in kernels}

    def candidate(node: MSCNode) -> bool:
        arity = INT8_OPS.get(node.optype)
        return (arity is not None and node.name not in excluded and node.name not in kernels
                and bool(node.inputs) and len(node.outputs) == 1
                and (arity == 0 or len(node.inputs) == arity) and not node.weights
                and not set(node.inputs) & blocked)

    def unary_int8(node: MSCNode) -> bool:
        return ((node.optype in UNARY_INT8_OPS or is_global_average_pool(graph, node))
                and node.name not in excluded and len(node.inputs) == 1
                and len(node.outputs) == 1 and not node.weights)

    def reaches_int8(tensor: str, through_unary: bool) -> bool:
        """Whether every consumer reads ``tensor`` as planned int8, directly or through
        data-movement ops (and, with ``through_unary``, through an int8 unary op whose own
        output is covered): then its producer's output quantization stays integer."""
        consumers = graph.find_consumers(tensor)
        if tensor in graph.output_names or not consumers:
            return False
        for consumer in consumers:
            uses = {i for i, name in enumerate(consumer.inputs) if name == tensor}
            if uses <= planned.get(consumer.name, set()):
                continue
            transparent = (consumer.optype in INT8_TRANSPARENT and len(consumer.inputs) == 1
                           and len(consumer.outputs) == 1)
            if transparent and reaches_int8(consumer.output.name, through_unary):
                continue
            if (through_unary and unary_int8(consumer)
                    and reaches_int8(fused_output(graph, consumer), False)):
                continue
            return False
        return True

    def covered(tensor: str) -> bool:
        return reaches_int8(tensor, through_unary=False)

    def integer(tensor: str) -> bool:
        """Whether the tensor stays integer once its producer quantizes it."""
        return reaches_int8(tensor, through_unary=True)

    def moved_past(tensor: str) -> bool:
        """Whether ONNX Runtime would move the tensor's DQ past a data-movement op (QDQ
        propagation) only to dequantize again for a float consumer: no gain, and at opset
        21 ORT 1.32 writes an invalid Q for int8 there."""
        return any(c.optype in INT8_TRANSPARENT for c in graph.find_consumers(tensor))

    def kernel_made(tensor: str) -> bool:
        """A kernel's own output: TensorRT fuses the add into that kernel."""
        return graph.find_producer(tensor).name in kernels

    for node in reversed(graph.nodes):
        if not candidate(node):
            continue
        if target == "tensorrt":
            inputs = range(len(node.inputs))
            if node.optype == "add":
                inputs = [i for i, t in enumerate(node.inputs) if not kernel_made(t)]
            if inputs:
                layout[node.name] = {input_role(i): node.inputs[i] for i in inputs}
            continue
        out = fused_output(graph, node)
        if not integer(out):
            continue
        planned[node.name] = set(range(len(node.inputs)))
        shared = node.optype == "concat"
        layout[node.name] = {input_role(i): out if shared else tensor
                             for i, tensor in enumerate(node.inputs)}
        if not covered(out):
            layout[node.name]["output"] = out
    if target == "onnxruntime":
        for name, is_int8 in kernels.items():
            node = graph.find_node(name)
            out = fused_output(graph, node)
            if (is_int8 and node.optype in CONV_OPTYPES and out not in graph.output_names
                    and not covered(out) and (integer(out) or not moved_past(out))):
                layout[name]["output"] = out
    return layout


class Quantizer(BaseTool):
    """Calibrates and plans int8/int4 quantization of conv and linear layers and of the
    activations an int8 runtime needs integer around them (see :func:`int8_layout`)."""

    kind: ClassVar[MSC_TOOL] = MSC_TOOL.QUANTIZE
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self.check_config(self.config, "quantizer config")
        self.target = self.config.get("target", "onnxruntime")
        self.layers, self.fp16_layers = self._parse_config(self.config)
        self._observers: dict[tuple[str, int], cal.TensorObserver] = {}
        for layer in self.layers.values():
            if layer.activation is not None:
                for tensor in layer.roles.values():
                    key = (tensor, layer.activation.bins)
                    self._observers.setdefault(key, cal.TensorObserver(layer.activation.bins))
        histogram = any(layer.activation is not None and layer.roles
                        and layer.activation.method in cal.HISTOGRAM_METHODS
                        for layer in self.layers.values())
        self.passes = 2 if histogram else 1
        self._pass = 0
        self._pass_batches: dict[tuple[str, int], int] = dict.fromkeys(self._observers, 0)
        self._plan: QuantPlan | None = None
        self._methods: dict[str, dict[str, str | None]] = {}
        self._ranges: dict[tuple[str, str], tuple[float, float]] = {}
        self._pool = False

    # -- config -------------------------------------------------------------------------
    def _parse_config(self, config: dict[str, Any]) -> tuple[dict[str, LayerConfig], list[str]]:
        weight = _weight_section(config.get("weight", {}), None, "quantizer config: weight")
        activation = _activation_section(config.get("activation", {}), None,
                                         "quantizer config: activation",
                                         _TARGET_ACTIVATIONS[self.target])
        include = config.get("include", list(DEFAULT_INCLUDE))
        unknown = sorted(set(include) - KNOWN_OPTYPES)
        if unknown:
            raise ToolConfigError(f"quantizer config: include names unknown optypes {unknown}; "
                                  f"expected optypes such as {list(DEFAULT_INCLUDE)}")
        fp16 = config.get("fp16_fallback", False)
        overrides = config.get("layers", {})
        skipped: list[str] = []
        chosen: dict[str, tuple[WeightConfig | None, ActivationConfig | None]] = {}
        for name, entry in overrides.items():
            override = self._override(name, entry, weight, activation)
            if override is None:
                skipped.append(name)
            else:
                chosen[name] = override
        configs: dict[str, tuple[WeightConfig | None, ActivationConfig | None]] = {}
        for node in self.graph.nodes:
            if node.name in skipped or node.optype == "input" or not node.inputs:
                continue
            if node.name in chosen:
                layer_weight, layer_activation = chosen[node.name]
            elif node.optype in include:
                layer_weight, layer_activation = weight, activation
            else:
                continue
            if "weight" not in node.weights:
                layer_weight = None
            if layer_weight is None and layer_activation is None:
                continue
            configs[node.name] = (layer_weight, layer_activation)
        kernels = {name: _is_int8_kernel(w, a) for name, (w, a) in configs.items()
                   if a is not None}
        inactive = {name for name, (_, a) in chosen.items() if a is None}
        layout = int8_layout(self.graph, kernels, self.target, set(skipped) | inactive)
        layers: dict[str, LayerConfig] = {}
        for name, (layer_weight, layer_activation) in configs.items():
            roles = layout.get(name, {}) if layer_activation is not None else {}
            layers[name] = LayerConfig(name, roles, layer_weight, layer_activation)
        for name, roles in layout.items():
            if name not in layers:
                layers[name] = LayerConfig(name, roles, None, chosen.get(name, (None,
                                                                                activation))[1])
        fp16_layers = [n for n in skipped if fp16 and self.graph.find_node(n).weights]
        return layers, fp16_layers

    def _override(
        self, name: str, entry: Any, weight: WeightConfig | None,
        activation: ActivationConfig | None,
    ) -> tuple[WeightConfig | None, ActivationConfig | None] | None:
        """One ``layers`` entry: its (weight, activation) configs, or None for skip."""
        where = f"quantizer config: layers.{name}"
        self.check_layer(name, "quantizer config: layers")
        node = self.graph.find_node(name)
        if entry.get("skip", False):
            if set(entry) != {"skip"}:
                raise ToolConfigError(f"{where}: skip cannot be combined with overrides")
            return None
        _check_quantizable(node, where)
        if "weight" in entry and entry["weight"] is not None and "weight" not in node.weights:
            raise ToolConfigError(f"{where}.weight: node {name!r} ({node.optype}) has no "
                                  "weight to quantize")
        if "weight" in entry:
            weight = _weight_section(entry["weight"], weight, f"{where}.weight")
        if "activation" in entry:
            activation = _activation_section(entry["activation"], activation,
                                             f"{where}.activation",
                                             _TARGET_ACTIVATIONS[self.target])
        return weight, activation

    # -- calibration --------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self._plan is not None

    def watched_tensors(self) -> list[str]:
        """Every tensor a planned role is calibrated on, until calibration is done."""
        if self.calibrated:
            return []
        return sorted({tensor for tensor, _ in self._observers})

    def observe(self, tensors: dict[str, np.ndarray]) -> None:
        if self.calibrated:
            return
        for key, observer in self._observers.items():
            if key[0] not in tensors:
                continue
            self._pass_batches[key] += 1
            if self._pass == 0:
                observer.update_range(tensors[key[0]])
            else:
                observer.update_histograms(tensors[key[0]])

    def calibrate(self) -> None:
        """End the current pass over the calibration data; after the last pass,
        compute the parameters of every layer."""
        if self.calibrated:
            raise MSCError("quantizer: already calibrated; create a new quantizer to "
                           "calibrate again")
        missing = sorted({key[0] for key, n in self._pass_batches.items() if n == 0})
        if missing:
            raise MSCError(f"quantizer: calibration pass {self._pass + 1} of {self.passes} saw "
                           f"no batch for tensors {missing}; run the calibration data through "
                           "the runtime manager before calling calibrate()")
        self._pass_batches = dict.fromkeys(self._observers, 0)
        self._pass += 1
        if self._pass < self.passes:
            self._start_histograms()
            return
        self._finish()

    def _start_histograms(self) -> None:
        needs: dict[tuple[str, int], tuple[bool, bool]] = {}
        for layer in self.layers.values():
            if layer.activation is None:
                continue
            absolute, signed = cal.needs_histograms(layer.activation.method,
                                                    layer.activation.symmetric)
            for tensor in layer.roles.values():
                key = (tensor, layer.activation.bins)
                before = needs.get(key, (False, False))
                needs[key] = (before[0] or absolute, before[1] or signed)
        if self._pool:
            needs = dict.fromkeys(self._observers, (True, True))
        for key, (absolute, signed) in needs.items():
            self._observers[key].start_histograms(absolute, signed)

    def _finish(self) -> None:
        plan: QuantPlan = {}
        methods: dict[str, dict[str, str | None]] = {}
        computed: dict[tuple[str, ActivationConfig], tuple[QuantParams, tuple[float, float]]] = {}
        for name, layer in self.layers.items():
            specs: dict[str, QuantParams] = {}
            methods[name] = {}
            act = layer.activation
            for role, tensor in layer.roles.items() if act is not None else ():
                if (tensor, act) not in computed:
                    observer = self._observers[(tensor, act.bins)]
                    computed[(tensor, act)] = cal.activation_params(
                        observer, act.dtype, act.symmetric, act.method, act.percentile)
                specs[role], self._ranges[(name, role)] = computed[(tensor, act)]
                methods[name][role] = act.method
            if layer.weight is not None:
                wcfg = layer.weight
                node = self.graph.find_node(name)
                specs["weight"] = cal.weight_params(self.params[node.weight_name("weight")],
                                                    wcfg.dtype, wcfg.per_channel, wcfg.symmetric,
                                                    wcfg.method)
                methods[name]["weight"] = wcfg.method
            bias = (None if self.target == "tensorrt" else
                    bias_params(self.graph, self.graph.find_node(name), _layer_quant(specs)))
            if bias is not None:  # what ONNX Runtime's int8 kernels add, on every runner
                specs[BIAS_ROLE] = bias
            if specs:
                plan[name] = _layer_quant(specs)
        self._plan, self._methods = plan, methods

    def watch_all(self) -> None:
        """Also observe every tensor any plan of this graph may calibrate: the data inputs
        and fused outputs of every conv/linear and of every int8 op, with both histogram
        kinds on a second pass. A quantizer calibrated so is a pool that
        :meth:`calibrate_from` serves any config (per-layer choices, float layers) from,
        without running the data again: what a search over per-layer choices needs."""
        if self._pass or self.calibrated:
            raise MSCError("quantizer: watch_all() must come before calibration starts")
        kinds = (*WEIGHT_KERNELS, *INT8_OPS, *UNARY_INT8_OPS, "mean")
        tensors = set()
        for node in self.graph.nodes:
            if node.optype in kinds and node.inputs and len(node.outputs) == 1:
                tensors.update(node.inputs)
                tensors.add(fused_output(self.graph, node))
        bins_set = {key[1] for key in self._observers} or {_ACTIVATION_DEFAULTS["bins"]}
        for tensor in tensors:
            for bins in bins_set:
                self._observers.setdefault((tensor, bins), cal.TensorObserver(bins))
                self._pass_batches.setdefault((tensor, bins), 0)
        self.passes = 2
        self._pool = True

    def calibrate_from(self, pool: Quantizer) -> None:
        """Calibrate from the observations of ``pool`` (a :meth:`watch_all` quantizer of
        the same graph, calibrated): the same parameters as running the data again."""
        if not pool._pool or not pool.calibrated:
            raise MSCError("quantizer: calibrate_from needs a calibrated quantizer that "
                           "called watch_all() before calibrating")
        if pool.graph is not self.graph and pool.graph.to_json() != self.graph.to_json():
            raise MSCError("quantizer: calibrate_from needs a pool of the same graph")
        missing = sorted(key[0] for key in self._observers if key not in pool._observers)
        if missing:
            raise MSCError(f"quantizer: the pool observed no tensors {missing}")
        self._observers = {key: pool._observers[key] for key in self._observers}
        self._finish()

    # -- effect on the model ------------------------------------------------------------
    def quant_plan(self) -> QuantPlan:
        """The calibrated plan (empty until calibrated)."""
        return dict(self._plan or {})

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        """Round the weights of fp16-fallback layers to float16 (kept as float32 arrays)."""
        if not self.fp16_layers:
            return graph, params
        rounded = dict(params)
        for name in self.fp16_layers:
            if name not in graph:
                continue
            for tensor in graph.find_node(name).weights.values():
                value = np.asarray(rounded[tensor.name])
                rounded[tensor.name] = value.astype(np.float16).astype(value.dtype)
        return graph, rounded

    # -- strategy -----------------------------------------------------------------------
    def strategy(self) -> dict[str, Any]:
        if self._plan is None:
            raise MSCError("quantizer: not calibrated, so there is no strategy yet; calibrate "
                           "or load a strategy first")
        out: dict[str, Any] = {}
        for name, layer in self._plan.items():
            entry: dict[str, Any] = {}
            roles = {**layer.activations(),
                     **{r: p for r, p in (("weight", layer.weight), (BIAS_ROLE, layer.bias))
                        if p is not None}}
            for role, params in roles.items():
                entry[role] = params.to_json()
                method = self._methods.get(name, {}).get(role)
                if method is not None:
                    entry[role]["method"] = method
            out[name] = entry
        for name in self.fp16_layers:
            out[name] = {"fallback": FALLBACK_FP16}
        return out

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        """Adopt a strategy (validated as a whole first); the tool is then calibrated."""
        if not isinstance(strategy, dict):
            raise ToolConfigError(f"quantizer strategy: expected an object of layers, got "
                                  f"{type(strategy).__name__}")
        plan: QuantPlan = {}
        methods: dict[str, dict[str, str | None]] = {}
        fp16: list[str] = []
        for name, entry in strategy.items():
            self.check_layer(name, "quantizer strategy")
            where = f"quantizer strategy: layer {name!r}"
            node = self.graph.find_node(name)
            check_shape(entry, STRATEGY_LAYER_SCHEMA, where)
            roles = {"weight", BIAS_ROLE, "fallback", "output",
                     *(input_role(i) for i in range(max(len(node.inputs), 1)))}
            self.check_keys(entry, roles, where)
            if "fallback" in entry:
                if set(entry) != {"fallback"}:
                    raise ToolConfigError(f"{where}: fallback must stand alone, got roles "
                                          f"{sorted(entry)}")
                fp16.append(name)
                continue
            _check_quantizable(node, where)
            methods[name] = {}
            specs: dict[str, QuantParams] = {}
            for role in entry:
                specs[role], methods[name][role] = _parse_params(node, role, entry[role],
                                                                 f"{where}: {role}")
            plan[name] = _layer_quant(specs)
        self._plan, self._methods, self.fp16_layers = plan, methods, fp16
        self._ranges = {}

    # -- debugging ----------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per quantized layer: each planned activation role's tensor and observed range
        (and the calibrated range once calibrated), and the weight range."""
        out: dict[str, dict[str, Any]] = {}
        for name, layer in self.layers.items():
            entry: dict[str, Any] = {}
            for role, tensor in layer.roles.items() if layer.activation is not None else ():
                observer = self._observers[(tensor, layer.activation.bins)]
                entry[role] = {
                    "tensor": tensor, "method": layer.activation.method,
                    "min": observer.minimum if observer.count else None,
                    "max": observer.maximum if observer.count else None,
                    "absmax": observer.absmax, "count": observer.count,
                    "batches": observer.batches,
                }
                if (name, role) in self._ranges:
                    entry[role]["range"] = list(self._ranges[(name, role)])
            if layer.weight is not None:
                weight = np.asarray(self.params[self.graph.find_node(name).weight_name("weight")])
                entry["weight"] = {"method": layer.weight.method, "min": float(weight.min()),
                                   "max": float(weight.max()),
                                   "absmax": float(np.abs(weight).max())}
            out[name] = entry
        return out


def compose_plan(pool: Quantizer, layers: Mapping[str, Mapping[str, Any] | None],
                 target: str) -> QuantPlan:
    """The plan of per-layer choices (``None``: float), calibrated from ``pool``.

    Each layer's choice (a ``{"weight": ..., "activation": ...}`` config section pair)
    covers its activations too: its data input and, where the target needs it, its output,
    and whether the int8 ops between layers (residual adds, concat, pooling) are planned
    follows from which layers are int8 (:func:`int8_layout`). Those ops take the
    activation calibration most layers chose (the first of the most common choices).
    """
    chosen = [dict(c) for c in layers.values() if c is not None]
    if not chosen:
        return {}
    keys = [json.dumps(c, sort_keys=True) for c in chosen]
    base = chosen[keys.index(max(keys, key=keys.count))]
    config = {"target": target, "include": [], **base,
              "layers": {name: dict(c) if c is not None else {"skip": True}
                         for name, c in layers.items()}}
    quantizer = Quantizer(pool.graph, pool.params, config)
    quantizer.calibrate_from(pool)
    return quantizer.quant_plan()


WEIGHT_KERNELS = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias")


def _float_kernel_outputs(graph: MSCGraph, kernels: dict[str, bool]) -> set[str]:
    """Fused outputs of conv/linear layers that are not 8-bit int8 kernels and feed one
    consumer: tensors no consumer may quantize on ONNX Runtime.

    Its WeightBiasQuantization pass turns ``DQ -> Conv/Gemm -> [Relu/Clip] -> Q`` with a
    float weight or bias into an int8 kernel with weights it quantizes itself (per tensor),
    which is not the float layer the plan (and torch, and TVM) computes. Leaving such a
    layer's output float keeps a float layer float on every runner; the consumer then
    runs on float input (its weight stays quantized).
    """
    blocked: set[str] = set()
    for node in graph.nodes:
        if node.optype not in WEIGHT_KERNELS or kernels.get(node.name, False):
            continue
        out = fused_output(graph, node)
        if out not in graph.output_names and len(graph.find_consumers(out)) == 1:
            blocked.add(out)
    return blocked


def _is_int8_kernel(weight: WeightConfig | None, activation: ActivationConfig | None) -> bool:
    """Whether a layer runs as an 8-bit integer kernel (8-bit data input and weight)."""
    return (weight is not None and activation is not None and weight.dtype in ("int8", "uint8")
            and activation.dtype in ("int8", "uint8"))


def _layer_quant(specs: dict[str, QuantParams]) -> LayerQuant:
    """A LayerQuant from role -> params (``input``, ``input1``, ..., ``weight``, ``output``)."""
    count = max((role_index(r) or 0 for r in specs), default=0)
    return LayerQuant(specs.get("input"), specs.get("weight"),
                      tuple(specs.get(input_role(i)) for i in range(1, count + 1)),
                      specs.get("output"), specs.get(BIAS_ROLE))


# -------------------------------------------------------------------------------------
# Config sections
# -------------------------------------------------------------------------------------
def _check_quantizable(node: MSCNode, where: str) -> None:
    if node.optype == "input" or not node.inputs:
        raise ToolConfigError(f"{where}: node {node.name!r} is a graph input and cannot be "
                              "quantized")


def _bits_dtype(section: dict[str, Any], by_bits: dict[int, str], where: str) -> str | None:
    """The dtype ``bits`` stands for (the schema took its value); it must agree with
    ``dtype`` when both are given."""
    if "bits" not in section:
        return None
    bits = section["bits"]
    dtype = by_bits[bits]
    if "dtype" in section and section["dtype"] != dtype:
        raise ToolConfigError(f"{where}: bits {bits} and dtype {section['dtype']!r} disagree")
    return dtype


def _merged(section: dict[str, Any] | None, base: dict[str, Any], where: str,
            by_bits: dict[int, str]) -> dict[str, Any] | None:
    """A config section (checked by :data:`CONFIG_SCHEMA`) over ``base``; None: float."""
    if section is None:
        return None
    merged = {**base, **{k: v for k, v in section.items() if k != "bits"}}
    dtype = _bits_dtype(section, by_bits, where)
    if dtype is not None:
        merged["dtype"] = dtype
    return merged


def _weight_section(section: Any, base: WeightConfig | None, where: str) -> WeightConfig | None:
    defaults = asdict(base) if base is not None else dict(_WEIGHT_DEFAULTS)
    merged = _merged(section, defaults, where, {8: "int8", 4: "int4"})
    return None if merged is None else WeightConfig(**merged)


def _activation_section(section: Any, base: ActivationConfig | None, where: str,
                        target_defaults: dict[str, Any]) -> ActivationConfig | None:
    """An activation section merged over ``base`` (or the target's defaults).

    ``symmetric`` left out follows the dtype chosen alongside it: int8 symmetric, uint8
    asymmetric (what ONNX Runtime's x86 kernels fuse), unless the base already fixed both.
    """
    defaults = (asdict(base) if base is not None
                else {**_ACTIVATION_DEFAULTS, **target_defaults})
    merged = _merged(section, defaults, where, {8: "int8"})
    if merged is None:
        return None
    if (isinstance(section, dict) and "symmetric" not in section
            and ("dtype" in section or "bits" in section)):
        merged["symmetric"] = merged["dtype"] == "int8"
    return ActivationConfig(**{**merged, "percentile": float(merged["percentile"]),
                               "bins": int(merged["bins"])})


def _parse_params(node: MSCNode, role: str, data: Any,
                  where: str) -> tuple[QuantParams, str | None]:
    """One role of a strategy entry (its keys, dtype and method checked by
    :data:`STRATEGY_LAYER_SCHEMA`) -> its parameters and (optional) method: what a schema
    cannot say (finite scales, the node's weight and bias, the channel count) is checked
    here."""
    activation = role not in ("weight", BIAS_ROLE)
    method = data.get("method")
    if any(isinstance(s, bool) or not isinstance(s, int | float) or not s > 0
           or not np.isfinite(s) for s in data["scale"]):
        raise ToolConfigError(f"{where}.scale: every scale must be a finite number > 0, got "
                              f"{data['scale'][:8]}")
    if any(isinstance(z, bool) or not isinstance(z, int) for z in data["zero_point"]):
        raise ToolConfigError(f"{where}.zero_point: expected integers, got "
                              f"{data['zero_point'][:8]}")
    axis = data.get("axis")
    if activation and axis is not None:
        raise ToolConfigError(f"{where}.axis {axis!r}: activations are quantized per tensor "
                              "(axis null)")
    if role == BIAS_ROLE:
        if "bias" not in node.weights:
            raise ToolConfigError(f"{where}: node {node.name!r} ({node.optype}) has no bias")
        if axis not in (None, 0):
            raise ToolConfigError(f"{where}.axis {axis!r}: expected null or 0")
    if role == "weight":
        if "weight" not in node.weights:
            raise ToolConfigError(f"{where}: node {node.name!r} ({node.optype}) has no weight")
        if axis not in (None, 0):
            raise ToolConfigError(f"{where}.axis {axis!r}: expected null (per tensor) or 0 "
                                  "(per output channel)")
        channels = node.weights["weight"].shape[0]
        if axis == 0 and len(data["scale"]) != channels:
            raise ToolConfigError(f"{where}.scale: {len(data['scale'])} scales for {channels} "
                                  "output channels")
    try:
        params = QuantParams.from_json(data, where)
    except MSCError as err:
        raise ToolConfigError(str(err)) from None
    return params, method
