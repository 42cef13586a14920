"""Where a task's model and data come from: a zoo name, a torch module, an ONNX file or an
exported MSCGraph, each with an identity (id + content hash) that records can check."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_onnx, from_torch
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.serialize import load_graph
from mscgym.utils.hashing import arrays_hash

Params = dict[str, np.ndarray]


def params_hash(params: Params) -> str:
    """The content hash of a model's weights (see :func:`mscgym.utils.hashing.arrays_hash`)."""
    return arrays_hash(params)


@dataclass
class TaskData:
    """Inputs a task needs: calibration batches, held-out evaluation inputs (and labels),
    and training data for distillation (digits only)."""

    data_id: str
    calibration: list[np.ndarray]
    eval_inputs: np.ndarray
    eval_labels: np.ndarray | None = None
    train_inputs: np.ndarray | None = None
    train_labels: np.ndarray | None = None

    @property
    def data_hash(self) -> str:
        arrays = {f"calibration.{i}": batch for i, batch in enumerate(self.calibration)}
        return arrays_hash({**arrays, "eval_inputs": self.eval_inputs,
                            "eval_labels": self.eval_labels, "train_inputs": self.train_inputs,
                            "train_labels": self.train_labels})


@dataclass
class ModelSource:
    """The float model as a graph, with the id and hash that identify it."""

    model_id: str
    graph: MSCGraph
    params: Params
    data: TaskData

    @property
    def weight_hash(self) -> str:
        return params_hash(self.params)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def zoo_data(entry: zoo.ZooModel, n_calibration: int = 8, batch_size: int = 32) -> TaskData:
    """The zoo model's data: calibration from the train split, evaluation held out."""
    test = entry.test_data
    train = getattr(entry, "train_data", None)
    return TaskData(
        data_id=f"zoo:{entry.name}",
        calibration=[_numpy(b) for b in entry.calibration_batches(n_calibration, batch_size)],
        eval_inputs=_numpy(test[0] if test is not None else entry.eval_inputs),
        eval_labels=_numpy(test[1]) if test is not None else None,
        train_inputs=_numpy(train[0]) if train is not None else None,
        train_labels=_numpy(train[1]) if train is not None else None,
    )


def zoo_data_for(model_id: str, data_id: str) -> TaskData | None:
    """Rebuild data from its id: None when it is the model's own zoo data (the task loads
    it), a zoo data set by name, else an MSCError (other data cannot be rebuilt by id)."""
    if data_id == f"zoo:{model_id}":
        return None
    name = data_id.removeprefix("zoo:")
    if data_id.startswith("zoo:") and name in zoo.list_models():
        return zoo_data(zoo.load(name, rebuild_corrupt=True))
    raise MSCError(f"data {data_id!r} is not a zoo data set, so it cannot be rebuilt from "
                   "its id; pass the task data it was made with (data=TaskData(...))")


def unknown_model_message(name: str) -> str:
    """What to say about a model argument that is neither a zoo name nor a file."""
    return (f"unknown model {name!r}: not a zoo name ({', '.join(zoo.list_models())}) "
            "and not a file")


def resolve_model(
    model: str | os.PathLike[str] | torch.nn.Module | tuple[MSCGraph, Params],
    data: TaskData | None = None,
    example_inputs: Sequence[torch.Tensor] | None = None,
) -> ModelSource:
    """Turn a zoo name, a path (.onnx or an exported graph .json), a torch module or a
    (graph, params) pair into a ModelSource; non-zoo models need ``data``."""
    if isinstance(model, str) and model in zoo.list_models():
        entry = zoo.load(model, rebuild_corrupt=True)
        graph, params = from_torch(entry.model, entry.example_inputs, graph_name=model)
        return ModelSource(model, graph, params, data or zoo_data(entry))
    if isinstance(model, str | os.PathLike) and not os.path.exists(os.fspath(model)):
        raise MSCError(unknown_model_message(os.fspath(model)))
    if data is None:
        raise MSCError("a model that is not from the zoo needs task data (calibration and "
                       "evaluation inputs); pass data=TaskData(...)")
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            example_inputs = (torch.as_tensor(data.eval_inputs[:1]),)
        graph, params = from_torch(model, example_inputs)
        return ModelSource(f"torch:{type(model).__name__}", graph, params, data)
    if isinstance(model, tuple):
        graph, params = model
        return ModelSource(f"graph:{graph.name}", graph, dict(params), data)
    path = os.fspath(model)
    if path.endswith(".onnx"):
        graph, params = from_onnx(path)
    else:
        graph, params = load_graph(path)
    return ModelSource(os.path.abspath(path), graph, params, data)
