"""Resize, ConvTranspose, LRN, Sum, Dropout and computed conv kernels, end to end.

Each op comes in as a tiny ONNX model written with ``onnx.helper`` (and, where torch has
the layer, as a torch model), is translated to an MSCGraph and run by every codegen:
Relax on TVM, torch (fx) and ONNX on ONNX Runtime. Each must match ONNX Runtime on the
original file (or torch on the original module) within 1e-4 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from tvm import relax

from mscgym.compiler import MSCGraph, from_onnx, from_torch, to_relax
from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.compiler.codegen.torch_codegen import to_torch, weights_from_torch
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.runners.tvm_runner import TVMRunner

RTOL = 1e-4
CPU = ["CPUExecutionProvider"]
NO_TUNING_DATABASE = "/nonexistent/mscgym-tuning-db"
"""TVM checks build with TVM's default schedules whatever a user has tuned."""
RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], outputs: list[str],
           inits: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=CPU)
    return sess.run(None, feeds)


def _close(got: Any, want: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got - want).max()) / scale
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert err <= RTOL, f"{what}: max error {err:.2e} relative to the output's range"


def _run_everywhere(graph: MSCGraph, params: dict[str, np.ndarray],
                    inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The first output of ``graph`` on TVM, torch codegen and ONNX codegen + ORT."""
    runner = TVMRunner("cpu", {"cache": False, "db": NO_TUNING_DATABASE})
    runner.build(graph, params, QuantPlan())
    tvm_out = runner.run(inputs)[0]
    with torch.no_grad():
        torch_out = to_torch(graph, params)(*[torch.from_numpy(x) for x in inputs])
    if isinstance(torch_out, tuple):
        torch_out = torch_out[0]
    exported = to_onnx(graph, params)
    names = [t.name for t in graph.get_inputs()]
    onnx_out = _ort(exported, dict(zip(names, inputs, strict=True)))[0]
    return {"tvm": tvm_out, "torch": torch_out.numpy(), "onnx": onnx_out}


def _check_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> MSCGraph:
    want = _ort(model, feeds)[0]
    graph, params = from_onnx(model)
    outs = _run_everywhere(graph, params, list(feeds.values()))
    for runner, got in outs.items():
        _close(got, want, runner)
    return graph


def _check_torch(module: nn.Module, *inputs: torch.Tensor) -> MSCGraph:
    module = module.eval()
    with torch.no_grad():
        want = module(*inputs).numpy()
    graph, params = from_torch(module, inputs)
    outs = _run_everywhere(graph, params, [x.numpy() for x in inputs])
    for runner, got in outs.items():
        _close(got, want, runner)
    return graph


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _optypes(graph: MSCGraph) -> set[str]:
    return {n.optype for n in graph.nodes}


# --------------------------------------------------------------------------------------
# Resize / Upsample
# --------------------------------------------------------------------------------------
RESIZE_CASES = [
    # mode, coordinate transformation, nearest mode, input HxW, output HxW
    ("nearest", "half_pixel", "round_prefer_floor", (5, 6), (10, 12)),
    ("nearest", "half_pixel", "round_prefer_ceil", (5, 6), (15, 9)),
    ("nearest", "asymmetric", "floor", (5, 6), (10, 18)),
    ("nearest", "asymmetric", "ceil", (6, 6), (3, 12)),
    ("nearest", "align_corners", "round_prefer_floor", (5, 6), (9, 11)),
    ("nearest", "pytorch_half_pixel", "round_prefer_floor", (4, 4), (8, 1)),
    ("nearest", "tf_half_pixel_for_nn", "floor", (5, 6), (10, 12)),
    ("linear", "half_pixel", None, (5, 6), (10, 12)),
    ("linear", "half_pixel", None, (8, 8), (4, 5)),
    ("linear", "align_corners", None, (5, 6), (9, 13)),
    ("linear", "asymmetric", None, (5, 6), (10, 12)),
    ("linear", "pytorch_half_pixel", None, (5, 6), (1, 12)),
]


@pytest.mark.parametrize(("mode", "coordinate", "nearest", "size_in", "size_out"),
                         RESIZE_CASES)
def test_onnx_resize_matches_ort(mode: str, coordinate: str, nearest: str | None,
                                 size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": coordinate}
    if nearest:
        attrs["nearest_mode"] = nearest
    sizes = np.array([2, 3, *size_out], np.int64)
    model = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **attrs)],
                   {"x": [2, 3, *size_in]}, ["y"], {"sizes": sizes})
    graph = _check_onnx(model, {"x": _x(2, 3, *size_in)})
    assert "image.resize2d" in _optypes(graph)


@pytest.mark.parametrize(("size_in", "size_out"), [((8, 6), (4, 3)), ((5, 6), (10, 12))])
def test_relax_round_half_to_even_resize_runs_in_every_codegen(
        size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    """Relax's ``round`` (half to even) has no ONNX nearest_mode; the ONNX codegen picks the
    mode that selects the same pixels at these sizes (downscaling by 2 hits ties)."""
    from mscgym.compiler.graph_translator import from_relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, *size_in), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.image.resize2d(
                x, size_out, method="nearest_neighbor", rounding_method="round",
                coordinate_transformation_mode="half_pixel"))
        bb.emit_func_output(out)
    graph, params = from_relax(bb.get())
    outs = _run_everywhere(graph, params, [_x(1, 2, *size_in)])
    for runner in ("torch", "onnx"):
        _close(outs[runner], outs["tvm"], runner)


@pytest.mark.parametrize(("coordinate", "alpha", "exclude"), [
    ("half_pixel", -0.75, 0), ("half_pixel", -0.5, 1), ("align_corners", -0.75, 0),
    ("asymmetric", -0.75, 1)])
def test_onnx_cubic_resize_matches_ort(coordinate: str, alpha: float, exclude: int) -> None:
    sizes = np.array([1, 2, 11, 9], np.int64)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic",
                            coordinate_transformation_mode=coordinate, cubic_coeff_a=alpha,
                            exclude_outside=exclude)
    model = _model([node], {"x": [1, 2, 5, 6]}, ["y"], {"sizes": sizes})
    _check_onnx(model, {"x": _x(1, 2, 5, 6)})


def test_onnx_resize_with_scales_and_upsample() -> None:
    scales = np.array([1, 1, 2, 3], np.float32)
    model = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
                   {"x": [1, 2, 4, 5]}, ["y"], {"scales": scales})
    _check_onnx(model, {"x": _x(1, 2, 4, 5)})


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bilinear_align"])
def test_torch_upsample_matches_torch(mode: str) -> None:
    if mode == "nearest":
        layer = nn.Upsample(scale_factor=2, mode="nearest")
    else:
        layer = nn.Upsample(scale_factor=2, mode="bilinear",
                            align_corners=mode == "bilinear_align")
    _check_torch(layer, torch.randn(1, 3, 5, 7))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_torch_interpolate_to_other_sizes_matches_torch(mode: str) -> None:
    """Downscaling and non-integer sizes, where TVM's importer alone would pick other
    pixels for ``nearest`` (half-pixel, round half to even instead of torch's floor)."""

    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (F.interpolate(x, size=(9, 4), mode=mode)
                    + F.interpolate(x, scale_factor=0.5, mode=mode).mean())

    graph = _check_torch(Net(), torch.randn(1, 2, 6, 8))
    assert sum(n.optype == "image.resize2d" for n in graph.nodes) == 2


# --------------------------------------------------------------------------------------
# ConvTranspose
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("attrs", "bias"), [
    ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, True),
    ({"strides": [2, 2], "pads": [0, 1, 1, 0]}, True),
    ({"strides": [1, 2], "dilations": [2, 1], "pads": [1, 0, 1, 0]}, False),
    ({"strides": [2, 2], "group": 2}, True),
])
def test_onnx_conv_transpose_matches_ort(attrs: dict[str, Any], bias: bool) -> None:
    groups = attrs.get("group", 1)
    inits = {"w": _x(4, 6 // groups, 3, 3)}
    if bias:
        inits["b"] = _x(6)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"] if bias else ["x", "w"], ["y"],
                            kernel_shape=[3, 3], **attrs)
    graph = _check_onnx(_model([node], {"x": [1, 4, 5, 6]}, ["y"], inits),
                        {"x": _x(1, 4, 5, 6)})
    assert ("msc.conv2d_transpose_bias" if bias else "nn.conv2d_transpose") in _optypes(graph)


def test_torch_conv_transpose_matches_torch() -> None:
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    graph = _check_torch(layer, torch.randn(1, 4, 5, 6))
    node = next(n for n in graph.nodes if n.optype == "msc.conv2d_transpose_bias")
    assert node.weight_alias["weight"] == "weight"


# --------------------------------------------------------------------------------------
# LRN, Sum, Dropout, computed kernels
# --------------------------------------------------------------------------------------
# LRN as the ONNX codegen writes it: the channel-window sum of squares as a 1x1 conv.
# beta 0.75 (the default) as sqrt(s) * sqrt(sqrt(s)), other betas as Pow.
LRN_OPS = ["Mul", "Conv", "Add", "Sqrt", "Sqrt", "Mul", "Div"]


def test_onnx_lrn_matches_ort() -> None:
    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=1e-3, beta=0.75, bias=2.0)
    model = _model([node], {"x": [1, 6, 5, 4]}, ["y"])
    graph = _check_onnx(model, {"x": _x(1, 6, 5, 4)})
    assert "nn.avg_pool3d" in _optypes(graph)
    graph, params = from_onnx(model)
    assert [n.op_type for n in to_onnx(graph, params).graph.node] == LRN_OPS



def test_torch_local_response_norm_matches_torch() -> None:
    graph = _check_torch(nn.LocalResponseNorm(5, alpha=1e-2), torch.randn(1, 8, 4, 4))
    assert {"nn.avg_pool3d", "nn.pad"} <= _optypes(graph)
    graph = _check_torch(nn.LocalResponseNorm(3, beta=0.6), torch.randn(1, 8, 4, 4))
    assert "Pow" in [n.op_type for n in to_onnx(graph, from_torch(
        nn.LocalResponseNorm(3, beta=0.6), (torch.randn(1, 8, 4, 4),))[1]).graph.node]
    # An even size too (torch pads size // 2 channels in front, ONNX (size - 1) // 2).
    graph = _check_torch(nn.LocalResponseNorm(4, alpha=1e-2), torch.randn(1, 8, 4, 4))
    params = from_torch(nn.LocalResponseNorm(4, alpha=1e-2), (torch.randn(1, 8, 4, 4),))[1]
    assert [n.op_type for n in to_onnx(graph, params).graph.node] == LRN_OPS


@pytest.mark.parametrize("opset", [11, 18])
def test_onnx_pad_becomes_nn_pad_and_matches_ort(opset: int) -> None:
    """TVM imports Pad as TOPI's pad kernel (call_tir); normalization reads its widths and
    value back so it is the nn.pad op every codegen emits."""
    pads = np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64)
    node = helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode="constant")
    model = _model([node], {"x": [2, 3, 4, 5]}, ["y"],
                   {"pads": pads, "value": np.array(0.25, np.float32)}, opset=opset)
    graph = _check_onnx(model, {"x": _x(2, 3, 4, 5)})
    pad = next(n for n in graph.nodes if n.optype == "nn.pad")
    assert pad.attrs["pad_width"] == [0, 0, 0, 0, 1, 3, 2, 0]
    assert pad.attrs["pad_value"] == 0.25


def test_onnx_sum_of_several_tensors_matches_ort() -> None:
    node = helper.make_node("Sum", ["a", "b", "c"], ["y"])
    model = _model([node], {"a": [2, 3, 4], "b": [2, 3, 4], "c": [2, 3, 4]}, ["y"])
    graph = _check_onnx(model, {"a": _x(2, 3, 4), "b": _x(2, 3, 4), "c": _x(2, 3, 4)})
    assert "stack" in _optypes(graph)
    graph, params = from_onnx(model)
    ops = [n.op_type for n in to_onnx(graph, params).graph.node]
    assert ops.count("Sum") == 1 and "ReduceSum" not in ops and "Concat" not in ops


def test_dropout_is_removed_at_normalization() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Dropout", ["r"], ["d"], name="drop"),
             helper.make_node("Add", ["d", "x"], ["y"])]
    graph = _check_onnx(_model(nodes, {"x": [2, 5]}, ["y"], opset=13), {"x": _x(2, 5)})
    assert _optypes(graph) == {"input", "nn.relu", "add"}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.fc(x))

    graph = _check_torch(Net(), torch.randn(2, 5))
    assert not any("dropout" in op for op in _optypes(graph))


def test_conv_with_computed_kernel_matches_ort() -> None:
    nodes = [helper.make_node("Mul", ["w", "s"], ["ws"]),
             helper.make_node("Conv", ["x", "ws"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c", "t"], ["y"], strides=[2, 2])]
    model = _model(nodes, {"x": [1, 4, 5, 6], "s": [1]}, ["y"],
                   {"w": _x(3, 4, 3, 3), "t": _x(3, 2, 2, 2)})
    graph = _check_onnx(model, {"x": _x(1, 4, 5, 6), "s": np.array([0.5], np.float32)})
    conv = next(n for n in graph.nodes if n.optype == "nn.conv2d")
    assert len(conv.inputs) == 2 and "weight" not in conv.weights


def test_clip_from_onnx_is_one_clip_in_every_codegen() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    inits = {"w": _x(4, 3, 3, 3), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    model = _model(nodes, {"x": [1, 3, 6, 6]}, ["y"], inits, opset=13)
    graph = _check_onnx(model, {"x": _x(1, 3, 6, 6) * 4})
    assert "clip" in _optypes(graph) and not {"maximum", "minimum"} & _optypes(graph)
    graph, params = from_onnx(model)
    exported = to_onnx(graph, params)
    assert [n.op_type for n in exported.graph.node] == ["Conv", "Clip"]


def test_unsqueeze_of_a_constant_runs_in_every_codegen() -> None:
    """expand_dims whose operand is a constant (no graph input): the torch codegen took
    the operand's rank from an input it does not have (IndexError)."""
    from mscgym.compiler.graph_translator import from_relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            table = bb.emit(relax.op.expand_dims(relax.const(_x(3, 4)), [0]))
            out = bb.emit_output(relax.op.multiply(x, table))
        bb.emit_func_output(out)
    graph, params = from_relax(bb.get())
    node = next(n for n in graph.nodes if n.optype == "expand_dims")
    assert not node.inputs and node.args[0]["kind"] == "weight"
    value = _x(2, 3, 4)
    want = value * params[node.weights[node.args[0]["role"]].name][None]
    for runner, got in _run_everywhere(graph, params, [value]).items():
        _close(got, want, runner)


# --------------------------------------------------------------------------------------
# Names from files
# --------------------------------------------------------------------------------------
ODD_NAMES = ["fire2/squeeze1x1_w_0", "Constant@81", "p2o.helper.constant.136_1", "7_conv",
             "..a..b.", "forward", "graph.training", "x y;import os"]


def test_torch_codegen_accepts_names_from_files() -> None:
    nodes, inits = [], {}
    value = "x"
    for index, name in enumerate(ODD_NAMES):
        inits[name] = _x(4, 4, 1, 1)
        inits[f"{name}_b"] = _x(4)
        nodes.append(helper.make_node("Conv", [value, name, f"{name}_b"], [f"c{index}"],
                                      name=f"node {name}"))
        value = f"c{index}"
    model = _model(nodes, {"x": [1, 4, 3, 3]}, [value], inits)
    graph = _check_onnx(model, {"x": _x(1, 4, 3, 3)})
    graph, params = from_onnx(model)
    module = to_torch(graph, params)
    assert set(module.state_dict()) == set(params)
    aliases = {n.weight_alias["weight"] for n in graph.nodes if n.optype != "input"}
    assert aliases == set(ODD_NAMES)
    # Trained weights go back under the graph's names, and load back the same way.
    state = weights_from_torch(module)
    key = next(iter(state))
    state[key] = state[key] * 2
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    assert np.array_equal(module.state_dict()[key].numpy(), state[key])
    assert "import os" not in module.code


# --------------------------------------------------------------------------------------
# A segmentation-style net: float, int8 and pruned
# --------------------------------------------------------------------------------------
class _SegNet(nn.Module):
    """Encoder (strided convs), decoder (transposed conv, bilinear resize), per-pixel head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.fuse = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.enc1(x))
        y = F.relu(self.up(F.relu(self.enc2(skip))))
        y = F.relu(self.fuse(y + skip))
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(y)


@pytest.fixture(scope="module")
def segnet() -> tuple[onnx.ModelProto, np.ndarray]:
    torch.manual_seed(0)
    module = _SegNet().eval()
    x = torch.randn(2, 3, 16, 16)
    path_bytes = __import__("io").BytesIO()
    torch.onnx.export(module, (x,), path_bytes, input_names=["image"], output_names=["mask"],
                      opset_version=13, dynamo=False)
    return onnx.load_from_string(path_bytes.getvalue()), x.numpy()


def test_segmentation_net_matches_ort_in_every_codegen(segnet: Any) -> None:
    model, x = segnet
    graph = _check_onnx(model, {"image": x})
    assert {"image.resize2d", "msc.conv2d_transpose_bias"} <= _optypes(graph)


def test_segmentation_net_quantizes_and_prunes_to_graphs_that_run(segnet: Any) -> None:
    from mscgym.runtime.manager import RuntimeManager
    from mscgym.tools import MSC_TOOL, create_tool

    model, x = segnet
    want = _ort(model, {"image": x})[0]
    graph, params = from_onnx(model)

    rt = RuntimeManager(graph, params, {"runner": "onnxruntime"})
    quantizer = rt.create_tool(MSC_TOOL.QUANTIZE, {
        "weight": {"dtype": "int8", "per_channel": True, "symmetric": True},
        "activation": {"dtype": "uint8", "symmetric": False}})
    rt.load_model()
    while not quantizer.calibrated:
        for batch in (x, x[::-1].copy()):
            rt.run(batch)
        quantizer.calibrate()
    rt.load_model(reuse_weights=True)
    assert quantizer.quant_plan()
    quantized = rt.run(x)[0]
    err = np.abs(quantized - want).max() / np.abs(want).max()
    assert 0 < err < 0.1, f"int8 error {err:.3f} relative to the output's range"

    pruner = create_tool(MSC_TOOL.PRUNE, graph, params, {"density": 0.5})
    pruned, pruned_params = pruner.transform(graph, params)
    # enc2 feeds only the transposed conv, which loses the same input channels; fuse feeds
    # the head through the resize; enc1 and the transposed conv's output meet in a
    # residual add, which the transposed conv keeps whole.
    by_alias = {n.weight_alias.get("weight"): n.name for n in graph.nodes}
    enc2, up, fuse, head = (pruned.find_node(by_alias[f"{m}.weight"])
                            for m in ("enc2", "up", "fuse", "head"))
    assert sorted(pruner.prunable_layers()) == sorted([enc2.name, fuse.name])
    assert enc2.weights["weight"].shape[0] == up.weights["weight"].shape[0] == 8
    assert fuse.weights["weight"].shape[0] == head.weights["weight"].shape[1] == 4
    outs = _run_everywhere(pruned, pruned_params, [x])
    for runner in ("torch", "onnx"):
        _close(outs[runner], outs["tvm"], f"pruned on {runner}")


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------
def _new_op_models() -> dict[str, onnx.ModelProto]:
    conv_t = helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2],
                              pads=[1, 1, 1, 1], output_padding=[1, 1])
    nodes = [conv_t,
             helper.make_node("Resize", ["t", "", "scales"], ["r"], mode="linear"),
             helper.make_node("LRN", ["r"], ["l"], size=3),
             helper.make_node("Mul", ["k", "s"], ["ks"]),
             helper.make_node("Conv", ["l", "ks"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Dropout", ["c"], ["d"]),
             helper.make_node("Sum", ["d", "d", "c"], ["y"])]
    inits = {"w": _x(4, 3, 3, 3), "b": _x(3), "scales": np.array([1, 1, 2, 2], np.float32),
             "k": _x(5, 3, 3, 3), "s": np.array([0.5], np.float32)}
    return {"all-new-ops": _model(nodes, {"x": [1, 4, 5, 6]}, ["y"], inits, opset=13)}


def test_round_trip_of_new_ops_is_structurally_equal_and_serializes() -> None:
    import tvm_ffi
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    from mscgym.compiler.graph_translator import from_relax
    from mscgym.compiler.normalize import normalize

    model = _new_op_models()["all-new-ops"]
    mod, detached = relax.frontend.detach_params(relax_from_onnx(model,
                                                                 keep_params_in_input=True))
    names = [p.name for p in mod["main"].params[1:]]
    params = dict(zip(names, detached["main"], strict=True))
    graph, weights = from_relax(mod, params)
    assert {"msc.conv2d_transpose_bias", "image.resize2d", "nn.avg_pool3d", "stack",
            "nn.conv2d"} <= _optypes(graph)
    assert not any("dropout" in op for op in _optypes(graph))
    assert tvm_ffi.structural_equal(to_relax(graph, weights), normalize(mod, params))
    from mscgym.compiler.analysis import graph_summary

    layers = {layer["optype"]: layer for layer in graph_summary(graph)["layers"]}
    # Each of the 1*4*5*6 inputs is scattered over 3 output channels * 3x3 taps.
    assert layers["msc.conv2d_transpose_bias"]["macs"] == 120 * 27
    # The computed kernel (5, 3, 3, 3) over a 1x3x20x24 input, padded to keep 20x24.
    assert layers["nn.conv2d"]["macs"] == 5 * 20 * 24 * 27
    assert layers["image.resize2d"]["flops"] == 3 * 20 * 24 * 7
    again = MSCGraph.from_json(graph.to_json())
    assert again.to_json() == graph.to_json()
    x = _x(1, 4, 5, 6)
    want = _ort(model, {"x": x})[0]
    for runner, got in _run_everywhere(again, weights, [x]).items():
        _close(got, want, runner)
