"""Every tool declares its config as a JSON Schema, checked by the one mechanism
(:func:`mscgym.utils.schema.check_document`) in the tools' wording."""

from __future__ import annotations

import jsonschema
import pytest

from mscgym.tools.base import ToolConfigError, check_shape, strategy_file_schema
from mscgym.tools.registry import tool_specs
from mscgym.utils.schema import check_document


def test_every_registered_tool_declares_a_valid_config_schema() -> None:
    specs = tool_specs()
    assert {s.name for s in specs} >= {"prune", "quantize", "distill", "collect"}
    for spec in specs:
        schema = spec.config_schema
        assert schema is not None, spec.name
        jsonschema.Draft202012Validator.check_schema(schema)
        check_shape({}, schema, f"{spec.name} config")  # every key is optional
        with pytest.raises(ToolConfigError, match=rf"^{spec.name} config: unknown keys "
                                                  r"\['no_such_key'\]; expected some of"):
            check_shape({"no_such_key": 1}, schema, f"{spec.name} config")


_SCHEMA = {
    "type": "object",
    "properties": {
        "weight": {"type": "object", "properties": {"bits": {"enum": [4, 8]}},
                   "required": ["bits"], "additionalProperties": False},
        "flag": {"type": "boolean", "x-expected": "true or false"},
        "count": {"type": ["integer", "null"], "minimum": 1},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(("document", "message"), [
    ({"weight": {"bits": 3}}, "tool config: weight.bits 3: expected one of [4, 8]"),
    ({"weight": {}}, "tool config: weight: missing keys ['bits']"),
    ({"weight": {"bits": 8, "dtype": "int8"}},
     "tool config: weight: unknown keys ['dtype']; expected some of ['bits']"),
    ({"flag": 1}, "tool config: flag must be true or false, got 1"),
    ({"count": 0}, "tool config: count 0: expected an integer >= 1"),
    ({"count": True}, "tool config: count True: expected an integer or null"),
    ([1], "tool config: expected an object, got [1]"),
])
def test_inline_wording_names_the_key_what_it_takes_and_what_was_given(
        document: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_document(document, _SCHEMA, ValueError, "tool config", inline=True)
    assert str(err.value) == message


def test_the_keyed_wording_of_other_files_is_unchanged() -> None:
    with pytest.raises(ValueError, match=r"^file: key 'weight.bits': 3 is not one of \[4, 8\]$"):
        check_document({"weight": {"bits": 3}}, _SCHEMA, ValueError, "file")


def test_strategy_file_envelope_names_the_tool_and_version() -> None:
    schema = strategy_file_schema("quantize", 1)
    check_shape({"tool": "quantize", "version": 1, "strategy": {}}, schema, "strategy file f")
    with pytest.raises(ToolConfigError, match=r"^strategy file f: tool 'prune': expected "
                                              r"\"quantize\""):
        check_shape({"tool": "prune", "version": 1, "strategy": {}}, schema, "strategy file f")
    with pytest.raises(ToolConfigError, match=r"version 2: expected 1"):
        check_shape({"tool": "quantize", "version": 2, "strategy": {}}, schema, "strategy file f")
