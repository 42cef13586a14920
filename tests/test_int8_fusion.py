"""Full-integer QDQ: the Quantizer plans every activation ONNX Runtime needs integer, so its
optimized graph runs int8 kernels end to end; torch and TVM compute the deployed numbers.

The kernel counts come from the graph ONNX Runtime itself writes after its ORT_ENABLE_ALL
optimizations (``SessionOptions.optimized_model_filepath``); that file may hold contrib ops
(QLinearAdd, QLinearGlobalAveragePool), so only node op types are read from it.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mscgym import zoo
from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.manager import RuntimeManager, calibrate_quantizer
from mscgym.runtime.registry import create_runner
from mscgym.tasks.measure import batched
from mscgym.tools import MSC_TOOL, ToolConfigError
from mscgym.tools.losses import distill_loss
from mscgym.tools.quantizer import Quantizer, compose_plan, int8_layout, x86_int8_isa

FLOAT_KERNELS = ("Conv", "FusedConv", "Add", "Gemm", "FusedGemm", "MatMul")


@functools.cache
def digits(name: str):
    model = zoo.load(name)
    graph, params = from_torch(model.model, (model.eval_inputs[:2],))
    batches = [b.numpy() for b in model.calibration_batches(4, 32)]
    return model, graph, params, batches


def calibrated(name: str, config: dict) -> Quantizer:
    _, graph, params, batches = digits(name)
    return calibrate_quantizer(graph, params, config, batches)


def ort_optimized_ops(graph: MSCGraph, params, plan: QuantPlan, tmp_path) -> Counter[str]:
    """Op types of the graph ONNX Runtime runs (ORT_ENABLE_ALL) for our QDQ model."""
    path = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    model = to_onnx(graph, params, plan)
    ort.InferenceSession(model.SerializeToString(), options,
                         providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_digits_resnet_runs_int8_end_to_end_on_onnxruntime(tmp_path):
    quantizer = calibrated("digits-resnet", {})
    plan = quantizer.quant_plan()
    _, graph, params, _ = digits("digits-resnet")
    adds = [n.name for n in graph.nodes if n.optype == "add"]
    convs = [n.name for n in graph.nodes if n.optype == "msc.conv2d_bias"]
    # Both operands of every residual add are planned, in the ORT x86 form.
    for name in adds:
        layer = plan[name]
        assert layer.input is not None and layer.extra_inputs[0] is not None, name
    assert all(plan[c].input.dtype == "uint8" and plan[c].weight.dtype == "int8"
               and plan[c].weight.axis == 0 for c in convs)
    ops = ort_optimized_ops(graph, params, plan, tmp_path)
    assert not any(ops[k] for k in FLOAT_KERNELS), ops
    assert ops["QLinearConv"] == len(convs) and ops["QLinearAdd"] == len(adds), ops
    assert ops["QGemm"] == 1 and ops["QLinearGlobalAveragePool"] == 1, ops
    assert ops["DequantizeLinear"] <= 1 and ops["QuantizeLinear"] <= 2, ops


def test_strategy_records_every_planned_tensor_and_round_trips(tmp_path):
    quantizer = calibrated("digits-resnet", {})
    strategy = quantizer.strategy()
    add = strategy["layer1.0.add"]
    assert set(add) == {"input", "input1"}
    assert add["input"]["dtype"] == "uint8" and add["input"]["method"] == "minmax"
    # The last block's add feeds the global pool (no quantized consumer of its own
    # output), so it quantizes its output for QLinearGlobalAveragePool.
    assert "output" in strategy["layer2.1.add"]
    stats = quantizer.stats()["layer1.0.add"]
    assert stats["input"]["tensor"] == "layer1.0.conv2:0"
    assert stats["input1"]["tensor"] == "relu:0"
    path = quantizer.save_strategy(tmp_path / "q.json")
    _, graph, params, _ = digits("digits-resnet")
    loaded = Quantizer(graph, params, {})
    loaded.load_strategy(path)
    assert loaded.quant_plan() == quantizer.quant_plan()
    assert loaded.strategy() == strategy
    bad = {**strategy, "layer1.0.conv1": {**strategy["layer1.0.conv1"], "input3": add["input"]}}
    with pytest.raises(ToolConfigError, match=r"unknown keys \['input3'\]"):
        loaded.set_strategy(bad)


def test_a_skipped_conv_stays_float_on_onnxruntime_and_its_neighbours_stay_int8(tmp_path):
    name = "digits-resnet"
    model, graph, params, _ = digits(name)
    plan = calibrated(name, {"layers": {"layer1.0.conv2": {"skip": True}}}).quant_plan()
    assert "layer1.0.conv2" not in plan
    # ONNX Runtime would quantize a float conv between DQ and Q by itself
    # (WeightBiasQuantization): so nothing quantizes its output, and the add it feeds
    # stays float; the conv before it quantizes its own output instead.
    assert "layer1.0.add" not in plan and plan["layer1.0.conv1"].output is not None
    ops = ort_optimized_ops(graph, params, plan, tmp_path)
    assert ops["Conv"] + ops["FusedConv"] == 1 and ops["QLinearConv"] == 7, ops
    assert ops["QLinearAdd"] == 2, ops
    losses = deployed_losses(model, graph, params, plan, ("torch", "onnxruntime"))
    assert abs(losses["torch"] - losses["onnxruntime"]) < 1e-5, losses


def test_skipping_an_add_between_int8_neighbours_keeps_the_numbers_of_every_runner(tmp_path):
    """Its operands' producers quantize their outputs, so ONNX Runtime still forms a
    QLinearAdd; torch computes exactly that (the add reads quantized operands)."""
    name = "digits-resnet"
    model, graph, params, _ = digits(name)
    plan = calibrated(name, {"layers": {"layer1.0.add": {"skip": True}}}).quant_plan()
    assert "layer1.0.add" not in plan
    assert plan["layer1.0.conv2"].output is not None and plan["conv1"].output is not None
    losses = deployed_losses(model, graph, params, plan, ("torch", "onnxruntime"))
    assert abs(losses["torch"] - losses["onnxruntime"]) < 1e-5, losses


def deployed_losses(model, graph, params, plan, runners) -> dict[str, float]:
    """Distill loss against the float zoo model of ``plan`` built on each runner."""
    inputs = model.eval_inputs.numpy()
    with torch.no_grad():
        teacher = model.model(model.eval_inputs).numpy()
    losses = {}
    for kind in runners:
        runner = create_runner(kind)
        runner.build(graph, params, plan)
        losses[kind] = distill_loss(teacher, batched(lambda x, r=runner: r.run([x])[0], inputs))
    return losses


@pytest.mark.parametrize("name", ["digits-resnet", "digits-mobilenet", "digits-transformer"])
def test_torch_and_tvm_distill_loss_equal_the_deployed_onnxruntime_one(name):
    model, graph, params, _ = digits(name)
    plan = calibrated(name, {}).quant_plan()
    losses = deployed_losses(model, graph, params, plan, ("torch", "tvm", "onnxruntime"))
    assert losses["onnxruntime"] > 1e-7  # quantization did change the model
    assert abs(losses["torch"] - losses["onnxruntime"]) < 1e-5, losses
    assert abs(losses["tvm"] - losses["onnxruntime"]) < 1e-5, losses


def test_transformer_residual_adds_stay_float():
    """Its adds feed layer norms, which ONNX Runtime has no int8 kernel for: Q/DQ around
    them would buy nothing, so they are not planned."""
    _, graph, params, _ = digits("digits-transformer")
    quantizer = Quantizer(graph, params, {})
    adds = [n.name for n in graph.nodes if n.optype == "add" and len(n.inputs) == 2]
    assert adds and not any(a in quantizer.layers for a in adds)


class _Branches(nn.Module):
    """Two conv branches joined by a concat, then a squeeze-excite gate (mul by sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.squeeze = nn.Conv2d(16, 4, 1)
        self.excite = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        return torch.relu(self.head(y * gate)).mean((2, 3))


def test_concat_shares_one_scale_and_squeeze_excite_runs_int8(tmp_path):
    torch.manual_seed(0)
    module = _Branches().eval()
    batches = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    graph, params = from_torch(module, (batches[0],))
    quantizer = calibrate_quantizer(graph, params, {}, [b.numpy() for b in batches])
    plan = quantizer.quant_plan()
    concat = next(n.name for n in graph.nodes if n.optype == "concat")
    multiply = next(n.name for n in graph.nodes if n.optype == "multiply")
    assert plan[concat].input == plan[concat].extra_inputs[0]  # one shared scale
    assert plan[multiply].input is not None and plan[multiply].extra_inputs[0] is not None
    ops = ort_optimized_ops(graph, params, plan, tmp_path)
    assert ops["QLinearConcat"] == 1 and ops["QLinearMul"] == 1, ops
    assert ops["QLinearSigmoid"] == 1 and ops["QLinearConv"] == 5 and not ops["Conv"], ops
    x = batches[0].numpy()
    outputs = {}
    for kind in ("torch", "onnxruntime"):
        runner = create_runner(kind)
        runner.build(graph, params, plan)
        outputs[kind] = runner.run([x])[0]
    scale = np.abs(outputs["torch"]).max()
    np.testing.assert_allclose(outputs["onnxruntime"], outputs["torch"], atol=0.02 * scale)


def test_tensorrt_form_is_symmetric_int8_with_its_placement():
    quantizer = calibrated("digits-resnet", {"target": "tensorrt"})
    plan = quantizer.quant_plan()
    params = [p for layer in plan.values() for p in (*layer.activations().values(), layer.weight)
              if p is not None]
    assert all(p.dtype == "int8" and set(p.zero_point) == {0} for p in params)
    assert all(layer.output is None for layer in plan.values())
    # TensorRT fuses the add into the conv that makes its first operand: only the
    # residual (identity) operand gets Q/DQ.
    add = plan["layer1.0.add"]
    assert add.input is None and add.extra_inputs == (add.extra_inputs[0],)
    assert add.extra_inputs[0] is not None


def test_layout_and_isa_helpers():
    _, graph, _, _ = digits("digits-resnet")
    kernels = {n.name: True for n in graph.nodes if n.optype in ("msc.conv2d_bias",
                                                                  "msc.linear_bias")}
    generic = int8_layout(graph, kernels, "generic")
    assert all(set(roles) == {"input"} for roles in generic.values())
    layout = int8_layout(graph, kernels, "onnxruntime")
    assert {"layer1.0.add", "layer2.0.add", "layer2.1.add"} <= set(layout)
    # Without the classifier quantized, nothing after the last block stays integer.
    partial = int8_layout(graph, {k: v for k, v in kernels.items() if k != "fc"},
                          "onnxruntime")
    assert "layer2.1.add" not in partial and "output" in partial["layer2.1.conv2"]
    with pytest.raises(ToolConfigError, match="target 'cuda'"):
        int8_layout(graph, kernels, "cuda")
    flags = x86_int8_isa()
    assert isinstance(flags, list) and all(isinstance(f, str) for f in flags)


def test_plans_composed_from_one_calibration_pool_equal_direct_calibration():
    """What the gym does per plan: per-layer choices (a float layer, an entropy layer) from
    one pool that observed every candidate tensor, with no second pass over the data."""
    _, graph, params, batches = digits("digits-resnet")
    manager = RuntimeManager(graph, params, {"runner": "torch"})
    pool = manager.create_tool(MSC_TOOL.QUANTIZE, {})
    pool.watch_all()
    manager.load_model()
    while not pool.calibrated:
        for batch in batches:
            manager.run(batch)
        pool.calibrate()
    u8 = {"weight": {"dtype": "int8", "per_channel": True},
          "activation": {"dtype": "uint8", "method": "minmax"}}
    entropy = {"weight": {"dtype": "int8", "per_channel": True},
               "activation": {"dtype": "uint8", "method": "entropy"}}
    kernels = [n.name for n in graph.nodes if n.optype in ("msc.conv2d_bias", "msc.linear_bias")]
    layers = {name: u8 for name in kernels}
    layers["layer2.0.conv1"] = None
    layers["layer1.0.conv2"] = entropy
    composed = compose_plan(pool, layers, "onnxruntime")
    direct = calibrated("digits-resnet", {
        "target": "onnxruntime", "include": [], **u8,
        "layers": {k: v if v is not None else {"skip": True} for k, v in layers.items()}})
    assert composed == direct.quant_plan()
    # The add feeding the float layer stays float (its output does not stay integer).
    assert "layer2.0.conv1" not in composed and "layer1.0.add" not in composed
    assert "layer2.1.add" in composed
    assert composed["layer1.0.conv2"].input != composed["layer1.0.conv1"].input
    with pytest.raises(MSCError, match="watch_all"):
        Quantizer(graph, params, {}).calibrate_from(direct)
