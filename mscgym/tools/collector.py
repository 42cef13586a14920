"""The collector: records the outputs of chosen nodes, whole or as running statistics.

Config (validated up front)::

    {"nodes": ["conv1", "layer1.0.relu"] | "all",   # default "all" (every non-input node)
     "mode": "tensor" | "stats",                     # default "stats"
     "max_batches": 8}                               # default: no limit

``tensor`` keeps every batch of each node's output (concatenated on the batch axis);
``stats`` keeps, per node, min, max, mean, std (population), abs-max and the element
count, merged batch by batch (Chan et al.) so memory stays constant. It is the
debugging and sensitivity companion of the other tools: it watches tensors through
the runtime manager like the quantizer does, so it works on every runner.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from safetensors.numpy import save_file

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.tools.base import MSC_TOOL, BaseTool, Params
from mscgym.utils.files import atomic_write, atomic_write_text

MODES = ("tensor", "stats")
_NODES = "'all' or a list of node names"
CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "collector config",
    "type": "object",
    "properties": {
        "nodes": {"anyOf": [{"const": "all", "x-expected": _NODES},
                            {"type": "array", "items": {"type": "string"}, "x-expected": _NODES}],
                  "x-expected": _NODES},
        "mode": {"enum": list(MODES)},
        "max_batches": {"type": ["integer", "null"], "minimum": 1},
    },
    "additionalProperties": False,
}
"""Every key of a collector config (and strategy, which is its config); that the nodes
are nodes of the graph stays in code."""


@dataclass
class RunningStats:
    """Min, max, mean, variance and abs-max of every value seen so far (float64)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf

    def update(self, values: np.ndarray) -> None:
        data = np.asarray(values, dtype=np.float64).reshape(-1)
        if data.size == 0:
            return
        n, mean = data.size, float(data.mean())
        m2 = float(((data - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.minimum = min(self.minimum, float(data.min()))
        self.maximum = max(self.maximum, float(data.max()))

    def to_json(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"count": 0, "min": None, "max": None, "mean": None, "std": None,
                    "absmax": None}
        return {"count": self.count, "min": self.minimum, "max": self.maximum,
                "mean": self.mean, "std": float(np.sqrt(self.m2 / self.count)),
                "absmax": max(abs(self.minimum), abs(self.maximum))}


class Collector(BaseTool):
    """Watches node outputs and keeps them (``tensor``) or their statistics (``stats``)."""

    kind: ClassVar[MSC_TOOL] = MSC_TOOL.COLLECT
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self._reset(*self._parse(self.config, "collector config"))

    def _reset(self, nodes: list[str], mode: str, max_batches: int | None) -> None:
        self.nodes, self.mode, self.max_batches = nodes, mode, max_batches
        self._tensors = {name: self.graph.find_node(name).output.name for name in nodes}
        self.batches = 0
        self._arrays: dict[str, list[np.ndarray]] = {name: [] for name in nodes}
        self._stats: dict[str, RunningStats] = {name: RunningStats() for name in nodes}

    def _parse(self, config: Any, where: str) -> tuple[list[str], str, int | None]:
        """A config or strategy (checked by :data:`CONFIG_SCHEMA`; the node names must be
        nodes of the graph) -> nodes, mode and batch limit."""
        self.check_config(config, where)
        nodes = config.get("nodes", "all")
        if nodes == "all":
            names = [n.name for n in self.graph.nodes if n.optype != "input"]
        else:
            for name in nodes:
                self.check_layer(name, f"{where}: nodes")
            names = list(dict.fromkeys(nodes))
        limit = config.get("max_batches")
        return names, config.get("mode", "stats"), None if limit is None else int(limit)

    @property
    def done(self) -> bool:
        return self.max_batches is not None and self.batches >= self.max_batches

    def watched_tensors(self) -> list[str]:
        return [] if self.done else sorted(set(self._tensors.values()))

    def observe(self, tensors: dict[str, np.ndarray]) -> None:
        if self.done:
            return
        seen = False
        for node, tensor in self._tensors.items():
            if tensor not in tensors:
                continue
            seen = True
            value = np.asarray(tensors[tensor])
            if self.mode == "tensor":
                self._arrays[node].append(value.copy())
            else:
                self._stats[node].update(value)
        self.batches += int(seen)

    def collected(self) -> dict[str, Any]:
        """Node name -> its outputs concatenated over batches (``tensor``) or its
        statistics (``stats``); nodes not seen yet are left out in ``tensor`` mode."""
        if self.mode == "stats":
            return {node: stats.to_json() for node, stats in self._stats.items()}
        out: dict[str, np.ndarray] = {}
        for node, arrays in self._arrays.items():
            if not arrays:
                continue
            out[node] = np.concatenate(arrays) if arrays[0].ndim else np.stack(arrays)
        return out

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write what was collected: safetensors (``tensor``) or JSON (``stats``), atomically."""
        collected = self.collected()
        if self.mode == "stats":
            atomic_write_text(path, json.dumps(collected, indent=2, sort_keys=True))
        else:
            if not collected:
                raise MSCError("collector: nothing collected yet; run the model through the "
                               "runtime manager first")
            arrays = {k: np.ascontiguousarray(v) for k, v in collected.items()}
            atomic_write(path, lambda tmp: save_file(arrays, tmp,
                                                     metadata={"graph": self.graph.name}))
        return os.fspath(path)

    def strategy(self) -> dict[str, Any]:
        """The collector decides nothing; its strategy is what it watches."""
        return {"nodes": list(self.nodes), "mode": self.mode, "max_batches": self.max_batches}

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        self._reset(*self._parse(strategy, "collector strategy"))
