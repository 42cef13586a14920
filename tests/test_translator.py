"""torch -> MSCGraph -> Relax -> TVM matches torch eager for every zoo model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax

from mscgym import zoo
from mscgym.compiler import UnsupportedOpError, from_relax, from_torch, normalize, to_relax

DIGITS = ["digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer"]


def _build(mod: tvm.IRModule) -> relax.VirtualMachine:
    return relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())


def _run(vm: relax.VirtualMachine, x: torch.Tensor) -> np.ndarray:
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    return out[0].numpy()


@pytest.mark.parametrize("name", DIGITS)
def test_digits_model_on_tvm_matches_torch(name: str) -> None:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs)
    vm = _build(to_relax(graph, params))
    inputs, _ = entry.test_data
    with torch.no_grad():
        expected = entry.model(inputs).numpy()
    actual = _run(vm, inputs)
    assert np.abs(actual - expected).max() <= 1e-4
    torch_acc = entry.accuracy(entry.model)
    tvm_acc = entry.accuracy(lambda x: _run(vm, x))
    assert torch_acc >= 0.95
    assert tvm_acc == torch_acc


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_imagenet_model_on_tvm_matches_torch(name: str) -> None:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs)
    summary = graph.inspect()
    assert summary["optypes"]["msc.conv2d_bias"] == sum(
        isinstance(m, torch.nn.Conv2d) for m in entry.model.modules())
    assert "msc.batch_norm" not in summary["optypes"], "every BN follows a conv and is folded"
    vm = _build(to_relax(graph, params))
    x = entry.eval_inputs[:1]
    with torch.no_grad():
        expected = entry.model(x).numpy()
    assert np.abs(_run(vm, x) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("name", [*DIGITS, "resnet18"])
def test_round_trip_is_structurally_equal_to_normalized_input(name: str) -> None:
    from tvm.relax.frontend.torch import from_exported_program

    entry = zoo.load(name)
    exported = torch.export.export(entry.model, entry.example_inputs)
    mod, detached = relax.frontend.detach_params(
        from_exported_program(exported, keep_params_as_input=True))
    num_input = int(mod["main"].attrs["num_input"])
    names = [p.name for p in mod["main"].params[num_input:]]
    params = dict(zip(names, detached["main"], strict=True))
    graph, weights = from_relax(mod, params)
    rebuilt = to_relax(graph, weights)
    assert tvm_ffi.structural_equal(rebuilt, normalize(mod, params))
    again, again_weights = from_relax(rebuilt)
    assert again.to_json() == graph.to_json()
    assert sorted(again_weights) == sorted(weights)


def test_nodes_are_named_after_modules_and_keep_torch_aliases() -> None:
    entry = zoo.load("digits-resnet")
    graph, params = from_torch(entry.model, entry.example_inputs)
    state = entry.model.state_dict()
    weighted = graph.weight_nodes()
    assert weighted, "the resnet has weighted layers"
    for node in weighted:
        alias = node.weight_alias["weight"]
        assert alias in state
        assert alias.rsplit(".", 1)[0] == node.name
        assert node.weights["weight"].name == f"{node.name}.weight"
    assert set(params) == {t.name for n in graph.nodes for t in n.weights.values()}
    residual_adds = [n for n in graph.nodes if n.optype == "add" and len(n.inputs) == 2]
    assert residual_adds and all(n.scope for n in residual_adds)
    assert graph.topological_order() == graph.nodes
    text = str(graph)
    assert "msc.conv2d_bias" in text and graph.nodes[1].name in text


def test_unsupported_op_names_op_and_node() -> None:
    class CumSum(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.fc(x), dim=1)

    with pytest.raises(UnsupportedOpError, match=r"relax\.cumsum.*node"):
        from_torch(CumSum().eval(), (torch.randn(2, 4),))


def test_bad_params_name_the_parameter() -> None:
    entry = zoo.load("digits-mlp")
    graph, params = from_torch(entry.model, entry.example_inputs)
    missing = dict(params)
    victim = sorted(missing)[0]
    del missing[victim]
    with pytest.raises(Exception, match=victim.replace(".", r"\.")):
        to_relax(graph, missing)
    wrong = dict(params)
    wrong[victim] = np.zeros((3, 3), np.float32)
    with pytest.raises(Exception, match="shape"):
        to_relax(graph, wrong)
