"""The built-in tools' search spaces and how a plan's choices become each tool.

:mod:`mscgym.tools.registry` names these functions in the tools' declarations: a
space builder takes a :class:`~mscgym.tasks.task.Task` and returns the tool's
dimensions; a plan builder takes the task, the plan's values of those dimensions (by
full name), the graph the tools before left and the :class:`ToolContext`, and returns
the tool ready to apply (None when the choices leave the model as it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.tasks.choices import (
    DEFAULT_QUANT_CHOICE,
    DISTILL_BASELINE,
    DISTILL_CHOICES,
    PERCENTILES,
    RECOVERY_CHOICES,
    quantizer_config,
)
from mscgym.tasks.sources import Params
from mscgym.tasks.spaces import Dimension
from mscgym.tools import MSC_TOOL, BaseTool, create_tool
from mscgym.tools.prune_recalibration import recalibrated_layers
from mscgym.tools.registry import ToolContext, new_tool
from mscgym.utils.cpu import ort_channel_multiple

if TYPE_CHECKING:
    from mscgym.tasks.task import Task


def by_target(choices: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The values of ``prefix:<target>`` dimensions, by target."""
    start = f"{prefix}:"
    return {name[len(start):]: value for name, value in choices.items()
            if name.startswith(start)}


# -- prune ----------------------------------------------------------------------------------
def prune_space(task: Task) -> list[Dimension]:
    """One density per prunable channel group, named by its first layer."""
    return [Dimension(f"prune:{members[0]}", task.densities, 1.0)
            for members in task.prune_groups()]


def prune_tool(task: Task, choices: Mapping[str, Any], graph: MSCGraph, params: Params,
               context: ToolContext) -> BaseTool | None:
    densities = by_target(choices, "prune")
    if all(d == 1.0 for d in densities.values()):
        return None
    pruner = create_tool(MSC_TOOL.PRUNE, graph, params, {"density": 1.0})
    layers: dict[str, Any] = {}
    for group in pruner.analysis.prunable():  # type: ignore[attr-defined]
        density = densities.get(group.members[0], 1.0)
        for member in group.members:
            layers[member] = {"density": float(density)}
    # Recalibrated on the task's calibration batches wherever one torch pass sees every
    # layer (not across the host calls of a partitioned model); on ONNX Runtime, kept
    # channel counts are multiples of what its fast convs need.
    return create_tool(MSC_TOOL.PRUNE, graph, params, {
        "density": 1.0, "layers": layers, "recalibrate": bool(recalibrated_layers(graph)),
        "round_to": ort_channel_multiple() if task.runner == "onnxruntime" else 1})


# -- quantize -------------------------------------------------------------------------------
def quantize_space(task: Task) -> list[Dimension]:
    """Per-layer choices; float (the baseline) only where the scorer allows a float
    fallback, else the int8 forms with the default one as baseline plus the percentile
    of percentile calibration: the search decides how to quantize."""
    if task.float_fallback:
        choices = task.quant_choices if "float" in task.quant_choices else (
            "float", *task.quant_choices)
        return [Dimension(f"quantize:{layer}", choices, "float")
                for layer in task.quantizable_layers()]
    choices = tuple(c for c in task.quant_choices if c != "float")
    if not choices:
        raise MSCError(f"scorer {task.scorer.name!r} searches how to quantize, but the "
                       "quantization choices offer only 'float'")
    baseline = DEFAULT_QUANT_CHOICE if DEFAULT_QUANT_CHOICE in choices else choices[0]
    dims = [Dimension(f"quantize:{layer}", choices, baseline)
            for layer in task.quantizable_layers()]
    if any(quantizer_config(c)["activation"]["method"] == "percentile" for c in choices):
        dims.append(Dimension("calibrate:percentile", PERCENTILES, 99.99))
    return dims


def quantize_tool(task: Task, choices: Mapping[str, Any], graph: MSCGraph, params: Params,
                  context: ToolContext) -> BaseTool | None:
    """A quantizer holding the plan of the per-layer choices (calibrated from the task's
    cached pool, :meth:`Task.quant_plan`)."""
    percentile = by_target(choices, "calibrate").get("percentile")
    return quantizer_holding(graph, params, task.quant_plan(
        graph, params, by_target(choices, "quantize"), percentile))


def quantizer_holding(graph: MSCGraph, params: Params, plan: QuantPlan) -> BaseTool | None:
    """A quantizer whose strategy is ``plan`` (None for an empty plan: nothing to do)."""
    if not plan:
        return None
    quantizer = create_tool(MSC_TOOL.QUANTIZE, graph, params, {"include": []})
    quantizer.set_strategy({name: layer.to_json() for name, layer in plan.items()})
    return quantizer


# -- distill --------------------------------------------------------------------------------
def distill_space(task: Task) -> list[Dimension]:
    """A distill task searches the distiller's knobs; a compress task with labelled
    training data searches the recovery fine-tuning (AMC), without labels nothing."""
    if task.tool == "distill":
        return [Dimension(f"distill:{name}", choices, DISTILL_BASELINE[name])
                for name, choices in DISTILL_CHOICES.items()]
    if task.data.train_labels is None:
        return []
    return [Dimension(f"distill:{name}", choices, choices[0])
            for name, choices in RECOVERY_CHOICES.items()]


def distill_tool(task: Task, choices: Mapping[str, Any], graph: MSCGraph, params: Params,
                 context: ToolContext) -> BaseTool | None:
    """The distiller with the chosen knobs (recovery fills the others from the distill
    baseline); 0 epochs leaves the model as it is."""
    settings = {**DISTILL_BASELINE, **by_target(choices, "distill")}
    if int(settings["epochs"]) <= 0:
        return None
    config = {
        "loss": "kl+ce" if task.data.train_labels is not None else "kl",
        "temperature": float(settings["temperature"]),
        "alpha": float(settings["alpha"]),
        "epochs": int(settings["epochs"]),
        "lr": float(settings["lr"]),
        "intermediate": "auto" if settings["intermediate"] == "auto" else [],
        "seed": task.seed,
        "progress": False,
    }
    return new_tool(MSC_TOOL.DISTILL, graph, params, config, context)
