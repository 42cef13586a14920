"""The MSCGraph file format: a versioned JSON graph plus its weights in safetensors.

``export_graph`` writes ``<name>.json`` (format tag, version, the graph's JSON and the
name and sha256 of its weights file) and, with params, ``<name>.safetensors`` beside
it. Both are written atomically, weights first, so a reader never sees a graph file
that names half-written weights. ``load_graph`` checks everything before building the
graph: a file from another tool or version, a truncated or hand-edited graph, or
weights that were swapped or tampered with is refused with a :class:`GraphFormatError`
naming the file and the problem: so is a node whose declared output shape is not what
its op computes, an attribute of the wrong type (:mod:`mscgym.compiler.shape_check`)
and a weight holding NaN or infinity (naming its layer). Nothing in a file is executed:
JSON is parsed as data and weights are safetensors (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mscgym.compiler.dims import eval_dim
from mscgym.compiler.errors import GraphError, GraphFormatError, MSCError
from mscgym.compiler.graph import MSCGraph, MSCTensor
from mscgym.compiler.ops import COMPOSITE, SUPPORTED_OPS
from mscgym.compiler.shape_check import check_graph
from mscgym.utils.files import atomic_write_bytes, atomic_write_text

FORMAT = "mscgym.graph"
VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"

KNOWN_OPTYPES = frozenset(
    {op.removeprefix("relax.") for op in SUPPORTED_OPS} | set(COMPOSITE) | {"input"}
)
"""Every optype a graph file may name: the translated Relax ops, composites, inputs."""

_ARG_KINDS = ("input", "weight", "shape", "prim", "tuple")
_SHA256 = re.compile(r"[0-9a-f]{64}")

Params = dict[str, np.ndarray]


def weights_file_name(path: str | os.PathLike[str]) -> str:
    """The weights file that goes with graph file ``path`` (``g.json`` -> ``g.safetensors``)."""
    return Path(path).with_suffix(WEIGHTS_SUFFIX).name


def weights_mismatch(declared: Mapping[str, MSCTensor], arrays: Mapping[str, Any]) -> str | None:
    """What is wrong between a graph's declared weights and ``arrays`` (None when they fit)."""
    missing = sorted(set(declared) - set(arrays))
    if missing:
        return f"missing weights {missing}"
    extra = sorted(set(arrays) - set(declared))
    if extra:
        return f"extra weights {extra} that no node of the graph declares"
    for name, tensor in declared.items():
        array = arrays[name]
        shape, dtype = tuple(array.shape), str(array.dtype)
        if shape != tuple(tensor.shape) or dtype != tensor.dtype:
            return (f"weight {name!r} is {dtype}{list(shape)}, the graph declares "
                    f"{tensor.dtype}{list(tensor.shape)}")
    return None


def export_graph(
    graph: MSCGraph, path: str | os.PathLike[str], params: Mapping[str, Any] | None = None
) -> None:
    """Write ``graph`` to ``path`` (JSON) and ``params`` beside it (safetensors).

    ``params`` maps weight tensor names to arrays and must hold exactly the graph's
    weights with their declared shapes and dtypes; without params only the graph is
    written (its ``weights`` entry is null) and ``load_graph`` returns no weights.
    """
    path = Path(path)
    if path.suffix == WEIGHTS_SUFFIX:
        raise MSCError(f"graph file {path} must not end in {WEIGHTS_SUFFIX}: that name is "
                       "reserved for its weights file")
    weights = None
    if params is not None:
        arrays = {name: np.asarray(value, order="C") for name, value in params.items()}
        problem = weights_mismatch(graph.weight_tensors(), arrays)
        if problem:
            raise GraphError(f"cannot export graph {graph.name!r} to {path}: {problem}")
        data = safetensors.numpy.save(arrays)
        name = weights_file_name(path)
        atomic_write_bytes(path.with_name(name), data)
        weights = {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
    document = {"format": FORMAT, "version": VERSION, "graph": graph.to_json(),
                "weights": weights}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def load_graph(path: str | os.PathLike[str]) -> tuple[MSCGraph, Params]:
    """Read a graph file written by :func:`export_graph`; returns (graph, params or {})."""
    path = Path(path)

    def fail(problem: str) -> GraphFormatError:
        return GraphFormatError(f"graph file {path}: {problem}")

    document = _read_document(path, fail)
    graph_json = document["graph"]
    _check_graph(graph_json, fail)
    try:
        graph = MSCGraph.from_json(graph_json)
    except GraphError as exc:
        raise fail(str(exc)) from exc
    params = ({} if document["weights"] is None
              else _read_weights(path, document["weights"], graph, fail))
    try:  # after the weights: a weights file that does not fit is named as such first
        check_graph(graph)
    except GraphError as exc:
        raise fail(str(exc)) from exc
    return graph, params


# --------------------------------------------------------------------------------------
# Checks: each raises fail(problem) on the first thing that is wrong
# --------------------------------------------------------------------------------------
Fail = Callable[[str], GraphFormatError]


def _read_document(path: Path, fail: Fail) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from exc
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise fail(f"is not valid JSON, the file is truncated or corrupt ({exc})") from exc
    if not isinstance(document, dict):
        raise fail(f"holds a JSON {type(document).__name__}, expected an object")
    if "format" not in document:
        raise fail(f"missing key 'format' (expected {FORMAT!r}); not an mscgym graph file")
    if document["format"] != FORMAT:
        raise fail(f"wrong format tag {document['format']!r}, expected {FORMAT!r}")
    version = document.get("version")
    if type(version) is not int:
        raise fail(f"missing or non-integer key 'version' ({version!r})")
    if version != VERSION:
        raise fail(f"unsupported version {version} (this mscgym reads version {VERSION})")
    _require(document, {"graph": dict, "weights": (dict, type(None))}, "the file", fail)
    if document["weights"] is not None:
        _require(document["weights"], {"file": str, "sha256": str}, "'weights'", fail)
    return document


def _require(obj: Any, keys: Mapping[str, Any], where: str, fail: Fail) -> None:
    """``obj`` is an object holding each key with a value of the given type(s)."""
    if not isinstance(obj, dict):
        raise fail(f"{where} is a {type(obj).__name__}, expected an object")
    for key, kind in keys.items():
        if key not in obj:
            raise fail(f"missing key {key!r} in {where}")
        if not isinstance(obj[key], kind) or (isinstance(obj[key], bool) and kind is not bool):
            raise fail(f"key {key!r} in {where} is a {type(obj[key]).__name__}, "
                       f"expected {_kind_name(kind)}")


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             bool: "a boolean", type(None): "null"}
    return " or ".join(names[k] for k in kinds)


def _check_string_list(values: list[Any], where: str, fail: Fail) -> None:
    for value in values:
        if not isinstance(value, str):
            raise fail(f"{where} holds {value!r}, expected tensor names (strings)")


def _check_tensor(data: Any, where: str, fail: Fail) -> str:
    _require(data, {"name": str, "dtype": str, "shape": list}, where, fail)
    for dim in data["shape"]:
        if not (type(dim) is int and dim >= 0 or isinstance(dim, str) and _is_dim_expr(dim)):
            raise fail(f"{where} ({data['name']!r}) has dim {dim!r}, expected an integer >= 0 "
                       "or a symbolic dim (a name, or +, -, *, // of names and integers)")
    if not isinstance(data.get("layout", ""), str):
        raise fail(f"key 'layout' in {where} ({data['name']!r}) is not a string")
    return data["name"]


def _is_dim_expr(dim: str) -> bool:
    """Whether ``dim`` parses as a symbolic dim expression (parsed, never executed)."""
    try:
        eval_dim(dim, lambda _: 1)
    except ZeroDivisionError:
        pass  # well-formed: only this probe's value of 1 for every name divided by 0
    except (MSCError, RecursionError):
        return False
    return True


def _check_args(args: list[Any], node: dict[str, Any], where: str, fail: Fail) -> None:
    for arg in args:
        if not isinstance(arg, dict) or arg.get("kind") not in _ARG_KINDS:
            raise fail(f"{where} has argument {arg!r}, expected an object whose 'kind' is one "
                       f"of {list(_ARG_KINDS)}")
        kind = arg["kind"]
        if kind == "input":
            index = arg.get("index")
            if type(index) is not int or not 0 <= index < len(node["inputs"]):
                raise fail(f"{where} has input argument index {index!r}; the node has "
                           f"{len(node['inputs'])} inputs")
        elif kind == "weight" and not (isinstance(arg.get("role"), str)
                                       and arg["role"] in node.get("weights", {})):
            raise fail(f"{where} has weight argument {arg.get('role')!r}, which is not one "
                       "of its weights")
        elif kind == "shape":
            _require(arg, {"value": list}, f"{where} shape argument", fail)
        elif kind == "prim":
            _require(arg, {"dtype": str}, f"{where} prim argument", fail)
            if not isinstance(arg.get("value"), int | str) or isinstance(arg["value"], bool):
                raise fail(f"{where} has prim argument value {arg.get('value')!r}, expected "
                           "an integer or a float literal string")
        elif kind == "tuple":
            _require(arg, {"items": list}, f"{where} tuple argument", fail)
            _check_args(arg["items"], node, where, fail)


def _check_graph(graph: dict[str, Any], fail: Fail) -> None:
    """Structure, optypes, names and dataflow of a graph's JSON, before it is built."""
    _require(graph, {"name": str, "inputs": list, "outputs": list, "nodes": list}, "'graph'",
             fail)
    _check_string_list(graph["inputs"], "graph inputs", fail)
    _check_string_list(graph["outputs"], "graph outputs", fail)
    if not isinstance(graph.get("func_attrs", {}), dict):
        raise fail("key 'func_attrs' in 'graph' is not an object")
    if not isinstance(graph.get("return_tuple", True), bool):
        raise fail("key 'return_tuple' in 'graph' is not a boolean")
    node_names: set[str] = set()
    tensors: set[str] = set()
    weights: set[str] = set()
    for index, node in enumerate(graph["nodes"]):
        where = f"node {index}"
        _require(node, {"name": str, "optype": str, "inputs": list, "outputs": list}, where, fail)
        name, optype = node["name"], node["optype"]
        where = f"node {name!r}"
        if name in node_names:
            raise fail(f"duplicate node name {name!r}")
        node_names.add(name)
        if optype not in KNOWN_OPTYPES:
            raise fail(f"{where} has unknown optype {optype!r}")
        _check_string_list(node["inputs"], f"{where} inputs", fail)
        for ref in node["inputs"]:
            if ref not in tensors:
                raise fail(f"{where} reads dangling tensor {ref!r}, which no earlier node "
                           "produces")
        if not node["outputs"]:
            raise fail(f"{where} has no outputs")
        for position, tensor in enumerate(node["outputs"]):
            out = _check_tensor(tensor, f"{where} output {position}", fail)
            if out in tensors:
                raise fail(f"duplicate tensor name {out!r} (output of {where})")
            tensors.add(out)
        _check_node_extras(node, where, weights, fail)
    for ref in graph["inputs"] + graph["outputs"]:
        if ref not in tensors:
            raise fail(f"graph input/output {ref!r} is a dangling tensor that no node produces")


def _check_node_extras(node: dict[str, Any], where: str, weights: set[str], fail: Fail) -> None:
    """The optional parts of a node: weights (names unique graph-wide), attrs, args."""
    extras = {"attrs": dict, "args": list, "weights": dict, "weight_alias": dict,
              "attrs_type": str}
    _require(node, {k: v for k, v in extras.items() if k in node}, where, fail)
    for role, tensor in node.get("weights", {}).items():
        weight = _check_tensor(tensor, f"{where} weight {role!r}", fail)
        if weight in weights:
            raise fail(f"duplicate weight name {weight!r} ({where})")
        weights.add(weight)
    for role, alias in node.get("weight_alias", {}).items():
        if not isinstance(alias, str):
            raise fail(f"{where} weight_alias {role!r} is {alias!r}, expected a string")
    _check_args(node.get("args", []), node, where, fail)


def _read_weights(path: Path, entry: dict[str, str], graph: MSCGraph, fail: Fail) -> Params:
    name = entry["file"]
    if name in ("", ".", "..") or os.path.basename(name) != name or "\\" in name:
        raise fail(f"weights file name {name!r} must be a plain file name beside the graph file")
    if not _SHA256.fullmatch(entry["sha256"]):
        raise fail(f"weights sha256 {entry['sha256']!r} is not 64 lowercase hex digits")
    weights_path = path.with_name(name)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise fail(f"weights file {weights_path} is missing") from None
    except OSError as exc:
        raise fail(f"weights file {weights_path} cannot be read ({exc.strerror or exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise fail(f"sha256 mismatch: weights file {weights_path} hashes to {digest}, the graph "
                   f"file records {entry['sha256']}; the weights were modified or replaced")
    try:
        params = safetensors.numpy.load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise fail(f"weights file {weights_path} is not a readable safetensors file "
                   f"({exc})") from exc
    problem = weights_mismatch(graph.weight_tensors(), params) or _non_finite(graph, params)
    if problem:
        raise fail(f"weights file {weights_path} does not fit the graph: {problem}")
    return params


def _non_finite(graph: MSCGraph, params: Params) -> str | None:
    """The first weight holding NaN or infinity, named with its layer (None if none)."""
    for node in graph.nodes:
        for role, tensor in node.weights.items():
            array = params[tensor.name]
            if array.dtype.kind != "f":
                continue
            bad = ~np.isfinite(array)
            if bad.any():
                where = ""
                if array.ndim > 1:
                    channels = np.flatnonzero(bad.reshape(array.shape[0], -1).any(axis=1))
                    where = f" in output channels {channels[:8].tolist()}"
                return (f"weight {role!r} ({tensor.name!r}) of layer {node.name!r} holds "
                        f"{int(bad.sum())} NaN or infinite values{where}; expected finite "
                        "numbers")
    return None
