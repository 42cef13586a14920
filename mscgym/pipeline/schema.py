"""The declared shape of a pipeline config: one JSON Schema, checked by
:func:`mscgym.utils.schema.check_document` before anything else reads the config.

Every key, type, range and choice of the config is declared here (the choices of
runners, agents and scorers come from their registries), so an unknown key, a value of
the wrong type or an unknown choice is refused with an error naming the key, what it
takes and what was given. What a schema cannot say stays in
:func:`mscgym.pipeline.config.validate_config`: whether a target can run on this
machine; and the workspace code checks where paths lead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mscgym.agents.registry import agent_names
from mscgym.runtime.registry import runner_names
from mscgym.tasks.scorers import SCORERS
from mscgym.utils.schema import integer_at_least

VERBOSITY = ("debug", "info", "runtime", "warn", "warning", "error", "critical")
"""MSC's verbose levels; ``runtime`` is ``info`` plus the runtime's build and run log,
and ``debug:<n>`` (MSC's debug level n) is ``debug``."""

_STRING = {"type": "string", "minLength": 1}
_OPTIONS = {"type": "object"}


def _object(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """An object with exactly these keys (an unknown key is an error)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def config_schema(stages: Iterable[str]) -> dict[str, Any]:
    """The JSON Schema of a pipeline config whose optimize stages are ``stages``."""
    runners = {"enum": sorted(runner_names())}
    gym_entry = _object({
        "record": _STRING,
        "env": _object({"strategy": {"enum": sorted(SCORERS)},
                        "mode": {"enum": ["layerwise", "oneshot"]},
                        "options": _OPTIONS, "runner": runners}),
        "agent": _object({"type": {"enum": sorted(agent_names())}, "budget": integer_at_least(1),
                          "options": _OPTIONS}),
    })
    stage = _object({
        "strategy_file": {"type": ["string", "null"], "minLength": 1},
        "target": runners,
        "config": {"type": "object"},
        "gym": {"type": "array", "minItems": 1, "items": gym_entry},
    })
    number = {"type": "number", "minimum": 0}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mscgym pipeline config",
        **_object({
            "workspace": _STRING,
            "verbose": {"type": "string", "pattern": "^(" + "|".join(VERBOSITY)
                        + r"|debug:[0-9]+)$",
                        "x-expected": f"one of {sorted(VERBOSITY)} or 'debug:<n>'"},
            "log_file": _STRING,
            "model": _STRING,
            "data": _object({"calibration": _STRING, "eval": _STRING, "labels": _STRING},
                            required=("calibration", "eval")),
            "baseline": _object({"check_config": _object({
                "atol": number, "rtol": number, "runner": runners})}),
            **dict.fromkeys(stages, stage),
            "profile": _object({"repeat": integer_at_least(1), "warmup": integer_at_least(0)}),
            "compile": _object({"target": runners, "device": {"enum": ["cpu", "cuda"]}}),
            "export": _object({"name": _STRING}),
        }),
    }
