"""Collector (tensors and running statistics of node outputs) and the per-layer
quantization sensitivity report."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from mscgym import zoo
from mscgym.compiler.frontend import from_torch
from mscgym.runtime.manager import RuntimeManager
from mscgym.tools import MSC_TOOL, ToolConfigError, create_tool
from mscgym.tools.sensitivity import layer_sensitivity


@functools.cache
def cnn():
    model = zoo.load("digits-cnn")
    graph, params = from_torch(model.model, (model.eval_inputs[:2],))
    return model, graph, params


def batches(n: int = 3) -> list[np.ndarray]:
    return [b.numpy() for b in cnn()[0].calibration_batches(n, 16)]


def collect(config: dict, runs: list[np.ndarray]):
    _, graph, params = cnn()
    rt = RuntimeManager(graph, params, {"runner": "torch"})
    collector = rt.create_tool(MSC_TOOL.COLLECT, config)
    rt.load_model()
    outputs = [rt.run(batch)[0] for batch in runs]
    return collector, outputs


def test_stats_equal_numpy_on_known_inputs():
    _, graph, params = cnn()
    collector = create_tool(MSC_TOOL.COLLECT, graph, params, {"nodes": ["conv1"]})
    tensor = graph.find_node("conv1").output.name
    assert collector.watched_tensors() == [tensor]
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 16, 8, 8)).astype(np.float32) for n in (1, 5, 2)]
    for chunk in chunks:
        collector.observe({tensor: chunk})
    every = np.concatenate(chunks).astype(np.float64)
    stats = collector.collected()["conv1"]
    assert stats["count"] == every.size
    assert stats["min"] == every.min() and stats["max"] == every.max()
    assert stats["absmax"] == np.abs(every).max()
    assert stats["mean"] == pytest.approx(every.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(every.std(), rel=1e-12)


def test_collects_tensors_and_stats_through_the_runtime_manager(tmp_path):
    runs = batches(3)
    tensors, outputs = collect({"nodes": ["conv1", "relu", "fc"], "mode": "tensor"}, runs)
    arrays = tensors.collected()
    assert sorted(arrays) == ["conv1", "fc", "relu"]
    assert arrays["conv1"].shape == (48, 16, 8, 8)
    np.testing.assert_array_equal(arrays["fc"], np.concatenate(outputs))
    np.testing.assert_array_equal(arrays["relu"], np.maximum(arrays["conv1"], 0))
    path = tensors.save(tmp_path / "tensors.safetensors")
    loaded = load_file(path)
    assert sorted(loaded) == sorted(arrays)
    np.testing.assert_array_equal(loaded["conv1"], arrays["conv1"])

    stats, _ = collect({"nodes": "all", "mode": "stats"}, runs)
    summary = stats.collected()
    assert "x" not in summary and len(summary) == len(cnn()[1].nodes) - 1
    for node, array in arrays.items():
        values = array.astype(np.float64)
        assert summary[node]["count"] == values.size
        assert summary[node]["min"] == pytest.approx(values.min())
        assert summary[node]["max"] == pytest.approx(values.max())
        assert summary[node]["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert summary[node]["std"] == pytest.approx(values.std(), rel=1e-9)
    json_path = stats.save(tmp_path / "stats.json")
    with open(json_path, encoding="utf-8") as handle:
        assert json.load(handle)["relu"]["min"] == 0.0
    assert sorted(os.listdir(tmp_path)) == ["stats.json", "tensors.safetensors"]


def test_max_batches_stops_watching():
    collector, _ = collect({"nodes": ["fc"], "mode": "tensor", "max_batches": 2}, batches(3))
    assert collector.batches == 2 and collector.watched_tensors() == []
    assert collector.collected()["fc"].shape == (32, 10)
    assert collector.strategy() == {"nodes": ["fc"], "mode": "tensor", "max_batches": 2}


@pytest.mark.parametrize("config,match", [
    ({"nodes": ["conv1", "nope"]}, r"unknown layer 'nope'"),
    ({"nodes": "some"}, r"nodes must be 'all' or a list"),
    ({"mode": "arrays"}, r"mode 'arrays': expected one of \['tensor', 'stats'\]"),
    ({"max_batches": 0}, r"max_batches 0"),
    ({"batches": 3}, r"unknown keys \['batches'\]"),
])
def test_bad_collector_config(config, match):
    _, graph, params = cnn()
    with pytest.raises(ToolConfigError, match=match):
        create_tool(MSC_TOOL.COLLECT, graph, params, config)


def _calibrated_plan(graph, params, model):
    rt = RuntimeManager(graph, params, {"runner": "torch"})
    quantizer = rt.create_tool(MSC_TOOL.QUANTIZE, {"weight": {"per_channel": False}})
    rt.load_model()
    for batch in batches(2):
        rt.run(batch)
    quantizer.calibrate()
    return quantizer


def test_sensitivity_ranks_the_layer_with_an_outlier_weight_first():
    model, graph, params = cnn()
    inputs = model.eval_inputs[:64].numpy()
    baseline = layer_sensitivity(graph, params, _calibrated_plan(graph, params, model).quant_plan(),
                                 inputs, "mse")
    assert baseline[0]["layer"] != "conv3"
    params = dict(params)
    weight = params["conv3.weight"].copy()
    weight[0, 0, 0, 0] = 50 * np.abs(weight).max()
    params["conv3.weight"] = weight
    quantizer = _calibrated_plan(graph, params, model)
    reports = {}
    for metric in ("mse", "cosine", "kl"):
        report = reports[metric] = layer_sensitivity(graph, params, quantizer.quant_plan(),
                                                     inputs, metric)
        assert report[0]["layer"] == "conv3", (metric, report)
        assert report[0]["error"] > 10 * report[1]["error"], (metric, report)
        assert sorted(row["layer"] for row in report) == ["conv1", "conv2", "conv3", "fc"]
        errors = [row["error"] for row in report]
        assert errors == sorted(errors, reverse=True) and min(errors) >= 0
    from_strategy = layer_sensitivity(graph, params, quantizer.strategy(), inputs, "mse")
    assert from_strategy == reports["mse"]
    assert from_strategy[0]["optype"] == "msc.conv2d_bias"
