"""The task kinds a :class:`~mscgym.tasks.task.Task` searches, importable without torch
(the command line offers them as choices before any model is loaded)."""

from __future__ import annotations

TOOLS: tuple[str, ...] = ("quantize", "prune", "distill", "compress")
"""One tool's per-layer choices each, and ``compress``: prune, quantize and distill."""
MODEL_SUFFIXES: tuple[str, ...] = (".onnx", ".pt2", ".json")
"""Model files a task takes: ONNX, a saved ``torch.export`` program, an exported MSCGraph."""
