"""A task's description (:meth:`Task.describe`) read back: what
:meth:`Task.from_description` rebuilds a task from and checks it against.

Records (``mscgym replay``/``validate``) and Ray workers (``tune/spec.py``) both get a
task as its description and must rebuild exactly that task, or refuse: a model named by
a zoo id or a file (whose content must still hash as recorded), the data, the search
space's tool options, and then the rebuilt task's weights, data and space compared with
the described ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.tasks.sources import ModelFile, TaskData, zoo_data_for
from mscgym.tools.registry import tool_specs
from mscgym.utils.hashing import file_sha256

if TYPE_CHECKING:
    from mscgym.tasks.task import Task


class DescriptionError(MSCError):
    """A task description names what cannot be rebuilt here, or the task rebuilt from it
    is not the described one (weights, data, space)."""


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def space_options(space: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The Task arguments a described search space offers: for each tool that declares
    a ``space_option`` (``quant_choices``, ``densities``), the choices of its first
    dimension. A task rebuilt with them builds the same space again."""
    options: dict[str, list[Any]] = {}
    for spec in tool_specs():
        if spec.space_option is None:
            continue
        for dim in space:
            if str(dim["name"]).startswith(f"{spec.name}:"):
                options[spec.space_option] = list(dim["choices"])
                break
    return options


def described_model(description: Mapping[str, Any]) -> str | ModelFile:
    """The model argument a description names: its file (refused when the content is not
    the described one), a zoo name, or an existing path."""
    if "model_file" in description:
        return _model_file(description["model_file"])
    model = str(description["model"])
    if model in zoo.list_models():
        return model
    if model.startswith(("torch:", "graph:")):
        raise DescriptionError(f"model {model!r} was an in-memory model, which a description "
                               "cannot rebuild; only zoo models and model files can be rebuilt")
    if not os.path.isfile(model):
        raise DescriptionError(f"model {model!r} is neither a zoo model "
                               f"({', '.join(zoo.list_models())}) nor an existing file")
    return model


def _model_file(spec: Any) -> ModelFile:
    if (not isinstance(spec, dict) or not isinstance(spec.get("path"), str)
            or not isinstance(spec.get("sha256"), str)
            or not isinstance(spec.get("input_shapes", {}), dict)):
        raise DescriptionError("key 'task.model_file' must be an object with 'path', 'sha256' "
                               "and 'input_shapes'")
    path = spec["path"]
    if not os.path.isfile(path):
        raise DescriptionError(f"model file {path!r} named by the description does not exist")
    found = file_sha256(path)
    if found != spec["sha256"]:
        raise DescriptionError(f"model file {path!r} has changed since the record was made "
                               f"(sha256 {found}, recorded {spec['sha256']}); refusing to "
                               "rebuild from a different file")
    return ModelFile(path, spec.get("input_shapes") or None)


def task_arguments(description: Mapping[str, Any], data: TaskData | None,
                   seed: int = 0) -> dict[str, Any]:
    """The :class:`Task` arguments a description stands for (``data`` given, or the zoo
    data set or files it names; ``seed`` where it names none)."""
    space = description["space"]
    if not isinstance(space, list) or not all(isinstance(d, dict) and "name" in d
                                              and "choices" in d for d in space):
        raise DescriptionError("key 'task.space' must be a list of {name, choices, baseline} "
                               "objects")
    scorer = description["scorer"]
    if not isinstance(scorer, dict) or "name" not in scorer:
        raise DescriptionError("key 'task.scorer' must be an object with 'name' and 'options'")
    profile = description.get("profile", {})
    if not isinstance(profile, dict):
        raise DescriptionError("key 'task.profile' must be an object with 'repeat' and "
                               "'warmup'")
    model = described_model(description)
    if data is None:
        try:
            data = zoo_data_for(str(description["model"]), str(description["data"]))
        except MSCError as err:
            raise DescriptionError(str(err)) from None
    args: dict[str, Any] = {
        "model": model, "tool": description["tool"], "data": data,
        "scorer": scorer["name"], "scorer_options": scorer.get("options") or {},
        "runner": description["runner"], "device": description["device"],
        "runner_options": description.get("runner_options") or {},
        "seed": description.get("seed", seed), "student": description.get("student"),
        **space_options(space),
    }
    if "repeat" in profile:
        args["profile_repeat"] = profile["repeat"]
    if "warmup" in profile:
        args["profile_warmup"] = profile["warmup"]
    return args


def check_described(description: Mapping[str, Any], task: Task, exact: bool = False) -> None:
    """Refuse ``task`` unless its weights, data and space are the described ones (and,
    with ``exact``, every other described key too)."""
    for key, found, what in (("weight_hash", task.source.weight_hash, "model weight hash"),
                             ("data_hash", task.data.data_hash, "data hash")):
        if description[key] != found:
            raise DescriptionError(f"{what} does not match: recorded {description[key]}, "
                                   f"found {found}")
    rebuilt = task.space.to_json()
    if as_json(rebuilt) != description["space"]:
        raise DescriptionError("search space does not match the rebuilt task: "
                               f"{space_difference(description['space'], rebuilt)}")
    if exact:
        found_description = as_json(task.describe())
        if found_description != as_json(dict(description)):
            raise DescriptionError(
                f"the task rebuilt from model {description['model']!r} differs from the "
                f"described one at {first_difference(dict(description), found_description)}")


def first_difference(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    """The first key (in sorted order) whose values differ, as ``key 'name'``."""
    for key in sorted(set(expected) | set(found), key=str):
        if expected.get(key) != found.get(key):
            return f"key {key!r}"
    return "nothing"


def space_difference(recorded: list[dict[str, Any]], rebuilt: list[dict[str, Any]]) -> str:
    """A one-line description of the first way two search spaces differ."""
    recorded_names = [d["name"] for d in recorded]
    rebuilt_names = [d["name"] for d in rebuilt]
    if recorded_names != rebuilt_names:
        extra = [n for n in recorded_names if n not in rebuilt_names]
        missing = [n for n in rebuilt_names if n not in recorded_names]
        if extra or missing:
            return (f"recorded dimensions {extra} are not in the rebuilt space, and rebuilt "
                    f"dimensions {missing} are not in the record")
        return f"dimension order differs: recorded {recorded_names}, rebuilt {rebuilt_names}"
    for old, new in zip(recorded, rebuilt, strict=True):
        for key in ("choices", "baseline"):
            if old.get(key) != new.get(key):
                return (f"dimension {old['name']!r} {key}: recorded {old.get(key)!r}, "
                        f"rebuilt {new.get(key)!r}")
    return "the dimensions differ"
