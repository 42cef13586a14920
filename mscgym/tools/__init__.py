"""Compression tools: quantizer, pruner, distiller and collector, with JSON strategies.

Each tool is declared once in :mod:`mscgym.tools.registry`; the classes are imported on
first use."""

from __future__ import annotations

from typing import Any

from mscgym.compiler.graph import MSCGraph
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError
from mscgym.tools.registry import tool_spec


def tool_class(kind: MSC_TOOL | str) -> type[BaseTool]:
    """The class implementing ``kind`` (imported on first use)."""
    return tool_spec(kind).cls()


def create_tool(
    kind: MSC_TOOL | str, graph: MSCGraph, params: Params, config: dict[str, Any] | None = None
) -> BaseTool:
    """Create the tool of ``kind`` for ``graph``; its config is validated up front."""
    return tool_class(kind)(graph, params, config)


__all__ = ["MSC_TOOL", "BaseTool", "ToolConfigError", "create_tool", "tool_class"]
