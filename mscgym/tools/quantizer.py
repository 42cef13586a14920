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
      "fp16_fallback": false
    }

- ``"bits": 8`` (or 4 for weights) may stand for the dtype inside a section:
  8 -> ``int8``, 4 -> ``int4``; given together with ``dtype`` they must agree.
- A section set to ``null`` is not quantized (weight-only or activation-only).
- ``include`` lists the optypes quantized by default (the data input, first input,
  and the ``weight`` role when the node has one). A ``layers`` entry with overrides
  quantizes that node even if its optype is not included; ``skip`` keeps it float.
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
     "fc": {"fallback": "float16"}}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCNode
from mscgym.compiler.ops import COMPOSITE, SUPPORTED_OPS
from mscgym.compiler.quant_spec import LayerQuant, QuantParams, QuantPlan
from mscgym.tools import calibration as cal
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError

DEFAULT_INCLUDE = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias")
KNOWN_OPTYPES = frozenset({op.removeprefix("relax.") for op in SUPPORTED_OPS} | set(COMPOSITE))
FALLBACK_FP16 = "float16"

_WEIGHT_DEFAULTS: dict[str, Any] = {"dtype": "int8", "per_channel": True, "symmetric": True,
                                    "method": "minmax"}
_ACTIVATION_DEFAULTS: dict[str, Any] = {"dtype": "int8", "symmetric": True, "method": "minmax",
                                        "percentile": 99.99, "bins": 2048}
_CONFIG_KEYS = {"weight", "activation", "layers", "include", "fp16_fallback"}
_PARAM_KEYS = {"dtype", "scale", "zero_point", "axis", "method"}
_MIN_BINS, _MAX_BINS = 256, 1 << 16


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
    """How one layer is calibrated; ``None`` sections stay float."""

    node: str
    tensor: str
    weight: WeightConfig | None
    activation: ActivationConfig | None


class Quantizer(BaseTool):
    """Calibrates and plans int8/int4 quantization of conv and linear layers."""

    kind: ClassVar[MSC_TOOL] = MSC_TOOL.QUANTIZE

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self.check_keys(self.config, _CONFIG_KEYS, "quantizer config")
        self.layers, self.fp16_layers = self._parse_config(self.config)
        self._observers: dict[tuple[str, int], cal.TensorObserver] = {}
        for layer in self.layers.values():
            if layer.activation is not None:
                key = (layer.tensor, layer.activation.bins)
                self._observers.setdefault(key, cal.TensorObserver(layer.activation.bins))
        histogram = any(layer.activation is not None
                        and layer.activation.method in cal.HISTOGRAM_METHODS
                        for layer in self.layers.values())
        self.passes = 2 if histogram else 1
        self._pass = 0
        self._pass_batches: dict[tuple[str, int], int] = dict.fromkeys(self._observers, 0)
        self._plan: QuantPlan | None = None
        self._methods: dict[str, dict[str, str | None]] = {}
        self._ranges: dict[str, tuple[float, float]] = {}

    # -- config -------------------------------------------------------------------------
    def _parse_config(self, config: dict[str, Any]) -> tuple[dict[str, LayerConfig], list[str]]:
        weight = _weight_section(config.get("weight", {}), None, "quantizer config: weight")
        activation = _activation_section(config.get("activation", {}), None,
                                         "quantizer config: activation")
        include = config.get("include", list(DEFAULT_INCLUDE))
        if not isinstance(include, list | tuple) or not all(isinstance(o, str) for o in include):
            raise ToolConfigError(f"quantizer config: include must be a list of optypes, got "
                                  f"{include!r}")
        unknown = sorted(set(include) - KNOWN_OPTYPES)
        if unknown:
            raise ToolConfigError(f"quantizer config: include names unknown optypes {unknown}; "
                                  f"expected optypes such as {list(DEFAULT_INCLUDE)}")
        fp16 = config.get("fp16_fallback", False)
        if not isinstance(fp16, bool):
            raise ToolConfigError(f"quantizer config: fp16_fallback must be true or false, got "
                                  f"{fp16!r}")
        overrides = config.get("layers", {})
        if not isinstance(overrides, dict):
            raise ToolConfigError("quantizer config: layers must map node names to "
                                  f"{{'skip': true}} or overrides, got {overrides!r}")
        skipped: list[str] = []
        chosen: dict[str, tuple[WeightConfig | None, ActivationConfig | None]] = {}
        for name, entry in overrides.items():
            override = self._override(name, entry, weight, activation)
            if override is None:
                skipped.append(name)
            else:
                chosen[name] = override
        layers: dict[str, LayerConfig] = {}
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
            layers[node.name] = LayerConfig(node.name, node.inputs[0], layer_weight,
                                            layer_activation)
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
        if not isinstance(entry, dict):
            raise ToolConfigError(f"{where}: expected {{'skip': true}} or an object of "
                                  f"'weight'/'activation' overrides, got {entry!r}")
        self.check_keys(entry, {"skip", "weight", "activation"}, where)
        skip = entry.get("skip", False)
        if not isinstance(skip, bool):
            raise ToolConfigError(f"{where}.skip must be true or false, got {skip!r}")
        if skip:
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
                                             f"{where}.activation")
        return weight, activation

    # -- calibration --------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self._plan is not None

    def watched_tensors(self) -> list[str]:
        """Data inputs of the quantized layers, until calibration is done."""
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
            key = (layer.tensor, layer.activation.bins)
            absolute, signed = cal.needs_histograms(layer.activation.method,
                                                    layer.activation.symmetric)
            before = needs.get(key, (False, False))
            needs[key] = (before[0] or absolute, before[1] or signed)
        for key, (absolute, signed) in needs.items():
            self._observers[key].start_histograms(absolute, signed)

    def _finish(self) -> None:
        plan: QuantPlan = {}
        methods: dict[str, dict[str, str | None]] = {}
        for name, layer in self.layers.items():
            input_params = weight_params = None
            methods[name] = {}
            if layer.activation is not None:
                act = layer.activation
                observer = self._observers[(layer.tensor, act.bins)]
                input_params, chosen = cal.activation_params(observer, act.dtype, act.symmetric,
                                                             act.method, act.percentile)
                self._ranges[name] = chosen
                methods[name]["input"] = act.method
            if layer.weight is not None:
                wcfg = layer.weight
                node = self.graph.find_node(name)
                weight_params = cal.weight_params(self.params[node.weight_name("weight")],
                                                  wcfg.dtype, wcfg.per_channel, wcfg.symmetric,
                                                  wcfg.method)
                methods[name]["weight"] = wcfg.method
            plan[name] = LayerQuant(input_params, weight_params)
        self._plan, self._methods = plan, methods

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
            for role, params in (("input", layer.input), ("weight", layer.weight)):
                if params is None:
                    continue
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
            if not isinstance(entry, dict) or not entry:
                raise ToolConfigError(f"{where}: expected an object with 'input' and/or "
                                      f"'weight' (or 'fallback'), got {entry!r}")
            self.check_keys(entry, {"input", "weight", "fallback"}, where)
            if "fallback" in entry:
                if set(entry) != {"fallback"} or entry["fallback"] != FALLBACK_FP16:
                    raise ToolConfigError(f"{where}: fallback must be {FALLBACK_FP16!r} and "
                                          "stand alone")
                fp16.append(name)
                continue
            _check_quantizable(node, where)
            methods[name] = {}
            specs: dict[str, QuantParams] = {}
            for role in ("input", "weight"):
                if role in entry:
                    specs[role], methods[name][role] = _parse_params(node, role, entry[role],
                                                                     f"{where}: {role}")
            plan[name] = LayerQuant(specs.get("input"), specs.get("weight"))
        self._plan, self._methods, self.fp16_layers = plan, methods, fp16
        self._ranges = {}

    # -- debugging ----------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per quantized layer: the observed input range (and the calibrated range once
        calibrated) and the weight range."""
        out: dict[str, dict[str, Any]] = {}
        for name, layer in self.layers.items():
            entry: dict[str, Any] = {}
            if layer.activation is not None:
                observer = self._observers[(layer.tensor, layer.activation.bins)]
                entry["input"] = {
                    "tensor": layer.tensor, "method": layer.activation.method,
                    "min": observer.minimum if observer.count else None,
                    "max": observer.maximum if observer.count else None,
                    "absmax": observer.absmax, "count": observer.count,
                    "batches": observer.batches,
                }
                if name in self._ranges:
                    entry["input"]["range"] = list(self._ranges[name])
            if layer.weight is not None:
                weight = np.asarray(self.params[self.graph.find_node(name).weight_name("weight")])
                entry["weight"] = {"method": layer.weight.method, "min": float(weight.min()),
                                   "max": float(weight.max()),
                                   "absmax": float(np.abs(weight).max())}
            out[name] = entry
        return out


# -------------------------------------------------------------------------------------
# Config sections
# -------------------------------------------------------------------------------------
def _check_quantizable(node: MSCNode, where: str) -> None:
    if node.optype == "input" or not node.inputs:
        raise ToolConfigError(f"{where}: node {node.name!r} is a graph input and cannot be "
                              "quantized")


def _bits_dtype(section: dict[str, Any], by_bits: dict[int, str], where: str) -> str | None:
    if "bits" not in section:
        return None
    bits = section["bits"]
    if isinstance(bits, bool) or bits not in by_bits:
        raise ToolConfigError(f"{where}.bits {bits!r}: expected one of {sorted(by_bits)}")
    dtype = by_bits[bits]
    if "dtype" in section and section["dtype"] != dtype:
        raise ToolConfigError(f"{where}: bits {bits} and dtype {section['dtype']!r} disagree")
    return dtype


def _choice(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise ToolConfigError(f"{where} {value!r}: expected one of {list(options)}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ToolConfigError(f"{where} {value!r}: expected true or false")
    return value


def _merged(section: Any, base: dict[str, Any], keys: set[str], where: str,
            by_bits: dict[int, str]) -> dict[str, Any] | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ToolConfigError(f"{where}: expected an object (or null to keep it float), got "
                              f"{section!r}")
    unknown = sorted(set(section) - keys - {"bits"})
    if unknown:
        raise ToolConfigError(f"{where}: unknown keys {unknown}; expected some of "
                              f"{sorted(keys | {'bits'})}")
    merged = {**base, **{k: v for k, v in section.items() if k != "bits"}}
    dtype = _bits_dtype(section, by_bits, where)
    if dtype is not None:
        merged["dtype"] = dtype
    return merged


def _weight_section(section: Any, base: WeightConfig | None, where: str) -> WeightConfig | None:
    defaults = asdict(base) if base is not None else dict(_WEIGHT_DEFAULTS)
    merged = _merged(section, defaults, set(_WEIGHT_DEFAULTS), where, {8: "int8", 4: "int4"})
    if merged is None:
        return None
    return WeightConfig(
        dtype=_choice(merged["dtype"], cal.WEIGHT_DTYPES, f"{where}.dtype"),
        per_channel=_flag(merged["per_channel"], f"{where}.per_channel"),
        symmetric=_flag(merged["symmetric"], f"{where}.symmetric"),
        method=_choice(merged["method"], cal.WEIGHT_METHODS, f"{where}.method"),
    )


def _activation_section(section: Any, base: ActivationConfig | None,
                        where: str) -> ActivationConfig | None:
    defaults = asdict(base) if base is not None else dict(_ACTIVATION_DEFAULTS)
    merged = _merged(section, defaults, set(_ACTIVATION_DEFAULTS), where, {8: "int8"})
    if merged is None:
        return None
    percentile = merged["percentile"]
    if (isinstance(percentile, bool) or not isinstance(percentile, int | float)
            or not 50.0 < percentile <= 100.0):
        raise ToolConfigError(f"{where}.percentile {percentile!r}: expected a number in "
                              "(50, 100]")
    bins = merged["bins"]
    if isinstance(bins, bool) or not isinstance(bins, int) or not _MIN_BINS <= bins <= _MAX_BINS:
        raise ToolConfigError(f"{where}.bins {bins!r}: expected an integer in "
                              f"[{_MIN_BINS}, {_MAX_BINS}]")
    return ActivationConfig(
        dtype=_choice(merged["dtype"], cal.ACTIVATION_DTYPES, f"{where}.dtype"),
        symmetric=_flag(merged["symmetric"], f"{where}.symmetric"),
        method=_choice(merged["method"], cal.ACTIVATION_METHODS, f"{where}.method"),
        percentile=float(percentile),
        bins=bins,
    )


def _parse_params(node: MSCNode, role: str, data: Any,
                  where: str) -> tuple[QuantParams, str | None]:
    """One role of a strategy entry -> its parameters and (optional) method."""
    if not isinstance(data, dict):
        raise ToolConfigError(f"{where}: expected an object with dtype, scale, zero_point, "
                              f"axis, got {data!r}")
    unknown = sorted(set(data) - _PARAM_KEYS)
    if unknown:
        raise ToolConfigError(f"{where}: unknown keys {unknown}; expected some of "
                              f"{sorted(_PARAM_KEYS)}")
    missing = sorted({"dtype", "scale", "zero_point"} - set(data))
    if missing:
        raise ToolConfigError(f"{where}: missing keys {missing}")
    dtypes = cal.ACTIVATION_DTYPES if role == "input" else cal.WEIGHT_DTYPES
    methods = cal.ACTIVATION_METHODS if role == "input" else cal.WEIGHT_METHODS
    _choice(data["dtype"], dtypes, f"{where}.dtype")
    method = data.get("method")
    if method is not None:
        _choice(method, methods, f"{where}.method")
    for key in ("scale", "zero_point"):
        if not isinstance(data[key], list) or not data[key]:
            raise ToolConfigError(f"{where}.{key}: expected a non-empty list of numbers, got "
                                  f"{data[key]!r}")
    if any(isinstance(s, bool) or not isinstance(s, int | float) or not s > 0
           or not np.isfinite(s) for s in data["scale"]):
        raise ToolConfigError(f"{where}.scale: every scale must be a finite number > 0, got "
                              f"{data['scale'][:8]}")
    if any(isinstance(z, bool) or not isinstance(z, int) for z in data["zero_point"]):
        raise ToolConfigError(f"{where}.zero_point: expected integers, got "
                              f"{data['zero_point'][:8]}")
    axis = data.get("axis")
    if isinstance(axis, bool):
        raise ToolConfigError(f"{where}.axis {axis!r}: expected null or 0")
    if role == "input" and axis is not None:
        raise ToolConfigError(f"{where}.axis {axis!r}: activations are quantized per tensor "
                              "(axis null)")
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
