"""Fuzz-style trust test: mutate fields of a valid graph file and of a valid record
(types, shapes, names, hashes, deleted keys) and require, for every mutation, either a
clear error (an MSCError naming the file) or a load that round-trips to an equal file;
never another exception type."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.serialize import load_graph
from mscgym.records import Record, load_record
from mscgym.records.policy import DEFAULT_TOLERANCES
from mscgym.tasks.metrics import Metrics

REPLACEMENTS = [None, "ab", -1, 0, 10**12, 1.5, float("nan"), True, [], {}, [1, "x"],
                {"kind": "input"}, "s77", "0" * 64]
MUTATIONS = 400


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``value`` (objects and lists included, not the root)."""
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutations(document: dict[str, Any], seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    paths = list(_paths(document))
    out = []
    for _ in range(MUTATIONS):
        path = rng.choice(paths)
        mutated = copy.deepcopy(document)
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.15:
            del parent[path[-1]]
            label = f"delete {path}"
        else:
            value = copy.deepcopy(rng.choice(REPLACEMENTS))
            parent[path[-1]] = value
            label = f"{path} = {value!r}"
        out.append((label, mutated))
    return out


def _load_or_clear_error(load: Callable[[Path], Any], path: Path, label: str) -> Any:
    """``load(path)``, or None when it refuses the file with an MSCError naming it; any
    other exception fails the test (the property under test)."""
    try:
        return load(path)
    except MSCError as err:
        assert str(path) in str(err), (label, err)
        return None
    except Exception as err:  # noqa: BLE001 - the property under test
        pytest.fail(f"{label}: {type(err).__name__}: {err}")


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    graph, params = from_torch(module, (torch.zeros(2, 1, 8, 8),))
    path = tmp_path_factory.mktemp("graph") / "g.json"
    graph.export(path, params=params)
    return path


def test_graph_file_mutations(graph_file: Path, tmp_path: Path) -> None:
    original = json.loads(graph_file.read_text())
    weights = graph_file.with_suffix(".safetensors").read_bytes()
    (tmp_path / "g.safetensors").write_bytes(weights)
    loaded = 0
    for label, document in _mutations(original, seed=0):
        path = tmp_path / "g.json"
        path.write_text(json.dumps(document))
        result = _load_or_clear_error(load_graph, path, label)
        if result is None:
            continue
        graph, params = result
        loaded += 1
        again = tmp_path / "again" / "g.json"
        graph.export(again, params=params or None)
        graph2, params2 = load_graph(again)
        assert graph2.to_json() == graph.to_json(), label
        assert sorted(params2) == sorted(params), label
    assert loaded < MUTATIONS  # the mutations do break files


@pytest.fixture(scope="module")
def record_json() -> dict[str, Any]:
    metrics = Metrics(distill_loss=0.01, accuracy=0.9, latency_ms=1.0, latency_p90_ms=1.2,
                      latency_iqr_ms=0.1, size_bytes=1000, params=250, flops=5000,
                      runner="onnxruntime", device="cpu", target="CPUExecutionProvider")
    task = {"model": "digits-mlp", "weight_hash": "a" * 64, "data": "zoo:digits-mlp",
            "data_hash": "b" * 64, "tool": "prune",
            "space": [{"name": "prune:fc1", "choices": [0.5, 1.0], "baseline": 1.0}],
            "scorer": {"name": "distill_loss", "options": {}}, "runner": "onnxruntime",
            "device": "cpu", "runner_options": {}, "profile": {"repeat": 5, "warmup": 1},
            "student": {}, "seed": 0}
    record = Record(task=task, plan={"prune:fc1": 0.5},
                    strategies={"prune": {"groups": [{"name": "fc1", "keep": [0, 1]}]}},
                    metrics=metrics, score=-0.01, seed=0,
                    tolerances=copy.deepcopy(DEFAULT_TOLERANCES),
                    extra={"baseline": metrics.to_json()})
    return record.to_json()


def test_record_mutations(record_json: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    loaded = 0
    for label, document in _mutations(record_json, seed=1):
        path.write_text(json.dumps(document))
        record = _load_or_clear_error(load_record, path, label)
        if record is None:
            continue
        loaded += 1
        saved = tmp_path / "again.json"
        record.save(saved)
        assert load_record(saved).to_json() == record.to_json(), label
    assert loaded < MUTATIONS


@pytest.mark.parametrize(("key", "value", "message"), [
    (("metrics", "accuracy"), "high", "key 'metrics.accuracy': expected a number or null, "
                                      "got \"high\""),
    (("metrics", "size_bytes"), -5, "key 'metrics.size_bytes': expected an integer >= 0"),
    (("task", "profile", "repeat"), "ab", "key 'task.profile.repeat': expected an integer"),
    (("tolerances", "accuracy", "abs"), "x", "key 'tolerances.accuracy.abs': expected a number"),
    (("extra", "baseline", "latency_ms"), None, "key 'extra.baseline.latency_ms'"),
])
def test_record_types_follow_the_schema(record_json: dict[str, Any], tmp_path: Path,
                                        key: tuple[str, ...], value: Any,
                                        message: str) -> None:
    document = copy.deepcopy(record_json)
    target = document
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = value
    path = tmp_path / "record.json"
    path.write_text(json.dumps(document))
    with pytest.raises(MSCError) as err:
        load_record(path)
    assert str(err.value).startswith(f"record {path}: ")
    assert message in str(err.value)
