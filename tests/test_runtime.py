"""Runtime layer: runners agree with torch eager, profiling, the artifact cache, guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from safetensors.numpy import load_file
from tvm import relax

from mscgym import zoo
from mscgym.compiler import MSCError, from_torch, msc_transform
from mscgym.compiler.quant_spec import LayerQuant, QuantParams
from mscgym.runtime import (
    LatencyStats,
    RunnerUnavailableError,
    RuntimeManager,
    cache_stats,
    create_runner,
    create_runtime_manager,
)
from mscgym.runtime.cache import artifact_path
from mscgym.zoo.cache import resolve_cache_dir

RUNNERS = ["torch", "tvm", "onnxruntime"]
ZOO_DIR = resolve_cache_dir()
"""The zoo's weights stay where they are; only the runtime cache is per test module."""


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test of this file uses a fresh runtime cache of its own."""
    root = tmp_path_factory.mktemp("mscgym-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSCGYM_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def digits() -> zoo.ZooModel:
    return zoo.load("digits-cnn", cache_dir=ZOO_DIR)


@pytest.fixture(scope="module")
def model(digits: zoo.ZooModel) -> tuple:
    return from_torch(digits.model, digits.example_inputs)


@pytest.fixture(scope="module")
def batch(digits: zoo.ZooModel) -> tuple[np.ndarray, np.ndarray]:
    inputs = digits.eval_inputs[:16]
    with torch.no_grad():
        expected = digits.model(inputs).numpy()
    return inputs.numpy(), expected


@pytest.fixture(scope="module")
def managers(model: tuple) -> dict[str, RuntimeManager]:
    graph, params = model
    built = {}
    for name in RUNNERS:
        manager = RuntimeManager(graph, params, {"runner": name})
        manager.load_model()
        built[name] = manager
    return built


def _plan(scale: float) -> dict[str, LayerQuant]:
    return {"conv2": LayerQuant(QuantParams("int8", (scale,), (0,)),
                                QuantParams("int8", tuple([0.01] * 32), tuple([0] * 32), 0))}


@pytest.mark.parametrize("runner", RUNNERS)
def test_runner_matches_torch_eager(managers: dict, batch: tuple, runner: str) -> None:
    inputs, expected = batch
    outputs = managers[runner].run(inputs)
    assert len(outputs) == 1
    np.testing.assert_allclose(outputs[0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("runner", RUNNERS)
def test_profile_stats_are_sane(managers: dict, runner: str) -> None:
    stats = managers[runner].profile(repeat=20, warmup=2, batch=4)
    assert isinstance(stats, LatencyStats)
    assert (stats.runner, stats.device, stats.repeat, stats.warmup) == (runner, "cpu", 20, 2)
    assert len(stats.samples_ms) == 20
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.max_ms
    assert stats.iqr_ms >= 0
    assert json.loads(json.dumps(stats.to_json()))["median_ms"] == stats.median_ms


def test_profile_validates_counts(managers: dict) -> None:
    with pytest.raises(MSCError, match="repeat"):
        managers["onnxruntime"].profile(repeat=0)
    with pytest.raises(MSCError, match="warmup"):
        managers["onnxruntime"].profile(repeat=1, warmup=-1)


def test_tvm_load_model_twice_hits_the_disk_cache(model: tuple, cache_dir: Path) -> None:
    graph, params = model
    manager = RuntimeManager(graph, params, {"runner": "tvm"})
    manager.load_model()
    before = cache_stats()["tvm"]
    manager.load_model()
    after = cache_stats()["tvm"]
    assert after == {"hits": before["hits"] + 1, "misses": before["misses"]}
    libraries = list((cache_dir / "runtime" / "tvm").glob("*.so"))
    assert libraries and all(p.stat().st_size > 0 for p in libraries)


def test_tvm_cache_keys_on_the_quant_plan(model: tuple, batch: tuple) -> None:
    graph, params = model
    runner = create_runner("tvm")
    runner.build(graph, params, _plan(0.05))
    first = cache_stats()["tvm"]
    runner.build(graph, params, _plan(0.05))
    again = cache_stats()["tvm"]
    assert again == {"hits": first["hits"] + 1, "misses": first["misses"]}
    runner.build(graph, params, _plan(0.07))
    other = cache_stats()["tvm"]
    assert other == {"hits": again["hits"], "misses": again["misses"] + 1}
    quantized = runner.run([batch[0]])[0]
    assert not np.allclose(quantized, batch[1], atol=1e-4)
    assert np.abs(quantized - batch[1]).max() < 1.0


@pytest.mark.parametrize(("runner", "store"), [("onnxruntime", "onnx"), ("torch", "torch")])
def test_in_process_cache_hits_on_rebuild(model: tuple, runner: str, store: str) -> None:
    graph, params = model
    create_runner(runner).build(graph, params, _plan(0.05))
    before = cache_stats()[store]
    create_runner(runner).build(graph, params, _plan(0.05))
    assert cache_stats()[store] == {"hits": before["hits"] + 1, "misses": before["misses"]}


def test_torch_builds_from_the_cache_are_independent(model: tuple, batch: tuple) -> None:
    graph, params = model
    first, second = create_runner("torch"), create_runner("torch")
    first.build(graph, params, {})
    second.build(graph, params, {})
    with torch.no_grad():
        for weight in first.module.parameters():
            weight.zero_()
    np.testing.assert_allclose(second.run([batch[0]])[0], batch[1], atol=1e-4, rtol=1e-4)


def test_unloadable_cached_library_is_rebuilt(model: tuple, batch: tuple) -> None:
    """Also covers a graph returning a single tensor rather than a tuple."""
    graph, params = model
    graph = graph.clone()
    graph.return_tuple = False
    runner = create_runner("tvm")
    plan = _plan(0.11)
    key = runner.cache_key(graph, params, plan)
    path = artifact_path("tvm", key, ".so")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a shared library")
    before = cache_stats()["tvm"]
    runner.build(graph, params, plan)
    assert cache_stats()["tvm"]["misses"] == before["misses"] + 1
    assert path.stat().st_size > 1000
    outputs = runner.run([batch[0]])
    assert len(outputs) == 1 and outputs[0].shape == batch[1].shape


def test_tvm_cache_is_shared_across_processes(model: tuple, tmp_path: Path) -> None:
    graph, params = model
    create_runner("tvm").build(graph, params, {})
    graph.export(tmp_path / "graph.json", params=params)
    script = textwrap.dedent(f"""
        from mscgym.compiler.serialize import load_graph
        from mscgym.runtime import cache_stats, create_runner
        graph, params = load_graph({str(tmp_path / "graph.json")!r})
        create_runner("tvm").build(graph, params, {{}})
        print(cache_stats()["tvm"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), check=True)
    assert result.stdout.strip().splitlines()[-1] == "{'hits': 1, 'misses': 0}"


def test_tensorrt_is_unavailable_without_crashing(model: tuple) -> None:
    import mscgym.runtime.runners.trt_runner  # noqa: F401 - importing must be safe

    with pytest.raises(RunnerUnavailableError, match="(?i)tensorrt"):
        create_runner("tensorrt")
    graph, params = model
    manager = RuntimeManager(graph, params, {"runner": "tensorrt", "device": "cuda"})
    with pytest.raises(RunnerUnavailableError, match="(?i)tensorrt"):
        manager.load_model()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("runner", RUNNERS)
def test_cuda_without_a_gpu_is_unavailable(runner: str) -> None:
    with pytest.raises(RunnerUnavailableError, match="cuda"):
        create_runner(runner, device="cuda")


def test_registry_rejects_unknown_names_devices_and_options() -> None:
    with pytest.raises(MSCError, match="'tflite'.*onnxruntime"):
        create_runner("tflite")
    with pytest.raises(MSCError, match="'tpu'"):
        create_runner("tvm", device="tpu")
    with pytest.raises(MSCError, match="'threads'.*intra_op_threads"):
        create_runner("onnxruntime", options={"threads": 2})


def test_run_rejects_a_bad_input_shape(managers: dict) -> None:
    with pytest.raises(MSCError, match="input 'x'"):
        managers["tvm"].run(np.zeros((2, 1, 9, 9), np.float32))


def test_export_writes_each_runners_artifact(managers: dict, batch: tuple,
                                             tmp_path: Path) -> None:
    torch_file = managers["torch"].export(tmp_path / "model.safetensors")
    weights = load_file(torch_file)
    assert set(weights) == set(managers["torch"].params)
    onnx_file = managers["onnxruntime"].export(tmp_path / "model.onnx")
    onnx.checker.check_model(onnx.load(onnx_file))
    library = managers["tvm"].export(tmp_path / "model.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(batch[0]))
    np.testing.assert_allclose(out[0].numpy(), batch[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(MSCError, match=r"\*\.so"):
        managers["tvm"].export(tmp_path / "model.tar")


def _relax_module(digits: zoo.ZooModel) -> tuple[tvm.IRModule, dict]:
    """The model as MSC's users hold it: a Relax module with its weights as params."""
    from tvm.relax.frontend.torch import from_exported_program

    example = (digits.eval_inputs[:2],)
    dims = ({0: torch.export.Dim("batch", min=1)},)
    exported = torch.export.export(digits.model, example, dynamic_shapes=dims)
    mod, detached = relax.frontend.detach_params(
        from_exported_program(exported, keep_params_as_input=True))
    func = mod["main"]
    names = [p.name for p in func.params[int(func.attrs["num_input"]):]]
    return mod, dict(zip(names, detached["main"], strict=True))


def test_msc_transform_feeds_create_runtime_manager(digits: zoo.ZooModel, batch: tuple) -> None:
    mod, params = _relax_module(digits)
    optimized_mod, msc_graph, msc_config = msc_transform(mod, params)
    assert msc_config == {"runner": "tvm", "device": "cpu", "entry": "main",
                          "graph": msc_graph.name}
    msc_config["runner"] = "onnxruntime"
    for source, weights in ((optimized_mod, params), (mod, params)):
        rt = create_runtime_manager(source, weights, msc_config)
        rt.load_model()
        np.testing.assert_allclose(rt.run(batch[0])[0], batch[1], atol=1e-4, rtol=1e-4)
    rt = create_runtime_manager(msc_graph, rt.params, {"runner": "torch"})
    rt.load_model()
    np.testing.assert_allclose(rt.run(batch[0])[0], batch[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(MSCError, match="runer"):
        create_runtime_manager(optimized_mod, params, {"runer": "tvm"})


def test_design_snippet(digits: zoo.ZooModel, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mscgym.runtime import create_runtime_manager
    from mscgym.tools import MSC_TOOL

    monkeypatch.chdir(tmp_path)
    mod, params = _relax_module(digits)
    quantize_config = {"activation": {"method": "percentile"}}
    calibrate_data = digits.calibration_batches(n_batches=4, batch_size=16)
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
    stats = rt.profile(repeat=100)

    strategy = json.loads((tmp_path / "msc_quantize.json").read_text())["strategy"]
    assert set(strategy) == set(rt.quant) == {n.name for n in msc_graph.nodes
                                              if n.optype.startswith("msc.")}
    expected = digits.model(torch.from_numpy(sample)).detach().numpy()
    agree = (outputs[0].argmax(1) == expected.argmax(1)).mean()
    assert agree >= 0.9
    assert not np.allclose(outputs[0], expected, atol=1e-4)
    assert stats.repeat == 100 and stats.median_ms > 0
