"""ONNX codegen: float models match torch / TVM in ONNX Runtime, QDQ models run int8 kernels."""

from __future__ import annotations

import os
from collections import Counter
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import tvm
from onnx import helper
from torch import nn
from tvm import relax

from mscgym import zoo
from mscgym.compiler import (
    MSCGraph,
    MSCNode,
    MSCTensor,
    from_onnx,
    from_relax,
    from_torch,
    to_relax,
)
from mscgym.compiler.codegen.onnx_codegen import save_onnx, to_onnx
from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError, UnsupportedOpError
from mscgym.compiler.quant_spec import LayerQuant, QuantParams, QuantPlan

DIGITS = ["digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer"]
CPU = ["CPUExecutionProvider"]


@cache
def translated(name: str) -> tuple[zoo.ZooModel, MSCGraph, dict[str, np.ndarray]]:
    model = zoo.load(name)
    graph, params = from_torch(model.model, model.example_inputs)
    return model, graph, params


def session(model: onnx.ModelProto, level: ort.GraphOptimizationLevel | None = None,
            optimized_path: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if level is not None:
        options.graph_optimization_level = level
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), options, providers=CPU)


def run(sess: ort.InferenceSession, *inputs: np.ndarray) -> list[np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, inputs, strict=True)))


# -- float models ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIGITS)
def test_zoo_float_matches_torch(name: str) -> None:
    model, graph, params = translated(name)
    x = model.eval_inputs[:24]
    with torch.no_grad():
        expected = model.model(x).numpy()
    dynamic = to_onnx(graph, params)
    batch_dim = dynamic.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == graph.get_inputs()[0].shape[0]
    assert {i.name for i in dynamic.graph.initializer} >= set(params)
    np.testing.assert_allclose(run(session(dynamic), x.numpy())[0], expected, atol=1e-4)
    fixed = to_onnx(graph, params, batch=24)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 24
    np.testing.assert_allclose(run(session(fixed), x.numpy())[0], expected, atol=1e-4)


def test_resnet18_batch1_matches_torch() -> None:
    model = zoo.load("resnet18")
    graph, params = from_torch(model.model, model.example_inputs)
    x = model.eval_inputs[:1]
    with torch.no_grad():
        expected = model.model(x).numpy()
    out = run(session(to_onnx(graph, params, batch=1)), x.numpy())[0]
    np.testing.assert_allclose(out, expected, atol=1e-4)


class _ManyOps(nn.Module):
    """One module through most ops the torch frontend produces."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=(1, 2))
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)
        self.register_buffer("index", torch.tensor([0, 2, 1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.pool(F.relu(self.bn(self.dw(self.conv(x)))))
        pooled = F.avg_pool2d(y, 2, 2, 1, count_include_pad=False, ceil_mode=True).flatten(1)
        y = F.avg_pool2d(y, 3, 1, 1, ceil_mode=True)
        z = self.norm(y.mean(dim=(2, 3)))
        z = F.gelu(z) + F.gelu(z, approximate="tanh") + torch.sigmoid(z) - torch.tanh(z)
        z = torch.exp(-z.abs()) / (z.abs() + 1.0) + torch.sqrt(z.abs()) + torch.erf(z)
        z = z + torch.rsqrt(z.abs() + 1) - torch.log(z.abs() + 1)
        z = torch.clamp(z, -3, 3) ** 2.0 + torch.clamp(z, min=0.5) + F.relu6(z) + F.hardtanh(z)
        z = torch.maximum(z, -z) + torch.minimum(z, z * 0.5)
        a = F.adaptive_avg_pool2d(x, 4)
        w = torch.softmax(a, -1) + torch.log_softmax(a, 1)
        w = torch.cat([w, w[:, 1:3], w[:, ::2]], dim=1)
        w = torch.index_select(w, 1, self.index).flatten(1)
        v = y[:, :1].squeeze(1).unsqueeze(-1).permute(0, 3, 1, 2).reshape(y.shape[0], -1)
        h = self.fc(z).to(torch.float16).to(torch.float32)
        return pooled, h, w, v, w.sum(dim=1, keepdim=True)


def test_op_coverage_matches_torch() -> None:
    torch.manual_seed(0)
    module = _ManyOps().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2.0)
    graph, params = from_torch(module, (torch.randn(2, 3, 16, 16),))
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    for opset in (18, 21):  # Gelu is an op from opset 20, its erf/tanh formula before
        model = to_onnx(graph, params, opset=opset)
        assert ("Gelu" in {n.op_type for n in model.graph.node}) == (opset >= 20)
        for out, ref in zip(run(session(model), x.numpy()), expected, strict=True):
            np.testing.assert_allclose(out, ref, atol=1e-4)


def test_relax_ops_match_tvm() -> None:
    """Ops torch does not emit (take modes, batch norm off axis 1, broadcast_to, ...)."""
    rng = np.random.default_rng(0)

    def const(data: np.ndarray) -> relax.Expr:
        return relax.const(data)

    def stats(channels: int) -> list[relax.Expr]:
        return [const(rng.uniform(0.5, 1.5, channels).astype("float32")),
                const(rng.normal(size=channels).astype("float32")),
                const(rng.normal(size=channels).astype("float32")),
                const(rng.uniform(0.5, 2.0, channels).astype("float32"))]

    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 4, 6, 6], "float32"))
    kernel = relax.Var("k", relax.TensorType([4, 1, 3, 3], "float32"))
    indices = const(np.array([0, 5, -1, 9], "int64"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, kernel]):
        with bb.dataflow():
            y = bb.emit(relax.op.square(relax.op.nn.silu(x)))
            y = bb.emit(relax.TupleGetItem(relax.op.nn.batch_norm(
                y, *stats(4), axis=1, epsilon=1e-3, training=False), 0))
            y = bb.emit(relax.TupleGetItem(relax.op.nn.batch_norm(
                y, *stats(6), axis=3, epsilon=1e-3, training=False), 0))
            conv = bb.emit(relax.op.nn.conv2d(y, kernel, padding=[1, 0, 2, 1], groups=4))
            clipped = bb.emit(relax.op.take(conv, indices, axis=3, mode="clip"))
            wrapped = bb.emit(relax.op.take(conv, indices, axis=2, mode="wrap"))
            y = bb.emit(relax.op.squeeze(relax.op.expand_dims(clipped, [1, 5]), [1, 5]))
            bias = relax.op.broadcast_to(const(np.arange(4, dtype="float32").reshape(4, 1)),
                                         relax.ShapeExpr([n, 4, 7]))
            y = bb.emit(relax.op.add(bb.emit(bias), relax.op.sum(y, axis=[3])))
            y = bb.emit(relax.op.rsqrt(relax.op.abs(relax.op.flatten(y))))
            out = bb.emit_output(relax.Tuple([y, wrapped]))
        bb.emit_func_output(out)
    mod = bb.get()
    graph, params = from_relax(mod)
    assert {"take", "broadcast_to", "flatten", "msc.batch_norm", "nn.conv2d"} <= {
        node.optype for node in graph.nodes}
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    data = rng.normal(size=(3, 4, 6, 6)).astype("float32")
    weights = rng.normal(size=(4, 1, 3, 3)).astype("float32")
    expected = vm["main"](tvm.runtime.tensor(data), tvm.runtime.tensor(weights))
    outs = run(session(to_onnx(graph, params)), data, weights)
    for out, ref in zip(outs, expected, strict=True):
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)


def _node(name: str, optype: str, inputs: list[str], shapes: list[tuple], **fields) -> MSCNode:
    outputs = [MSCTensor(f"{name}:{i}", "float32", shape) for i, shape in enumerate(shapes)]
    args = fields.pop("args", [{"kind": "input", "index": i} for i in range(len(inputs))])
    return MSCNode(name, optype, inputs, outputs, args=args, **fields)


def test_hand_built_graph_paths() -> None:
    """A reshape whose target needs run-time shapes; concat, sum and take with axis=None."""
    a = MSCNode("a", "input", [], [MSCTensor("a", "float32", ("n", "m", 6))])
    nodes = [
        a,
        _node("head", "strided_slice", ["a"], [("n", "m", 2)], args=[
            {"kind": "input", "index": 0}, *({"kind": "tuple", "items": [
                {"kind": "prim", "dtype": "int64", "value": v}]} for v in (2, 0, 2))]),
        _node("swap", "reshape", ["a"], [("m", "n * 2", 3)],
              args=[{"kind": "input", "index": 0}, {"kind": "shape", "value": ["m", "n * 2", 3]}]),
        _node("total", "sum", ["a"], [()], attrs={"axis": None, "keepdims": False}),
        _node("joined", "concat", ["head:0", "swap:0"], [("n * m * 8",)],
              attrs={"axis": None},
              args=[{"kind": "tuple", "items": [{"kind": "input", "index": 0},
                                                {"kind": "input", "index": 1}]}]),
        _node("picked", "take", ["joined:0"], [(3,)], attrs={"axis": None, "mode": "fast"},
              args=[{"kind": "input", "index": 0}, {"kind": "weight", "role": "const1"}],
              weights={"const1": MSCTensor("picked.const1", "int64", (3,))}),
    ]
    graph = MSCGraph("hand", nodes, ["a"], ["swap:0", "total:0", "joined:0", "picked:0"])
    params = {"picked.const1": np.array([0, 7, -1], dtype=np.int64)}
    model = to_onnx(graph, params)
    assert "Shape" in {n.op_type for n in model.graph.node}  # swap's target is computed
    x = np.random.default_rng(1).normal(size=(3, 5, 6)).astype("float32")
    swap, total, joined, picked = run(session(model), x)
    np.testing.assert_array_equal(swap, x.reshape(5, 6, 3))
    np.testing.assert_allclose(total, x.sum(), rtol=1e-5)
    expected = np.concatenate([x[:, :, :2].ravel(), x.ravel()])
    np.testing.assert_array_equal(joined, expected)
    np.testing.assert_array_equal(picked, expected[[0, 7, -1]])
    static = to_onnx(graph, params, batch=3)
    assert "Shape" not in {n.op_type for n in static.graph.node}


def test_every_supported_op_has_an_emitter() -> None:
    from mscgym.compiler.codegen import onnx_codegen
    from mscgym.compiler.ops import SUPPORTED_OPS

    assert {op.removeprefix("relax.") for op in SUPPORTED_OPS} <= set(onnx_codegen._EMITTERS)


# -- the ONNX frontend ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits-resnet", "digits-transformer", "digits-mobilenet"])
def test_from_onnx_of_torch_export_matches_ort(name: str, tmp_path: str) -> None:
    model = zoo.load(name)
    path = os.path.join(tmp_path, f"{name}.onnx")
    torch.onnx.export(model.model, (model.eval_inputs[:2],), path, dynamo=False,
                      opset_version=18, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    graph, params = from_onnx(path)
    vm = relax.VirtualMachine(tvm.compile(to_relax(graph, params), target="llvm"), tvm.cpu())
    x = model.eval_inputs[:7].numpy()
    out = vm["main"](tvm.runtime.tensor(x))
    out = out if hasattr(out, "numpy") else out[0]
    expected = run(ort.InferenceSession(path, providers=CPU), x)[0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # and back out through the ONNX codegen
    np.testing.assert_allclose(run(session(to_onnx(graph, params)), x)[0], expected, atol=1e-4)


# -- quantization ---------------------------------------------------------------------------
def _layers(graph: MSCGraph) -> list[MSCNode]:
    return [n for n in graph.nodes if n.optype in ("msc.conv2d_bias", "msc.linear_bias")]


def minmax_plan(name: str, weight_dtype: str = "int8", act_dtype: str = "int8") -> QuantPlan:
    """Per-channel symmetric weights, per-tensor activations from calibration min/max."""
    model, graph, params = translated(name)
    layers = _layers(graph)
    probe = to_onnx(graph, params)
    for node in layers:
        probe.graph.output.append(helper.make_tensor_value_info(node.inputs[0],
                                                                onnx.TensorProto.FLOAT, None))
    sess = session(probe)
    low = {n.name: 0.0 for n in layers}
    high = {n.name: 0.0 for n in layers}
    for batch in model.calibration_batches():
        for node, value in zip(layers, run(sess, batch.numpy())[1:], strict=True):
            low[node.name] = min(low[node.name], float(value.min()))
            high[node.name] = max(high[node.name], float(value.max()))
    plan: QuantPlan = {}
    for node in layers:
        qmin, qmax = QuantParams(act_dtype, (1.0,), (0,)).qrange
        if qmin < 0:
            scale = max(-low[node.name], high[node.name]) / qmax
            act = QuantParams(act_dtype, (scale,), (0,))
        else:
            scale = (high[node.name] - low[node.name]) / (qmax - qmin)
            act = QuantParams(act_dtype, (scale,), (int(round(qmin - low[node.name] / scale)),))
        weight = params[node.weights["weight"].name]
        wmax = QuantParams(weight_dtype, (1.0,), (0,)).qrange[1]
        amax = np.maximum(np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1), 1e-8)
        plan[node.name] = LayerQuant(act, QuantParams(
            weight_dtype, tuple(float(a / wmax) for a in amax), (0,) * len(amax), 0))
    return plan


def fake_quant_reference(name: str, plan: QuantPlan, x: torch.Tensor) -> np.ndarray:
    _, graph, params = translated(name)
    with torch.no_grad():
        out = to_torch(graph, params, plan)(x)
    return (out[0] if isinstance(out, tuple) else out).numpy()


def test_int8_qdq_runs_int8_kernels_and_keeps_accuracy(tmp_path: str) -> None:
    model, graph, params = translated("digits-cnn")
    plan = minmax_plan("digits-cnn")
    quantized = to_onnx(graph, params, plan)
    inits = {i.name: i for i in quantized.graph.initializer}
    assert inits["conv1.weight_quantized"].data_type == onnx.TensorProto.INT8
    assert inits["conv1.bias_quantized"].data_type == onnx.TensorProto.INT32
    assert "conv1.weight" not in inits  # stored pre-quantized only

    optimized = os.path.join(tmp_path, "optimized.onnx")
    sess = session(quantized, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, optimized)
    kernels = Counter(n.op_type for n in onnx.load(optimized).graph.node)
    assert kernels["QLinearConv"] >= 2 and kernels["QGemm"] == 1

    float_sess = session(to_onnx(graph, params))
    float_acc = model.accuracy(lambda x: run(float_sess, x.numpy())[0])
    int8_acc = model.accuracy(lambda x: run(sess, x.numpy())[0])
    assert int8_acc >= float_acc - 0.01

    x = model.eval_inputs
    reference = fake_quant_reference("digits-cnn", plan, x)
    int8 = run(sess, x.numpy())[0]
    assert (int8.argmax(1) == reference.argmax(1)).mean() >= 0.98
    # Without int32 bias and kernel fusion the QDQ graph is the fake-quant reference, up to
    # rare rounding-boundary flips from float summation order.
    plain = session(to_onnx(graph, params, plan, quantize_bias=False),
                    ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    rows = np.abs(run(plain, x.numpy())[0] - reference).max(axis=1)
    assert (rows < 1e-3).mean() >= 0.98


def test_4bit_qdq_is_exact_fake_quant() -> None:
    model, graph, params = translated("digits-cnn")
    plan = minmax_plan("digits-cnn", weight_dtype="int4", act_dtype="uint4")
    quantized = to_onnx(graph, params, plan)
    inits = {i.name: i for i in quantized.graph.initializer}
    assert inits["conv2.weight_quantized"].data_type == onnx.TensorProto.INT4
    x = model.eval_inputs
    reference = fake_quant_reference("digits-cnn", plan, x)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        out = run(session(quantized, level), x.numpy())[0]
        assert (np.abs(out - reference).max(axis=1) < 1e-3).mean() >= 0.98
    with pytest.raises(MSCError, match="opset"):
        to_onnx(graph, params, plan, opset=18)


def test_shared_tensor_gets_one_qdq_pair_and_requantized_outputs_are_exact() -> None:
    model, graph, params = translated("digits-resnet")
    plan = minmax_plan("digits-resnet")
    quantized = to_onnx(graph, params, plan)
    shared = graph.find_node("layer2.0.conv1").inputs[0]
    assert shared == graph.find_node("layer2.0.downsample.0").inputs[0]
    quantizers = [n for n in quantized.graph.node if n.op_type == "QuantizeLinear"]
    assert sum(n.input[0] == shared for n in quantizers) == 1
    # layer1.0.conv1 -> relu -> layer1.0.conv2 is requantized on the conv output
    assert any(n.input[0] == "layer1.0.conv1:0" for n in quantizers)
    x = model.eval_inputs
    reference = fake_quant_reference("digits-resnet", plan, x)
    plain = session(to_onnx(graph, params, plan, quantize_bias=False),
                    ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    rows = np.abs(run(plain, x.numpy())[0] - reference).max(axis=1)
    assert (rows < 1e-3).mean() >= 0.98


def test_plan_errors_name_the_node() -> None:
    _, graph, params = translated("digits-mlp")
    params8 = QuantParams("int8", (0.1,), (0,))
    with pytest.raises(MSCError, match="'nope'"):
        to_onnx(graph, params, {"nope": LayerQuant(params8)})
    with pytest.raises(MSCError, match="'relu'"):
        to_onnx(graph, params, {"relu": LayerQuant(params8, params8)})
    with pytest.raises(MSCError, match="3 weight scales"):
        to_onnx(graph, params, {"fc1": LayerQuant(params8, QuantParams(
            "int8", (0.1, 0.1, 0.1), (0, 0, 0), 0))})


def test_residual_add_operands_and_fused_outputs_get_their_own_qdq() -> None:
    """``input1`` quantizes the add's second operand; ``output`` on a conv quantizes the
    tensor after its relu, read by every consumer (torch computes the same numbers)."""
    model, graph, params = translated("digits-resnet")
    first, second, out = (QuantParams("uint8", (s,), (z,)) for s, z in
                          ((0.05, 3), (0.04, 0), (0.03, 0)))
    plan = {"layer1.0.add": LayerQuant(first, extra_inputs=(second,)),
            "layer1.0.conv1": LayerQuant(output=out)}
    model_proto = to_onnx(graph, params, plan)
    nodes = {n.name: n for n in model_proto.graph.node}
    producers = {o: n for n in model_proto.graph.node for o in n.output}
    add = nodes["layer1.0.add"]
    assert [producers[i].op_type for i in add.input] == ["DequantizeLinear"] * 2
    relu_out = graph.find_node("layer1.0.relu").output.name
    consumers = [n for n in model_proto.graph.node if relu_out in n.input]
    assert [n.op_type for n in consumers] == ["QuantizeLinear"]
    x = model.eval_inputs[:4]
    module = to_torch(graph, params, plan)
    expected = module(x)
    expected = (expected[0] if isinstance(expected, tuple) else expected).detach().numpy()
    # Unoptimized: this hand-made plan leaves float convs between DQ and Q, which ORT's
    # optimizer would quantize by itself (the Quantizer never plans that).
    plain = session(model_proto, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_allclose(run(plain, x.numpy())[0], expected, atol=1e-4)
    with pytest.raises(MSCError, match="quantizes input 2 of node 'layer1.0.add'"):
        to_onnx(graph, params, {"layer1.0.add": LayerQuant(first, extra_inputs=(second,
                                                                                second))})


# -- errors and files -----------------------------------------------------------------------
def _with_node(graph: MSCGraph, node: MSCNode) -> MSCGraph:
    nodes = graph.clone().nodes
    return MSCGraph(graph.name, [*nodes, node], graph.input_names, [node.output.name])


def test_unsupported_ops_raise_naming_the_node() -> None:
    _, graph, params = translated("digits-cnn")
    last = graph.find_node("relu_2").output
    odd = MSCNode("head.odd", "nn.conv3d", [last.name],
                  [MSCTensor("head.odd:0", "float32", last.shape)],
                  args=[{"kind": "input", "index": 0}])
    with pytest.raises(UnsupportedOpError, match="head.odd") as err:
        to_onnx(_with_node(graph, odd), params)
    assert err.value.op == "nn.conv3d" and err.value.node == "head.odd"
    pool = MSCNode("head.pool", "nn.adaptive_avg_pool2d", [last.name],
                   [MSCTensor("head.pool:0", "float32", (*last.shape[:2], 3, 3))],
                   attrs={"output_size": [3, 3], "layout": "NCHW", "out_layout": "NCHW"},
                   args=[{"kind": "input", "index": 0}])
    with pytest.raises(UnsupportedOpError, match="head.pool"):
        to_onnx(_with_node(graph, pool), params)
    nhwc = graph.clone()
    nhwc.find_node("conv2").attrs["data_layout"] = "NHWC"
    with pytest.raises(UnsupportedOpError, match="conv2"):
        to_onnx(nhwc, params)


def test_save_onnx_writes_atomically(tmp_path: str) -> None:
    _, graph, params = translated("digits-mlp")
    model = to_onnx(graph, params)
    path = os.path.join(tmp_path, "mlp.onnx")
    save_onnx(model, path)
    save_onnx(model, path)
    assert os.listdir(tmp_path) == ["mlp.onnx"]
    assert onnx.load(path).SerializeToString() == model.SerializeToString()


def test_int8_plan_after_a_reshape_builds_on_onnxruntime() -> None:
    """ONNX Runtime 1.32 mis-infers QuantizeLinear types after a Reshape at opset 21, so
    the default opset is 20 unless the plan needs INT4."""
    from mscgym.runtime.manager import calibrate_quantizer, example_inputs

    class Reshaping(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(8, 8)
            self.c = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.relu(self.b(self.a(x).reshape(x.shape[0], 4, 8))))

    torch.manual_seed(0)
    graph, params = from_torch(Reshaping().eval(), (torch.randn(2, 16),))
    batches = [np.random.default_rng(i).standard_normal((8, 16)).astype(np.float32)
               for i in range(3)]
    plan = calibrate_quantizer(graph, params, {}, batches).quant_plan()
    model = to_onnx(graph, params, plan)
    assert model.opset_import[0].version == 20
    outputs = session(model).run(None, {graph.input_names[0]: example_inputs(graph, 3)[0]})
    assert outputs[0].shape == (3, 4, 4)
    int4 = {name: type(layer)(layer.input, type(layer.weight)("int4", (0.05,), (0,)))
            for name, layer in plan.items()}
    assert to_onnx(graph, params, int4).opset_import[0].version == 21
