"""Compression tools: quantizer, pruner, distiller and collector, with JSON strategies."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mscgym.compiler.graph import MSCGraph
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError

_TOOL_CLASSES = {
    MSC_TOOL.QUANTIZE: ("mscgym.tools.quantizer", "Quantizer"),
    MSC_TOOL.PRUNE: ("mscgym.tools.pruner", "Pruner"),
    MSC_TOOL.DISTILL: ("mscgym.tools.distiller", "Distiller"),
    MSC_TOOL.COLLECT: ("mscgym.tools.collector", "Collector"),
}


def tool_class(kind: MSC_TOOL | str) -> type[BaseTool]:
    """The class implementing ``kind`` (imported on first use)."""
    try:
        module, name = _TOOL_CLASSES[MSC_TOOL(kind)]
    except ValueError:
        known = [k.value for k in MSC_TOOL]
        raise ToolConfigError(f"unknown tool kind {kind!r}; expected one of {known}") from None
    return getattr(import_module(module), name)


def create_tool(
    kind: MSC_TOOL | str, graph: MSCGraph, params: Params, config: dict[str, Any] | None = None
) -> BaseTool:
    """Create the tool of ``kind`` for ``graph``; its config is validated up front."""
    return tool_class(kind)(graph, params, config)


__all__ = ["MSC_TOOL", "BaseTool", "ToolConfigError", "create_tool", "tool_class"]
