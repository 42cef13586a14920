"""Models users bring: ONNX files written by public tools translate, run and search.

Every model here is made in the test with public tools (torch's two ONNX exporters,
``onnx.helper``, the onnx package's own backend test graphs with seeded weights), never
taken from the zoo. Each must translate with ``from_onnx`` and agree with ONNX Runtime
on the original file within 1e-4 relative on TVM (the ``tvm`` runner's build), the torch
codegen and the ONNX codegen.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError, UnsupportedOpError
from mscgym.compiler.frontend import from_onnx
from mscgym.compiler.frontend.onnx_frontend import ONNXImportError
from mscgym.compiler.frontend.onnx_rnn import rewrite_rnns
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.records import RecordError, task_from_record
from mscgym.runtime.runners.tvm_runner import TVMRunner
from mscgym.tasks import ModelFile, Task, data_from_files
from mscgym.tasks.measure import batched

CPU = ["CPUExecutionProvider"]
REL_TOL = 1e-4
NO_TUNING_DATABASE = "/nonexistent/mscgym-tuning-db"
"""Real-model checks build with TVM's default schedules whatever a user has tuned."""
LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# -- helpers ----------------------------------------------------------------------------------
def _ort(model: str | onnx.ModelProto, feeds: list[np.ndarray]) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=CPU)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, feeds, strict=True)))


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def _first(value: Any) -> np.ndarray:
    if isinstance(value, tuple | list):
        value = value[0]
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def runner_errors(path: str, feeds: list[np.ndarray],
                  input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, float]:
    """Max relative error of TVM, torch codegen and ONNX codegen vs ORT on the file."""
    graph, params = from_onnx(path, input_shapes=input_shapes)
    want = _ort(path, feeds)[0]
    # The tvm runner's own build (channels-last convs, host target), as deployed.
    runner = TVMRunner("cpu", {"cache": False, "db": NO_TUNING_DATABASE})
    runner.build(graph, params, QuantPlan())
    got_tvm = runner.run(feeds)[0]
    module = to_torch(graph, params).eval()
    with torch.no_grad():
        got_torch = _first(module(*[torch.from_numpy(x) for x in feeds]))
    got_onnx = _ort(to_onnx(graph, params), feeds)[0]
    return {"tvm": _rel(got_tvm, want), "torch": _rel(got_torch, want),
            "onnx": _rel(got_onnx, want)}


def assert_runners_match(path: str, feeds: list[np.ndarray], **kwargs: Any) -> None:
    errors = runner_errors(path, feeds, **kwargs)
    assert max(errors.values()) <= REL_TOL, errors


def _randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class SmallConvNet(nn.Module):
    """Conv + BN, a residual add, ReLU6 (Clip), global pooling, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = nn.functional.relu6(y + self.bn2(self.conv2(y)))
        y = nn.functional.adaptive_avg_pool2d(y, 1)
        return self.fc(torch.flatten(y, 1))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return model


def export(model: nn.Module, x: torch.Tensor, path: Path, dynamo: bool, opset: int,
           **kwargs: Any) -> str:
    if dynamo:
        kwargs.setdefault("dynamic_shapes", ({0: torch.export.Dim("batch")},))
    else:
        kwargs.setdefault("dynamic_axes", {"x": {0: "batch"}})
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=opset,
                      input_names=["x"], **kwargs)
    return str(path)


# -- torch's exporters at several opsets ----------------------------------------------------
EXPORTS = [(dynamo, opset) for dynamo in (False, True) for opset in (11, 13, 17, 20)]
FAST_EXPORTS = ((False, 11), (False, 20), (True, 20))


@pytest.mark.parametrize(("dynamo", "opset"), [
    pair if pair in FAST_EXPORTS else pytest.param(*pair, marks=pytest.mark.slow)
    for pair in EXPORTS], ids=[f"{'dynamo' if d else 'torchscript'}-{o}" for d, o in EXPORTS])
def test_torch_exports_match_ort(tmp_path: Path, dynamo: bool, opset: int) -> None:
    path = export(small_net(), torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", dynamo, opset)
    written = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
    # The dynamo exporter writes opset 18 at least (it cannot down-convert below it).
    assert written == (max(opset, 18) if dynamo else opset)
    graph, _ = from_onnx(path)
    assert graph.get_inputs()[0].shape[0] == "batch"  # the dynamic batch stays symbolic
    assert_runners_match(path, [_randn(3, 3, 16, 16)])


def test_onnx_node_names_name_the_msc_nodes(tmp_path: Path) -> None:
    path = export(small_net(), torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", False, 17)
    graph, _ = from_onnx(path)
    onnx_names = {n.name for n in onnx.load(path).graph.node}
    layers = [n for n in graph.nodes if n.optype != "input"]
    assert {n.name for n in layers} <= onnx_names, [n.name for n in layers]
    conv = graph.find_node("/conv1/Conv")
    assert conv.weight_alias["weight"] in {i.name for i in onnx.load(path).graph.initializer}


def test_initializers_listed_as_graph_inputs(tmp_path: Path) -> None:
    path = export(small_net(), torch.randn(1, 3, 16, 16), tmp_path / "old.onnx", False, 11,
                  keep_initializers_as_inputs=True, dynamic_axes=None)
    model = onnx.load(path)
    assert len(model.graph.input) > 1  # the weights are inputs too, as old exporters wrote
    graph, params = from_onnx(path)
    assert [t.name for t in graph.get_inputs()] == ["x"]
    assert params
    assert_runners_match(path, [_randn(1, 3, 16, 16)])


class ComputedReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = y.reshape(y.shape[0], y.shape[1], -1)
        return self.fc(y.reshape(y.shape[0], -1))


def test_computed_reshape_and_input_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export(ComputedReshape().eval(), torch.randn(2, 3, 8, 8), tmp_path / "r.onnx",
                  False, 13)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert {"Shape", "Gather", "Concat", "Reshape"} <= set(ops)
    assert_runners_match(path, [_randn(3, 3, 8, 8)])
    fixed, _ = from_onnx(path, input_shapes={"x": (4, 3, 8, 8)})
    assert fixed.get_inputs()[0].shape == (4, 3, 8, 8)
    with pytest.raises(ONNXImportError, match="not a graph input"):
        from_onnx(path, input_shapes={"y": (4, 3, 8, 8)})


class SegNet(nn.Module):
    """Segmentation-style: strided conv, ConvTranspose up, a Resize to the input's computed
    size (Shape -> Slice -> Concat with a dynamic batch) and a nearest 2x Resize."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.down(x))
        same = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")
        twice = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
        return self.head(torch.relu(self.up(y)) + same + twice)


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["torchscript", "dynamo"])
def test_segmentation_net_with_resize_and_conv_transpose(tmp_path: Path, dynamo: bool) -> None:
    torch.manual_seed(0)
    path = export(SegNet().eval(), torch.randn(2, 3, 16, 16), tmp_path / "seg.onnx", dynamo, 18)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Resize", "ConvTranspose"} <= ops
    assert_runners_match(path, [_randn(3, 3, 16, 16)])


# -- LSTM and GRU ---------------------------------------------------------------------------
def _rnn_model(op: str, direction: str, layout: int = 0, bias: bool = True,
               initial: bool = False, peephole: bool = False, lbr: int = 0,
               seq: int = 4, batch: int = 3, size: int = 5, hidden: int = 6
               ) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    gates = 4 if op == "LSTM" else 3
    dirs = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in (("W", (dirs, gates * hidden, size)),
                          ("R", (dirs, gates * hidden, hidden)),
                          ("B", (dirs, 2 * gates * hidden)))]
    x_shape = [batch, seq, size] if layout else [seq, batch, size]
    state = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "B" if bias else "", ""]
    if initial:
        names.append("H0")
        inputs.append(helper.make_tensor_value_info("H0", TensorProto.FLOAT, state))
        if op == "LSTM":
            names.append("C0")
            inputs.append(helper.make_tensor_value_info("C0", TensorProto.FLOAT, state))
    if peephole:
        names += [""] * (7 - len(names)) + ["P"]
        inits.append(numpy_helper.from_array(
            rng.uniform(-0.5, 0.5, (dirs, 3 * hidden)).astype(np.float32), "P"))
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    attrs: dict[str, Any] = {"hidden_size": hidden, "direction": direction, "layout": layout}
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    node = helper.make_node(op, names, outputs, name=f"my_{op.lower()}", **attrs)
    graph = helper.make_graph([node], "rnn", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return onnx.shape_inference.infer_shapes(model)


RNN_CASES = {
    "lstm-forward": ("LSTM", "forward", {}),
    "lstm-reverse-nobias": ("LSTM", "reverse", {"bias": False}),
    "lstm-bidirectional-initial": ("LSTM", "bidirectional", {"initial": True}),
    "lstm-layout1-peephole": ("LSTM", "forward", {"layout": 1, "peephole": True,
                                                  "initial": True}),
    "gru-forward": ("GRU", "forward", {}),
    "gru-reverse-linear-before-reset": ("GRU", "reverse", {"lbr": 1, "initial": True}),
    "gru-bidirectional-layout1": ("GRU", "bidirectional", {"layout": 1, "lbr": 1}),
    "gru-bidirectional-initial": ("GRU", "bidirectional", {"initial": True}),
}


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_rnn_rewrite_matches_onnx_runtime(case: str) -> None:
    op, direction, options = RNN_CASES[case]
    model = _rnn_model(op, direction, **options)
    feeds = [_randn(*[d.dim_value for d in i.type.tensor_type.shape.dim], seed=k)
             for k, i in enumerate(model.graph.input)]
    if options.get("layout"):
        # ORT runs only layout 0: compare with the same weights in layout 0, transposed.
        seq_first = _rnn_model(op, direction, **{**options, "layout": 0})
        want = _ort(seq_first, [np.ascontiguousarray(np.swapaxes(f, 0, 1)) for f in feeds])
        want = [np.transpose(w, (2, 0, 1, 3) if w.ndim == 4 else (1, 0, 2)) for w in want]
    else:
        want = _ort(model, feeds)
    rewritten = rewrite_rnns(onnx.ModelProto.FromString(model.SerializeToString()))
    assert op not in {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten)
    got = _ort(rewritten, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_rnn_with_dynamic_sequence_length_is_refused() -> None:
    model = _rnn_model("LSTM", "forward")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "time"
    with pytest.raises(MSCError, match=r"LSTM node 'my_lstm'.*sequence length is dynamic"):
        from_onnx(model)


class CRNN(nn.Module):
    """Conv features -> bidirectional LSTM over the width -> linear per time step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.MaxPool2d((4, 1))
        self.lstm = nn.LSTM(16, 12, bidirectional=True)
        self.fc = nn.Linear(24, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(torch.relu(self.conv(x)))
        b, c, h, w = f.shape
        y, _ = self.lstm(f.reshape(b, c * h, w).permute(2, 0, 1))
        return self.fc(y)


class GRUHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 10, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = self.gru(x)
        return self.fc(y[:, -1]) + h[0].sum(-1, keepdim=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_crnn_lstm_and_gru_models_match_ort(tmp_path: Path) -> None:
    torch.manual_seed(0)
    crnn = export(CRNN().eval(), torch.randn(2, 1, 8, 10), tmp_path / "crnn.onnx", False, 13)
    assert "LSTM" in {n.op_type for n in onnx.load(crnn).graph.node}
    assert_runners_match(crnn, [_randn(3, 1, 8, 10)])
    gru = export(GRUHead().eval(), torch.randn(2, 5, 6), tmp_path / "gru.onnx", False, 17)
    assert "GRU" in {n.op_type for n in onnx.load(gru).graph.node}
    assert_runners_match(gru, [_randn(3, 5, 6)])


# -- errors -----------------------------------------------------------------------------------
def _model_with(nodes: list[onnx.NodeProto], domain_ops: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("my.domain", 1)]
                                              if domain_ops else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_every_unsupported_op_is_named_at_once() -> None:
    model = _model_with([
        helper.make_node("Relu", ["x"], ["a"], name="first_relu"),
        helper.make_node("Sin", ["a"], ["b"], name="my_sine"),
        helper.make_node("Relu", ["b"], ["c"], name="second_relu"),
        helper.make_node("Floor", ["c"], ["d"], name="my_floor"),
    ])
    with pytest.raises(UnsupportedOpError) as info:
        from_onnx(model)
    message = str(info.value)
    assert "'my_sine'" in message and "ONNX Sin" in message
    assert "'my_floor'" in message and "ONNX Floor" in message
    assert [node for _, node in info.value.unsupported] == ["my_sine", "my_floor"]


def test_ops_tvm_cannot_import_are_named_at_once() -> None:
    model = _model_with([
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Mystery", ["a"], ["b"], name="custom_1", domain="my.domain"),
        helper.make_node("Mystery", ["b"], ["c"], name="custom_2", domain="my.domain"),
    ], domain_ops=True)
    with pytest.raises(UnsupportedOpError) as info:
        from_onnx(model)
    assert [node for _, node in info.value.unsupported] == ["custom_1", "custom_2"]


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ONNXImportError, match=r"missing\.onnx: no such file"):
        from_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\xff\xff not protobuf")
    with pytest.raises(ONNXImportError, match=r"garbage\.onnx"):
        from_onnx(garbage)


# -- the onnx package's own light models -------------------------------------------------------
LIGHT_MODELS = sorted(os.path.basename(p)[len("light_"):-len(".onnx")]
                      for p in glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx")))
LIGHT_FAST = ("squeezenet", "shufflenet")


def seeded_light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light model with seeded random weights (its shipped weights are constants made
    by ConstantOfShape) and its logits as output (a saturated softmax hides errors)."""
    model = onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    graph = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            nodes.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        base = node.output[0].removesuffix("_0")
        if base.endswith(("_var", "_riv")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        weights.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used] + weights
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    last = graph.node[-1]
    if last.op_type == "Softmax" and last.output[0] == graph.output[0].name:
        graph.output[0].name = last.input[0]
        graph.node.pop()
    return model


@pytest.mark.parametrize("name", [
    n if n in LIGHT_FAST else pytest.param(n, marks=pytest.mark.slow) for n in LIGHT_MODELS])
def test_light_models_match_ort(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(seeded_light_model(name), path)
    errors = runner_errors(path, [_randn(1, 3, 224, 224)])
    assert max(errors.values()) <= REL_TOL, errors


# -- tasks, CLI and records on a file ---------------------------------------------------------
def test_static_batch_model_evaluates_in_chunks(tmp_path: Path) -> None:
    path = export(small_net(), torch.randn(1, 3, 16, 16), tmp_path / "b1.onnx", False, 17,
                  dynamic_axes=None)
    data = _randn(10, 3, 16, 16)
    np.save(tmp_path / "data.npy", data)
    task = Task(ModelFile(path), "quantize", data=data_from_files(tmp_path / "data.npy"),
                profile_repeat=3, profile_warmup=1)
    assert all(len(b) == 1 for b in task.data.calibration)
    want = np.concatenate([_ort(path, [x[None]])[0] for x in data])
    np.testing.assert_allclose(task.teacher_outputs(), want, rtol=1e-4, atol=1e-5)
    metrics = task.evaluate(task.space.baseline_plan())
    assert metrics.distill_loss < 1e-6
    calls: list[int] = []
    out = batched(lambda x: calls.append(len(x)) or x * 2, data, batch=4, fixed=True)
    assert calls == [4, 4, 4] and out.shape == data.shape


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["convnet", "crnn"])
def test_file_models_quantize_and_prune_to_valid_graphs(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    if kind == "convnet":
        path = export(small_net(), torch.randn(2, 3, 16, 16), tmp_path / "m.onnx", False, 17)
        inputs = _randn(8, 3, 16, 16)
    else:
        path = export(CRNN().eval(), torch.randn(2, 1, 8, 10), tmp_path / "m.onnx", False, 13)
        inputs = _randn(8, 1, 8, 10)
    np.save(tmp_path / "data.npy", inputs)
    data = data_from_files(tmp_path / "data.npy")
    quantize = Task(ModelFile(path), "quantize", data=data, profile_repeat=3, profile_warmup=1)
    int8 = {d.name: "int8_channel_minmax" if d.name.startswith("quantize:") else d.baseline
            for d in quantize.space}
    quantized = quantize.compressed(int8)
    assert quantized.quant
    assert quantize.measure(quantized).size_bytes < quantize.baseline.size_bytes
    # on torch: on ONNX Runtime tasks keep multiples of 8 channels, all of these 8
    prune = Task(ModelFile(path), "prune", data=data, runner="torch", profile_repeat=3,
                 profile_warmup=1)
    half = {d.name: 0.5 for d in prune.space}
    pruned = prune.compressed(half)
    metrics = prune.measure(pruned)
    assert metrics.params < prune.baseline.params and np.isfinite(metrics.distill_loss)


def _mscgym(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "mscgym"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, check=False, env=env)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_search_then_validate_a_file_model(tmp_path: Path) -> None:
    path = export(small_net(), torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", False, 17)
    np.save(tmp_path / "calib.npy", _randn(16, 3, 16, 16))
    searched = _mscgym("search", "--task", "quantize", "--model", path, "--data", "calib.npy",
                       "--budget", "3", "--record", "r.json", "--no-progress",
                       "--profile-repeat", "20", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["task"]["model_file"]["path"] == path
    assert len(record["task"]["model_file"]["sha256"]) == 64
    validated = _mscgym("validate", "r.json", cwd=tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "metrics hold" in validated.stdout
    # a changed file is refused, naming the file (before anything is rebuilt)
    with open(path, "ab") as handle:
        handle.write(b"\n")
    with pytest.raises(RecordError, match=r"net\.onnx' has changed since the record was made"):
        task_from_record(tmp_path / "r.json")


def test_inspect_pt2_graph_json_and_failing_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mscgym.cli import main

    model = small_net()
    exported = torch.export.export(model, (torch.randn(2, 3, 16, 16),),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, str(tmp_path / "net.pt2"))
    assert main(["inspect", "--model", str(tmp_path / "net.pt2")]) == 0
    onnx_path = export(model, torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", False, 17)
    graph, params = from_onnx(onnx_path)
    graph.export(str(tmp_path / "graph.json"), params=params)
    assert main(["inspect", "--model", str(tmp_path / "graph.json")]) == 0
    onnx.save(_model_with([helper.make_node("Sin", ["x"], ["y"], name="sine")]),
              str(tmp_path / "bad.onnx"))
    capsys.readouterr()
    assert main(["inspect", "--model", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot import ONNX file" in err and "'sine'" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_run_on_a_file_writes_a_gym_record_that_validates(tmp_path: Path) -> None:
    path = export(small_net(), torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", False, 17)
    np.save(tmp_path / "calib.npy", _randn(16, 3, 16, 16))
    config = {"workspace": str(tmp_path / "ws"), "profile": {"repeat": 20, "warmup": 1},
              "quantize": {"gym": [{
                  "record": "quantize_best.json",
                  "env": {"strategy": "latency_under_accuracy", "mode": "oneshot"},
                  "agent": {"type": "random_search", "budget": 2, "options": {"seed": 0}}}]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ran = _mscgym("run", "config.json", "--model", path, "--data", "calib.npy", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    record = tmp_path / "ws" / "gym" / "quantize_best.json"
    assert json.loads(record.read_text())["task"]["model_file"]["path"] == path
    validated = _mscgym("validate", str(record), cwd=tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
