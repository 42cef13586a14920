"""Errors the compiler raises: each names the file, node, op or key at fault."""

from __future__ import annotations

from mscgym.errors import MSCError

__all__ = ["GraphError", "GraphFormatError", "MSCError", "UnsupportedOpError"]


class GraphError(MSCError):
    """An MSCGraph is inconsistent (dangling tensor, duplicate name, cycle)."""


class GraphFormatError(MSCError):
    """A graph file is truncated, malformed, tampered with or of another version."""


class UnsupportedOpError(MSCError):
    """An op the compiler cannot translate or generate code for."""

    def __init__(self, op: str, node: str, where: str = "MSCGraph",
                 unsupported: list[tuple[str, str]] | None = None) -> None:
        self.unsupported = list(unsupported or [(op, node)])
        if len(self.unsupported) == 1:
            message = f"{where} does not support op {op!r} (node {node!r})"
        else:
            message = (f"{where} does not support {len(self.unsupported)} ops: "
                       + "; ".join(f"op {o!r} (node {n!r})" for o, n in self.unsupported))
        super().__init__(message)
        self.op = op
        self.node = node

    @classmethod
    def of(cls, unsupported: list[tuple[str, str]], where: str = "MSCGraph"
           ) -> UnsupportedOpError:
        """One error naming every (op, node) pair, so a user sees all of them at once."""
        op, node = unsupported[0]
        return cls(op, node, where, unsupported)
