"""Graph analysis (params, MACs, FLOPs) and the ``mscgym inspect`` command, on real models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.utils.flop_counter import FlopCounterMode

from mscgym import zoo
from mscgym.cli import main
from mscgym.compiler import MSCError, MSCGraph, from_torch
from mscgym.compiler.analysis import graph_summary

Params = dict[str, np.ndarray]
RESNET18_TORCH_PARAMS = 11_689_512


Translated = Callable[[str], tuple[zoo.ZooModel, MSCGraph, Params]]


@pytest.fixture(scope="module")
def translated() -> Translated:
    """(zoo model, graph, params) by name, each translated once per module on first use."""
    cache: dict[str, tuple[zoo.ZooModel, MSCGraph, Params]] = {}

    def get(name: str) -> tuple[zoo.ZooModel, MSCGraph, Params]:
        if name not in cache:
            entry = zoo.load(name)
            cache[name] = (entry, *from_torch(entry.model, entry.example_inputs))
        return cache[name]

    return get


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet", "digits-transformer",
                                  "resnet18"])
def test_macs_match_torch_flop_counter(name: str, translated: Translated) -> None:
    """Conv (grouped and depthwise included), linear and matmul MACs agree with torch's own
    counter, which counts 2 FLOPs per multiply-accumulate of exactly those ops."""
    entry, graph, params = translated(name)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        entry.model(*entry.example_inputs)
    summary = graph_summary(graph, params)
    assert 2 * summary["totals"]["macs"] == counter.get_total_flops()
    assert summary["totals"]["params"] == sum(a.size for a in params.values())
    assert summary["totals"]["nonzero_params"] == sum(
        int(np.count_nonzero(a)) for a in params.values())


def test_resnet18_params_and_flops(translated: Translated) -> None:
    entry, graph, params = translated("resnet18")
    model = entry.model
    assert sum(p.numel() for p in model.parameters()) == RESNET18_TORCH_PARAMS
    # Folding a BatchNorm into its conv drops gamma and beta (2 per channel) and adds a
    # conv bias (1 per channel).
    bn_channels = sum(m.num_features for m in model.modules()
                      if isinstance(m, torch.nn.BatchNorm2d))
    summary = graph_summary(graph, params, batch=1)
    totals = summary["totals"]
    assert totals["params"] == RESNET18_TORCH_PARAMS - bn_channels
    assert totals["params"] == sum(a.size for a in params.values())
    assert totals["weight_bytes"] == 4 * totals["params"]
    assert abs(totals["macs"] - 1.8e9) / 1.8e9 < 0.05
    assert abs(totals["flops"] - 3.6e9) / 3.6e9 < 0.05
    assert summary["inputs"][0]["shape"][1:] == [3, 224, 224]
    assert summary["optypes"]["msc.conv2d_bias"] == 20
    conv1 = next(row for row in summary["layers"] if row["name"] == "conv1")
    assert conv1["output_shape"] == [1, 64, 112, 112]
    macs = 64 * 112 * 112 * 3 * 7 * 7
    assert conv1["macs"] == macs and conv1["flops"] == 2 * macs + 64 * 112 * 112
    assert conv1["params"] == 64 * 3 * 7 * 7 + 64


def test_costs_by_hand_and_batch_scaling(translated: Translated) -> None:
    _, graph, params = translated("digits-cnn")
    one = graph_summary(graph, params, batch=1)
    rows = {row["name"]: row for row in one["layers"]}
    assert rows["conv1"]["macs"] == 16 * 8 * 8 * 1 * 3 * 3
    assert rows["relu"]["flops"] == 16 * 8 * 8
    assert rows["max_pool2d"]["flops"] == 32 * 4 * 4 * 2 * 2
    assert rows["mean"]["flops"] == 64 * 4 * 4
    assert rows["reshape"]["flops"] == 0
    assert rows["fc"]["macs"] == 10 * 64 and rows["fc"]["params"] == 10 * 64 + 10
    assert one["totals"]["nodes"] == len(one["layers"]) == len(graph.nodes) - 1
    four = graph_summary(graph, batch=4)
    assert four["totals"]["flops"] == 4 * one["totals"]["flops"]
    assert four["totals"]["params"] == one["totals"]["params"]
    assert "nonzero_params" not in four["totals"]
    assert four["layers"][0]["output_shape"] == [4, 16, 8, 8]
    with pytest.raises(MSCError, match="batch must be an integer >= 1"):
        graph_summary(graph, batch=0)


def test_unknown_symbolic_dim_is_reported(translated: Translated) -> None:
    _, graph, _ = translated("digits-cnn")
    data = graph.to_json()
    relu = next(n for n in data["nodes"] if n["name"] == "relu")
    relu["outputs"][0]["shape"][2] = "height"
    with pytest.raises(MSCError, match=r"node 'relu'.*symbolic dim 'height'"):
        graph_summary(MSCGraph.from_json(data))


# --------------------------------------------------------------------------------------
# mscgym inspect
# --------------------------------------------------------------------------------------
def _total(text: str, label: str) -> int:
    match = re.search(rf"^{label}:\s+([\d,]+)", text, flags=re.M)
    assert match, f"no {label!r} line in:\n{text}"
    return int(match[1].replace(",", ""))


def test_inspect_zoo_model_prints_totals_and_table(
    translated: Translated, capsys: pytest.CaptureFixture[str]
) -> None:
    _, graph, params = translated("digits-cnn")
    assert main(["inspect", "digits-cnn"]) == 0
    out = capsys.readouterr().out
    summary = graph_summary(graph, params)
    assert _total(out, "params") == sum(a.size for a in params.values())
    assert _total(out, "FLOPs") == summary["totals"]["flops"]
    assert _total(out, "nodes") == len(graph.nodes) - 1
    assert "inputs:     x float32[" in out and "op types:   " in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["name", "optype", "output", "shape", "params", "FLOPs"]
    for line, row in zip(table[2:], summary["layers"], strict=True):
        cells = line.split()
        assert cells[:3] == [row["name"], row["optype"],
                             "x".join(str(d) for d in row["output_shape"])]
        assert int(cells[4].replace(",", "")) == row["flops"]


def test_inspect_json_and_drawings(
    translated: Translated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, graph, params = translated("digits-cnn")
    proto, dot = tmp_path / "g.prototxt", tmp_path / "g.dot"
    code = main(["inspect", "digits-cnn", "--json", "--batch", "2", "--prototxt", str(proto),
                 "--dot", str(dot)])
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == graph_summary(graph, params, batch=2)
    assert proto.read_text().count("\nlayer {\n") == len(graph.nodes) - 1
    assert dot.read_text().count(" -> ") == sum(len(n.inputs) for n in graph.nodes)
    assert f"wrote {proto}" in captured.err


def test_inspect_exported_graph_file(
    translated: Translated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, graph, params = translated("digits-mobilenet")
    graph.export(tmp_path / "mobilenet.json", params)
    assert main(["inspect", str(tmp_path / "mobilenet.json")]) == 0
    out = capsys.readouterr().out
    assert f"(graph file {tmp_path / 'mobilenet.json'})" in out
    assert _total(out, "params") == sum(a.size for a in params.values())
    assert _total(out, "FLOPs") == graph_summary(graph)["totals"]["flops"]


def _tiny_onnx(path: Path) -> int:
    """Conv(1->4, 3x3) + ReLU + Flatten + Gemm(256->10) with a symbolic batch; its params."""
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 1, 3, 3)), "b": rng.standard_normal(4),
               "fw": rng.standard_normal((10, 256)), "fb": rng.standard_normal(10)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return sum(a.size for a in weights.values())


def test_inspect_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count = _tiny_onnx(tmp_path / "tiny.onnx")
    assert main(["inspect", str(tmp_path / "tiny.onnx"), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert _total(out, "params") == count
    conv_macs, fc_macs = 4 * 8 * 8 * 9, 10 * 256
    assert _total(out, "MACs") == 3 * (conv_macs + fc_macs)


@pytest.mark.parametrize(("target", "match"), [
    ("no-such-model", r"unknown model 'no-such-model': not a file, and not a zoo model "
                      r"\(digits-mlp, .*resnet18"),
    ("missing.json", r"'missing.json' is not a readable file"),
    ("bad.onnx", r"cannot import ONNX file .*bad.onnx"),
    ("bad.json", r"graph file .*bad.json: is not valid JSON"),
])
def test_inspect_bad_target_exits_2_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str, match: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf \xff\xff")
    (tmp_path / "bad.json").write_text('{"format": "mscgym.graph", "ver')
    assert main(["inspect", target]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.match(rf"mscgym inspect: error: {match}", captured.err)
    assert "Traceback" not in captured.err


def test_console_script_reports_unknown_name_without_traceback() -> None:
    script = Path(sys.executable).parent / "mscgym"
    result = subprocess.run([str(script), "inspect", "no-such-model"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "mscgym inspect: error: unknown model 'no-such-model'" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect"]) == 2
    assert "the following arguments are required: NAME_OR_PATH" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
