"""Trust, shapes: every op of the graph IR has its output shape inferred at load, a
declared shape that disagrees is refused naming the node, the op, the declared and the
computed shape, attributes of the wrong type fail at load, and symbolic dims are
compared only where they are known. The graphs come from TVM Relax, whose own shape
inference must agree with the checker's on every op and attribute combination."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import GraphError, GraphFormatError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.graph_translator import from_relax
from mscgym.compiler.serialize import KNOWN_OPTYPES, load_graph
from mscgym.compiler.shape_check import SHAPE_RULES, check_graph

Edit = Callable[[dict[str, Any]], None]


def _build() -> tvm.IRModule:
    """One function with each op the checker infers, a symbolic batch ``n`` included."""
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 4, 8, 8), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3, 5), "float32"))
    z = relax.Var("z", relax.TensorType((3, 1, 5, 3), "float32"))
    ones = lambda *shape: relax.const(np.ones(shape, "float32"))  # noqa: E731
    op = relax.op
    with bb.function("main", [x, y, z]):
        with bb.dataflow():
            outs = [
                bb.emit(op.reshape(x, (n, 4, 64)), "reshape_sym"),
                bb.emit(op.reshape(y, (5, 6)), "reshape"),
                bb.emit(op.concat([x, x], axis=1), "concat"),
                bb.emit(op.concat([y, ones(2, 3, 1)], axis=-1), "concat_const"),
                bb.emit(op.permute_dims(y, [2, 0, 1]), "permute"),
                bb.emit(op.flatten(y), "flatten"),
                bb.emit(op.squeeze(z, [1]), "squeeze"),
                bb.emit(op.expand_dims(y, [0, -1]), "expand_dims"),
                bb.emit(op.strided_slice(x, axes=[2, 3], begin=[1, -1], end=[7, 0],
                                         strides=[2, -3]), "slice"),
                bb.emit(op.mean(x, axis=[2, 3], keepdims=True), "mean"),
                bb.emit(op.sum(y, axis=[1]), "sum"),
                bb.emit(op.max(y), "max"),
                bb.emit(op.matmul(z, y), "matmul_batched"),
                bb.emit(op.matmul(y, ones(5)), "matmul_vector"),
                bb.emit(op.add(y, ones(3, 1)), "add"),
                bb.emit(op.multiply(z, ones(2, 1, 1)), "multiply"),
                bb.emit(op.nn.pad(x, [0, 0, 0, 0, 1, 2, 3, 4]), "pad"),
                bb.emit(op.image.resize2d(x, (16, 12)), "resize"),
                bb.emit(op.nn.adaptive_avg_pool2d(x, (2, 2)), "adaptive"),
                bb.emit(op.broadcast_to(y, (4, 2, 3, 5)), "broadcast"),
                bb.emit(op.stack([y, y], axis=1), "stack"),
                bb.emit(op.take(y, relax.const(np.array([[0, 2]], "int64")), axis=1), "take"),
                bb.emit(op.nn.conv2d_transpose(x, ones(4, 3, 3, 3), strides=2, padding=1,
                                               output_padding=1), "deconv"),
                bb.emit(op.nn.conv2d_transpose(x, ones(4, 2, 3, 2), strides=(3, 2),
                                               padding=(1, 0, 2, 1), dilation=(2, 1),
                                               output_padding=(1, 0), groups=2), "deconv_g"),
                bb.emit(op.nn.layer_norm(y, ones(5), ones(5), axes=[-1]), "layer_norm"),
                bb.emit(op.astype(y, "float16"), "astype"),
                bb.emit(op.nn.softmax(y, axis=1), "softmax"),
                bb.emit(op.nn.avg_pool3d(op.expand_dims(x, [1]), pool_size=(1, 3, 3),
                                         strides=(1, 2, 2), padding=(0, 1, 1, 0, 1, 1)),
                        "pool3d"),
            ]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mod = _build()
    names = {b.var.name: b.var.name for b in mod["main"].body.blocks[0].bindings}
    graph, params = from_relax(mod, {}, sources=names)  # nodes named as emitted
    path = tmp_path_factory.mktemp("shapes") / "ops.json"
    graph.export(path, params=params)
    return path


def _node(document: dict[str, Any], name: str) -> dict[str, Any]:
    nodes = document["graph"]["nodes"]
    return next(n for n in nodes if n["name"] == name or n["outputs"][0]["name"] == name)


def _load_edited(exported: Path, tmp_path: Path, edit: Edit) -> None:
    document = json.loads(exported.read_text())
    edit(document)
    document["weights"] = None  # edits below never touch weights; shapes are what counts
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(document))
    load_graph(path)


def test_every_op_of_the_relax_graph_agrees_with_tvm(exported: Path) -> None:
    graph, params = load_graph(exported)
    assert len(params) == len(graph.weight_tensors())
    optypes = {node.optype for node in graph.nodes}
    assert {"reshape", "concat", "matmul", "nn.conv2d_transpose", "image.resize2d",
            "strided_slice", "take", "nn.pad", "nn.avg_pool3d"} <= optypes


def _output(name: str, shape: list[Any]) -> Edit:
    return lambda document: _node(document, name)["outputs"][0].update(shape=shape)


def _attr(name: str, key: str, value: Any) -> Edit:
    return lambda document: _node(document, name)["attrs"].update({key: value})


def _shape_arg(name: str, value: list[Any], shape: list[Any] | None = None) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        node = _node(document, name)
        next(a for a in node["args"] if a["kind"] == "shape")["value"] = value
        if shape is not None:
            node["outputs"][0]["shape"] = shape

    return edit


MISMATCHES = [
    ("concat", ["n", 9, 8, 8], "concat", ["n", 8, 8, 8]),
    ("concat_const", [2, 3, 5], "concat", [2, 3, 6]),
    ("reshape", [6, 5], "reshape", [5, 6]),
    ("reshape_sym", ["n", 4, 65], "reshape", ["n", 4, 64]),
    ("matmul_batched", [3, 2, 5, 4], "matmul", [3, 2, 5, 5]),
    ("matmul_vector", [2, 3, 1], "matmul", [2, 3]),
    ("deconv", ["n", 3, 17, 16], "nn.conv2d_transpose", ["n", 3, 16, 16]),
    ("deconv_g", ["n", 4, 24, 16], "nn.conv2d_transpose", ["n", 4, 24, 15]),
    ("resize", ["n", 4, 16, 16], "image.resize2d", ["n", 4, 16, 12]),
    ("permute", [5, 3, 2], "permute_dims", [5, 2, 3]),
    ("flatten", [15], "flatten", [30]),
    ("squeeze", [3, 1, 5, 3], "squeeze", [3, 5, 3]),
    ("expand_dims", [1, 2, 3, 5], "expand_dims", [1, 2, 3, 5, 1]),
    ("slice", ["n", 4, 3, 4], "strided_slice", ["n", 4, 3, 3]),
    ("mean", ["n", 4, 1], "mean", ["n", 4, 1, 1]),
    ("sum", [2, 3], "sum", [2, 5]),
    ("max", [1], "max", []),
    ("add", [2, 3, 1], "add", [2, 3, 5]),
    ("multiply", [3, 2, 5, 4], "multiply", [3, 2, 5, 3]),
    ("pad", ["n", 4, 11, 14], "nn.pad", ["n", 4, 11, 15]),
    ("adaptive", ["n", 4, 2, 3], "nn.adaptive_avg_pool2d", ["n", 4, 2, 2]),
    ("broadcast", [4, 2, 3, 6], "broadcast_to", [4, 2, 3, 5]),
    ("stack", [2, 3, 2, 5], "stack", [2, 2, 3, 5]),
    ("take", [2, 2, 5], "take", [2, 1, 2, 5]),
    ("layer_norm", [2, 3, 4], "nn.layer_norm", [2, 3, 5]),
    ("astype", [2, 3], "astype", [2, 3, 5]),
    ("softmax", [2, 5, 3], "nn.softmax", [2, 3, 5]),
    ("pool3d", ["n", 1, 4, 4, 5], "nn.avg_pool3d", ["n", 1, 4, 4, 4]),
]


@pytest.mark.parametrize(("name", "declared", "optype", "computed"), MISMATCHES,
                         ids=[m[0] for m in MISMATCHES])
def test_declared_shape_that_disagrees_is_refused(exported: Path, tmp_path: Path, name: str,
                                                  declared: list[Any], optype: str,
                                                  computed: list[Any]) -> None:
    with pytest.raises(GraphFormatError) as err:
        _load_edited(exported, tmp_path, _output(name, declared))
    message = str(err.value)
    assert f"graph file {tmp_path / 'ops.json'}: node " in message
    assert f"({optype}): output " in message
    if len(declared) == len(computed):
        assert f"output is {declared}, but its inputs, weights and attributes give " \
               f"{computed}" in message
    else:
        assert f"has rank {len(declared)}" in message
        assert f"expected rank {len(computed)}" in message


BAD_ATTRS = [
    (_attr("concat", "axis", "ab"), r"'concat' \(concat\): attribute 'axis' is 'ab', expected "
                                    r"an integer"),
    (_attr("concat", "axis", 4), r"'concat' \(concat\): axis 4 is out of range for rank 4"),
    (_attr("permute", "axes", "xyz"), r"'permute' \(permute_dims\): attribute 'axes' is "
                                      r"'xyz', expected a list of integers"),
    (_attr("mean", "keepdims", 1), r"'mean' \(mean\): attribute 'keepdims' is 1, expected "
                                   r"true or false"),
    (_attr("sum", "axis", [1, 1]), r"'sum' \(sum\): axis \[1, 1\] repeat an axis"),
    (_attr("pad", "pad_width", [1, 2]), r"'pad' \(nn.pad\): pad_width \[1, 2\] needs"),
    (_attr("deconv", "output_padding", [2, 2]), r"'deconv' .*output_padding \[2, 2\] must be "
                                                r"smaller than the stride"),
    (_attr("deconv", "strides", [1.5, 2]), r"'deconv' .*attribute 'strides' is \[1.5, 2\]"),
    (_attr("pool3d", "pool_size", [3, 3]), r"'pool3d' .*'pool_size' is \[3, 3\], expected a "
                                           r"list of 3 integers"),
    (_attr("resize", "method", 3), r"'resize' .*attribute 'method' is 3, expected a string"),
    (_attr("squeeze", "axis", [0]), r"'squeeze' .*squeezes axes \[0\] of \[3, 1, 5, 3\], "
                                    r"which are not 1"),
    (_attr("take", "axis", None), r"'take' \(take\): output has rank 4 \[2, 1, 2, 5\], "
                                  r"expected rank 2"),
    (_attr("astype", "dtype", "int8"), r"'astype' .*output dtype is 'float16', but the op "
                                       r"casts to 'int8'"),
    (lambda d: _node(d, "concat")["outputs"][0].update(dtype="int8"),
     r"'concat' .*output dtype is 'int8', but its input 'x' is 'float32'"),
]


@pytest.mark.parametrize(("edit", "match"), BAD_ATTRS)
def test_bad_attribute_fails_at_load(exported: Path, tmp_path: Path, edit: Edit,
                                     match: str) -> None:
    with pytest.raises(GraphFormatError, match=match):
        _load_edited(exported, tmp_path, edit)


RESHAPES = [  # (target, declared output): Relax's -1 infers, 0 copies the input's dim
    ([-1, 5], [6, 5], None),
    ([0, -1], [2, 15], None),
    ([2, 0, -1], [2, 3, 5], None),
    ([0, -1], [2, 16], r"output is \[2, 16\], but .* give \[2, 15\]"),
    ([-1, -1], [6, 5], r"may hold one -1"),
    ([-1, 7], [6, 5], r"cannot reshape \[2, 3, 5\] \(30 elements\) to \[-1, 7\]"),
    ([4, 8], [4, 8], r"cannot reshape \[2, 3, 5\] \(30 elements\) to \[4, 8\] \(32 elements\)"),
    ([0, 0, 0, 0], [2, 3, 5, 1], r"the 0 at axis 3 copies an axis the input"),
]


@pytest.mark.parametrize(("target", "declared", "error"), RESHAPES)
def test_reshape_targets_follow_relax(exported: Path, tmp_path: Path, target: list[int],
                                      declared: list[int], error: str | None) -> None:
    edit = _shape_arg("reshape", target, declared)
    if error is None:
        _load_edited(exported, tmp_path, edit)
        return
    with pytest.raises(GraphFormatError, match=r"node 'reshape' \(reshape\): .*" + error):
        _load_edited(exported, tmp_path, edit)


def test_symbolic_dims_are_compared_only_where_known(exported: Path, tmp_path: Path) -> None:
    # a reshape whose -1 depends on the symbolic batch: any declared size there is allowed
    _load_edited(exported, tmp_path, _shape_arg("reshape_sym", [-1, 64], ["m", 64]))
    _load_edited(exported, tmp_path, _shape_arg("reshape_sym", [-1, 64], [7, 64]))
    # but the known dims still count, and a named dim is compared by name
    with pytest.raises(GraphFormatError, match=r"'reshape_sym' .*give \['n', 4, 64\]"):
        _load_edited(exported, tmp_path, _output("reshape_sym", ["m", 4, 64]))
    with pytest.raises(GraphFormatError, match=r"'concat' .*give \['n', 8, 8, 8\]"):
        _load_edited(exported, tmp_path, _output("concat", ["n", 8, 8, 9]))


def test_inputs_that_cannot_meet_are_refused(exported: Path, tmp_path: Path) -> None:
    def wide_const(document: dict[str, Any]) -> None:  # [2, 3, 1] -> [2, 4, 1]
        weights = _node(document, "concat_const")["weights"]
        next(iter(weights.values()))["shape"] = [2, 4, 1]

    with pytest.raises(GraphFormatError, match=r"'concat_const' \(concat\): inputs "
                                               r"\[\[2, 3, 5\], \[2, 4, 1\]\] at axis 1: "
                                               r"sizes \[3, 4\] differ"):
        _load_edited(exported, tmp_path, wide_const)


@pytest.mark.parametrize(("strides", "padding", "output_padding", "dilation", "groups"), [
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, (0, 1, 2, 0), (2, 1), (1, 2), 2),
    ((2, 3), 2, 0, 3, 4), (4, (1, 3), 3, 1, 1)])
def test_conv_transpose_inference_matches_relax(strides: Any, padding: Any,
                                                output_padding: Any, dilation: Any,
                                                groups: int) -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 5, 7), "float32"))
    weight = relax.const(np.ones((8, 3, 3, 2), "float32"))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.conv2d_transpose(
            x, weight, strides=strides, padding=padding, output_padding=output_padding,
            dilation=dilation, groups=groups))
        bb.emit_func_output(out)
    graph, _ = from_relax(bb.get(), {})
    check_graph(graph)  # TVM's inferred shape passes
    node = graph.nodes[-1]
    node.outputs[0].shape = (*node.output.shape[:3], node.output.shape[3] + 1)
    with pytest.raises(GraphError, match=r"\(nn.conv2d_transpose\): output is .* give"):
        check_graph(graph)


def test_reshape_zero_copies_the_input_dim_in_the_torch_codegen_too() -> None:
    """The checker reads a target's 0 as Relax does, and so does the torch codegen."""
    data = MSCNode("a", "input", [], [MSCTensor("a", "float32", ("n", 3, 5))])
    reshape = MSCNode("r", "reshape", ["a"], [MSCTensor("r:0", "float32", ("n", 15))],
                      args=[{"kind": "input", "index": 0},
                            {"kind": "shape", "value": [0, -1]}])
    graph = MSCGraph("g", [data, reshape], ["a"], ["r:0"])
    check_graph(graph)
    x = np.arange(60, dtype="float32").reshape(4, 3, 5)
    out = to_torch(graph, {})(torch.from_numpy(x))
    np.testing.assert_array_equal((out[0] if isinstance(out, tuple) else out).numpy(),
                                  x.reshape(4, 15))


def test_every_optype_a_graph_file_may_name_has_a_shape_rule() -> None:
    assert KNOWN_OPTYPES - {"input"} <= set(SHAPE_RULES)


_ODD_VALUES = [None, True, 0, -1, 2, 1.5, "ab", "n", "", [], [1], [0, 0], [-1, 5], ["x"], {},
               {"a": 1}, [[1]], 10**12]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, list) else ()
    found = []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def test_mutated_attributes_args_and_shapes_load_or_fail_clearly(exported: Path,
                                                                 tmp_path: Path) -> None:
    """Any attribute, argument, output or weight field of any op set to an odd value:
    the file loads or is a GraphFormatError, never another exception."""
    rng = np.random.default_rng(0)
    base = json.loads(exported.read_text())
    nodes = [n for n in base["graph"]["nodes"] if n["optype"] != "input"]
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        name = nodes[rng.integers(len(nodes))]["name"]
        document = json.loads(json.dumps(base))
        node = _node(document, name)
        fields = [p for p in _paths(node) if p[0] in ("attrs", "args", "outputs", "weights")]
        where = fields[rng.integers(len(fields))]
        target = node
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = _ODD_VALUES[rng.integers(len(_ODD_VALUES))]
        try:
            _load_edited(exported, tmp_path, lambda d, document=document: d.update(document))
            outcomes["loaded"] += 1
        except GraphFormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > outcomes["loaded"] > 0
