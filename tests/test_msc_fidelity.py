"""MSC as its users know it: its documented config and RuntimeManager snippet run verbatim,
a stage's target decides the quantization form, and a quality-only gym searches how to
quantize instead of returning the float model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tvm import relax

from mscgym import zoo
from mscgym.agents import create_agent
from mscgym.compiler import MSCError, msc_transform
from mscgym.pipeline import ConfigError, create_msc_processor
from mscgym.pipeline.processor import target_quant_choices, target_quantizer_config
from mscgym.runtime import RunnerUnavailableError, create_runtime_manager
from mscgym.runtime.runners.trt_runner import TensorRTRunner
from mscgym.tasks.task import Task, quantizer_config
from mscgym.zoo.cache import resolve_cache_dir

MSC_CONFIG = {
    "workspace": "msc_workspace", "verbose": "runtime", "log_file": "MSC_LOG",
    "baseline": {"check_config": {"atol": 0.05}},
    "quantize": {"strategy_file": "msc_quantize.json", "target": "tensorrt",
                 "gym": [{"record": "searched_config.json", "env": {"strategy": "distill_loss"},
                          "agent": {"type": "grid_search"}}]},
    "profile": {"repeat": 1000},
}
"""MSC's documented pipeline config, verbatim."""


def _on_onnxruntime(config: dict) -> dict:
    """The documented config with the one substitution this machine needs (no TensorRT)."""
    config = copy.deepcopy(config)
    config["quantize"]["target"] = "onnxruntime"
    return config


def test_documented_tensorrt_config_is_refused_naming_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        TensorRTRunner.check_available("cuda")
    except RunnerUnavailableError:
        pass
    else:
        pytest.skip("TensorRT and a CUDA GPU are present: the config is valid here")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"quantize\.target.*'tensorrt' cannot run here") as err:
        create_msc_processor("digits-cnn", MSC_CONFIG)
    message = str(err.value)
    assert "pip install mscgym[trt]" in message and "CUDA GPU" in message
    assert not (tmp_path / "msc_workspace").exists()


def test_documented_config_runs_verbatim_and_rerun_reuses_the_strategy_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = _on_onnxruntime(MSC_CONFIG)
    processor = create_msc_processor("digits-cnn", config)
    report = processor.run()
    processor.close()
    ws = tmp_path / "msc_workspace"
    assert processor.evaluations > 1
    rows = {row["stage"]: row for row in report["stages"]}
    assert list(rows) == ["baseline", "quantize", "finalize"]
    assert rows["quantize"]["runner"] == "onnxruntime"
    # the gym searched how to quantize: every conv/linear layer is int8, none left float
    strategy = json.loads((ws / "msc_quantize.json").read_text())["strategy"]
    assert set(strategy) == {"conv1", "conv2", "conv3", "fc"}
    assert all(entry["weight"]["dtype"] == "int8" for entry in strategy.values())
    assert rows["quantize"]["size_bytes"] < rows["baseline"]["size_bytes"] / 3
    assert 0 < rows["quantize"]["distill_loss"] < 1e-3
    record = json.loads((ws / "gym" / "searched_config.json").read_text())
    assert record["metrics"]["distill_loss"] == pytest.approx(rows["quantize"]["distill_loss"])
    log = (ws / "MSC_LOG").read_text()
    assert "stage quantize: done" in log and "mscgym.runtime: built graph" in log

    again = create_msc_processor("digits-cnn", config)
    again_report = again.run()
    again.close()
    assert again.evaluations == 0
    assert again_report["stages"] == report["stages"]

    # a new workspace state with the strategy file in place: applied, not searched
    (ws / "state.json").unlink()
    fresh = create_msc_processor("digits-cnn", config)
    fresh.run()
    fresh.close()
    assert fresh.evaluations == 0
    state = json.loads((ws / "state.json").read_text())
    assert state["stages"]["quantize"]["strategy_file"] == str(ws / "msc_quantize.json")
    assert json.loads((ws / "msc_quantize.json").read_text())["strategy"] == strategy


def test_deleting_the_strategy_file_makes_the_gym_search_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = _on_onnxruntime(MSC_CONFIG)
    config["profile"] = {"repeat": 5, "warmup": 1}
    config["quantize"]["gym"][0]["agent"]["budget"] = 2
    first = create_msc_processor("digits-cnn", config)
    first.run()
    first.close()
    strategy_file = tmp_path / "msc_workspace" / "msc_quantize.json"
    assert first.evaluations == 2 and strategy_file.exists()
    strategy_file.unlink()
    second = create_msc_processor("digits-cnn", config)
    second.run()
    second.close()
    assert second.evaluations == 2
    assert strategy_file.exists()


def test_a_stage_is_measured_and_searched_on_its_own_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = {"profile": {"repeat": 3, "warmup": 1}, "compile": {"target": "onnxruntime"},
              "quantize": {"target": "tvm", "gym": [{"record": "best.json",
                                                     "env": {"strategy": "distill_loss"},
                                                     "agent": {"type": "grid", "budget": 1}}]}}
    processor = create_msc_processor("digits-cnn", config)
    report = processor.run()
    processor.close()
    rows = {row["stage"]: row for row in report["stages"]}
    assert rows["quantize"]["runner"] == "tvm"
    assert rows["baseline"]["runner"] == rows["finalize"]["runner"] == "onnxruntime"
    record = json.loads((tmp_path / "msc_workspace" / "gym" / "best.json").read_text())
    assert record["task"]["runner"] == "tvm"


def test_verbose_takes_msc_levels_and_agent_types_come_from_the_registry(
        tmp_path: Path) -> None:
    from mscgym.pipeline.config import validate_config

    for level in ("runtime", "debug:2", "warn", "critical"):
        assert validate_config({"workspace": str(tmp_path), "verbose": level})["verbose"] == level
    with pytest.raises(ConfigError, match="'verbose'.*'loud'"):
        validate_config({"verbose": "loud"})
    for given, agent in (("grid_search", "grid"), ("ray", "ray"), ("bayesian", "optuna")):
        config = validate_config({"quantize": {"gym": [{"agent": {"type": given}}]}})
        assert config["quantize"]["gym"][0]["agent"]["type"] == agent
    with pytest.raises(ConfigError, match="agent.type.*'hill_climb'.*ray"):
        validate_config({"quantize": {"gym": [{"agent": {"type": "hill_climb"}}]}})


def test_tensorrt_target_takes_symmetric_int8_with_per_channel_weights() -> None:
    for choice in target_quant_choices("tensorrt"):
        config = quantizer_config(choice)
        assert config["weight"] == {"dtype": "int8", "per_channel": True}
        assert config["activation"]["dtype"] == "int8"
        assert config["activation"].get("symmetric", True)
    assert set(target_quant_choices("onnxruntime")) > set(target_quant_choices("tensorrt"))
    forced = target_quantizer_config("tensorrt", {"activation": {"method": "percentile"}})
    assert forced["activation"] == {"method": "percentile", "dtype": "int8", "symmetric": True}
    with pytest.raises(ConfigError, match=r"activation\.dtype.*'tensorrt'.*'uint8'"):
        target_quantizer_config("tensorrt", {"activation": {"dtype": "uint8"}})
    # the plan TensorRT's form yields: zero points 0, per-channel weight scales
    task = Task("digits-cnn", "quantize", scorer="distill_loss", profile_repeat=2,
                quant_choices=target_quant_choices("tensorrt"))
    model = task.compressed(task.space.baseline_plan())
    assert set(model.quant) == {"conv1", "conv2", "conv3", "fc"}
    for layer in model.quant.values():
        assert layer.weight.axis == 0 and layer.input.axis is None
        assert set(layer.weight.zero_point) == {0} and set(layer.input.zero_point) == {0}


def test_distill_loss_gym_returns_the_best_int8_plan() -> None:
    task = Task("digits-cnn", "quantize", scorer="distill_loss", profile_repeat=2,
                profile_warmup=1)
    assert all("float" not in dim.choices for dim in task.space)
    assert "calibrate:percentile" in [dim.name for dim in task.space]
    assert task.baseline.distill_loss < 1e-9  # the float model, measured directly
    result = create_agent("grid_search", progress=False).search(task, 10)
    losses = [entry["metrics"]["distill_loss"] for entry in result.history]
    assert result.best_metrics.distill_loss == min(losses)
    assert len(set(losses)) > 2  # the choices differ for real
    assert all(v != "float" for k, v in result.best_plan.items() if k.startswith("quantize:"))
    model = task.compressed(result.best_plan)
    assert set(model.quant) == set(task.quantizable_layers())
    assert all(q.weight.bits == 8 for q in model.quant.values())
    default = task.evaluate(task.space.baseline_plan())
    assert result.best_metrics.distill_loss <= default.distill_loss
    # a scorer with a compression term may still keep layers float
    assert "float" in Task("digits-cnn", "quantize", profile_repeat=2).space.dims[0].choices


def _detached_module(digits: zoo.ZooModel) -> tuple:
    from tvm.relax.frontend.torch import from_exported_program

    exported = torch.export.export(digits.model, (digits.eval_inputs[:2],),
                                   dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    return from_exported_program(exported, keep_params_as_input=True)


def test_design_runtime_snippet_runs_verbatim_with_detach_params(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mscgym.tools import MSC_TOOL

    monkeypatch.chdir(tmp_path)
    digits = zoo.load("digits-cnn", cache_dir=resolve_cache_dir())
    mod = _detached_module(digits)
    mod, params = relax.frontend.detach_params(mod)
    assert list(params) == ["main"]
    quantize_config = {"activation": {"method": "percentile"}}
    calibrate_data = digits.calibration_batches(n_batches=2, batch_size=16)
    sample = digits.eval_inputs[:16].numpy()

    optimized_mod, msc_graph, msc_config = msc_transform(mod, params)
    rt = create_runtime_manager(optimized_mod, params, msc_config)   # config names the runner
    rt.create_tool(MSC_TOOL.QUANTIZE, quantize_config)
    quantizer = rt.get_tool(MSC_TOOL.QUANTIZE)
    rt.load_model()
    while not quantizer.calibrated:
        for batch in calibrate_data:
            rt.run(batch)
        quantizer.calibrate()
    quantizer.save_strategy("msc_quantize.json")
    rt.load_model(reuse_weights=True)
    outputs = rt.run(sample)
    stats = rt.profile(repeat=100)      # latency: median, p90, spread, on the runner's device

    expected = digits.model(torch.from_numpy(sample)).detach().numpy()
    assert (outputs[0].argmax(1) == expected.argmax(1)).mean() >= 0.9
    strategy = json.loads((tmp_path / "msc_quantize.json").read_text())["strategy"]
    assert set(strategy) == set(rt.quant) == {n.name for n in msc_graph.nodes
                                              if n.optype.startswith("msc.")}
    assert len(strategy) == 4
    assert stats.repeat == 100 and stats.median_ms > 0


@pytest.mark.parametrize("form", ["detach", "tvm", "numpy", "torch"])
def test_params_in_every_form_tvm_users_have(form: str) -> None:
    digits = zoo.load("digits-cnn", cache_dir=resolve_cache_dir())
    mod, detached = relax.frontend.detach_params(_detached_module(digits))
    func = mod["main"]
    names = [p.name for p in func.params[int(func.attrs["num_input"]):]]
    tensors = detached["main"]
    params = {
        "detach": detached,
        "tvm": dict(zip(names, tensors, strict=True)),
        "numpy": {n: t.numpy() for n, t in zip(names, tensors, strict=True)},
        "torch": {n: torch.from_numpy(t.numpy()) for n, t in zip(names, tensors, strict=True)},
    }[form]
    sample = digits.eval_inputs[:8].numpy()
    expected = digits.model(torch.from_numpy(sample)).detach().numpy()
    _, graph, config = msc_transform(mod, params)
    config["runner"] = "onnxruntime"
    rt = create_runtime_manager(mod, params, config)  # the unbound module: params are needed
    rt.load_model()
    np.testing.assert_allclose(rt.run(sample)[0], expected, atol=1e-4, rtol=1e-4)
    assert graph.name == rt.graph.name


def test_detach_params_of_the_wrong_length_is_refused() -> None:
    digits = zoo.load("digits-cnn", cache_dir=resolve_cache_dir())
    mod, detached = relax.frontend.detach_params(_detached_module(digits))
    with pytest.raises(MSCError, match="has 1 weights, but the function has"):
        msc_transform(mod, {"main": detached["main"][:1]})
