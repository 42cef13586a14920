"""Command-line arguments that bring a user's own model and data: ``--model FILE``,
``--input-shape NAME=1x3x48x192``, ``--data``, ``--eval-data``, ``--labels``.

Shared by ``search``, ``run`` and ``inspect`` so the flags mean the same everywhere:
a model is a zoo name or a file (.onnx, a saved torch.export program .pt2, an exported
MSCGraph .json); data files are .npy arrays loaded without pickle.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.tasks.kinds import MODEL_SUFFIXES

if TYPE_CHECKING:  # mscgym.tasks.sources imports torch and TVM, so the functions import it
    from mscgym.tasks.sources import ModelFile, TaskData

MODEL_HELP = (f"a zoo model name ({', '.join(zoo.list_models())}) or a model file: "
              f"{', '.join(MODEL_SUFFIXES)} (ONNX, saved torch.export program, exported graph)")


def input_shape(text: str) -> tuple[str, tuple[int | str, ...]]:
    """``NAME=1x3x48x192`` -> (name, dims); a non-numeric dim stays a symbolic name."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMxDIMx..., got {text!r}")
    values: list[int | str] = []
    for dim in dims.split("x"):
        if dim.isdigit() and int(dim) > 0:
            values.append(int(dim))
        elif dim.isidentifier():
            values.append(dim)
        else:
            raise argparse.ArgumentTypeError(
                f"dim {dim!r} of {text!r} is neither a positive integer nor a symbolic name")
    return name, tuple(values)


def add_model_arguments(parser: argparse.ArgumentParser, data: bool = True,
                        model_flag: bool = True) -> None:
    """Add ``--input-shape`` (and ``--model``, and the data flags when asked)."""
    if model_flag:
        parser.add_argument("--model", required=True, metavar="NAME_OR_FILE", help=MODEL_HELP)
    parser.add_argument("--input-shape", action="append", type=input_shape, default=[],
                        metavar="NAME=DIMS",
                        help="fix an ONNX input's shape, e.g. input=1x3x48x192 (repeatable)")
    if data:
        parser.add_argument("--data", metavar="INPUTS.npy",
                            help="model inputs (N, ...) for calibration (and evaluation when "
                                 "--eval-data is not given); needed for a model file")
        parser.add_argument("--eval-data", metavar="INPUTS.npy",
                            help="held-out evaluation inputs (default: --data)")
        parser.add_argument("--labels", metavar="LABELS.npy",
                            help="labels of the evaluation inputs (for accuracy)")


def input_shapes(args: argparse.Namespace) -> dict[str, tuple[int | str, ...]]:
    shapes: dict[str, tuple[int | str, ...]] = {}
    for name, dims in getattr(args, "input_shape", None) or []:
        if name in shapes:
            raise MSCError(f"--input-shape gives input {name!r} twice")
        shapes[name] = dims
    return shapes


def model_spec(target: str, args: argparse.Namespace) -> str | ModelFile:
    """A zoo name as is, a file as a :class:`ModelFile` (with its input shapes)."""
    from mscgym.tasks.sources import ModelFile, unknown_model_message

    shapes = input_shapes(args)
    if os.path.isfile(target):
        return ModelFile(target, shapes or None)
    if target in zoo.list_models():
        if shapes:
            raise MSCError("--input-shape applies only to a model file, not a zoo model")
        return target
    raise MSCError(unknown_model_message(target))


def task_data(args: argparse.Namespace, model: str | ModelFile) -> TaskData | None:
    """The data the flags name (None: a zoo model's own data)."""
    from mscgym.tasks.sources import ModelFile, data_from_files

    if getattr(args, "data", None) is None:
        if getattr(args, "eval_data", None) or getattr(args, "labels", None):
            raise MSCError("--eval-data and --labels need --data (the calibration inputs)")
        if isinstance(model, ModelFile):
            raise MSCError(f"model file {model.path!r} needs data: pass --data INPUTS.npy "
                           "(and optionally --eval-data, --labels)")
        return None
    return data_from_files(args.data, args.eval_data, args.labels)


def task_model_and_data(args: argparse.Namespace) -> dict[str, Any]:
    """``{"model": ..., "data": ...}`` for ``Task(**...)`` from ``--model`` and the data flags."""
    model = model_spec(args.model, args)
    return {"model": model, "data": task_data(args, model)}
