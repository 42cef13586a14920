"""The declared types of a pipeline config, checked by
:func:`mscgym.utils.schema.check_document` before the config's own validation.

``validate_config`` already checks keys, choices and numbers with messages of its own;
this schema declares the types it would otherwise pass to Python unchecked (a gym's
``env.options`` or ``agent.options`` given as ``5`` or ``"ab"`` used to reach ``dict()``
and crash), so every config value has a declared type."""

from __future__ import annotations

from typing import Any

_OPTIONS = {"type": "object"}
_GYM_ENTRY = {
    "type": "object",
    "properties": {
        "record": {"type": "string"},
        "env": {"type": "object", "properties": {"options": _OPTIONS}},
        "agent": {"type": "object", "properties": {"options": _OPTIONS}},
    },
}
_STAGE = {"type": "object", "properties": {"gym": {"type": "array", "items": _GYM_ENTRY}}}

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mscgym pipeline config",
    "type": "object",
    "properties": {"prune": _STAGE, "quantize": _STAGE, "distill": _STAGE},
}
