"""Where a task's model and data come from: a zoo name, a torch module, an ONNX file or an
exported MSCGraph, each with an identity (id + content hash) that records can check."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_onnx, from_torch
from mscgym.compiler.frontend.torch_frontend import from_exported
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.serialize import load_graph
from mscgym.tasks.data_check import check_task_data
from mscgym.tasks.kinds import MODEL_SUFFIXES
from mscgym.utils.hashing import arrays_hash, file_sha256

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
    file: dict[str, Any] | None = None
    """For a model file: its absolute path, content sha256 and the input shapes it was
    loaded with, which a record needs to rebuild it (and to refuse a changed file)."""

    def __post_init__(self) -> None:
        check_task_data(self.graph, self.data)  # data that cannot fit fails here, not later

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
    it), a zoo data set by name, .npy files named by a ``files:`` id, else an MSCError
    (other data cannot be rebuilt by id)."""
    if data_id == f"zoo:{model_id}":
        return None
    from_files = files_data_for(data_id)
    if from_files is not None:
        return from_files
    name = data_id.removeprefix("zoo:")
    if data_id.startswith("zoo:") and name in zoo.list_models():
        return zoo_data(zoo.load(name, rebuild_corrupt=True))
    raise MSCError(f"data {data_id!r} is not a zoo data set, so it cannot be rebuilt from "
                   "its id; pass the task data it was made with (data=TaskData(...))")


def unknown_model_message(name: str) -> str:
    """What to say about a model argument that is neither a zoo name nor a file."""
    return (f"unknown model {name!r}: not a zoo name ({', '.join(zoo.list_models())}) "
            "and not a file")


CALIBRATION_BATCH = 32
"""Calibration batch of a model with a dynamic batch dim."""
FILES_DATA = "files:"


@dataclass(frozen=True)
class ModelFile:
    """A model file and the input shapes to load it with (``{"input": (1, 3, 48, 192)}``;
    ONNX only: dims fixed where the user says so)."""

    path: str
    input_shapes: Mapping[str, Sequence[int | str]] | None = field(default=None)


def shapes_json(input_shapes: Mapping[str, Sequence[int | str]] | None
                ) -> dict[str, list[int | str]]:
    """Input shapes as a record keeps them (sorted names, lists of ints or names)."""
    return {str(k): [d if isinstance(d, str) else int(d) for d in v]
            for k, v in sorted((input_shapes or {}).items())}


def load_model_file(path: str | os.PathLike[str],
                    input_shapes: Mapping[str, Sequence[int | str]] | None = None
                    ) -> tuple[MSCGraph, Params]:
    """(graph, params) of an .onnx file, a saved torch.export program (.pt2) or an
    exported MSCGraph (.json); anything else is an MSCError naming the file."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        raise MSCError(f"model file {path!r}: unknown kind {suffix or '(no suffix)'!r}; "
                       f"expected one of {', '.join(MODEL_SUFFIXES)}")
    if not os.path.isfile(path):
        raise MSCError(f"model file {path!r} does not exist")
    if input_shapes and suffix != ".onnx":
        raise MSCError(f"model file {path!r}: input shapes apply only to .onnx files")
    name = os.path.splitext(os.path.basename(path))[0]
    if suffix == ".onnx":
        return from_onnx(path, input_shapes=input_shapes, graph_name=name)
    if suffix == ".pt2":
        try:
            exported = torch.export.load(path)
        except Exception as err:  # torch raises many kinds for a bad archive
            raise MSCError(f"model file {path!r}: not a saved torch.export program "
                           f"({type(err).__name__}: {err})") from None
        return from_exported(exported, name)
    return load_graph(path)


def _load_array(path: str, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise MSCError(f"{what} file {path!r}: cannot load it as a .npy array "
                       f"(pickled arrays are refused): {err}") from None
    if not isinstance(array, np.ndarray):
        raise MSCError(f"{what} file {path!r}: expected one .npy array, got an .npz archive")
    return array


def _float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float64 else array


def data_from_files(data: str | os.PathLike[str],
                    eval_data: str | os.PathLike[str] | None = None,
                    labels: str | os.PathLike[str] | None = None,
                    batch: int = CALIBRATION_BATCH) -> TaskData:
    """Task data from .npy files: ``data`` (model inputs, calibration), ``eval_data``
    (held-out inputs; ``data`` when not given) and ``labels`` (of the evaluation inputs).

    The data id names the files, so a record can load them again; the data hash checks
    that they did not change."""
    paths = {"data": os.path.abspath(os.fspath(data)),
             "eval_data": os.path.abspath(os.fspath(eval_data)) if eval_data else None,
             "labels": os.path.abspath(os.fspath(labels)) if labels else None,
             "batch": int(batch)}
    calibration = _float32(_load_array(paths["data"], "data"))
    if calibration.ndim == 0 or len(calibration) == 0:
        raise MSCError(f"data file {paths['data']!r}: expected a batch of inputs (N, ...), "
                       f"got shape {calibration.shape}")
    eval_inputs = (_float32(_load_array(paths["eval_data"], "eval data"))
                   if paths["eval_data"] else calibration)
    if eval_inputs.shape[1:] != calibration.shape[1:]:
        raise MSCError(f"eval data file {paths['eval_data']!r}: samples of shape "
                       f"{eval_inputs.shape[1:]} differ from the data's {calibration.shape[1:]}")
    eval_labels = _load_array(paths["labels"], "labels") if paths["labels"] else None
    if eval_labels is not None and len(eval_labels) != len(eval_inputs):
        raise MSCError(f"labels file {paths['labels']!r}: {len(eval_labels)} labels for "
                       f"{len(eval_inputs)} evaluation inputs")
    return TaskData(data_id=FILES_DATA + json.dumps(paths, sort_keys=True),
                    calibration=_chunks(calibration, int(batch)), eval_inputs=eval_inputs,
                    eval_labels=eval_labels)


def _chunks(array: np.ndarray, batch: int) -> list[np.ndarray]:
    """Full batches of ``batch`` rows (a too-short array is padded by repeating rows)."""
    if len(array) < batch:
        array = np.concatenate([array, np.resize(array, (batch - len(array), *array.shape[1:]))])
    full = len(array) // batch * batch
    return [array[i:i + batch] for i in range(0, full, batch)]


def files_data_for(data_id: str) -> TaskData | None:
    """Rebuild the data :func:`data_from_files` made from its id (None if not such an id)."""
    if not data_id.startswith(FILES_DATA):
        return None
    try:
        spec = json.loads(data_id[len(FILES_DATA):])
    except json.JSONDecodeError:
        return None
    if not isinstance(spec, dict) or "data" not in spec:
        return None
    for key in ("data", "eval_data", "labels"):
        if spec.get(key) and not os.path.isfile(spec[key]):
            raise MSCError(f"{key} file {spec[key]!r} named by data id does not exist")
    return data_from_files(spec["data"], spec.get("eval_data"), spec.get("labels"),
                           int(spec.get("batch", CALIBRATION_BATCH)))


def _fit_batch(data: TaskData, graph: MSCGraph) -> TaskData:
    """Calibration batches of exactly the model's static batch, if it has one."""
    inputs = graph.get_inputs()
    fixed = inputs[0].shape[0] if inputs and inputs[0].shape else None
    if not isinstance(fixed, int) or all(len(b) == fixed for b in data.calibration):
        return data
    rows = np.concatenate(data.calibration)
    return TaskData(data.data_id, _chunks(rows, fixed), data.eval_inputs, data.eval_labels,
                    data.train_inputs, data.train_labels)


def resolve_model(
    model: str | os.PathLike[str] | ModelFile | torch.nn.Module | tuple[MSCGraph, Params],
    data: TaskData | None = None,
    example_inputs: Sequence[torch.Tensor] | None = None,
) -> ModelSource:
    """Turn a zoo name, a model file (path or :class:`ModelFile`: .onnx, .pt2, exported
    graph .json), a torch module or a (graph, params) pair into a ModelSource; non-zoo
    models need ``data``."""
    if isinstance(model, str) and model in zoo.list_models():
        entry = zoo.load(model, rebuild_corrupt=True)
        graph, params = from_torch(entry.model, entry.example_inputs, graph_name=model)
        return ModelSource(model, graph, params, data or zoo_data(entry))
    if isinstance(model, str | os.PathLike) and not os.path.exists(os.fspath(model)):
        raise MSCError(unknown_model_message(os.fspath(model)))
    if isinstance(model, ModelFile) and not os.path.isfile(model.path):
        raise MSCError(f"model file {model.path!r} does not exist")
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
    spec = model if isinstance(model, ModelFile) else ModelFile(os.fspath(model))
    sha256 = file_sha256(spec.path)
    graph, params = load_model_file(spec.path, spec.input_shapes)
    file = {"path": os.path.abspath(spec.path), "sha256": sha256,
            "input_shapes": shapes_json(spec.input_shapes)}
    return ModelSource(os.path.abspath(spec.path), graph, params, _fit_batch(data, graph), file)
