"""What a task is of: the model (its source), the data and the distillation student,
with the hashes that identify them computed once.

A task's model, data and student do not change after it is made, and hashing them
(resnet18: 45 MB of weights, 150 MB of calibration and evaluation data) on every plan
key was most of an uncached evaluation's overhead; every cache key of the task reads
them from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from mscgym.compiler.graph import MSCGraph
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.measure import Compressed
from mscgym.tasks.sources import ModelSource, Params, TaskData, params_hash

Student = Mapping[str, Any] | Compressed
"""Where a distill task's student starts: a recipe ({"prune": density, "quantize":
choice}) applied to the float model, or a compressed model given as it is."""


class TaskIdentity:
    """The model source, its data and the student, and their identity hashes."""

    def __init__(self, source: ModelSource, student: Student | None = None) -> None:
        self.source = source
        self.student: Student = (
            student if isinstance(student, Compressed) else dict(student or {"prune": 0.5}))

    @property
    def graph(self) -> MSCGraph:
        return self.source.graph

    @property
    def params(self) -> Params:
        return self.source.params

    @property
    def data(self) -> TaskData:
        return self.source.data

    @cached_property
    def weight_hash(self) -> str:
        return self.source.weight_hash

    @cached_property
    def data_hash(self) -> str:
        return self.data.data_hash

    @cached_property
    def _student_json(self) -> dict[str, Any]:
        if isinstance(self.student, Compressed):
            return {"graph": self.student.graph.name,
                    "weight_hash": params_hash(self.student.params),
                    "quantized": sorted(self.student.quant)}
        return dict(self.student)

    def student_json(self) -> dict[str, Any]:
        """The student as a description names it (a copy: the caller may edit it)."""
        return copy.deepcopy(self._student_json)

    @cached_property
    def _graph_identity(self) -> str:
        return fingerprint({"graph": self.graph.to_json(), "params": self.weight_hash})

    def graph_key(self, graph: MSCGraph, params: Params) -> str:
        """Fingerprint of a (graph, weights) pair; the task's own is computed once."""
        if graph is self.graph and params is self.params:
            return self._graph_identity
        return fingerprint({"graph": graph.to_json(), "params": params_hash(params)})

    def describe(self) -> dict[str, Any]:
        """The model and data part of a task's description (see ``Task.describe``)."""
        file = {"model_file": self.source.file} if self.source.file is not None else {}
        return {"model": self.source.model_id, **file, "weight_hash": self.weight_hash,
                "data": self.data.data_id, "data_hash": self.data_hash}
