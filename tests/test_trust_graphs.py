"""Trust, graph files and runner inputs: declared shapes are checked against what the
ops compute, attribute types and weights are checked at load (naming the node or
layer), prune strategies cannot state what they do not do, and runners check their
inputs against the graph."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from mscgym.cli import main
from mscgym.compiler.errors import GraphFormatError
from mscgym.compiler.serialize import load_graph
from mscgym.runtime.registry import create_runner
from mscgym.runtime.runner import RunnerInputError
from mscgym.tasks.sources import resolve_model
from mscgym.tools import create_tool
from mscgym.tools.base import ToolConfigError


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict]:
    source = resolve_model("digits-cnn")
    path = tmp_path_factory.mktemp("graph") / "cnn.json"
    source.graph.export(path, params=source.params)
    return path, source.graph, source.params


@pytest.fixture
def edited(exported: tuple[Path, Any, dict], tmp_path: Path
           ) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    path = exported[0]

    def write(edit: Callable[[dict[str, Any]], None]) -> Path:
        document = json.loads(path.read_text())
        edit(document)
        out = tmp_path / "cnn.json"
        out.write_text(json.dumps(document))
        (tmp_path / "cnn.safetensors").write_bytes(path.with_suffix(".safetensors").read_bytes())
        return out

    return write


def _node(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in document["graph"]["nodes"] if n["name"] == name)


def _set(name: str, *keys: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        target = _node(document, name)
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


CASES = [
    (_set("conv1", "outputs", 0, "shape", value=["s77", 16, 10**12, 10**12]),
     r"node 'conv1' \(msc.conv2d_bias\): output is \['s77', 16, 1000000000000, "
     r"1000000000000\], but its inputs, weights and attributes give \['s77', 16, 8, 8\]"),
    (_set("conv2", "outputs", 0, "shape", 1, value=33),
     r"node 'conv2' .*output is \['s77', 33, 8, 8\], but .* give \['s77', 32, 8, 8\]"),
    (lambda d: (_set("conv2", "weights", "weight", "shape", 1, value=8)(d),
                d.update(weights=None)),
     r"node 'conv2' .*input has 16 channels, but the weight \[32, 8, 3, 3\]"),
    (_set("conv1", "attrs", "strides", value="ab"),
     r"node 'conv1' .*attribute 'strides' is 'ab', expected a list of 2 integers >= 1"),
    (_set("conv1", "attrs", "groups", value=0), r"node 'conv1' .*'groups' is 0"),
    (_set("max_pool2d", "outputs", 0, "shape", 2, value=5),
     r"node 'max_pool2d' \(nn.max_pool2d\): output is .* give \['s77', 32, 4, 4\]"),
    (_set("fc", "outputs", 0, "shape", 1, value=11), r"node 'fc' \(msc.linear_bias\)"),
    (_set("relu", "outputs", 0, "dtype", value="float16"),
     r"node 'relu' \(nn.relu\): output dtype is 'float16', but its input 'conv1:0' is "
     r"'float32'"),
]


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_graph_file_mismatch_names_the_node(edited: Callable[..., Path], edit: Any,
                                            message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = edited(edit)
    with pytest.raises(GraphFormatError, match=rf"graph file {path}: {message}"):
        load_graph(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_nan_weights_name_the_layer(exported: tuple[Path, Any, dict], tmp_path: Path) -> None:
    path = exported[0]
    params = safetensors.numpy.load(path.with_suffix(".safetensors").read_bytes())
    params["conv2.weight"] = params["conv2.weight"].copy()
    params["conv2.weight"][5, 0, 1, 1] = np.nan
    data = safetensors.numpy.save(params)
    (tmp_path / "cnn.safetensors").write_bytes(data)
    document = json.loads(path.read_text())
    document["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "cnn.json").write_text(json.dumps(document))
    with pytest.raises(GraphFormatError, match=r"weight 'weight' \('conv2.weight'\) of layer "
                                               r"'conv2' holds 1 NaN or infinite values in "
                                               r"output channels \[5\]"):
        load_graph(tmp_path / "cnn.json")


def test_good_file_still_loads(exported: tuple[Path, Any, dict]) -> None:
    graph, params = load_graph(exported[0])
    assert graph.to_json() == exported[1].to_json()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("density", 2, r"groups\[0\].density: expected a number in \(0, 1\], got 2"),
    ("density", 0.25, r"groups\[0\].density: 0.25 does not match the kept channels"),
    ("channels", 99, r"groups\[0\].channels: the group has 16 channels, the strategy says 99"),
])
def test_prune_strategy_cannot_state_what_it_does_not_do(
        exported: tuple[Path, Any, dict], tmp_path: Path, key: str, value: Any,
        message: str) -> None:
    _, graph, params = exported
    pruner = create_tool("prune", graph, params, {"density": 0.5})
    path = tmp_path / "prune.json"
    pruner.save_strategy(path)
    document = json.loads(path.read_text())
    document["strategy"]["groups"][0][key] = value
    path.write_text(json.dumps(document))
    fresh = create_tool("prune", graph, params, {"density": 0.5})
    with pytest.raises(ToolConfigError, match=rf"strategy file {path}: .*{message}"):
        fresh.load_strategy(path)
    assert fresh.strategy() == create_tool("prune", graph, params, {"density": 0.5}).strategy()


@pytest.mark.parametrize("runner", ["torch", "onnxruntime"])
def test_runner_checks_inputs(exported: tuple[Path, Any, dict], runner: str) -> None:
    _, graph, params = exported
    built = create_runner(runner)
    built.build(graph, params, {})
    good = np.zeros((2, 1, 8, 8), dtype=np.float32)
    assert built.run([good])[0].shape == (2, 10)
    bad = [
        ([np.zeros((2, 1, 9, 9), np.float32)], r"input 'x' is float32\[2, 1, 9, 9\], expected "
                                               r"8 at axis 2 \('x' \(float32\['s77', 1, 8, 8\]"),
        ([good.astype(np.float64)], r"input 'x' is float64\[2, 1, 8, 8\], expected dtype "
                                    "float32"),
        ([good, good], r"got 2 inputs, the graph takes 1: 'x' \(float32"),
        ([np.zeros((1, 8, 8), np.float32)], r"input .x. is float32\[1, 8, 8\], expected rank 4"),
        (good, "run\\(\\) takes a list of arrays"),
    ]
    for inputs, message in bad:
        with pytest.raises(RunnerInputError, match=rf"runner '{runner}': {message}"):
            built.run(copy.copy(inputs))
