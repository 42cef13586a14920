"""What the choices of the built-in tools' search dimensions stand for: the
quantization choices as quantizer configs, the distiller's knobs and the recovery
fine-tuning of compress tasks. Read by the space and plan builders
(:mod:`mscgym.tasks.tool_plans`) and checked when a task is made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.spaces import QUANT_CHOICES

DISTILL_CHOICES: dict[str, tuple[Any, ...]] = {
    "temperature": (1.0, 2.0, 4.0, 8.0),
    "epochs": (1, 2, 3),
    "alpha": (0.0, 0.5, 0.9),
    "lr": (0.0001, 0.0003, 0.001),
    "intermediate": ("none", "auto"),
}
DISTILL_BASELINE = {"temperature": 4.0, "epochs": 1, "alpha": 0.5, "lr": 0.0003,
                    "intermediate": "none"}
RECOVERY_CHOICES: dict[str, tuple[Any, ...]] = {"epochs": (0, 1, 2), "lr": (0.0001, 0.0003)}
"""Compress tasks with labelled training data fine-tune the pruned model from the float
teacher (AMC's recipe) for this many epochs at this learning rate; 0 epochs is the
baseline. Without labels (ImageNet crops) there is no recovery dimension. The rates are
Adam's for models whose batch norms are folded into their convs (no normalization left
to steady training): at 1e-3 one epoch took the unpruned digits32 ResNet-20 from 99.2%
to 11% accuracy, at 1e-4 to 99.4%."""


PERCENTILES: tuple[float, ...] = (99.9, 99.99, 99.999)
"""Percentiles the ``calibrate:percentile`` dimension offers to percentile calibration."""
DEFAULT_QUANT_CHOICE = "int8_channel_minmax"
"""The plan a quantize search starts from when float is not on offer."""


def quantizer_config(choice: str, percentile: float | None = None) -> dict[str, Any]:
    """The quantizer config that one per-layer quantization choice stands for
    (``percentile`` sets the percentile of percentile calibration)."""
    config = _choice_config(choice)
    if percentile is not None and config["activation"]["method"] == "percentile":
        config["activation"]["percentile"] = float(percentile)
    return config


def _choice_config(choice: str) -> dict[str, Any]:
    if choice == "int8_tensor_minmax":
        return {"weight": {"dtype": "int8", "per_channel": False},
                "activation": {"dtype": "int8", "method": "minmax"}}
    if choice == "uint8a_channel_minmax":
        return {"weight": {"dtype": "int8", "per_channel": True},
                "activation": {"dtype": "uint8", "symmetric": False, "method": "minmax"}}
    if choice == "int4w_channel_minmax":
        return {"weight": {"dtype": "int4", "per_channel": True},
                "activation": {"dtype": "int8", "method": "minmax"}}
    prefix = "int8_channel_"
    if choice.startswith(prefix) and choice[len(prefix):] in ("minmax", "percentile", "entropy",
                                                                "mse"):
        return {"weight": {"dtype": "int8", "per_channel": True},
                "activation": {"dtype": "int8", "method": choice[len(prefix):]}}
    raise MSCError(f"unknown quantization choice {choice!r}; expected one of {QUANT_CHOICES}")


def checked_quant_choices(choices: Sequence[str]) -> tuple[str, ...]:
    """``choices`` as a tuple, each one ``float`` or a choice :func:`quantizer_config` knows
    (an unknown one is refused when the task is made, not in the middle of a search)."""
    for choice in choices:
        if choice != "float":
            quantizer_config(choice)
    return tuple(choices)


def checked_densities(densities: Sequence[float]) -> tuple[float, ...]:
    """``densities`` as floats, each in (0, 1] (the share of channels a layer keeps)."""
    values = tuple(float(d) for d in densities)
    if any(not 0 < d <= 1 for d in values):
        raise MSCError(f"densities must lie in (0, 1], got {values}")
    return values
