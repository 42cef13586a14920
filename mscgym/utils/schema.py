"""One way to declare and check the types of a JSON file: a JSON Schema per file kind.

Every kind of file mscgym reads (records, pipeline configs, ...) declares its shape
once, as a JSON Schema (draft 2020-12) next to the code that reads it, and
:func:`check_document` checks a parsed document against it. The first violation
becomes one error naming the file, the key path (``metrics.accuracy``) and what was
expected, instead of a type error deep inside the code that uses the value. A schema
node may say in words what it takes with an ``x-expected`` annotation (JSON Schema
ignores unknown keywords), for checks whose own wording would be a regular expression.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


@functools.cache
def _validator(schema_text: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _value(value: Any, limit: int = 60) -> str:
    """A given value as Python shows it (``'loud'``), for "... is not one of ..."."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _expected(error: ValidationError) -> str:
    """What the schema wanted at the failing place, in words."""
    if error.validator == "type":
        kinds = error.validator_value
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        return "expected " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
    if error.validator in ("minimum", "exclusiveMinimum"):
        strict = "> " if error.validator == "exclusiveMinimum" else ">= "
        types = error.schema.get("type")
        integer = types == "integer" or (isinstance(types, list) and "integer" in types
                                         and "number" not in types)
        kind = "an integer" if integer else "a number"
        return f"expected {kind} {strict}{error.validator_value}"
    if error.validator == "maximum":
        return f"expected a number <= {error.validator_value}"
    if error.validator == "const":
        return f"expected {_short(error.validator_value)}"
    if error.validator == "pattern":
        return f"expected a string matching {error.validator_value}"
    if error.validator == "minLength":
        return "expected a non-empty string"
    if error.validator == "minItems":
        return f"expected a list of at least {error.validator_value} item(s)"
    return error.message


def _inline(found: ValidationError, where: str) -> str:
    """The tools' wording of a violation: ``<where>: <path> <given>: expected ...``, or
    ``<where>: <path> must be <x-expected>, got <given>`` where the schema says in words
    what a key takes (the wording tool errors had before their configs had schemas)."""
    path = _key(found.absolute_path) if found.absolute_path else ""
    at = f"{where}: {path}" if path else where
    if found.validator == "required":
        missing = sorted(k for k in found.validator_value
                         if isinstance(found.instance, Mapping) and k not in found.instance)
        return f"{at}: missing keys {missing}"
    if found.validator == "additionalProperties" and found.validator_value is False:
        known = found.schema.get("properties", {})
        unknown = sorted(k for k in found.instance if k not in known)
        return f"{at}: unknown keys {unknown}; expected some of {sorted(known)}"
    if found.validator == "enum":
        expected = f"one of {list(found.validator_value)}"
    else:
        expected = _expected(found).removeprefix("expected ")
    if "x-expected" in found.schema:
        return f"{at} must be {found.schema['x-expected']}, got {_value(found.instance)}"
    if not path:
        return f"{where}: expected {expected}, got {_value(found.instance)}"
    return f"{at} {_value(found.instance)}: expected {expected}"


def integer_at_least(minimum: int) -> dict[str, Any]:
    """The schema of an integer >= ``minimum`` (counts, sizes, seeds): one fragment for
    every file kind's schema."""
    return {"type": "integer", "minimum": minimum}


def check_document(document: Any, schema: Mapping[str, Any], error: type[Exception],
                   where: str, *, inline: bool = False) -> None:
    """Raise ``error("<where>: key '<path>': expected ..., got ...")`` at the first
    place ``document`` violates ``schema``.

    ``inline`` words it as the tools do (``<where>: weight.bits 3: expected one of
    [4, 8]``), so a tool's messages keep their form when its checks become a schema.
    """
    validator = _validator(json.dumps(schema, sort_keys=True))
    found = best_match(validator.iter_errors(document))
    if found is None:
        return
    if inline:
        raise error(_inline(found, where))
    key = _key(found.absolute_path)
    if found.validator == "required":
        missing = [k for k in found.validator_value
                   if isinstance(found.instance, Mapping) and k not in found.instance]
        name = _key([*found.absolute_path, missing[0]]) if missing else key
        raise error(f"{where}: key {name!r}: required, but missing")
    if found.validator == "additionalProperties" and found.validator_value is False:
        known = found.schema.get("properties", {})
        unknown = sorted(k for k in found.instance if k not in known)
        raise error(f"{where}: key {key!r}: unknown keys {unknown}; expected some of "
                    f"{sorted(known)}")
    if found.validator == "enum":
        raise error(f"{where}: key {key!r}: {_value(found.instance)} is not one of "
                    f"{sorted(found.validator_value, key=str)}")
    if "x-expected" in found.schema and found.validator != "type":
        raise error(f"{where}: key {key!r}: {_value(found.instance)} is not "
                    f"{found.schema['x-expected']}")
    raise error(f"{where}: key {key!r}: {_expected(found)}, got {_short(found.instance)}")
