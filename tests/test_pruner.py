"""Structured pruning makes the graph smaller for real and keeps it valid everywhere.

Every pruned graph is checked against the dense graph with the pruned channels
zeroed (weights, biases, per-channel constants): removing channels that carry only
zeros must not change a single output, so the two agree exactly. That pins down the
dependency analysis (residual adds, depthwise convs, concat, flatten) independently
of what pruning does to accuracy.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from mscgym import zoo
from mscgym.compiler.analysis import graph_summary
from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import to_relax
from mscgym.runtime.manager import RuntimeManager
from mscgym.tools import MSC_TOOL, ToolConfigError, create_tool
from mscgym.tools.pruner import Pruner

Params = dict[str, np.ndarray]


@functools.cache
def _zoo_graph(name: str) -> tuple[zoo.ZooModel, MSCGraph, Params]:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, (entry.eval_inputs[:2],))
    return entry, graph, params


def _tvm(graph: MSCGraph, params: Params):
    vm = relax.VirtualMachine(tvm.compile(to_relax(graph, params), target="llvm"), tvm.cpu())

    def run(x: np.ndarray | torch.Tensor) -> np.ndarray:
        data = x.numpy() if isinstance(x, torch.Tensor) else x
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(data)))
        return (out[0] if graph.return_tuple else out).numpy()

    return run


def _torch_fn(graph: MSCGraph, params: Params):
    module = to_torch(graph, params)

    def run(x: np.ndarray | torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.as_tensor(x))
        return (out[0] if isinstance(out, tuple) else out).numpy()

    return run


def _torch(graph: MSCGraph, params: Params, x: np.ndarray) -> np.ndarray:
    return _torch_fn(graph, params)(x)


def _onnxruntime(graph: MSCGraph, params: Params, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(to_onnx(graph, params).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {graph.input_names[0]: x})[0]


def _masked(pruner: Pruner, params: Params) -> Params:
    """Dense weights with every pruned channel's slice zeroed."""
    keep = {g["name"]: np.array(g["keep"]) for g in pruner.strategy()["groups"]}
    weights = pruner.graph.weight_tensors()
    masked = dict(params)
    for item in pruner.analysis.slices:
        if item.tensor not in weights:
            continue
        value = masked[item.tensor].copy()
        dropped = np.ones(value.shape[item.axis], dtype=bool)
        dropped[item.indices(keep)] = False
        index = [slice(None)] * value.ndim
        index[item.axis] = dropped
        value[tuple(index)] = 0
        masked[item.tensor] = value
    return masked


def _conv_params(graph: MSCGraph) -> int:
    return sum(t.numel() for n in graph.nodes if n.optype in ("msc.conv2d_bias", "nn.conv2d")
               for t in n.weights.values())


def _check_pruned(name: str, config: dict) -> tuple[Pruner, MSCGraph, Params]:
    """Prune a zoo model; the result must match the masked dense model (on torch) and
    keep 10 classes."""
    entry, graph, params = _zoo_graph(name)
    pruner = create_tool(MSC_TOOL.PRUNE, graph, params, config)
    pruned, pruned_params = pruner.transform(graph, params)
    assert pruned.get_outputs()[0].shape[1:] == graph.get_outputs()[0].shape[1:] == (10,)
    x = entry.eval_inputs[:16].numpy()
    expected = _torch(graph, _masked(pruner, params), x)
    np.testing.assert_allclose(_torch(pruned, pruned_params, x), expected, atol=1e-4, rtol=0)
    summary = pruner.summary()
    totals = graph_summary(pruned, pruned_params)["totals"]
    assert totals["params"] == summary["params"]["after"]
    accuracy = entry.accuracy(_torch_fn(pruned, pruned_params))
    print(f"\n{name} {config}: params x{summary['params']['ratio']:.3f}, "
          f"conv params x{summary['conv_params']['ratio']:.3f}, "
          f"FLOPs x{summary['flops']['ratio']:.3f}, accuracy without fine-tuning "
          f"{accuracy:.3f} (dense {entry.accuracy(entry.model):.3f})")
    return pruner, pruned, pruned_params


def test_resnet_half_density_is_smaller_and_agrees_on_torch_tvm_onnxruntime() -> None:
    entry, graph, params = _zoo_graph("digits-resnet")
    pruner, pruned, pruned_params = _check_pruned("digits-resnet", {"density": 0.5})
    ratio = _conv_params(pruned) / _conv_params(graph)
    print(f"digits-resnet conv params after/before: {ratio:.3f}")
    assert 0.2 <= ratio <= 0.6
    assert ratio == pytest.approx(pruner.summary()["conv_params"]["ratio"])
    x = entry.eval_inputs[:8].numpy()
    on_tvm = _tvm(pruned, pruned_params)(x)
    on_torch = _torch(pruned, pruned_params, x)
    on_ort = _onnxruntime(pruned, pruned_params, x)
    assert on_tvm.shape == (8, 10)
    np.testing.assert_allclose(on_torch, on_tvm, atol=1e-4, rtol=0)
    np.testing.assert_allclose(on_ort, on_tvm, atol=1e-4, rtol=0)


def test_density_one_is_the_identity() -> None:
    entry, graph, params = _zoo_graph("digits-resnet")
    pruner = Pruner(graph, params, {"density": 1.0})
    pruned, pruned_params = pruner.transform(graph, params)
    assert pruned.to_json() == graph.to_json()
    assert all(np.array_equal(pruned_params[k], params[k]) for k in params)
    x = entry.eval_inputs[:8].numpy()
    np.testing.assert_allclose(_tvm(pruned, pruned_params)(x), _tvm(graph, params)(x),
                               atol=1e-6, rtol=0)
    assert pruner.summary()["params"]["ratio"] == 1.0


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet"])
def test_cnn_and_mobilenet_prune_and_run(name: str) -> None:
    pruner, pruned, _ = _check_pruned(name, {"density": 0.5})
    assert pruner.summary()["params"]["ratio"] < 0.6
    for layer in pruner.analysis.depthwise:
        node = pruned.find_node(layer)
        assert node.attrs["groups"] == node.weights["weight"].shape[0] < \
            pruner.graph.find_node(layer).attrs["groups"]
    if name == "digits-mobilenet":
        assert pruner.analysis.depthwise, "mobilenet's depthwise convs follow their inputs"
        tied = [g for g in pruner.strategy()["groups"] if len(g["layers"]) > 1]
        assert tied, "residual adds tie producers into one group"


def test_global_params_budget_is_met_within_ten_percent() -> None:
    pruner, pruned, pruned_params = _check_pruned(
        "digits-resnet", {"mode": "global", "budget": {"params": 0.5}})
    ratio = pruner.summary()["params"]["ratio"]
    assert abs(ratio - 0.5) <= 0.05
    densities = {g["density"] for g in pruner.strategy()["groups"]}
    assert len(densities) > 1, "global mode allots different densities to groups"


def test_transformer_prunes_only_its_mlp_hidden_dims() -> None:
    pruner, pruned, _ = _check_pruned("digits-transformer", {"density": 0.5})
    groups = pruner.strategy()["groups"]
    assert sorted(g["name"] for g in groups) == ["layers.0.mlp.fc1", "layers.1.mlp.fc1"]
    assert all(len(g["keep"]) == 64 for g in groups)
    assert pruned.find_node("layers.0.mlp.fc2").weights["weight"].shape == (32, 64)


class _BranchNet(nn.Module):
    """Concat along channels, a per-channel constant, and flatten into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(1, 6, 3, padding=1)
        self.right = nn.Conv2d(1, 10, 3, padding=1)
        self.shift = nn.Parameter(torch.linspace(-1, 1, 16).reshape(1, 16, 1, 1))
        self.mix = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1) + self.shift
        return self.fc(torch.flatten(torch.relu(self.mix(y)), 1))


def test_concat_constant_and_flatten_follow_the_kept_channels() -> None:
    torch.manual_seed(0)
    model = _BranchNet().eval()
    x = torch.randn(4, 1, 8, 8)
    graph, params = from_torch(model, (x,))
    pruner = Pruner(graph, params, {"density": 0.5, "norm": "l2"})
    pruned, pruned_params = pruner.transform(graph, params)
    assert {g["name"] for g in pruner.strategy()["groups"]} == {"left", "right", "mix"}
    assert pruned.find_node("mix").weights["weight"].shape == (4, 8, 3, 3)
    assert pruned.find_node("fc").weights["weight"].shape == (10, 4 * 16)
    data = x.numpy()
    expected = _tvm(graph, _masked(pruner, params))(data)
    np.testing.assert_allclose(_tvm(pruned, pruned_params)(data), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(_torch(pruned, pruned_params, data), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(_onnxruntime(pruned, pruned_params, data), expected, atol=1e-5,
                               rtol=0)


def test_strategy_round_trip_gives_the_identical_graph(tmp_path) -> None:
    _, graph, params = _zoo_graph("digits-mobilenet")
    first = Pruner(graph, params, {"mode": "global", "budget": {"flops": 0.6}, "round_to": 2})
    path = first.save_strategy(tmp_path / "prune.json")
    document = json.loads((tmp_path / "prune.json").read_text())
    assert document["tool"] == "prune"
    group = document["strategy"]["groups"][0]
    assert set(group) == {"name", "layers", "channels", "density", "keep"}
    assert all(len(g["keep"]) % 2 == 0 for g in document["strategy"]["groups"])
    second = Pruner(graph, params, {"density": 0.9, "norm": "l2"})
    second.load_strategy(path)
    expected_graph, expected_params = first.transform(graph, params)
    graph_b, params_b = second.transform(graph, params)
    assert graph_b.to_json() == expected_graph.to_json()
    assert all(np.array_equal(params_b[k], expected_params[k]) for k in expected_params)
    assert second.strategy()["groups"] == first.strategy()["groups"]


def test_runtime_manager_runs_the_pruned_model_and_reuses_tuned_weights() -> None:
    entry, graph, params = _zoo_graph("digits-cnn")
    rt = RuntimeManager(graph, params, {"runner": "torch"})
    pruner = rt.create_tool(MSC_TOOL.PRUNE, {"density": 0.5})
    rt.load_model()
    assert rt.graph.find_node("conv2").weights["weight"].shape == (16, 8, 3, 3)
    x = entry.eval_inputs[:4].numpy()
    first = rt.run(x)[0]
    pruned, pruned_params = pruner.transform(graph, params)
    np.testing.assert_allclose(first, _torch(pruned, pruned_params, x), atol=1e-5, rtol=0)
    # Weights fine-tuned on the pruned model (here: scaled) come back in pruned shapes;
    # reloading must keep them as they are instead of slicing them again.
    tuned = {k: v * 1.01 if k == "fc.bias" else v for k, v in rt.params.items()}
    rt.update_weights(tuned)
    rt.load_model(reuse_weights=True)
    assert rt.graph.to_json() == pruned.to_json()
    np.testing.assert_allclose(rt.run(x)[0], _torch(pruned, tuned, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("config", "key"), [
    ({"density": 0}, "density"),
    ({"density": 1.5}, "density"),
    ({"layers": {"no.such.layer": {"density": 0.5}}}, "layers"),
    ({"layers": {"conv2": {"density": 0.0}}}, "layers.conv2"),
    ({"layers": {"fc": {"density": 0.5}}}, "layers"),
    ({"norm": "l3"}, "norm"),
    ({"mode": "local"}, "mode"),
    ({"budget": {"params": 0.5}}, "budget"),
    ({"mode": "global", "budget": {"latency": 0.5}}, "budget"),
    ({"round_to": 0}, "round_to"),
    ({"sparsity": 0.5}, "sparsity"),
])
def test_bad_config_names_the_key(config: dict, key: str) -> None:
    _, graph, params = _zoo_graph("digits-cnn")
    with pytest.raises(ToolConfigError, match=key.replace(".", r"\.")):
        Pruner(graph, params, config)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda g: g.update(layers=["nope"]), "unknown layer 'nope'"),
    (lambda g: g.update(keep=[0, 99]), r"out of range \[0, 16\)"),
    (lambda g: g.update(keep=[]), "non-empty"),
    (lambda g: g.update(keep=[1, 1]), "repeat"),
    (lambda g: g.update(layers=["fc"]), "cannot be pruned"),
])
def test_set_strategy_rejects_bad_groups(edit, message: str) -> None:
    _, graph, params = _zoo_graph("digits-cnn")
    pruner = Pruner(graph, params, {"density": 0.5})
    strategy = pruner.strategy()
    edit(strategy["groups"][0])
    with pytest.raises(ToolConfigError, match=message):
        pruner.set_strategy(strategy)


def _accuracy(graph: MSCGraph, params: Params, entry: zoo.ZooModel) -> float:
    inputs, labels = entry.test_data
    logits = _torch(graph, params, inputs.numpy())
    return float((logits.argmax(axis=1) == labels.numpy()).mean())


def _recalibrated(graph: MSCGraph, params: Params, entry: zoo.ZooModel,
                  density: float) -> Pruner:
    """A recalibrating pruner calibrated in MSC's loop on training images."""
    from mscgym.runtime.manager import calibrate_tool

    pruner = Pruner(graph, params, {"density": density, "recalibrate": True})
    train = entry.train_data[0].numpy()
    calibrate_tool(pruner, [train[i:i + 64] for i in range(0, 256, 64)])
    return pruner


def test_recalibration_restores_what_magnitude_pruning_of_a_residual_network_loses() -> None:
    """Pruning a BN-folded residual network shifts every later layer's statistics;
    putting them back per channel (adaptive BN) recovers most of the accuracy with no
    training, and the corrections live in the strategy, so a strategy file alone gives
    the same weights."""
    entry, graph, params = _zoo_graph("digits-resnet")
    dense = _accuracy(graph, params, entry)
    plain = _accuracy(*Pruner(graph, params, {"density": 0.7}).transform(graph, params), entry)
    pruner = _recalibrated(graph, params, entry, 0.7)
    assert pruner.calibrated and not pruner.watched_tensors()
    pruned, pruned_params = pruner.transform(graph, params)
    recalibrated = _accuracy(pruned, pruned_params, entry)
    print(f"digits-resnet density 0.7: dense {dense:.3f}, pruned {plain:.3f}, "
          f"recalibrated {recalibrated:.3f}")  # 0.997, 0.161, 0.825 when written
    assert plain < 0.5
    assert recalibrated > plain + 0.4

    strategy = json.loads(json.dumps(pruner.strategy()))
    assert set(strategy["recalibration"]) >= {"fc"}
    replayed = Pruner(graph, params, {"density": 1.0, "recalibrate": True})
    assert not replayed.calibrated
    replayed.set_strategy(strategy)
    assert replayed.calibrated
    again, again_params = replayed.transform(graph, params)
    assert again.to_json() == pruned.to_json()
    for name, value in pruned_params.items():
        np.testing.assert_array_equal(again_params[name], value)
    # weights already of the pruned shapes (fine-tuned) pass through uncorrected
    _, through = pruner.transform(graph, pruned_params)
    for name, value in pruned_params.items():
        np.testing.assert_array_equal(through[name], value)


def test_recalibrating_pruner_waits_for_calibration() -> None:
    _, graph, params = _zoo_graph("digits-resnet")
    pruner = Pruner(graph, params, {"density": 0.5, "recalibrate": True})
    assert not pruner.calibrated
    assert graph.input_names[0] in pruner.watched_tensors()
    same, same_params = pruner.transform(graph, params)
    assert same is graph and same_params is params
    with pytest.raises(MSCError, match="before any calibration batch"):
        pruner.calibrate()


def test_pruners_of_one_graph_share_the_float_observation() -> None:
    """The float model's statistics do not depend on what is pruned: a second pruner
    calibrated from the first one's observation gets exactly the corrections it would
    have computed by running the calibration batches itself; an observation of another
    graph is refused."""
    entry, graph, params = _zoo_graph("digits-resnet")
    first = _recalibrated(graph, params, entry, 0.7)
    observed = first.float_observation
    assert observed is not None and observed.inputs
    own = _recalibrated(graph, params, entry, 0.5)
    shared = Pruner(graph, params, {"density": 0.5, "recalibrate": True})
    shared.calibrate_from(observed)
    assert shared.calibrated
    assert shared.strategy() == own.strategy()
    with pytest.raises(MSCError, match="needs a recalibrating pruner"):
        shared.calibrate_from(observed)
    _, cnn, cnn_params = _zoo_graph("digits-cnn")
    with pytest.raises(MSCError, match="recalibrates"):
        Pruner(cnn, cnn_params, {"density": 0.5, "recalibrate": True}).calibrate_from(observed)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.update(nope={"scale": [1.0], "shift": [0.0]}), "'nope' is not a conv"),
    (lambda r: r["fc"].update(scale=[1.0]), r"fc.scale: 1 values for 10 kept"),
    (lambda r: r["fc"].pop("shift"), "shift"),
])
def test_set_strategy_rejects_bad_recalibration(edit, message: str) -> None:
    entry, graph, params = _zoo_graph("digits-resnet")
    strategy = _recalibrated(graph, params, entry, 0.5).strategy()
    edit(strategy["recalibration"])
    with pytest.raises(ToolConfigError, match=message):
        Pruner(graph, params, {"density": 0.5}).set_strategy(strategy)


def test_recalibration_follows_depthwise_convs_through_their_input_group() -> None:
    """A depthwise conv keeps the channels of the group feeding it; its correction has
    one entry per kept channel and the recalibrated model runs."""
    entry, graph, params = _zoo_graph("digits-mobilenet")
    pruner = _recalibrated(graph, params, entry, 0.5)
    pruned, pruned_params = pruner.transform(graph, params)
    depthwise = [n for n in pruned.nodes if n.optype == "msc.conv2d_bias"
                 and int(n.attrs.get("groups", 1)) > 1]
    assert depthwise
    for node in depthwise:
        correction = pruner.strategy()["recalibration"][node.name]
        assert len(correction["scale"]) == node.output.shape[1]
    assert _accuracy(pruned, pruned_params, entry) > 0.1
