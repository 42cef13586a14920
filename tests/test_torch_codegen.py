"""MSCGraph -> torch.fx module: same numbers as torch eager and TVM, trainable, fake-quantized."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax
from tvm.relax import op as R

from mscgym import zoo
from mscgym.compiler import MSCError, MSCGraph, UnsupportedOpError, from_relax, from_torch
from mscgym.compiler.codegen import FakeQuantize, to_torch, weights_from_torch
from mscgym.compiler.quant_spec import LayerQuant, QuantParams, QuantPlan

DIGITS = ["digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer"]
QUANTIZABLE = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias")


@functools.cache
def _translated(name: str) -> tuple[zoo.ZooModel, MSCGraph, dict[str, np.ndarray]]:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs)
    return entry, graph, params


def _first(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, tuple) else outputs


def _assert_trainable(module: nn.Module, x: torch.Tensor) -> None:
    module.zero_grad()
    _first(module(x)).square().mean().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())


# --------------------------------------------------------------------------------------
# Zoo models: equal to eager, state_dict in graph naming, gradients
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*DIGITS, "resnet18", "mobilenetv2"])
def test_zoo_model_matches_eager_and_trains(name: str) -> None:
    entry, graph, params = _translated(name)
    module = to_torch(graph, params)
    x = entry.test_data[0] if entry.test_data is not None else entry.example_inputs[0]
    with torch.no_grad():
        expected = entry.model(x)
        actual = module(x)
    assert isinstance(actual, tuple) == graph.return_tuple
    assert (_first(actual) - expected).abs().max().item() <= 1e-4
    assert set(module.state_dict()) == set(params)
    assert all(isinstance(p, nn.Parameter) and p.dtype == torch.float32
               for p in module.parameters())
    returned = weights_from_torch(module)
    assert all(np.array_equal(returned[k], params[k]) for k in params)
    _assert_trainable(module, x[:4])


def test_trained_weights_go_back_into_the_graph() -> None:
    entry, graph, params = _translated("digits-mlp")
    module = to_torch(graph, params)
    inputs, labels = entry.test_data
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    F.cross_entropy(_first(module(inputs[:64])), labels[:64]).backward()
    optimizer.step()
    trained = weights_from_torch(module)
    assert any(not np.array_equal(trained[k], params[k]) for k in params)
    rebuilt = to_torch(graph, trained)
    with torch.no_grad():
        assert torch.equal(_first(rebuilt(inputs)), _first(module(inputs)))


# --------------------------------------------------------------------------------------
# Ops the zoo does not use
# --------------------------------------------------------------------------------------
class _ManyOps(nn.Module):
    """Activations, slicing, concat, norms, pools, attention-style matmuls, flatten."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.ceil = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(16)
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16 * 9, 5)
        self.register_buffer("order", torch.tensor([2, 0, 1]))
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.stem(x.index_select(1, self.order))
        a, b = F.relu6(y)[:, :4], F.hardswish(y)[:, 4:]
        y = torch.cat([F.silu(a) + F.gelu(b), torch.sigmoid(a) * torch.tanh(b),
                       F.gelu(a, approximate="tanh"), y[:, 1:8:2].abs()], dim=1)
        y = self.avg(self.pool(self.bn(torch.relu(y))))
        y = self.ceil(y[:, :, :3, :3] - 0.5)
        t = self.norm(y.flatten(2).transpose(1, 2))
        attention = torch.softmax(self.proj(t) @ t.transpose(-2, -1) / 4.0, dim=-1)
        t = attention @ t + F.log_softmax(t, dim=-1).exp()
        t = torch.cat([
            t, t.mean(dim=1, keepdim=True).abs().sqrt().square(),
            (t - 1.0).abs().mean(1, keepdim=True), t.sum(1, keepdim=True).neg(),
            torch.maximum(t[:, :1], t[:, 1:2]) ** 2,
            torch.minimum(t[:, 2:3], t[:, 3:4]).unsqueeze(1).squeeze(1),
        ], dim=1)
        pooled = F.adaptive_avg_pool2d(y, (1, 1)).flatten(1)
        return self.head(torch.flatten(t.permute(0, 2, 1), 1)), pooled


def test_many_ops_module_matches_eager_at_another_batch() -> None:
    model = _ManyOps().eval()
    graph, params = from_torch(model, (torch.randn(2, 3, 8, 8),))
    module = to_torch(graph, params)
    assert set(module.state_dict()) == set(params)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        expected, actual = model(x), module(x)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert (got - want).abs().max().item() <= 1e-4
    _assert_trainable(module, x)


def _relax_only_ops() -> tvm.IRModule:
    """Relax calls no torch model exported to Relax produces (reductions, asymmetric pads...)."""
    rng = np.random.default_rng(0)

    def const(*shape: int) -> relax.Expr:
        return relax.const(rng.standard_normal(shape).astype("float32"))

    x = relax.Var("x", relax.TensorType([2, 4, 5, 5], "float32"))
    calls = [
        R.max(x, [1, 2]), R.min(x, None, keepdims=True), R.sum(x, [-1]), R.mean(x),
        R.squeeze(R.expand_dims(x, [0, -1])),
        R.strided_slice(x, [1, 3], [3, -1], [-100, 0], [-2, -1]),
        R.strided_slice(x, [2], [1], [100], [2]),
        R.take(x, relax.const(np.array([[0, 7], [-1, 3]], "int64")), 1, mode="clip"),
        R.take(R.flatten(x), relax.const(np.array([0, 7, 101, -3], "int64")), None, mode="wrap"),
        R.concat([R.flatten(x), R.flatten(x)], 0), R.permute_dims(x), R.clip(x, -1.0e30, 0.5),
        R.astype(R.astype(x, "float16"), "float32"),
        R.nn.conv2d(x, const(6, 2, 3, 3), strides=2, padding=[0, 1, 2, 1], groups=2),
        R.nn.conv2d(x, const(4, 4, 2, 2), padding=[1, 0, 0, 1], dilation=2),
        R.nn.max_pool2d(x, 2, 2, padding=[1, 0, 0, 1]),
        R.nn.max_pool2d(x, 2, 2, padding=1, ceil_mode=True),
        R.nn.max_pool2d(x, 3, 2, padding=1, dilation=2, ceil_mode=True),
        R.nn.max_pool2d(x, 2, 2, padding=[0, 1, 0, 0], ceil_mode=True),
        R.nn.max_pool2d(x, 3, 1, padding=2), R.nn.max_pool2d(x, 2, 1, padding=[2, 2, 0, 0]),
        R.nn.avg_pool2d(x, 3, 2, padding=[1, 1, 0, 0], count_include_pad=False),
        R.nn.avg_pool2d(x, 3, 2, padding=[1, 1, 0, 0], count_include_pad=True),
        R.nn.avg_pool2d(x, 2, 2, padding=[0, 1, 0, 0], ceil_mode=True, count_include_pad=True),
        R.nn.avg_pool2d(x, 2, 2, padding=[0, 1, 0, 0], ceil_mode=True, count_include_pad=False),
        R.nn.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        R.nn.adaptive_avg_pool2d(x, [3, 2]),
        R.nn.layer_norm(x, const(5, 5), const(5, 5), [-2, -1], epsilon=1e-3),
        R.nn.layer_norm(x, const(5), const(5), [3], center=False),
        R.erf(x), R.rsqrt(R.abs(x)), R.log(R.square(x)), R.nn.log_softmax(x, 1),
        R.nn.softmax(x, 2), R.matmul(x, const(5, 3)), R.power(R.abs(x), const()),
        R.broadcast_to(R.mean(x, [1], keepdims=True), [2, 3, 5, 5]),
    ]
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.Tuple([bb.emit(call) for call in calls]))
        bb.emit_func_output(out)
    return bb.get()


def test_relax_only_ops_match_tvm() -> None:
    mod = _relax_only_ops()
    graph, params = from_relax(mod)
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype("float32")
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    expected = [t.numpy() for t in vm["main"](tvm.runtime.tensor(x))]
    with torch.no_grad():
        actual = [t.numpy() for t in to_torch(graph, params)(torch.from_numpy(x))]
    for name, got, want in zip(graph.output_names, actual, expected, strict=True):
        node = graph.find_producer(name)
        assert got.shape == want.shape, f"{node.name} ({node.optype})"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4,
                                   err_msg=f"{node.name} ({node.optype})")


# --------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------
def _input_params(data: np.ndarray) -> QuantParams:
    low, high = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero = int(np.clip(np.round(-128 - low / scale), -128, 127))
    return QuantParams("int8", (scale,), (zero,))


def _weight_params(weight: np.ndarray) -> QuantParams:
    peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    scales = tuple(float(s) for s in np.maximum(peak, 1e-8) / 127.0)
    return QuantParams("int8", scales, (0,) * len(scales), axis=0)


def _minmax_plan(graph: MSCGraph, params: dict[str, np.ndarray],
                 calibration: torch.Tensor) -> QuantPlan:
    """Per-channel int8 weights and per-tensor int8 inputs on every conv/linear layer."""
    layers = [n for n in graph.nodes if n.optype in QUANTIZABLE]
    probe = graph.to_json()
    probe["outputs"] = [n.inputs[0] for n in layers]
    probe["return_tuple"] = True
    with torch.no_grad():
        seen = to_torch(MSCGraph.from_json(probe), params)(calibration)
    return {node.name: LayerQuant(_input_params(data.numpy()),
                                  _weight_params(params[node.weight_name("weight")]))
            for node, data in zip(layers, seen, strict=True)}


def test_fake_quantize_is_bit_exact_with_the_reference() -> None:
    rng = np.random.default_rng(0)
    per_tensor = QuantParams("int8", (0.05,), (3,))
    ties = (np.arange(-140, 140) + 0.5).astype(np.float32) * np.float32(0.05)
    data = np.concatenate([rng.standard_normal(20000).astype(np.float32) * 4, ties])
    x = torch.from_numpy(data).requires_grad_()
    out = FakeQuantize(per_tensor, 1)(x)
    assert np.array_equal(out.detach().numpy(), per_tensor.fake_quant(data))
    out.sum().backward()
    levels = np.round(data / np.float32(0.05)) + 3
    inside = (levels >= -128) & (levels <= 127)
    assert inside.sum() and (~inside).sum()
    assert np.array_equal(x.grad.numpy() == 1, inside)
    per_channel = QuantParams("uint4", (0.1, 0.02, 0.3), (8, 0, 15), axis=1)
    block = rng.standard_normal((4, 3, 5)).astype(np.float32)
    got = FakeQuantize(per_channel, 3)(torch.from_numpy(block)).numpy()
    assert np.array_equal(got, per_channel.fake_quant(block))


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.Linear(12, 7)])
def test_quantized_layer_matches_numpy_reference(layer: nn.Module) -> None:
    torch.manual_seed(0)
    shape = (4, 3, 8, 8) if isinstance(layer, nn.Conv2d) else (4, 12)
    x = torch.randn(*shape)
    graph, params = from_torch(layer.eval(), (x,))
    (node,) = [n for n in graph.nodes if n.optype in QUANTIZABLE]
    plan = _minmax_plan(graph, params, x)
    module = to_torch(graph, params, plan)
    assert set(module.state_dict()) == set(params)
    with torch.no_grad():
        actual = _first(module(x))
    spec = plan[node.name]
    qx = torch.from_numpy(spec.input.fake_quant(x.numpy()))
    qw = torch.from_numpy(spec.weight.fake_quant(params[node.weight_name("weight")]))
    bias = torch.from_numpy(params[node.weight_name("bias")])
    if isinstance(layer, nn.Conv2d):
        expected = F.conv2d(qx, qw, bias, stride=2, padding=1)
    else:
        expected = F.linear(qx, qw, bias)
    assert torch.equal(actual, expected)
    with torch.no_grad():
        assert not torch.allclose(actual, layer(x), atol=1e-6), "quantization had no effect"


def test_quantized_digits_cnn_keeps_accuracy_and_trains() -> None:
    entry, graph, params = _translated("digits-cnn")
    plan = _minmax_plan(graph, params, torch.cat(entry.calibration_batches(4, 64)))
    assert len(plan) == 4
    module = to_torch(graph, params, plan)
    assert set(module.state_dict()) == set(params)
    float_acc = entry.accuracy(entry.model)
    quant_acc = entry.accuracy(lambda x: _first(module(x)))
    assert quant_acc >= float_acc - 0.02
    _assert_trainable(module, entry.test_data[0][:16])


def test_quant_plan_errors_name_the_node() -> None:
    _, graph, params = _translated("digits-cnn")
    spec = LayerQuant(QuantParams("int8", (0.1,), (0,)), None)
    with pytest.raises(MSCError, match="no_such_layer"):
        to_torch(graph, params, {"no_such_layer": spec})
    with pytest.raises(MSCError, match="'relu'.*no 'weight'"):
        to_torch(graph, params, {"relu": LayerQuant(None, spec.input)})


# --------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------
def test_unsupported_optype_names_the_node() -> None:
    _, graph, params = _translated("digits-cnn")
    edited = graph.clone()
    edited.find_node("relu_1").optype = "nn.fancy_activation"
    with pytest.raises(UnsupportedOpError, match="relu_1") as err:
        to_torch(edited, params)
    assert err.value.node == "relu_1"
    assert err.value.op == "nn.fancy_activation"


@pytest.mark.parametrize("bad", ["a.b c", "..evil", "fc.", "x.forward", "fc.if", "graph",
                                 'fc");import os#', "conv-1"])
def test_node_names_from_files_get_safe_attribute_paths(bad: str) -> None:
    _, graph, params = _translated("digits-mlp")
    data = graph.to_json()
    node = next(n for n in data["nodes"] if n["weights"])
    node["name"] = bad
    module = to_torch(MSCGraph.from_json(data), params)
    assert set(module.state_dict()) == set(params)
    assert "import os" not in module.code
