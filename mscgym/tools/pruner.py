"""Structured channel pruning by weight norm: the pruned graph is really smaller.

The pruner ranks the output channels of each channel group (see
:mod:`mscgym.tools.prune_groups`) by the L1 or L2 norm of their filters (summed over
the group's layers when a residual add ties several together) and keeps the top-k.
``transform`` then slices every weight those channels touch and rewrites the shapes
of the graph (weights, activations, reshape targets, depthwise ``groups``), so every
codegen builds a smaller model, not a masked one.

Config::

    {"density": 0.5,            # kept fraction of channels per group, in (0, 1]
     "norm": "l1",              # or "l2"
     "mode": "uniform",         # or "global": one budget for the whole model
     "budget": {"params": 0.5}, # global mode: kept fraction of params or {"flops": f}
     "layers": {"conv1": {"density": 0.75}, "conv2": {"skip": true}},
     "min_channels": 1,         # every group keeps at least this many channels
     "round_to": 1,             # kept counts are multiples of this (or all channels)
     "recalibrate": false}      # correct each layer's output statistics (see below)

In global mode the channels of all groups compete on their norm divided by the mean
norm of their group, and the pruner keeps the best ones until the budget is met
(layers with their own density or ``skip`` are left out of the competition).

With ``recalibrate`` the pruner calibrates like the quantizer does (MSC's loop: run
calibration batches while not ``calibrated``, then ``calibrate()``): it watches the
float model's inputs and each conv/linear output, and afterwards scales and shifts every
output channel of the pruned model back to the float model's statistics
(:mod:`mscgym.tools.prune_recalibration`, adaptive batch norm for folded batch norms).
The corrections are part of the strategy, so a strategy file reproduces them without
data. Until it is calibrated, such a pruner leaves the model as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mscgym.compiler.analysis import layer_cost, resolve_symbols
from mscgym.compiler.dims import Dim
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.ops import HOST_OP
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError, check_shape
from mscgym.tools.prune_groups import (
    CONV_OPS,
    ChannelAnalysis,
    ChannelGroup,
    analyze,
    describe,
)
from mscgym.tools.prune_recalibration import (
    MAX_SAMPLES,
    FloatObservation,
    apply_corrections,
    channel_axis,
    corrections,
    recalibrated_layers,
)
from mscgym.utils.schema import integer_at_least

if TYPE_CHECKING:
    from mscgym.compiler.partition import Stitched

_NORMS = ("l1", "l2")
_MODES = ("uniform", "global")
_BUDGETS = ("params", "flops")

_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pruner config",
    "type": "object",
    "properties": {
        "density": _FRACTION,
        "norm": {"enum": list(_NORMS)},
        "mode": {"enum": list(_MODES)},
        "budget": {"type": "object", "properties": dict.fromkeys(_BUDGETS, _FRACTION),
                   "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                   "x-expected": "one of {'params': f} or {'flops': f}, f in (0, 1]"},
        "layers": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"density": _FRACTION, "skip": {"const": True}},
            "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
            "x-expected": "{'density': d} or {'skip': true}"}},
        "min_channels": integer_at_least(1),
        "round_to": integer_at_least(1),
        "recalibrate": {"type": "boolean"},
    },
    "additionalProperties": False,
}
"""Every key of a pruner config; which layers exist and can be pruned, and that a
``budget`` needs mode ``global``, stay in code."""

STRATEGY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pruner strategy",
    "type": "object",
    "required": ["groups"],
    "properties": {"groups": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "layers": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "channels": {"type": "integer"},
            "density": {"type": "number"},
            "keep": {"type": "array", "minItems": 1, "items": {"type": "integer"},
                     "x-expected": "a non-empty list of channel indices"},
        },
        "required": ["layers", "keep"],
        "additionalProperties": False,
    }},
        "recalibration": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["scale", "shift"],
            "properties": {"scale": {"type": "array", "items": {"type": "number"}},
                           "shift": {"type": "array", "items": {"type": "number"}}},
            "additionalProperties": False,
            "x-expected": "{'scale': [...], 'shift': [...]}, one number per kept channel"}},
    },
    "additionalProperties": False,
}
"""The shape of a pruner strategy; that the layers form a channel group, the indices are
in range and distinct, and ``channels``/``density`` describe ``keep`` stay in code."""


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ToolConfigError(f"{where}: expected a number in (0, 1], got {value!r}")
    return float(value)


def model_cost(graph: MSCGraph) -> dict[str, int]:
    """Parameters (all weights), conv parameters and FLOPs of one sample. The host calls
    of a partitioned model's stitched graph are not counted: TVM runs them, and they
    hold no weights."""
    symbols = resolve_symbols(graph)
    layers = [layer_cost(graph, n, symbols) for n in graph.nodes
              if n.optype not in ("input", HOST_OP)]
    return {"params": sum(layer.params for layer in layers),
            "conv_params": sum(layer.params for layer in layers if layer.optype in CONV_OPS),
            "flops": sum(layer.flops for layer in layers)}


class Pruner(BaseTool):
    """Prunes output channels of conv/linear layers, group by group, by weight norm."""

    kind = MSC_TOOL.PRUNE
    config_schema = CONFIG_SCHEMA

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self.analysis = analyze(graph)
        self._groups = {g.name: g for g in self.analysis.prunable()}
        self._validate()
        self._importance = {name: self._group_importance(g) for name, g in self._groups.items()}
        self._keep = self._plan()
        self._observed = FloatObservation.of(graph) if self.recalibrate else None
        self._corrections: dict[str, dict[str, list[float]]] | None = None
        self.float_observation: FloatObservation | None = None
        """What :meth:`calibrate` corrected against (the float model's inputs and layer
        statistics), for :meth:`calibrate_from` of another pruner."""

    # -- config -----------------------------------------------------------------------
    def _validate(self) -> None:
        config = self.config
        self.check_config(config, "pruner config")
        self.density = float(config.get("density", 0.5))
        self.norm = config.get("norm", "l1")
        self.mode = config.get("mode", "uniform")
        self.min_channels = int(config.get("min_channels", 1))
        self.round_to = int(config.get("round_to", 1))
        self.recalibrate = bool(config.get("recalibrate", False))
        budget = config.get("budget")
        if budget is not None and self.mode != "global":
            raise ToolConfigError("pruner config: budget: only used with mode 'global' "
                                  f"(mode is {self.mode!r})")
        (metric, target), = ({"params": self.density} if budget is None else budget).items()
        self.budget = (metric, float(target))
        self.layer_density: dict[str, float | None] = {}
        for name, setting in config.get("layers", {}).items():
            self._check_prunable(name, "pruner config: layers")
            self.layer_density[name] = (None if "skip" in setting
                                        else float(setting["density"]))

    def _check_prunable(self, layer: str, where: str) -> ChannelGroup:
        self.check_layer(layer, where)
        group = self.analysis.group_of_layer().get(layer)
        if group is None:
            optype = self.graph.find_node(layer).optype
            raise ToolConfigError(f"{where}: layer {layer!r} ({optype}) is not a conv or linear "
                                  "layer, so it has no output channels to prune")
        if not group.prunable:
            why = group.blocked or "it has a single channel"
            raise ToolConfigError(f"{where}: layer {layer!r} cannot be pruned ({why}); "
                                  f"prunable layers: {self.prunable_layers()}")
        return group

    # -- queries ----------------------------------------------------------------------
    def prunable_layers(self) -> list[str]:
        return [m for g in self._groups.values() for m in g.members]

    def groups(self) -> list[dict[str, Any]]:
        """Every channel group: its layers, channel count, and why it is kept whole."""
        return describe(self.analysis)

    # -- planning ---------------------------------------------------------------------
    def _group_importance(self, group: ChannelGroup) -> np.ndarray:
        total = np.zeros(group.channels, dtype=np.float64)
        for layer in group.members:
            node = self.graph.find_node(layer)
            name = node.weights["weight"].name
            if name not in self.params:
                raise MSCError(f"pruner: no value for weight {name!r} of layer {layer!r}")
            flat = np.asarray(self.params[name], dtype=np.float64).reshape(group.channels, -1)
            total += (np.abs(flat).sum(axis=1) if self.norm == "l1"
                      else np.sqrt(np.square(flat).sum(axis=1)))
        return total

    def _top(self, name: str, count: int) -> np.ndarray:
        order = np.argsort(-self._importance[name], kind="stable")
        return np.sort(order[:count])

    def _count(self, channels: int, density: float) -> int:
        wanted = max(math.floor(density * channels + 0.5), self.min_channels, 1)
        return min(channels, math.ceil(wanted / self.round_to) * self.round_to)

    def _group_density(self, group: ChannelGroup) -> float | None:
        """The density layer settings give the group (None: skipped), if any."""
        settings = [self.layer_density[m] for m in group.members if m in self.layer_density]
        if not settings:
            return self.density
        if any(s is None for s in settings):
            return None
        return max(s for s in settings if s is not None)

    def _plan(self) -> dict[str, np.ndarray]:
        counts: dict[str, int] = {}
        free: list[str] = []
        for name, group in self._groups.items():
            explicit = any(m in self.layer_density for m in group.members)
            if self.mode == "global" and not explicit:
                free.append(name)
                continue
            density = self._group_density(group)
            counts[name] = group.channels if density is None else self._count(group.channels,
                                                                               density)
        if free:
            counts.update(self._allot(free, counts))
        return {name: self._top(name, count) for name, count in counts.items()}

    def _allot(self, free: list[str], fixed: dict[str, int]) -> dict[str, int]:
        """Global mode: the fewest top-ranked channels that meet the budget (or the
        closest plan to it)."""
        metric, target = self.budget
        goal = target * model_cost(self.graph)[metric]
        scored = []
        for index, name in enumerate(free):
            importance = self._importance[name]
            mean = importance.mean()
            score = importance / mean if mean > 0 else np.ones_like(importance)
            scored += [(-s, index, channel) for channel, s in enumerate(score)]
        ranking = [free[index] for _, index, _ in sorted(scored)]

        def counts_for(k: int) -> dict[str, int]:
            taken = dict.fromkeys(free, 0)
            for name in ranking[:k]:
                taken[name] += 1
            return {name: min(self._groups[name].channels,
                              math.ceil(max(n, self.min_channels, 1) / self.round_to)
                              * self.round_to) for name, n in taken.items()}

        def cost(k: int) -> int:
            counts = {**fixed, **counts_for(k)}
            return model_cost(self.pruned_graph(counts))[metric]

        low, high = 0, len(ranking)
        while low < high:
            middle = (low + high) // 2
            if cost(middle) >= goal:
                high = middle
            else:
                low = middle + 1
        best = low
        if low > 0 and abs(cost(low - 1) - goal) < abs(cost(low) - goal):
            best = low - 1
        return counts_for(best)

    # -- effect -----------------------------------------------------------------------
    def planned_graph(self) -> MSCGraph:
        """The graph (shapes only) the current plan gives."""
        return self.pruned_graph({name: len(kept) for name, kept in self._keep.items()})

    def pruned_graph(self, counts: dict[str, int]) -> MSCGraph:
        """The graph (shapes only, no weights) when each group keeps ``counts[group]``
        channels; what a plan costs is measured on it."""
        return _resize(self.graph, self.analysis, self.analysis.shapes(self.graph, counts))

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        """The pruned graph and weights. ``params`` may be the dense weights (they are
        sliced, and recalibrated when the pruner was) or weights already of the pruned
        shapes (e.g. after fine-tuning the pruned model), which pass through. A
        recalibrating pruner not yet calibrated leaves the model as it is."""
        if self.recalibrate and self._corrections is None:
            return graph, params
        pruned, new_params, sliced = self._sliced(graph, params)
        if sliced and self._corrections:
            new_params = apply_corrections(pruned, new_params, self._corrections)
        return pruned, new_params

    def _sliced(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params, bool]:
        """The pruned graph and weights, and whether any weight was sliced from dense."""
        analysis = self.analysis if graph is self.graph else analyze(graph)
        keep = self._keep_for(graph, analysis)
        counts = {name: len(kept) for name, kept in keep.items()}
        shapes = analysis.shapes(graph, counts)
        weights = graph.weight_tensors()
        new_params = dict(params)
        sliced = False
        for item in analysis.slices:
            if item.tensor not in weights:
                continue
            tensor = weights[item.tensor]
            if item.tensor not in params:
                raise MSCError(f"pruner: no value for weight {item.tensor!r}")
            value = np.asarray(new_params[item.tensor])
            if value.shape[item.axis] == tensor.shape[item.axis]:
                value = np.take(value, item.indices(keep), axis=item.axis)
                sliced = True
            elif value.shape[item.axis] != shapes[item.tensor][item.axis]:
                raise MSCError(f"pruner: weight {item.tensor!r} has shape {value.shape}; "
                               f"expected the dense {tuple(tensor.shape)} or the pruned "
                               f"{shapes[item.tensor]}")
            new_params[item.tensor] = value
        return _resize(graph, analysis, shapes), new_params, sliced

    # -- recalibration (MSC's calibration loop) ------------------------------------------
    @property
    def calibrated(self) -> bool:
        return not self.recalibrate or self._corrections is not None

    @property
    def calibration_samples(self) -> int:
        """How many calibration samples recalibration uses (the loop runs no more)."""
        return MAX_SAMPLES

    def watched_tensors(self) -> list[str]:
        """The float model's inputs and conv/linear outputs, until calibrated."""
        if self.calibrated or self._observed is None:
            return []
        return self._observed.watched()

    def observe(self, tensors: dict[str, np.ndarray]) -> None:
        if not self.calibrated and self._observed is not None:
            self._observed.add(tensors)

    def calibrate(self) -> None:
        """Compute the per-channel corrections of the pruned model from what was observed."""
        if self.calibrated:
            raise MSCError("pruner: already calibrated (or 'recalibrate' is off); create a "
                           "new pruner to recalibrate")
        observed = self._observed
        if observed is None or not observed.inputs:
            raise MSCError("pruner: calibrate() before any calibration batch was observed; "
                           "run the calibration batches through the model first")
        pruned, params, _ = self._sliced(self.graph, self.params)
        self._corrections = corrections(pruned, params, observed, self._kept_outputs())
        self.float_observation = observed
        self._observed = None

    def calibrate_from(self, observed: FloatObservation) -> None:
        """Calibrate on the float model's statistics that another recalibrating pruner of
        the same graph gathered on the same calibration batches (its
        :attr:`float_observation`): they do not depend on which channels are pruned, so
        the plans of one task share them and each pays only the pruned model's pass."""
        expected = self._observed
        if expected is None or self.calibrated:
            raise MSCError("pruner: calibrate_from() needs a recalibrating pruner that is not "
                           "calibrated yet")
        if (observed.layers, observed.input_names) != (expected.layers, expected.input_names):
            raise MSCError(f"pruner: the observation is of layers {observed.layers[:3]}... "
                           f"and inputs {observed.input_names}; graph {self.graph.name!r} "
                           f"recalibrates {expected.layers[:3]}... from {expected.input_names}")
        if not observed.inputs:
            raise MSCError("pruner: the observation holds no calibration batch")
        self._observed = observed
        self.calibrate()

    def _keep_for(self, graph: MSCGraph, analysis: ChannelAnalysis) -> dict[str, np.ndarray]:
        groups = {g.name: g for g in analysis.prunable()}
        for name in self._keep:
            group = groups.get(name)
            expected = self._groups[name]
            if group is None or (group.members, group.channels) != (expected.members,
                                                                    expected.channels):
                raise MSCError(f"pruner: graph {graph.name!r} has no prunable channel group "
                               f"{name!r} of {expected.channels} channels with layers "
                               f"{expected.members}; transform the graph the pruner was "
                               "created for")
        return {name: kept for name, kept in self._keep.items()
                if len(kept) < groups[name].channels}

    # -- strategy ---------------------------------------------------------------------
    def strategy(self) -> dict[str, Any]:
        groups = []
        for name, group in self._groups.items():
            kept = self._keep[name]
            groups.append({"name": name, "layers": list(group.members),
                           "channels": group.channels,
                           "density": round(len(kept) / group.channels, 6),
                           "keep": [int(i) for i in kept]})
        if self._corrections:
            return {"groups": groups, "recalibration": self._corrections}
        return {"groups": groups}

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        """Adopt kept channels per group; groups the strategy omits are kept whole."""
        check_shape(strategy, STRATEGY_SCHEMA, "pruner strategy")
        keep: dict[str, np.ndarray] = {}
        for position, entry in enumerate(strategy["groups"]):
            where = f"pruner strategy groups[{position}]"
            layers = entry["layers"]
            group = self._check_prunable(layers[0], f"{where}.layers")
            if sorted(layers) != sorted(group.members):
                raise ToolConfigError(f"{where}.layers: {layers} is not a channel group; layer "
                                      f"{layers[0]!r} is pruned together with {group.members}")
            if group.name in keep:
                raise ToolConfigError(f"{where}: group {group.name!r} is listed twice")
            keep[group.name] = _kept_indices(entry["keep"], group.channels, f"{where}.keep")
            _check_stated(entry, group.channels, len(keep[group.name]), where)
        self._keep = {name: keep.get(name, np.arange(g.channels))
                      for name, g in self._groups.items()}
        self._corrections = None
        if "recalibration" in strategy:
            self._corrections = self._checked_corrections(strategy["recalibration"])
        elif self.recalibrate:
            self._observed = FloatObservation.of(self.graph)

    def _kept_outputs(self) -> dict[str, np.ndarray]:
        """Per recalibrated layer whose output channels are pruned, which of its float
        channels it keeps: the slice of its bias (a depthwise conv follows the group of
        its input, not a group of its own)."""
        keep = self._keep_for(self.graph, self.analysis)
        bias_of = {self.graph.find_node(layer).weights["bias"].name: layer
                   for layer in recalibrated_layers(self.graph)}
        return {bias_of[item.tensor]: item.indices(keep) for item in self.analysis.slices
                if item.tensor in bias_of}

    def _checked_corrections(self, found: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
        """The strategy's recalibration, each layer one the pruner corrects and each list
        as long as the layer's kept output channels."""
        where = "pruner strategy recalibration"
        layers = recalibrated_layers(self.graph)
        planned = self.planned_graph()
        for layer, correction in found.items():
            if layer not in layers:
                raise ToolConfigError(f"{where}: {layer!r} is not a conv or linear layer with "
                                      f"a bias of graph {self.graph.name!r}")
            channels = int(planned.find_node(layer).output.shape[channel_axis(planned, layer)])
            for key in ("scale", "shift"):
                if len(correction[key]) != channels:
                    raise ToolConfigError(f"{where}.{layer}.{key}: {len(correction[key])} "
                                          f"values for {channels} kept output channels")
        return {layer: {"scale": [float(v) for v in c["scale"]],
                        "shift": [float(v) for v in c["shift"]]} for layer, c in found.items()}

    # -- reporting --------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Params (all weights), conv params and FLOPs (one sample, as
        :mod:`mscgym.compiler.analysis` counts them) before and after pruning, and the
        groups: how many are prunable and pruned, and why the others are kept whole."""
        counts = {name: len(kept) for name, kept in self._keep.items()}
        before = model_cost(self.graph)
        after = model_cost(self.pruned_graph(counts))
        report: dict[str, Any] = {
            key: {"before": before[key], "after": after[key],
                  "ratio": after[key] / before[key] if before[key] else 1.0}
            for key in before}
        report["groups"] = {
            "prunable": len(self._groups),
            "pruned": sum(counts[n] < g.channels for n, g in self._groups.items()),
            "blocked": {g.name: g.blocked for g in self.analysis.groups if g.blocked}}
        return report


class PartitionPruner:
    """One prune plan over every region of a partitioned model.

    The channel groups come from the stitched graph (:func:`mscgym.compiler.partition.stitch`):
    a group whose channels flow from a conv in one region through host calls into a conv
    in another region is one group, pruned on both sides, when every host call on the
    way keeps channels apart (elementwise, a cumsum along another axis); otherwise the
    group is kept whole and :meth:`groups` says which host call stopped it. Layers are
    named as in the regions (the user's names), the strategy is the single pruner's.
    """

    kind = MSC_TOOL.PRUNE
    strategy_version = Pruner.strategy_version
    calibrated = True  # nothing to calibrate: the plan comes from the weights

    def __init__(self, stitched: Stitched, config: dict[str, Any] | None) -> None:
        if (config or {}).get("recalibrate"):
            raise ToolConfigError("pruner config: recalibrate: not available on a partitioned "
                                  "model (the host calls between its regions run outside "
                                  "the one torch pass that recalibrates)")
        self.stitched = stitched
        self.pruner = Pruner(stitched.graph, stitched.params, config)

    def prunable_layers(self) -> list[str]:
        return self.pruner.prunable_layers()

    def groups(self) -> list[dict[str, Any]]:
        return self.pruner.groups()

    def summary(self) -> dict[str, Any]:
        return self.pruner.summary()

    def strategy(self) -> dict[str, Any]:
        return self.pruner.strategy()

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        self.pruner.set_strategy(strategy)

    def save_strategy(self, path: Any) -> str:
        return self.pruner.save_strategy(path)

    def load_strategy(self, path: Any) -> None:
        self.pruner.load_strategy(path)

    def region_transform(self, region: str, graph: MSCGraph, params: Params
                         ) -> tuple[MSCGraph, Params]:
        """The pruned graph and weights of ``region`` (``graph``, with ``params`` dense or
        already pruned) under the current plan."""
        rename = self.stitched.renames[region]
        weights = {**self.stitched.params,
                   **{rename[k]: v for k, v in params.items() if k in rename}}
        pruned, pruned_params = self.pruner.transform(self.stitched.graph, weights)
        declared = {t.name: t.shape for n in pruned.nodes
                    for t in (*n.outputs, *n.weights.values())}
        shapes = {}
        for node in graph.nodes:
            for tensor in (*node.outputs, *node.weights.values()):
                shape = declared[rename[tensor.name]]
                if tuple(shape) != tuple(tensor.shape):
                    shapes[tensor.name] = tuple(shape)
        depthwise = [n.name for n in graph.nodes if rename.get(n.name) in
                     self.pruner.analysis.depthwise]
        region_graph = _resize(graph, ChannelAnalysis([], [], depthwise), shapes)
        return region_graph, {**params, **{k: pruned_params[rename[k]] for k in params
                                           if k in rename}}

    def host_shapes(self, segment: str) -> list[tuple[Dim, ...]]:
        """The shapes of a host segment's inputs under the current plan."""
        planned = self.pruner.planned_graph()
        return [planned.find_tensor(t).shape for t in self.stitched.host_inputs[segment]]


class RegionPrune(BaseTool):
    """The part of a :class:`PartitionPruner` plan one region's manager applies, as its
    prune tool: tools after it (the quantizer) see the region pruned."""

    kind = MSC_TOOL.PRUNE

    def __init__(self, plan: PartitionPruner, region: str, graph: MSCGraph,
                 params: Params) -> None:
        super().__init__(graph, params, None)
        self.plan, self.region = plan, region

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        return self.plan.region_transform(self.region, graph, params)

    def strategy(self) -> dict[str, Any]:
        return self.plan.strategy()

    def set_strategy(self, strategy: Mapping[str, Any]) -> None:
        self.plan.set_strategy(dict(strategy))


def _check_stated(entry: dict[str, Any], channels: int, kept: int, where: str) -> None:
    """A strategy's ``channels`` and ``density`` describe its ``keep`` list; a value that
    does not (``density: 2``, ``channels: 99`` on a 16-channel group) is refused rather
    than ignored, since the file would claim a different model than it builds."""
    if "channels" in entry and entry["channels"] != channels:
        raise ToolConfigError(f"{where}.channels: the group has {channels} channels, the "
                              f"strategy says {entry['channels']!r}")
    if "density" in entry:
        density = _fraction(entry["density"], f"{where}.density")
        if abs(density - kept / channels) > 1e-6:
            raise ToolConfigError(f"{where}.density: {density!r} does not match the kept "
                                  f"channels ({kept} of {channels} = {kept / channels:.6g})")


def _kept_indices(value: list[int], channels: int, where: str) -> np.ndarray:
    """A group's kept channels (a non-empty list of integers, by the schema): in range
    and distinct."""
    bad = [i for i in value if not 0 <= i < channels]
    if bad:
        raise ToolConfigError(f"{where}: indices {bad[:5]} are out of range [0, {channels})")
    if len(set(value)) != len(value):
        raise ToolConfigError(f"{where}: channel indices repeat")
    return np.array(sorted(value), dtype=np.int64)


def _resize(graph: MSCGraph, analysis: ChannelAnalysis,
            shapes: dict[str, tuple[Dim, ...]]) -> MSCGraph:
    """A copy of ``graph`` with the new tensor shapes, reshape targets and groups."""
    data = graph.to_json()
    depthwise = set(analysis.depthwise)
    for node in data["nodes"]:
        for tensor in (*node["outputs"], *node["weights"].values()):
            if tensor["name"] in shapes:
                tensor["shape"] = list(shapes[tensor["name"]])
        output = node["outputs"][0] if node["outputs"] else None
        if node["optype"] == "reshape" and output and output["name"] in shapes:
            old = graph.find_tensor(output["name"]).shape
            for arg in node["args"]:
                if arg.get("kind") == "shape":
                    arg["value"] = [new if new != before else value for value, before, new
                                    in zip(arg["value"], old, output["shape"], strict=True)]
        if node["name"] in depthwise:
            node["attrs"]["groups"] = int(node["weights"]["weight"]["shape"][0])
    return MSCGraph.from_json(data)
