"""Quantizer: calibration algorithms, config and strategy validation, and accuracy of the
calibrated plans on the digits models, on torch, TVM and ONNX Runtime with one strategy file."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.runtime.manager import RuntimeManager
from mscgym.tools import MSC_TOOL, ToolConfigError, create_tool
from mscgym.tools import calibration as cal
from mscgym.tools.quantizer import Quantizer

DIGITS = ["digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer"]
INT8 = {"weight": {"dtype": "int8", "per_channel": True, "symmetric": True, "method": "minmax"},
        "activation": {"dtype": "int8", "symmetric": True, "method": "minmax"}}


@functools.cache
def digits(name: str):
    model = zoo.load(name)
    graph, params = from_torch(model.model, (model.eval_inputs[:2],))
    return model, graph, params


def calibrated(name: str, config: dict, runner: str = "torch"):
    """MSC's calibration loop on the runtime manager; returns (manager, quantizer, passes)."""
    model, graph, params = digits(name)
    rt = RuntimeManager(graph, params, {"runner": runner})
    quantizer = rt.create_tool(MSC_TOOL.QUANTIZE, config)
    rt.load_model()
    passes = 0
    while not quantizer.calibrated:
        for batch in model.calibration_batches(4, 32):
            rt.run(batch)
        quantizer.calibrate()
        passes += 1
    rt.load_model(reuse_weights=True)
    return rt, quantizer, passes


def from_strategy(name: str, path: str, runner: str):
    model, graph, params = digits(name)
    rt = RuntimeManager(graph, params, {"runner": runner})
    quantizer = rt.create_tool(MSC_TOOL.QUANTIZE, INT8)
    quantizer.load_strategy(path)
    assert quantizer.calibrated and quantizer.watched_tensors() == []
    rt.load_model()
    return rt, quantizer


def accuracy(name: str, rt: RuntimeManager) -> float:
    return digits(name)[0].accuracy(lambda x: rt.run(x)[0])


# -------------------------------------------------------------------------------------
# calibration.py on synthetic data
# -------------------------------------------------------------------------------------
def test_histogram_thresholds_clip_a_heavy_tail():
    rng = np.random.default_rng(0)
    values = rng.standard_t(2, size=200_000).astype(np.float32)
    observer = cal.TensorObserver(2048)
    observer.update_range(values)
    observer.start_histograms(absolute=True, signed=True)
    observer.update_histograms(values)
    absmax = observer.absmax
    entropy = cal.entropy_threshold(observer.abs_hist)
    percentile = cal.percentile_abs_threshold(observer.abs_hist, 99.99)
    mse = cal.mse_abs_threshold(observer.abs_hist, "int8")
    assert 0 < entropy < absmax and 0 < percentile < absmax and 0 < mse <= absmax
    assert entropy < 0.5 * absmax and percentile < 0.5 * absmax
    # The percentile threshold really leaves ~0.01 % of |x| above it.
    assert np.mean(np.abs(values) > percentile) == pytest.approx(1e-4, abs=5e-5)
    low, high = cal.percentile_range(observer.signed_hist, 99.9)
    assert observer.minimum < low < 0 < high < observer.maximum
    for method in ("percentile", "entropy", "mse"):
        for dtype, symmetric in (("int8", True), ("uint8", False)):
            params, (lo, hi) = cal.activation_params(observer, dtype, symmetric, method, 99.99)
            assert hi - lo < observer.maximum - observer.minimum
            assert all(s > 0 for s in params.scale)


def test_histogram_counts_outliers_of_later_batches_in_end_bins():
    hist = cal.Histogram(0.0, 1.0, 256)
    hist.add(np.array([0.5, 3.0, -1.0]))
    assert hist.total == 3 and hist.counts[-1] == 1 and hist.counts[0] == 1


def test_symmetric_and_affine_conventions():
    weight = np.array([[1.0, -2.54], [0.5, 0.25]], dtype=np.float32)
    params = cal.weight_params(weight, "int8", per_channel=True, symmetric=True, method="minmax")
    assert params.axis == 0 and params.zero_point == (0, 0)
    np.testing.assert_allclose(params.scale, [2.54 / 127, 0.5 / 127], rtol=1e-6)
    int4 = cal.weight_params(weight, "int4", per_channel=True, symmetric=True, method="minmax")
    np.testing.assert_allclose(int4.scale, [2.54 / 7, 0.5 / 7], rtol=1e-6)
    assert np.abs(np.round(weight / int4.scale_array()[:, None])).max() <= 7
    affine = cal.affine_params(0.5, 6.0, "uint8")  # widened to include 0
    assert affine.zero_point == (0,)
    assert affine.fake_quant(np.zeros(1, np.float32))[0] == 0.0
    signed = cal.affine_params(-1.0, 3.0, "int8")
    assert -128 <= signed.zero_point[0] <= 127
    assert signed.fake_quant(np.zeros(1, np.float32))[0] == 0.0
    assert cal.symmetric_params(0.0, "int8").scale[0] == pytest.approx(cal.MIN_SCALE, rel=1e-6)


def test_weight_mse_clips_an_outlier_channel_less_than_minmax_error():
    rng = np.random.default_rng(1)
    weight = rng.laplace(size=(8, 64))
    minmax = cal.weight_params(weight, "int4", True, True, "minmax")
    mse = cal.weight_params(weight, "int4", True, True, "mse")

    def error(p):
        return np.mean((weight - p.fake_quant(weight)) ** 2)

    assert error(mse) < error(minmax)
    assert all(a <= b for a, b in zip(mse.scale, minmax.scale, strict=True))


# -------------------------------------------------------------------------------------
# Calibration on a real model
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", cal.ACTIVATION_METHODS)
@pytest.mark.parametrize("dtype,symmetric", [("int8", True), ("uint8", False)])
def test_each_method_gives_valid_params_on_digits_cnn(method, dtype, symmetric):
    config = {"activation": {"method": method, "dtype": dtype, "symmetric": symmetric},
              "weight": {"method": "mse" if method == "mse" else "minmax"}}
    rt, quantizer, passes = calibrated("digits-cnn", config)
    assert passes == (1 if method == "minmax" else 2)
    assert quantizer.watched_tensors() == []
    plan = quantizer.quant_plan()
    graph = digits("digits-cnn")[1]
    assert sorted(plan) == ["conv1", "conv2", "conv3", "fc"]
    stats = quantizer.stats()
    for name, layer in plan.items():
        act, weight = layer.input, layer.weight
        assert act.axis is None and act.dtype == dtype and act.scale[0] > 0
        low, high = act.qrange
        assert low <= act.zero_point[0] <= high
        if symmetric:
            assert act.zero_point == (0,)
        observed = stats[name]["input"]
        lo, hi = observed["range"]
        if symmetric:
            assert max(abs(lo), abs(hi)) <= observed["absmax"] * (1 + 1e-6)
        else:
            assert observed["min"] - 1e-6 <= lo < hi <= observed["max"] + 1e-6
        if method == "minmax" and symmetric:
            assert act.scale[0] == pytest.approx(stats[name]["input"]["absmax"] / 127, rel=1e-6)
        channels = graph.find_node(name).weights["weight"].shape[0]
        assert weight.axis == 0 and len(weight.scale) == channels
        assert weight.zero_point == (0,) * channels and min(weight.scale) > 0
    float_accuracy = digits("digits-cnn")[0].accuracy(digits("digits-cnn")[0].model)
    assert accuracy("digits-cnn", rt) >= float_accuracy - 0.01


def test_calibrate_without_batches_is_an_error():
    _, graph, params = digits("digits-cnn")
    quantizer = create_tool(MSC_TOOL.QUANTIZE, graph, params, INT8)
    assert quantizer.quant_plan() == {} and not quantizer.calibrated
    with pytest.raises(MSCError, match="saw no batch for tensors"):
        quantizer.calibrate()
    with pytest.raises(MSCError, match="not calibrated"):
        quantizer.strategy()


# -------------------------------------------------------------------------------------
# Accuracy: one strategy file, three runners
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIGITS)
def test_int8_keeps_accuracy_on_torch_tvm_and_onnxruntime(name, tmp_path):
    model = digits(name)[0]
    float_accuracy = model.accuracy(model.model)
    rt, quantizer, _ = calibrated(name, INT8)
    path = quantizer.save_strategy(tmp_path / "msc_quantize.json")
    results = {"torch": accuracy(name, rt)}
    for runner in ("tvm", "onnxruntime"):
        rt_other, loaded = from_strategy(name, path, runner)
        assert loaded.quant_plan() == quantizer.quant_plan()
        results[runner] = accuracy(name, rt_other)
    print(f"{name}: float {float_accuracy:.4f}, int8 {results}")
    for runner, value in results.items():
        assert value >= float_accuracy - 0.01, (runner, value, float_accuracy)


def test_int4_weights_run_lose_accuracy_but_beat_chance():
    name = "digits-cnn"
    model, graph, params = digits(name)
    inputs = model.eval_inputs.numpy()
    reference = model.model(model.eval_inputs).detach().numpy()
    rt8, _, _ = calibrated(name, INT8)
    rt4, quantizer, _ = calibrated(name, {"weight": {"bits": 4, "per_channel": False}})
    weight = quantizer.quant_plan()["conv2"].weight
    assert weight.dtype == "int4" and weight.axis is None
    assert weight.scale[0] == pytest.approx(np.abs(params["conv2.weight"]).max() / 7, rel=1e-6)
    assert len(np.unique(weight.fake_quant(params["conv2.weight"]))) <= 15
    error8 = np.mean((rt8.run(inputs)[0] - reference) ** 2)
    error4 = np.mean((rt4.run(inputs)[0] - reference) ** 2)
    assert error4 > 4 * error8
    int4_accuracy = accuracy(name, rt4)
    assert 0.5 < int4_accuracy < model.accuracy(model.model)


# -------------------------------------------------------------------------------------
# Strategy files
# -------------------------------------------------------------------------------------
def test_strategy_round_trip_gives_identical_plans_and_outputs(tmp_path):
    name = "digits-resnet"
    model, graph, params = digits(name)
    rt, quantizer, _ = calibrated(name, {"activation": {"method": "entropy"},
                                         "weight": {"method": "mse"}})
    first = quantizer.save_strategy(tmp_path / "a.json")
    rt_loaded, loaded = from_strategy(name, first, "torch")
    assert loaded.quant_plan() == quantizer.quant_plan()
    assert loaded.strategy() == quantizer.strategy()
    second = loaded.save_strategy(tmp_path / "b.json")
    with open(first, encoding="utf-8") as a, open(second, encoding="utf-8") as b:
        assert a.read() == b.read()
    document = json.loads(open(first, encoding="utf-8").read())
    entry = document["strategy"]["layer1.0.conv1"]
    assert entry["input"]["method"] == "entropy" and entry["weight"]["method"] == "mse"
    inputs = model.eval_inputs.numpy()
    np.testing.assert_array_equal(rt.run(inputs)[0], rt_loaded.run(inputs)[0])
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]


def test_overrides_skip_and_fp16_fallback(tmp_path):
    name = "digits-cnn"
    _, graph, params = digits(name)
    config = {"fp16_fallback": True,
              "layers": {"conv1": {"skip": True},
                         "fc": {"weight": {"bits": 4}, "activation": {"method": "percentile"}},
                         "conv3": {"activation": None}}}
    rt, quantizer, passes = calibrated(name, config)
    plan = quantizer.quant_plan()
    assert passes == 2 and "conv1" not in plan
    assert plan["fc"].weight.dtype == "int4" and plan["conv2"].weight.dtype == "int8"
    assert plan["conv3"].input is None and plan["conv3"].weight is not None
    assert quantizer.strategy()["conv1"] == {"fallback": "float16"}
    assert quantizer.strategy()["fc"]["input"]["method"] == "percentile"
    _, rounded = quantizer.transform(graph, params)
    expected = params["conv1.weight"].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(rounded["conv1.weight"], expected)
    assert rounded["conv2.weight"] is params["conv2.weight"]
    path = quantizer.save_strategy(tmp_path / "q.json")
    loaded = Quantizer(graph, params, {})
    loaded.load_strategy(path)
    assert loaded.fp16_layers == ["conv1"] and loaded.quant_plan() == plan
    weight_only = create_tool(MSC_TOOL.QUANTIZE, graph, params, {"activation": None})
    assert weight_only.watched_tensors() == []
    weight_only.calibrate()
    assert all(layer.input is None for layer in weight_only.quant_plan().values())


@pytest.mark.parametrize("config,match", [
    ({"weight": {"bits": 3}}, r"weight\.bits 3: expected one of \[4, 8\]"),
    ({"weight": {"dtype": "int3"}}, r"weight\.dtype 'int3': expected one of"),
    ({"activation": {"dtype": "int4"}}, r"activation\.dtype 'int4'"),
    ({"activation": {"method": "kl"}}, r"activation\.method 'kl': expected one of"),
    ({"weight": {"method": "entropy"}}, r"weight\.method 'entropy'"),
    ({"weight": {"bits": 8, "dtype": "int4"}}, r"bits 8 and dtype 'int4' disagree"),
    ({"weight": {"per_channel": "yes"}}, r"weight\.per_channel 'yes': expected true or false"),
    ({"activation": {"percentile": 20}}, r"activation\.percentile 20"),
    ({"activation": {"bins": 16}}, r"activation\.bins 16"),
    ({"layers": {"nope": {"skip": True}}}, r"unknown layer 'nope'"),
    ({"layers": {"conv1": {"skip": "yes"}}}, r"layers\.conv1\.skip"),
    ({"layers": {"conv1": {"weight": {"bits": 3}}}}, r"layers\.conv1\.weight\.bits 3"),
    ({"layers": {"relu": {"weight": {}}}}, r"layers\.relu\.weight: node 'relu'"),
    ({"layers": {"x": {"activation": {}}}}, r"'x' is a graph input"),
    ({"include": ["conv"]}, r"include names unknown optypes \['conv'\]"),
    ({"fp16_fallback": 1}, r"fp16_fallback must be true or false"),
    ({"bits": 8}, r"unknown keys \['bits'\]"),
])
def test_bad_config_names_the_key(config, match):
    _, graph, params = digits("digits-cnn")
    with pytest.raises(ToolConfigError, match=match):
        create_tool(MSC_TOOL.QUANTIZE, graph, params, config)


def _strategy_doc(strategy: dict) -> dict:
    return {"tool": "quantize", "version": 1, "graph": "DigitsCNN", "strategy": strategy}


def _mutations(good: dict) -> list[tuple[str, object, str]]:
    fc = good["fc"]

    def with_fc(**changes):
        entry = json.loads(json.dumps(fc))
        for role, value in changes.items():
            entry[role] = value
        return {**good, "fc": entry}

    drop_scale = {k: v for k, v in fc["input"].items() if k != "scale"}
    negative = {**fc["input"], "scale": [-0.5]}
    int3 = {**fc["weight"], "dtype": "int3"}
    short = {**fc["weight"], "scale": fc["weight"]["scale"][:3], "zero_point": [0, 0, 0]}
    return [
        ("unknown layer", {**good, "nope": fc}, r"unknown layer 'nope'"),
        ("missing scale", with_fc(input=drop_scale),
         r"layer 'fc': input: missing keys \['scale'\]"),
        ("negative scale", with_fc(input=negative), r"layer 'fc': input\.scale: every scale"),
        ("bad dtype", with_fc(weight=int3), r"layer 'fc': weight\.dtype 'int3'"),
        ("channel count", with_fc(weight=short), r"3 scales for 10 output channels"),
        ("input axis", with_fc(input={**fc["input"], "axis": 0}), r"input\.axis 0"),
        ("fractional zero point", with_fc(input={**fc["input"], "zero_point": [0.5]}),
         r"input\.zero_point: expected integers"),
        ("not an object", {**good, "fc": [1]}, r"layer 'fc': expected an object"),
        ("unknown role", with_fc(bias=fc["weight"]), r"unknown keys \['bias'\]"),
    ]


def test_malformed_strategy_files_are_rejected_and_change_nothing(tmp_path):
    _, graph, params = digits("digits-cnn")
    _, quantizer, _ = calibrated("digits-cnn", INT8)
    good = quantizer.strategy()
    for label, strategy, match in _mutations(good):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(_strategy_doc(strategy)), encoding="utf-8")
        fresh = Quantizer(graph, params, INT8)
        with pytest.raises(ToolConfigError, match=match):
            fresh.load_strategy(path)
        assert not fresh.calibrated, label
        with pytest.raises(ToolConfigError, match=match):
            quantizer.set_strategy(strategy)
        assert quantizer.strategy() == good, label
    broken = tmp_path / "broken.json"
    broken.write_text('{"tool": "quantize", "strategy": {', encoding="utf-8")
    with pytest.raises(ToolConfigError, match="not valid JSON"):
        Quantizer(graph, params, INT8).load_strategy(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MSCError, match="not calibrated"):
        Quantizer(graph, params, INT8).save_strategy(out / "q.json")
    assert os.listdir(out) == []
