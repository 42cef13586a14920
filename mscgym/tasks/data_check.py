"""Task data checked against the model before any work: shapes, dtypes, label counts.

Data that does not fit the model otherwise fails late and far from its cause (a torch
``RuntimeError`` ten seconds into calibration, a numpy broadcast error in the accuracy).
:func:`check_task_data` compares every array of a :class:`TaskData` with the graph's
(first) input and its output, and raises an MSCError naming the array, what it is and
what the model expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph

if TYPE_CHECKING:
    from mscgym.tasks.sources import TaskData


class DataMismatchError(MSCError, ValueError):
    """Task data does not fit the model's inputs or outputs."""


def _arrays(data: TaskData) -> Iterator[tuple[str, np.ndarray]]:
    for index, batch in enumerate(data.calibration):
        yield f"calibration batch {index}", batch
    yield "evaluation inputs", data.eval_inputs
    if data.train_inputs is not None:
        yield "training inputs", data.train_inputs


def _labels(name: str, labels: np.ndarray | None, inputs: np.ndarray | None,
            classes: int | None, data_id: str) -> None:
    if labels is None:
        return
    labels = np.asarray(labels)
    if inputs is not None and len(labels) != len(inputs):
        raise DataMismatchError(f"data {data_id!r}: {len(labels)} {name} for {len(inputs)} "
                                "inputs; expected one label per input")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataMismatchError(f"data {data_id!r}: {name} are {labels.dtype}{list(labels.shape)}"
                                "; expected a 1-D array of integer class indices")
    if classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataMismatchError(f"data {data_id!r}: {name} range over [{labels.min()}, "
                                f"{labels.max()}], but the model has {classes} output classes")


def check_task_data(graph: MSCGraph, data: TaskData) -> None:
    """Raise DataMismatchError when ``data`` cannot be fed to ``graph`` (single-input
    models; the batch dim is free unless the model fixes it)."""
    inputs = graph.get_inputs()
    if len(inputs) != 1:
        return
    expected = inputs[0]
    shown = f"{expected.dtype}{list(expected.shape)}"
    for name, array in _arrays(data):
        array = np.asarray(array)
        if str(array.dtype) != expected.dtype:
            raise DataMismatchError(f"data {data.data_id!r}: {name} are {array.dtype}"
                                    f"{list(array.shape)}; the model input {expected.name!r} "
                                    f"takes {shown}")
        if array.ndim != len(expected.shape) or any(
                type(dim) is int and size != dim and axis > 0
                for axis, (size, dim) in enumerate(zip(array.shape, expected.shape, strict=True))):
            raise DataMismatchError(f"data {data.data_id!r}: {name} are {array.dtype}"
                                    f"{list(array.shape)}; the model input {expected.name!r} "
                                    f"takes {shown}")
    outputs = graph.get_outputs()
    last = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    classes = last if type(last) is int else None
    _labels("evaluation labels", data.eval_labels, data.eval_inputs, classes, data.data_id)
    _labels("training labels", data.train_labels, data.train_inputs, classes, data.data_id)
