"""What every compression tool shares: its kind, its config, its JSON strategy.

A tool sees the graph it compresses and the weights; the runtime manager runs the
model and shows the tool the tensors it asked to watch (``watched_tensors``), so the
same tool works on every runner. A tool changes the model in one of two ways:
``transform`` returns a new graph and weights (the pruner makes a smaller graph), and
``quant_plan`` tells the codegens which layers to quantize and how.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.utils.files import atomic_write_text, read_json
from mscgym.utils.schema import check_document

Params = dict[str, np.ndarray]


class MSC_TOOL(str, Enum):  # noqa: N801 - the name MSC's users know
    """The kinds of tools, as MSC named them."""

    PRUNE = "prune"
    QUANTIZE = "quantize"
    DISTILL = "distill"
    COLLECT = "collect"


class ToolConfigError(MSCError):
    """A tool config or strategy names an unknown key or layer, or a bad value."""


def tool_name(kind: MSC_TOOL | str) -> str:
    """The name of a tool kind: an ``MSC_TOOL`` member's value, or a registered tool's
    own name (a tool added through :mod:`mscgym.tools.registry` has no enum member)."""
    return kind.value if isinstance(kind, Enum) else str(kind)


def strategy_file_schema(kind: MSC_TOOL | str, version: int) -> dict[str, Any]:
    """The JSON Schema of a strategy file of tool ``kind`` at ``version`` (the envelope
    :func:`save_strategy_file` writes; the tool's ``set_strategy`` checks the inside)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "strategy file", "type": "object",
            "required": ["tool", "version", "strategy"],
            "properties": {"tool": {"const": tool_name(kind)}, "version": {"const": version},
                           "graph": {"type": "string"}, "strategy": {"type": "object"}}}


def save_strategy_file(path: str | os.PathLike[str], kind: MSC_TOOL | str, version: int,
                       graph: str, strategy: dict[str, Any]) -> str:
    """Write a strategy document (what :meth:`BaseTool.load_strategy` reads) atomically."""
    document = {"tool": tool_name(kind), "version": version, "graph": graph,
                "strategy": strategy}
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True))
    return os.fspath(path)


def check_shape(document: Any, schema: dict[str, Any], where: str) -> None:
    """Check a tool's config or strategy document against its declared JSON Schema,
    worded as tool errors are (see :func:`mscgym.utils.schema.check_document`)."""
    check_document(document, schema, ToolConfigError, where, inline=True)


class BaseTool:
    """Base class of the quantizer, pruner, distiller and collector."""

    kind: ClassVar[MSC_TOOL | str]
    strategy_version: ClassVar[int] = 1
    config_schema: ClassVar[dict[str, Any] | None] = None
    """The JSON Schema of the tool's config (its module's ``CONFIG_SCHEMA``): every key,
    type, range and choice, declared instead of checked by hand. What a schema cannot
    say (layer names that must be nodes of the graph, rules across keys) stays in code."""

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        self.graph = graph
        self.params = params
        self.config = dict(config or {})

    # -- run-time observation ---------------------------------------------------------
    def watched_tensors(self) -> list[str]:
        """Tensors the tool needs to see on the next runs (empty when it needs none)."""
        return []

    def observe(self, tensors: dict[str, np.ndarray]) -> None:
        """Receive the watched tensors of one run."""

    # -- effect on the model ----------------------------------------------------------
    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        """The graph and weights after this tool (unchanged by default)."""
        return graph, params

    def quant_plan(self) -> QuantPlan:
        """Layers to quantize (none by default)."""
        return {}

    # -- strategy ---------------------------------------------------------------------
    def strategy(self) -> dict[str, Any]:
        """The tool's decisions as JSON-able data."""
        raise NotImplementedError

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        """Adopt decisions previously returned by :meth:`strategy` (validated)."""
        raise NotImplementedError

    def save_strategy(self, path: str | os.PathLike[str]) -> str:
        return save_strategy_file(path, self.kind, self.strategy_version, self.graph.name,
                                  self.strategy())

    def load_strategy(self, path: str | os.PathLike[str]) -> None:
        where = os.fspath(path)
        document = read_json(where, ToolConfigError, "strategy file")
        check_shape(document, strategy_file_schema(self.kind, self.strategy_version),
                    f"strategy file {where}")
        try:
            self.set_strategy(document["strategy"])
        except ToolConfigError as err:
            raise ToolConfigError(f"strategy file {where}: {err}") from None

    # -- helpers for subclasses ---------------------------------------------------------
    def check_config(self, config: Any, where: str) -> None:
        """Check ``config`` against :attr:`config_schema`; the error names the key, what
        it takes and what was given (``<where>: weight.bits 3: expected one of [4, 8]``)."""
        if self.config_schema is not None:
            check_shape(config, self.config_schema, where)

    def check_keys(self, config: dict[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ToolConfigError(f"{where}: unknown keys {unknown}; expected some of "
                                  f"{sorted(allowed)}")

    def check_layer(self, name: str, where: str) -> None:
        if name not in self.graph:
            raise ToolConfigError(f"{where}: unknown layer {name!r} (not a node of graph "
                                  f"{self.graph.name!r})")
