"""Errors the compiler raises: each names the file, node, op or key at fault."""

from mscgym.errors import MSCError

__all__ = ["GraphError", "GraphFormatError", "MSCError", "UnsupportedOpError"]


class GraphError(MSCError):
    """An MSCGraph is inconsistent (dangling tensor, duplicate name, cycle)."""


class GraphFormatError(MSCError):
    """A graph file is truncated, malformed, tampered with or of another version."""


class UnsupportedOpError(MSCError):
    """An op the compiler cannot translate or generate code for."""

    def __init__(self, op: str, node: str, where: str = "MSCGraph") -> None:
        super().__init__(f"{where} does not support op {op!r} (node {node!r})")
        self.op = op
        self.node = node
