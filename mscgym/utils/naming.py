"""Unique names: the first use of a base name keeps it, later ones get ``_1``, ``_2``..."""

from __future__ import annotations


class NameSet:
    """Hands out names that are unique within one scope (a graph, an ONNX model)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def reserve(self, name: str) -> None:
        """Mark ``name`` as taken (names fixed by the outside, e.g. graph inputs)."""
        self.names.add(name)

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.names:
            name, index = f"{base}_{index}", index + 1
        self.names.add(name)
        return name
