"""The one tool contract: a tool declared in one place gets its env, search space,
pipeline stage and replay from that declaration.

This module adds a real tool without touching any other file: ``fp16`` stores the
weights of the layers it is given in half precision (rounded to float16, kept as
float32 arrays so every runner takes them, as the quantizer's fp16 fallback does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import mscgym
from mscgym.compiler.graph import MSCGraph
from mscgym.pipeline import ConfigError, create_msc_processor
from mscgym.pipeline.config import validate_config
from mscgym.records import RecordError, make_record, replay
from mscgym.runtime.manager import RuntimeManager
from mscgym.tasks.description import DescriptionError, as_json
from mscgym.tasks.kinds import task_kinds
from mscgym.tasks.spaces import Dimension
from mscgym.tasks.task import Task
from mscgym.tools import tool_class
from mscgym.tools.base import BaseTool, Params, ToolConfigError
from mscgym.tools.registry import (
    ToolContext,
    ToolSpec,
    apply_tools,
    pipeline_stages,
    register_tool,
    tool_names,
    unregister_tool,
)

KERNELS = ("msc.conv2d_bias", "nn.conv2d", "msc.linear", "msc.linear_bias")


class HalfPrecision(BaseTool):
    """Rounds the weights of the configured layers to float16 (``{"layers": [...]}``)."""

    kind = "fp16"

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self.check_keys(self.config, {"layers"}, "fp16 config")
        self.set_strategy({"layers": list(self.config.get("layers", []))})

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        rounded = dict(params)
        for name in self.layers:
            for tensor in graph.find_node(name).weights.values():
                value = np.asarray(rounded[tensor.name])
                rounded[tensor.name] = value.astype(np.float16).astype(value.dtype)
        return graph, rounded

    def strategy(self) -> dict[str, Any]:
        return {"layers": list(self.layers)}

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        if not isinstance(strategy, dict) or not isinstance(strategy.get("layers"), list):
            raise ToolConfigError("fp16 strategy: expected {'layers': [...]}")
        for name in strategy["layers"]:
            self.check_layer(name, "fp16 strategy")
        self.layers = sorted(strategy["layers"])


def fp16_space(task: Task) -> list[Dimension]:
    return [Dimension(f"fp16:{node.name}", ("float", "fp16"), "float")
            for node in task.graph.nodes if node.optype in KERNELS]


def fp16_tool(task: Task, choices: Mapping[str, Any], graph: MSCGraph, params: Params,
              context: ToolContext) -> BaseTool | None:
    layers = [name.split(":", 1)[1] for name, value in choices.items() if value == "fp16"]
    return HalfPrecision(graph, params, {"layers": layers}) if layers else None


def _layers_view(strategy: Any) -> Any:
    return sorted(strategy["layers"]) if isinstance(strategy, dict) else strategy


SPEC = ToolSpec("fp16", HalfPrecision, order=25, space=fp16_space, plan=fp16_tool,
                replay_view=_layers_view)
FAST = {"profile_repeat": 3, "profile_warmup": 1}


@pytest.fixture
def fp16() -> Iterator[ToolSpec]:
    register_tool(SPEC)
    try:
        yield SPEC
    finally:
        unregister_tool("fp16")


def _rounded(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(values.dtype)


def test_registry_derives_kinds_envs_and_stages(fp16: ToolSpec) -> None:
    assert tool_names() == ["prune", "quantize", "fp16", "distill", "collect"]
    assert "fp16" in task_kinds() and "fp16" in pipeline_stages()
    assert mscgym.ENV_IDS["msc/Fp16-v0"] == "fp16"
    assert "msc/Fp16-v0" in gym.registry
    assert validate_config({"fp16": {"config": {"layers": ["conv1"]}}})["stages"] == ["fp16"]
    with pytest.raises(ToolConfigError, match="registered already"):
        register_tool(SPEC)


def test_unregister_removes_everything() -> None:
    register_tool(SPEC)
    unregister_tool("fp16")
    assert "fp16" not in tool_names() and "fp16" not in task_kinds()
    assert "msc/Fp16-v0" not in gym.registry and "msc/Fp16-v0" not in mscgym.ENV_IDS
    assert "fp16" not in pipeline_stages()
    with pytest.raises(ConfigError):
        validate_config({"fp16": {"config": {"layers": ["conv1"]}}})
    with pytest.raises(ToolConfigError, match="unknown tool kind 'fp16'"):
        tool_class("fp16")


def test_env_space_and_one_step(fp16: ToolSpec) -> None:
    env = gym.make("msc/Fp16-v0", model="digits-cnn", mode="oneshot", **FAST)
    task = env.unwrapped.task
    layers = ["conv1", "conv2", "conv3", "fc"]
    assert [d.name for d in task.space] == [f"fp16:{layer}" for layer in layers]
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.ones(len(task.space), dtype=np.int64))
    assert terminated and np.isfinite(reward)
    assert info["plan"] == {f"fp16:{layer}": "fp16" for layer in layers}
    model = task.compressed(info["plan"])
    assert model.strategies == {"fp16": {"layers": layers}}
    weight = task.graph.find_node("conv1").weight_name("weight")
    assert np.array_equal(model.params[weight], _rounded(task.params[weight]))
    assert not np.array_equal(model.params[weight], task.params[weight])
    env.close()


def test_pipeline_order_in_the_runtime_manager(fp16: ToolSpec) -> None:
    task = Task("digits-cnn", "prune", **FAST)
    manager = RuntimeManager(task.graph, task.params, {"runner": "torch"})
    manager.create_tool("fp16", {"layers": ["fc"]})
    pruner = manager.create_tool("prune", {"density": 0.5})
    manager.load_model()
    fc = task.graph.find_node("fc").weight_name("weight")
    pruned, pruned_params = pruner.transform(task.graph, task.params)
    assert manager.graph.to_json() == pruned.to_json()  # prune (10) before fp16 (25)
    assert np.array_equal(manager.params[fc], _rounded(pruned_params[fc]))
    applied = apply_tools(task.graph, task.params, {"fp16": manager.get_tool("fp16"),
                                                    "prune": pruner})
    assert list(applied.tools) == ["prune", "fp16"]


def test_pipeline_stage_writes_and_applies_the_strategy(fp16: ToolSpec, tmp_path: Path
                                                        ) -> None:
    config = {"workspace": str(tmp_path / "ws"), "profile": {"repeat": 3, "warmup": 1},
              "fp16": {"config": {"layers": ["conv1", "fc"]}, "strategy_file": "fp16.json"}}
    processor = create_msc_processor("digits-cnn", config)
    processor.optimize()
    processor.close()
    graph, params = processor.source.graph, processor.source.params
    for name in ("conv1", "fc"):
        weight = graph.find_node(name).weight_name("weight")
        assert np.array_equal(processor.params[weight], _rounded(params[weight]))
    strategy = (tmp_path / "ws" / "strategies" / "fp16.json").read_text()
    assert '"tool": "fp16"' in strategy and (tmp_path / "ws" / "fp16.json").exists()


def test_replay_checks_the_tools_strategy(fp16: ToolSpec, tmp_path: Path) -> None:
    task = Task("digits-cnn", "fp16", **FAST)
    plan = task.space.complete({"fp16:conv2": "fp16"})
    record = make_record(task, plan)
    assert record.strategies == {"fp16": {"layers": ["conv2"]}}
    path = tmp_path / "record.json"
    record.save(path)
    result = replay(path)
    assert result.model.strategies == record.strategies
    record.strategies["fp16"] = {"layers": ["conv1"]}
    record.save(path)
    with pytest.raises(RecordError, match="fp16 strategy differs"):
        replay(path)


def test_from_description_inverts_describe(fp16: ToolSpec) -> None:
    task = Task("digits-cnn", "fp16", scorer="accuracy", **FAST)
    description = task.describe()
    rebuilt = Task.from_description(description, exact=True)
    assert as_json(rebuilt.describe()) == as_json(description)
    with pytest.raises(DescriptionError, match="model weight hash does not match"):
        Task.from_description({**description, "weight_hash": "0" * 64})
    with pytest.raises(DescriptionError, match="differs from the described one at key 'note'"):
        Task.from_description({**description, "note": "not the task's"}, exact=True)
