"""Graph files (export / load_graph) and drawings (prototxt, dot) of real zoo graphs."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import tvm_ffi

from mscgym import zoo
from mscgym.compiler import (
    GraphError,
    GraphFormatError,
    MSCError,
    MSCGraph,
    from_torch,
    load_graph,
    to_relax,
)
from mscgym.compiler.serialize import FORMAT, VERSION, export_graph

MODELS = ["digits-cnn", "digits-mobilenet", "digits-transformer"]

Params = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def graphs() -> dict[str, tuple[MSCGraph, Params]]:
    out = {}
    for name in MODELS:
        entry = zoo.load(name)
        out[name] = from_torch(entry.model, entry.example_inputs)
    return out


@pytest.fixture
def cnn(graphs: dict[str, tuple[MSCGraph, Params]]) -> tuple[MSCGraph, Params]:
    return graphs["digits-cnn"]


@pytest.fixture
def exported(tmp_path: Path, cnn: tuple[MSCGraph, Params]) -> Path:
    graph, params = cnn
    path = tmp_path / "cnn.json"
    graph.export(path, params)
    return path


# --------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_equal(
    name: str, graphs: dict[str, tuple[MSCGraph, Params]], tmp_path: Path
) -> None:
    graph, params = graphs[name]
    path = tmp_path / f"{name}.json"
    graph.export(path, params)
    assert sorted(os.listdir(tmp_path)) == [f"{name}.json", f"{name}.safetensors"], \
        "written atomically: no temporary files are left behind"
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT and document["version"] == VERSION
    assert document["weights"]["file"] == f"{name}.safetensors"

    loaded, loaded_params = load_graph(path)
    assert loaded.to_json() == graph.to_json()
    assert sorted(loaded_params) == sorted(params)
    for key, array in params.items():
        assert loaded_params[key].dtype == array.dtype
        np.testing.assert_array_equal(loaded_params[key], array)
    assert tvm_ffi.structural_equal(to_relax(loaded, loaded_params), to_relax(graph, params))


def test_export_without_params_writes_only_the_graph(
    tmp_path: Path, cnn: tuple[MSCGraph, Params]
) -> None:
    graph, _ = cnn
    export_graph(graph, tmp_path / "g.json")
    assert os.listdir(tmp_path) == ["g.json"]
    loaded, params = load_graph(tmp_path / "g.json")
    assert loaded.to_json() == graph.to_json() and params == {}


def test_export_refuses_params_that_do_not_fit(
    tmp_path: Path, cnn: tuple[MSCGraph, Params]
) -> None:
    graph, params = cnn
    partial = {k: v for k, v in params.items() if k != "fc.bias"}
    with pytest.raises(GraphError, match=r"missing weights \['fc.bias'\]"):
        graph.export(tmp_path / "g.json", partial)
    wrong = {**params, "conv1.weight": params["conv1.weight"].astype(np.float64)}
    with pytest.raises(GraphError, match=r"weight 'conv1.weight' is float64\[16, 1, 3, 3\]"):
        graph.export(tmp_path / "g.json", wrong)
    with pytest.raises(MSCError, match="reserved for its weights file"):
        graph.export(tmp_path / "g.safetensors", params)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------
# Malformed graph files: each is refused with an error naming the file and the problem
# --------------------------------------------------------------------------------------
Edit = Callable[[dict[str, Any]], None]


def _nodes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["graph"]["nodes"]


def _node(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in _nodes(doc) if n["name"] == name)


def _set(node: str, key: str, value: Any) -> Edit:
    return lambda doc: _node(doc, node).__setitem__(key, value)


DOCUMENT_EDITS: list[tuple[str, Edit, str]] = [
    ("format tag", lambda d: d.__setitem__("format", "onnx.graph"),
     r"wrong format tag 'onnx.graph', expected 'mscgym.graph'"),
    ("no format", lambda d: d.pop("format"), r"missing key 'format'"),
    ("version", lambda d: d.__setitem__("version", 2), r"unsupported version 2 .*reads version 1"),
    ("no graph", lambda d: d.pop("graph"), r"missing key 'graph' in the file"),
    ("no weights", lambda d: d.pop("weights"), r"missing key 'weights' in the file"),
    ("no sha", lambda d: d["weights"].pop("sha256"), r"missing key 'sha256' in 'weights'"),
    ("no nodes", lambda d: d["graph"].pop("nodes"), r"missing key 'nodes' in 'graph'"),
    ("no optype", lambda d: _nodes(d)[1].pop("optype"), r"missing key 'optype' in node 1"),
    ("output shape", lambda d: _node(d, "relu")["outputs"][0].pop("shape"),
     r"missing key 'shape' in node 'relu' output 0"),
    ("unknown optype", _set("relu", "optype", "nn.evil"),
     r"node 'relu' has unknown optype 'nn.evil'"),
    ("dangling", _set("relu", "inputs", ["ghost:0"]),
     r"node 'relu' reads dangling tensor 'ghost:0'"),
    ("later producer", _set("relu", "inputs", ["fc:0"]),
     r"node 'relu' reads dangling tensor 'fc:0', which no earlier node produces"),
    ("dangling output", lambda d: d["graph"].__setitem__("outputs", ["nowhere:0"]),
     r"graph input/output 'nowhere:0' is a dangling tensor"),
    ("duplicate node", _set("relu_1", "name", "relu"), r"duplicate node name 'relu'"),
    ("duplicate tensor", lambda d: _node(d, "relu_1")["outputs"][0].__setitem__(
        "name", "relu:0"), r"duplicate tensor name 'relu:0'"),
    ("duplicate weight", lambda d: _node(d, "conv2")["weights"]["bias"].__setitem__(
        "name", "conv1.bias"), r"duplicate weight name 'conv1.bias'"),
    ("bad dim", lambda d: _node(d, "relu")["outputs"][0].__setitem__("shape", [1, -3]),
     r"has dim -3, expected an integer >= 0"),
    ("dim code", lambda d: _node(d, "relu")["outputs"][0].__setitem__(
        "shape", ["__import__('os').system('true')"]), r"has dim .*expected an integer"),
    ("arg index", _set("relu", "args", [{"kind": "input", "index": 3}]),
     r"node 'relu' has input argument index 3; the node has 1 inputs"),
    ("arg kind", _set("relu", "args", [{"kind": "lambda"}]),
     r"node 'relu' has argument .*'kind' is one of"),
    ("weights path", lambda d: d["weights"].__setitem__("file", "../cnn.safetensors"),
     r"must be a plain file name"),
    ("declared shape", lambda d: _node(d, "conv1")["weights"]["weight"].__setitem__(
        "shape", [16, 1, 3, 4]),
     r"weight 'conv1.weight' is float32\[16, 1, 3, 3\], the graph declares float32\[16, 1, 3, 4\]"),
]


@pytest.mark.parametrize(("case", "edit", "match"), DOCUMENT_EDITS,
                         ids=[case for case, _, _ in DOCUMENT_EDITS])
def test_malformed_graph_file_is_refused(
    exported: Path, case: str, edit: Edit, match: str
) -> None:
    document = json.loads(exported.read_text())
    edit(document)
    exported.write_text(json.dumps(document))
    with pytest.raises(GraphFormatError, match=match) as info:
        load_graph(exported)
    assert str(exported) in str(info.value)


@pytest.mark.parametrize(("content", "match"), [
    (None, r"is not valid JSON, the file is truncated"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", r"is not valid JSON"),
    (b"[1, 2, 3]", r"holds a JSON list, expected an object"),
    (b"", r"is not valid JSON"),
], ids=["truncated", "binary", "json-list", "empty"])
def test_truncated_or_non_json_file_is_refused(
    exported: Path, content: bytes | None, match: str
) -> None:
    data = exported.read_bytes()
    exported.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(GraphFormatError, match=match):
        load_graph(exported)


def test_missing_graph_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphFormatError, match=r"nothere.json: no such file"):
        load_graph(tmp_path / "nothere.json")


def _rewrite_weights(path: Path, arrays: dict[str, np.ndarray], rehash: bool = True) -> None:
    """Replace the weights file; with ``rehash`` also record its new sha256 in the graph."""
    data = safetensors.numpy.save(arrays)
    path.with_suffix(".safetensors").write_bytes(data)
    if rehash:
        document = json.loads(path.read_text())
        document["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
        path.write_text(json.dumps(document))


def test_missing_weights_file_is_refused(exported: Path) -> None:
    exported.with_suffix(".safetensors").unlink()
    with pytest.raises(GraphFormatError, match=r"weights file .*cnn.safetensors is missing"):
        load_graph(exported)


def test_tampered_weights_are_refused(exported: Path, cnn: tuple[MSCGraph, Params]) -> None:
    _, params = cnn
    tampered = {**params, "fc.bias": params["fc.bias"] + 1.0}
    _rewrite_weights(exported, tampered, rehash=False)
    with pytest.raises(GraphFormatError, match=r"sha256 mismatch: .*modified or replaced"):
        load_graph(exported)


@pytest.mark.parametrize(("change", "match"), [
    ("shape", r"weight 'fc.bias' is float32\[11\], the graph declares float32\[10\]"),
    ("dtype", r"weight 'fc.bias' is float16\[10\], the graph declares float32\[10\]"),
    ("missing", r"missing weights \['fc.bias'\]"),
    ("extra", r"extra weights \['evil'\] that no node of the graph declares"),
], ids=["shape", "dtype", "missing", "extra"])
def test_weights_that_do_not_fit_the_graph_are_refused(
    exported: Path, cnn: tuple[MSCGraph, Params], change: str, match: str
) -> None:
    _, params = cnn
    arrays = dict(params)
    if change == "shape":
        arrays["fc.bias"] = np.zeros(11, np.float32)
    elif change == "dtype":
        arrays["fc.bias"] = params["fc.bias"].astype(np.float16)
    elif change == "missing":
        del arrays["fc.bias"]
    else:
        arrays["evil"] = np.zeros(3, np.float32)
    _rewrite_weights(exported, arrays)
    with pytest.raises(GraphFormatError, match=match):
        load_graph(exported)


def test_weights_file_that_is_not_safetensors_is_refused(exported: Path) -> None:
    data = b"\x80\x04\x95 pickled? no."
    exported.with_suffix(".safetensors").write_bytes(data)
    document = json.loads(exported.read_text())
    document["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    exported.write_text(json.dumps(document))
    with pytest.raises(GraphFormatError, match=r"is not a readable safetensors file"):
        load_graph(exported)


# --------------------------------------------------------------------------------------
# Drawings
# --------------------------------------------------------------------------------------
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+|\s+')


def _unquote(token: str) -> str:
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    return re.sub(r"\\([0-7]{3}|.)",
                  lambda m: chr(int(m[1], 8)) if len(m[1]) == 3 else escapes[m[1]], token[1:-1])


def _parse_text_proto(text: str) -> list[tuple[str, Any]]:
    """A minimal protobuf text-format reader: (key, value or nested fields) pairs."""
    pieces = _TOKEN.findall(text)
    assert "".join(pieces) == text, "text has characters outside of any token"
    tokens = [t for t in pieces if not t.isspace()]
    position = 0

    def fields(until: str | None) -> list[tuple[str, Any]]:
        nonlocal position
        out = []
        while position < len(tokens) and tokens[position] != until:
            key = tokens[position]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"bad field name {key!r}"
            position += 1
            if tokens[position] == "{":
                position += 1
                out.append((key, fields("}")))
                position += 1
                continue
            assert tokens[position] == ":", f"expected ':' after {key!r}"
            position += 1
            if tokens[position] == "[":
                end = tokens.index("]", position)
                out.append((key, [t for t in tokens[position + 1:end] if t != ","]))
                position = end + 1
            else:
                value = tokens[position]
                out.append((key, _unquote(value) if value.startswith('"') else value))
                position += 1
        return out

    parsed = fields(None)
    assert position == len(tokens), "unbalanced braces"
    return parsed


def _awkward(graph: MSCGraph) -> MSCGraph:
    """The graph with a node and a tensor renamed to hold quotes, backslashes, newlines."""
    data = graph.to_json()
    node = next(n for n in data["nodes"] if n["name"] == "relu")
    node["name"] = 're"lu\\ x\n{}'
    old, new = node["outputs"][0]["name"], 'relu"\\:0'
    node["outputs"][0]["name"] = new
    for other in data["nodes"]:
        other["inputs"] = [new if ref == old else ref for ref in other["inputs"]]
    return MSCGraph.from_json(data)


@pytest.mark.parametrize("awkward", [False, True], ids=["plain", "awkward-names"])
def test_prototxt_has_one_layer_per_node(
    tmp_path: Path, cnn: tuple[MSCGraph, Params], awkward: bool
) -> None:
    graph = _awkward(cnn[0]) if awkward else cnn[0]
    path = tmp_path / "cnn.prototxt"
    graph.visualize(path)
    text = path.read_text()
    assert text.startswith(f'name: "{graph.name}"\n')
    parsed = _parse_text_proto(text)
    inputs = [v for k, v in parsed if k == "input"]
    assert inputs == graph.input_names
    assert [k for k, _ in parsed].count("input_shape") == len(inputs)
    layers = [dict_fields for k, dict_fields in parsed if k == "layer"]
    body = [n for n in graph.nodes if n.optype != "input"]
    assert text.count("\nlayer {\n") == len(layers) == len(body)
    for fields, node in zip(layers, body, strict=True):
        assert ("name", node.name) in fields
        assert ("type", node.optype) in fields
        assert [v for k, v in fields if k == "bottom"] == node.inputs
        assert [v for k, v in fields if k == "top"] == [t.name for t in node.outputs]
        blocks = dict((k, v) for k, v in fields if k.endswith("_param"))
        assert {k for k, _ in blocks.get("weights_param", [])} == set(node.weights)
        if node.optype == "msc.conv2d_bias":
            assert ("strides", ["1", "1"]) in blocks["msc_param"]


@pytest.mark.parametrize("awkward", [False, True], ids=["plain", "awkward-names"])
def test_dot_has_an_edge_per_tensor_use(
    tmp_path: Path, cnn: tuple[MSCGraph, Params], awkward: bool
) -> None:
    graph = _awkward(cnn[0]) if awkward else cnn[0]
    path = tmp_path / "cnn.dot"
    graph.visualize(path)
    text = path.read_text()
    quoted = r'"(?:[^"\\]|\\.)*"'
    edges = [(_unquote(a), _unquote(b), _unquote(t)) for a, b, t in re.findall(
        rf"^  ({quoted}) -> ({quoted}) \[label=({quoted})\];$", text, flags=re.M)]
    expected = [(graph.find_producer(ref).name, node.name, ref)
                for node in graph.nodes for ref in node.inputs]
    assert edges == expected
    declared = re.findall(rf"^  ({quoted}) \[label=", text, flags=re.M)
    assert [_unquote(d) for d in declared] == [n.name for n in graph.nodes]
    assert text.startswith(f'digraph "{graph.name}" {{') and text.rstrip().endswith("}")


def test_visualize_refuses_unknown_formats(tmp_path: Path, cnn: tuple[MSCGraph, Params]) -> None:
    with pytest.raises(MSCError, match=r"unknown suffix '.png'"):
        cnn[0].visualize(tmp_path / "cnn.png")
    assert os.listdir(tmp_path) == []
