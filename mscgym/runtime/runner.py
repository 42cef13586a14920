"""The runner interface: build a graph (with a quant plan) for one framework, run it.

Each runner turns (graph, params, quant plan) into something executable through its
own codegen and framework; the runtime manager adds tools, caching and profiling on
top, so a runner stays a thin adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan


class RunnerUnavailableError(MSCError, RuntimeError):
    """The runner's framework or device is missing here; the message says what."""


class BaseRunner(ABC):
    """Builds and runs one graph on one framework and device."""

    name: ClassVar[str]

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        self.device = device
        self.options = dict(options or {})

    @classmethod  # noqa: B027 - optional hook
    def check_available(cls, device: str) -> None:
        """Raise :class:`RunnerUnavailableError` when this runner cannot work on ``device``."""

    @abstractmethod
    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        """Make the graph executable; later ``run`` calls use it."""

    @abstractmethod
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the built graph on host arrays; returns the graph outputs as host arrays."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait for queued device work (a no-op on the CPU)."""

    def export(self, path: str) -> str:
        """Write the built artifact (a library, an ONNX file, a module) to ``path``."""
        raise NotImplementedError(f"runner {self.name!r} cannot export its artifact")

    @property
    def target(self) -> str:
        """What the artifact is built for, e.g. ``llvm`` or ``CPUExecutionProvider``."""
        return self.device
