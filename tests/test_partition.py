"""Several MSCGraphs per module: a target's regions run on it, the ops it lacks on TVM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from mscgym.compiler import MSCError, msc_transform
from mscgym.compiler.codegen import onnx_codegen
from mscgym.compiler.normalize import normalize
from mscgym.compiler.ops import SUPPORTED_OPS
from mscgym.compiler.partition import fallback_ops, partition, segments_of, target_ops
from mscgym.runtime import PartitionedRuntimeManager, create_runtime_manager
from mscgym.tools import MSC_TOOL


class CumsumNet(torch.nn.Module):
    """conv -> cumsum (a running sum over the width, as in cumulative features) -> conv,
    linear: ONNX Runtime runs the convs and the linear, TVM the cumsum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.cumsum(x, dim=3) / 8.0
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def model() -> tuple:
    torch.manual_seed(0)
    net = CumsumNet().eval()
    inputs = torch.randn(48, 1, 8, 8)
    from tvm.relax.frontend.torch import from_exported_program

    exported = torch.export.export(net, (inputs[:2],),
                                   dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    mod, params = relax.frontend.detach_params(
        from_exported_program(exported, keep_params_as_input=True))
    return net, mod, params, inputs.numpy()


def test_cumsum_is_an_op_the_onnx_codegen_cannot_emit() -> None:
    assert "relax.cumsum" not in SUPPORTED_OPS
    assert "cumsum" not in onnx_codegen._EMITTERS
    assert "relax.cumsum" not in target_ops("onnxruntime")
    assert "relax.nn.conv2d" in target_ops("tensorrt")  # TVM's own TensorRT patterns
    assert target_ops("tvm") is None


def test_tensorrt_partition_follows_tvms_tensorrt_patterns(model: tuple) -> None:
    _, mod, params, _ = model
    host = partition(normalize(mod, params), "tensorrt")
    assert [f"{s.name}:{s.target}" for s in segments_of(host)] == [
        "region0:tensorrt", "tvm0:tvm", "region1:tensorrt"]
    host = partition(normalize(mod, params), "tvm")  # TVM runs every op MSCGraph holds
    assert [f"{s.name}:{s.target}" for s in segments_of(host)] == [
        "region0:tvm", "tvm0:tvm", "region1:tvm"]
    assert fallback_ops(host) == ["relax.cumsum"]


def test_onnxruntime_regions_around_a_tvm_cumsum_match_the_single_runner(
        model: tuple, tmp_path: Path) -> None:
    net, mod, params, inputs = model
    host, graphs, config = msc_transform(mod, params, target="onnxruntime")
    assert [f"{s.name}:{s.target}" for s in segments_of(host)] == [
        "region0:onnxruntime", "tvm0:tvm", "region1:onnxruntime"]
    assert len(graphs) == 2 and fallback_ops(host) == ["relax.cumsum"]

    rt = create_runtime_manager(host, params, config)
    assert isinstance(rt, PartitionedRuntimeManager)
    report = rt.partition_report()
    assert report["regions"] == 2 and report["fallback_ops"] == ["relax.cumsum"]
    rt.load_model()
    outputs = rt.run(inputs)

    # the single runner: TVM builds the whole (unpartitioned) module
    single = tvm.compile(normalize(mod, params), target="llvm")
    vm = relax.VirtualMachine(single, tvm.cpu())
    expected = vm["main"](tvm.runtime.tensor(inputs))[0].numpy()
    np.testing.assert_allclose(outputs[0], expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(outputs[0], net(torch.from_numpy(inputs)).numpy(),
                                   atol=1e-4, rtol=1e-4)
    stats = rt.profile(repeat=5, warmup=1)
    assert stats.repeat == 5 and stats.median_ms > 0 and stats.runner == "partitioned"

    written = rt.visualize(tmp_path / "vis")
    names = sorted(Path(p).name for p in written)
    assert names == ["main.host.py", "main.region0.prototxt", "main.region1.prototxt"]
    assert "cls.tvm0" in (tmp_path / "vis" / "main.host.py").read_text()
    exported = {Path(p).name for p in rt.export(tmp_path / "export")}
    assert {"main.region0.json", "main.region1.json", "main.region0.onnx",
            "main.region1.onnx", "main.host.py"} <= exported


def test_one_quantizer_strategy_over_every_region(model: tuple, tmp_path: Path) -> None:
    net, mod, params, inputs = model
    host, graphs, config = msc_transform(mod, params, target="onnxruntime")
    rt = create_runtime_manager(host, params, config)
    quantizer = rt.create_tool(MSC_TOOL.QUANTIZE, {"activation": {"method": "percentile"}})
    rt.load_model()
    while not quantizer.calibrated:
        for i in range(0, 32, 16):
            rt.run(inputs[i:i + 16])
        quantizer.calibrate()
    path = tmp_path / "msc_quantize.json"
    quantizer.save_strategy(path)
    rt.load_model(reuse_weights=True)
    quantized = rt.run(inputs[32:])[0]

    strategy = json.loads(path.read_text())
    kernels = {n.name for g in graphs for n in g.nodes if n.optype.startswith("msc.")}
    assert strategy["graph"] == "main" and set(strategy["strategy"]) == kernels
    assert len(kernels) == 3 and set(rt.quant) == kernels  # conv1, conv2 and fc, one file
    with torch.no_grad():
        reference = net(torch.from_numpy(inputs[32:])).numpy()
    assert not np.allclose(quantized, reference, atol=1e-5)  # int8 for real
    assert np.abs(quantized - reference).max() < 0.1 * np.abs(reference).max()

    # the same strategy file rebuilds the same quantized model in a new manager
    again = create_runtime_manager(host, params, config)
    again.create_tool(MSC_TOOL.QUANTIZE).load_strategy(path)
    again.load_model()
    np.testing.assert_allclose(again.run(inputs[32:])[0], quantized, atol=1e-6)
    with pytest.raises(MSCError, match=r"layers \[.conv9.\] are in no region"):
        again.create_tool(MSC_TOOL.QUANTIZE, {"layers": {"conv9": {"skip": True}}})
    shared = {n.name for n in graphs[0].nodes} & {n.name for n in graphs[1].nodes}
    assert shared == {"relu"}  # an unnamed op in both regions: refused, never guessed
    with pytest.raises(MSCError, match="in more than one region"):
        again.create_tool(MSC_TOOL.QUANTIZE, {"layers": {"relu": {"skip": True}}})


def test_tensors_cross_between_tvm_and_numpy_without_copies() -> None:
    from mscgym.runtime.manager import _from_tvm, _to_tvm

    tensor = tvm.runtime.tensor(np.arange(64, dtype=np.float32).reshape(4, 16))
    view = _from_tvm(tensor)
    assert view[1, 0] == 16.0
    back = _to_tvm(view)  # TVM allocates 64-byte aligned: the same memory comes back
    assert np.shares_memory(view, _from_tvm(back))
    unaligned = np.arange(65, dtype=np.float32)[1:]  # 4 bytes past an aligned start
    copied = _to_tvm(unaligned)
    assert not np.shares_memory(unaligned, _from_tvm(copied))
    np.testing.assert_array_equal(_from_tvm(copied), unaligned)


class ChannelCumsumNet(CumsumNet):
    """CumsumNet with the running sum over the channels: conv1's channels mix on the
    host, so they cannot be pruned."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.cumsum(x, dim=1) / 8.0
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def _relax_of(net: torch.nn.Module, inputs: torch.Tensor) -> tuple:
    from tvm.relax.frontend.torch import from_exported_program

    exported = torch.export.export(net, (inputs[:2],),
                                   dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    mod, params = relax.frontend.detach_params(
        from_exported_program(exported, keep_params_as_input=True))
    return exported, mod, params


def _pruned_reference(net: CumsumNet, x: torch.Tensor, keep1: list[int],
                      keep2: list[int]) -> np.ndarray:
    """The pruned model written by hand in torch: conv1 keeps ``keep1`` (and conv2 reads
    only those), conv2 keeps ``keep2`` (and fc reads only their 8x8 columns)."""
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        x = torch.relu(conv(x, net.conv1.weight[keep1], net.conv1.bias[keep1], padding=1))
        x = torch.cumsum(x, dim=3) / 8.0
        x = torch.relu(conv(x, net.conv2.weight[keep2][:, keep1], net.conv2.bias[keep2],
                            padding=1))
        fc = net.fc.weight.reshape(10, 8, 64)[:, keep2].reshape(10, -1)
        return torch.nn.functional.linear(x.flatten(1), fc, net.fc.bias).numpy()


def test_region_layers_take_the_users_names(model: tuple) -> None:
    net, _, _, inputs = model
    exported, mod, params = _relax_of(net, torch.from_numpy(inputs))
    from mscgym.compiler.transform import exported_names

    for names in (None, exported_names(exported)):  # placeholders read back, or exact
        _, graphs, _ = msc_transform(mod, params, names=names, target="onnxruntime")
        kernels = [n.name for g in graphs for n in g.nodes if n.weights and
                   n.optype.startswith("msc.")]
        assert kernels == ["conv1", "conv2", "fc"]


def test_one_prune_plan_across_regions_through_a_channel_keeping_host_op(
        model: tuple, tmp_path: Path) -> None:
    net, mod, params, inputs = model
    host, _, config = msc_transform(mod, params, target="onnxruntime")
    rt = create_runtime_manager(host, params, config)
    pruner = rt.create_tool(MSC_TOOL.PRUNE, {"density": 0.5})
    groups = {g["name"]: g for g in pruner.groups()}
    # conv1 (region0) feeds conv2 (region1) through the TVM cumsum along the width
    assert groups["conv1"]["prunable"] and groups["conv2"]["prunable"]
    assert "reaches graph output" in groups["fc"]["blocked"]
    rt.load_model()
    keep = {g["name"]: g["keep"] for g in pruner.strategy()["groups"]}
    assert len(keep["conv1"]) == len(keep["conv2"]) == 4
    shapes = [m.graph.get_inputs()[0].shape for m in rt.regions.values()]
    assert shapes[1][1] == 4  # region1 reads the 4 kept channels the host passed on
    reference = _pruned_reference(net, torch.from_numpy(inputs), keep["conv1"], keep["conv2"])
    np.testing.assert_allclose(rt.run(inputs)[0], reference, atol=1e-5, rtol=1e-5)

    # one strategy file, replayed by a new manager; a quantizer after it sees the pruned
    # regions and calibrates across them
    path = pruner.save_strategy(tmp_path / "msc_prune.json")
    again = create_runtime_manager(host, params, config)
    again.create_tool(MSC_TOOL.PRUNE).load_strategy(path)
    quantizer = again.create_tool(MSC_TOOL.QUANTIZE)
    again.load_model()
    while not quantizer.calibrated:
        again.run(inputs[:16])
        quantizer.calibrate()
    again.load_model(reuse_weights=True)
    quantized = again.run(inputs[16:])[0]
    assert set(again.quant) == {"conv1", "conv2", "fc"}
    assert np.abs(quantized - reference[16:]).max() < 0.1 * np.abs(reference[16:]).max()
    assert not np.allclose(quantized, reference[16:], atol=1e-5)


def test_a_group_crossing_a_host_op_that_mixes_channels_is_not_pruned() -> None:
    torch.manual_seed(0)
    net = ChannelCumsumNet().eval()
    inputs = torch.randn(8, 1, 8, 8)
    _, mod, params = _relax_of(net, inputs)
    host, _, config = msc_transform(mod, params, target="onnxruntime")
    rt = create_runtime_manager(host, params, config)
    pruner = rt.create_tool(MSC_TOOL.PRUNE, {"density": 0.5})
    groups = {g["name"]: g for g in pruner.groups()}
    assert not groups["conv1"]["prunable"]
    assert groups["conv1"]["blocked"] == ("host op relax.cumsum 'tvm0.tvm0_out' (run by TVM) "
                                          "runs along axis 1")
    assert groups["conv2"]["prunable"]  # its channels stay in region1
    with pytest.raises(MSCError, match=r"layer 'conv1' cannot be pruned \(host op relax.cumsum"):
        rt.create_tool(MSC_TOOL.PRUNE, {"layers": {"conv1": {"density": 0.5}}})
    rt.load_model()
    with torch.no_grad():
        dense = net(inputs).numpy()
    assert rt.regions["region0"].graph.nodes[1].weights["weight"].shape[0] == 8
    assert not np.allclose(rt.run(inputs.numpy())[0], dense, atol=1e-3)  # conv2 pruned


def test_one_distiller_trains_every_region_through_the_tvm_host(model: tuple) -> None:
    net, mod, params, inputs = model
    host, _, config = msc_transform(mod, params, target="onnxruntime")
    rt = create_runtime_manager(host, params, config)
    rt.create_tool(MSC_TOOL.PRUNE, {"density": 0.5})
    distiller = rt.create_tool(MSC_TOOL.DISTILL, {"epochs": 3, "loss": "mse", "lr": 1e-3,
                                                  "batch_size": 16, "progress": False})
    # the float teacher as one torch module: regions in torch, the cumsum on TVM with
    # TVM's gradient; its weight gradients equal torch's on the unpartitioned model
    x = torch.from_numpy(inputs)
    teacher = distiller._to_torch(distiller._teacher_graph, distiller._teacher_params)
    (teacher(x)[0] ** 2).mean().backward()
    net.zero_grad()
    (net(x) ** 2).mean().backward()
    grads = dict(teacher.regions["region0"].named_parameters())
    conv1 = next(p for p in grads.values() if p.shape == net.conv1.weight.shape)
    np.testing.assert_allclose(conv1.grad.numpy(), net.conv1.weight.grad.numpy(), atol=1e-6)

    rt.load_model()
    with torch.no_grad():
        reference = net(x).numpy()
    before = np.mean((rt.run(inputs)[0] - reference) ** 2)
    history = distiller.distill(inputs)
    rt.load_model()  # the regions take the trained weights under the user's names
    after = np.mean((rt.run(inputs)[0] - reference) ** 2)
    assert history[-1]["distill_loss"] < history[0]["distill_loss"] and after < 0.5 * before
    trained = distiller.distilled_params
    assert {"conv1.weight", "conv2.weight", "fc.weight"} <= set(trained)
    student = distiller._to_torch(distiller.graph, trained)
    with torch.no_grad():
        np.testing.assert_allclose(rt.run(inputs)[0], student(x)[0].numpy(), atol=1e-5)
    with pytest.raises(MSCError, match="outputs only"):
        rt.create_tool(MSC_TOOL.DISTILL, {"intermediate": [{"student": "conv1",
                                                            "teacher": "conv1"}]})


def test_a_host_op_tvm_cannot_differentiate_is_named() -> None:
    from mscgym.compiler.partition import host_vjp

    x = relax.Var("x", relax.TensorType([2, 8], "float32"))
    builder = relax.BlockBuilder()
    with builder.function("tvm0", [x]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.sort(x, axis=1))
        builder.emit_func_output(out)
    with pytest.raises(MSCError, match=r"host segment 'tvm0' \(\['relax.sort'\]\): TVM cannot "
                                       r"differentiate it.*relax.sort"):
        host_vjp(builder.get()["tvm0"], "tvm0")


class TwoBranchNet(torch.nn.Module):
    """Two convs of the input, each through a TVM cumsum, added: the convs do not depend
    on each other, so they share one ONNX Runtime region."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.cumsum(torch.relu(self.conv1(x)), dim=3)
        b = torch.cumsum(torch.relu(self.conv2(x)), dim=2)
        return self.fc((a + b).flatten(1))


def test_independent_branches_share_a_region_which_tvms_merge_keeps_apart() -> None:
    from tvm.relax.dpl import is_op, wildcard

    torch.manual_seed(0)
    net = TwoBranchNet().eval()
    inputs = torch.randn(8, 1, 8, 8)
    _, mod, params = _relax_of(net, inputs)
    host, graphs, config = msc_transform(mod, params, target="onnxruntime")
    assert [f"{s.name}:{s.target}" for s in segments_of(host)] == [
        "region0:onnxruntime", "tvm0:tvm", "region1:onnxruntime"]
    # TVM's own grouping (one pattern per call the target runs, then
    # MergeCompositeFunctions) merges only along producer -> consumer edges: each conv
    # branch stays a region of its own, three ORT sessions where ours has two
    calls: set[tuple[str, int]] = set()
    normalized = normalize(mod, params)
    relax.analysis.post_order_visit(normalized["main"], lambda e: calls.add(
        (str(e.op.name), len(e.args))) if isinstance(e, relax.Call) and isinstance(
            e.op, tvm.ir.Op) else None)
    patterns = [(f"onnxruntime.{op}", is_op(op)(*[wildcard() for _ in range(n)]))
                for op, n in sorted(calls) if op in target_ops("onnxruntime")]
    merged = relax.transform.MergeCompositeFunctions()(relax.transform.FuseOpsByPattern(
        patterns, bind_constants=True, annotate_codegen=False)(normalized))
    codegen = [gv for gv in merged.get_global_vars() if merged[gv].attrs is not None
               and "Codegen" in merged[gv].attrs]
    assert len(graphs) == 2 and len(codegen) == 3

    rt = create_runtime_manager(host, params, config)
    rt.load_model()
    with torch.no_grad():
        np.testing.assert_allclose(rt.run(inputs.numpy())[0], net(inputs).numpy(), atol=1e-5,
                                   rtol=1e-5)
    # the add ties both convs into one channel group, through both host cumsums
    pruner = rt.create_tool(MSC_TOOL.PRUNE, {"density": 0.5})
    (group,) = [g for g in pruner.groups() if g["prunable"]]
    assert sorted(group["layers"]) == ["conv1", "conv2"]
    rt.load_model()
    keep = pruner.strategy()["groups"][0]["keep"]
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        a = torch.cumsum(torch.relu(conv(inputs, net.conv1.weight[keep], net.conv1.bias[keep],
                                         padding=1)), dim=3)
        b = torch.cumsum(torch.relu(conv(inputs, net.conv2.weight[keep], net.conv2.bias[keep],
                                         padding=1)), dim=2)
        fc = net.fc.weight.reshape(10, 8, 64)[:, keep].reshape(10, -1)
        reference = torch.nn.functional.linear((a + b).flatten(1), fc, net.fc.bias).numpy()
    np.testing.assert_allclose(rt.run(inputs.numpy())[0], reference, atol=1e-5, rtol=1e-5)
