"""Tasks: model + data + tool + search space + scorer, and ``evaluate(plan) -> Metrics``.

``Task`` takes a zoo name, a model file (``ModelFile`` or a path: .onnx, a saved
``torch.export`` program .pt2, an exported MSCGraph .json), a torch module or a
(graph, params) pair; data of a non-zoo model comes as ``TaskData``, e.g. from .npy
files with ``data_from_files``.
"""

from mscgym.utils.lazy import lazy_exports

# Loaded on first use, so the light kinds, metrics and scorers import without torch.
__all__ = lazy_exports(__name__, {
    "mscgym.tasks.metrics": ("Metrics",),
    "mscgym.tasks.sources": ("ModelFile", "TaskData", "data_from_files"),
    "mscgym.tasks.task": ("Task",),
})
