"""Tasks: model + data + tool + search space + scorer, and ``evaluate(plan) -> Metrics``.

``Task`` takes a zoo name, a model file (``ModelFile`` or a path: .onnx, a saved
``torch.export`` program .pt2, an exported MSCGraph .json), a torch module or a
(graph, params) pair; data of a non-zoo model comes as ``TaskData``, e.g. from .npy
files with ``data_from_files``.
"""

from mscgym.tasks.metrics import Metrics
from mscgym.tasks.sources import ModelFile, TaskData, data_from_files
from mscgym.tasks.task import Task

__all__ = ["Metrics", "ModelFile", "Task", "TaskData", "data_from_files"]
