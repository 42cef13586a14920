"""The declared shape of a record file (a JSON Schema, checked by
:func:`mscgym.utils.schema.check_document` when a record is read)."""

from __future__ import annotations

from typing import Any

from mscgym.utils.schema import integer_at_least

_NUMBER = {"type": "number"}
_TIME = {"type": "number", "minimum": 0}

METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["distill_loss", "accuracy", "latency_ms", "latency_p90_ms", "latency_iqr_ms",
                 "size_bytes", "params", "flops", "runner", "device"],
    "properties": {
        "distill_loss": _NUMBER,
        "accuracy": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "latency_ms": _TIME, "latency_p90_ms": _TIME, "latency_iqr_ms": _TIME,
        "size_bytes": integer_at_least(0), "params": integer_at_least(0),
        "flops": integer_at_least(0),
        "runner": {"type": "string"}, "device": {"type": "string"},
        "target": {"type": "string"}, "extra": {"type": "object"},
        # optional: records made before paired timing have none
        "paired_speedup": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
}

RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mscgym record",
    "type": "object",
    "required": ["schema", "version", "task", "plan", "strategies", "metrics", "tolerances",
                 "score", "seed", "versions"],
    "properties": {
        "schema": {"const": "mscgym.record"},
        "version": {"type": "integer"},
        "task": {
            "type": "object",
            "required": ["model", "weight_hash", "data", "data_hash", "tool", "space",
                         "scorer", "runner", "device"],
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "model_file": {"type": "object", "required": ["path", "sha256"],
                               "properties": {"path": {"type": "string"},
                                              "sha256": {"type": "string"},
                                              "input_shapes": {"type": "object"}}},
                "weight_hash": {"type": "string"},
                "data": {"type": "string"},
                "data_hash": {"type": "string"},
                "tool": {"type": "string"},
                "space": {"type": "array", "items": {
                    "type": "object", "required": ["name", "choices"],
                    "properties": {"name": {"type": "string"},
                                   "choices": {"type": "array", "minItems": 1}}}},
                "scorer": {"type": "object", "required": ["name"],
                           "properties": {"name": {"type": "string"},
                                          "options": {"type": ["object", "null"]}}},
                "runner": {"type": "string"},
                "device": {"type": "string"},
                "runner_options": {"type": ["object", "null"]},
                "profile": {"type": "object",
                            "properties": {"repeat": {"type": "integer", "minimum": 1},
                                           "warmup": {"type": "integer", "minimum": 0}}},
                "student": {"type": ["object", "null"]},
                "seed": {"type": "integer"},
            },
        },
        "plan": {"type": "object"},
        "strategies": {"type": "object", "additionalProperties": {"type": "object"}},
        "metrics": METRICS_SCHEMA,
        "tolerances": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": "number", "minimum": 0}}},
        "score": _NUMBER,
        "seed": {"type": "integer"},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "extra": {"type": "object", "properties": {"baseline": METRICS_SCHEMA}},
    },
}
