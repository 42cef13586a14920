"""MSCProcessor: a config-driven compression pipeline with a replayable workspace.

Stages: ``baseline`` (build the float model on the compile target and check it
against a reference runner) -> ``prune`` / ``quantize`` / ``distill`` in config order
(each from a strategy file, from its tool config, or searched by its gym section) ->
``finalize`` (build the optimized model on the target, no further optimization,
profile and check it). Each finished stage leaves its strategy, a checkpoint and its
metrics in the workspace before it is marked done, so a failed or killed run resumes
after the last finished stage.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mscgym.compiler.codegen.torch_codegen import to_torch, weights_from_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.pipeline.config import ConfigError, validate_config
from mscgym.pipeline.report import format_report
from mscgym.pipeline.workspace import Workspace
from mscgym.runtime.manager import calibrate_quantizer, checked_weights
from mscgym.runtime.registry import create_runner
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.measure import (
    Compressed,
    Measurement,
    batched,
    measure,
    reference_outputs,
)
from mscgym.tasks.sources import ModelSource, Params, TaskData, resolve_model
from mscgym.tools import MSC_TOOL, create_tool
from mscgym.utils.files import atomic_write

logger = logging.getLogger("mscgym.pipeline")


def load_task_data(section: Mapping[str, str], base_dir: str) -> TaskData:
    """Task data from the config's ``data`` section (.npy files, loaded without pickle)."""

    def load(key: str) -> np.ndarray:
        path = section[key]
        path = path if os.path.isabs(path) else os.path.join(base_dir, path)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError(f"config key 'data.{key}': cannot load {path} ({err})") from None

    calibration = load("calibration")
    labels = load("labels") if "labels" in section else None
    return TaskData(data_id=f"files:{section['calibration']}",
                    calibration=[calibration[i:i + 32] for i in range(0, len(calibration), 32)],
                    eval_inputs=load("eval"), eval_labels=labels)


class MSCProcessor:
    """Runs the pipeline a config describes on one model; see the module docstring."""

    def __init__(self, model: Any, config: Mapping[str, Any] | str | os.PathLike[str],
                 data: TaskData | None = None) -> None:
        base_dir = os.getcwd() if isinstance(config, Mapping) else os.path.dirname(
            os.path.abspath(os.fspath(config)))
        self.config = validate_config(config)
        model = model if model is not None else self.config.get("model")
        if model is None:
            raise ConfigError("config key 'model': no model was passed and the config names "
                              "none")
        if data is None and "data" in self.config:
            data = load_task_data(self.config["data"], base_dir)
        self.workspace = Workspace(self._absolute(self.config["workspace"], base_dir))
        self.workspace.check_config_paths(self.config)
        self._log_handler = self._setup_logging()
        self.source: ModelSource = resolve_model(model, data)
        if isinstance(model, str) and "model" not in self.config:
            self.config["model"] = model
        self.config_hash = fingerprint(self.config)
        state = self.workspace.state()
        if state.get("config_hash") not in (None, self.config_hash):
            logger.info("config changed since the last run: starting over")
            self.workspace.write_json("state.json", {"finished": [], "stages": {}})
        self.workspace.write_json("config.json", self.config)
        self.graph, self.params, self.quant = self.source.graph, self.source.params, {}
        self._teacher: np.ndarray | None = None
        self._optimized = False
        self._finalized = False

    # -- plumbing -------------------------------------------------------------------
    @staticmethod
    def _absolute(path: str, base_dir: str) -> str:
        return path if os.path.isabs(path) else os.path.join(base_dir, path)

    def _setup_logging(self) -> logging.Handler:
        handler = logging.FileHandler(self.workspace.path(self.config["log_file"]))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("mscgym")
        root.addHandler(handler)
        root.setLevel(getattr(logging, self.config["verbose"].upper()))
        return handler

    def close(self) -> None:
        logging.getLogger("mscgym").removeHandler(self._log_handler)
        self._log_handler.close()

    @property
    def data(self) -> TaskData:
        return self.source.data

    def _measurement(self, runner: str | None = None) -> Measurement:
        profile = self.config["profile"]
        return Measurement(runner or self.config["compile"]["target"],
                           self.config["compile"]["device"], {}, profile["repeat"],
                           profile["warmup"])

    def _teacher_outputs(self) -> np.ndarray:
        if self._teacher is None:
            self._teacher = reference_outputs(self.source.graph, self.source.params,
                                              self.data.eval_inputs)
        return self._teacher

    def _measure(self, graph: MSCGraph, params: Params, quant: QuantPlan) -> dict[str, Any]:
        metrics = measure(Compressed(graph, params, quant), self.data, self._teacher_outputs(),
                          self._measurement())
        return metrics.to_json()

    def _run_stage(self, name: str, body: Any) -> None:
        """Run ``body`` unless the stage is finished (then restore its checkpoint)."""
        if name in self.workspace.state()["finished"]:
            self.graph, self.params, self.quant = self.workspace.load_checkpoint(name)
            logger.info("stage %s: already finished, restored its checkpoint", name)
            return
        logger.info("stage %s: start", name)
        try:
            summary = body() or {}
            self.workspace.save_checkpoint(name, self.graph, self.params, self.quant)
            summary["metrics"] = self._measure(self.graph, self.params, self.quant)
        except BaseException as err:
            self.workspace.fail_stage(name, err)
            logger.error("stage %s failed: %s", name, err)
            raise
        self.workspace.finish_stage(name, summary, self.config_hash)
        logger.info("stage %s: done", name)

    # -- stages ---------------------------------------------------------------------
    def _baseline(self) -> dict[str, Any]:
        check = self.config["baseline"]["check_config"]
        target = self.config["compile"]["target"]
        reference = self._run_on(check["runner"], self.graph, self.params, {})
        built = self._run_on(target, self.graph, self.params, {})
        close = np.allclose(built, reference, atol=check["atol"], rtol=check["rtol"])
        diff = float(np.abs(built - reference).max())
        if not close:
            raise MSCError(f"baseline check failed: {target} differs from {check['runner']} by "
                           f"{diff:.3g} (atol {check['atol']}, rtol {check['rtol']})")
        return {"check": {"runner": check["runner"], "max_abs_diff": diff}}

    def _run_on(self, runner_name: str, graph: MSCGraph, params: Params,
                quant: QuantPlan) -> np.ndarray:
        runner = create_runner(runner_name, self.config["compile"]["device"])
        runner.build(graph, params, quant)
        return batched(lambda x: runner.run([x])[0], self.data.eval_inputs)

    def _strategy_path(self, stage: str) -> str:
        return self.workspace.path("strategies", f"{stage}.json")

    def _stage(self, stage: str) -> dict[str, Any]:
        section = self.config[stage]
        if section["gym"]:
            return self._gym_stage(stage, section)
        tool = self._make_tool(stage, section)
        if section["strategy_file"] is not None:
            path = section["strategy_file"]
            tool.load_strategy(path)
            source = {"strategy_file": os.path.abspath(path)}
        else:
            self._apply_config(stage, tool)
            source = {"config": section["config"]}
        if stage == MSC_TOOL.DISTILL.value and section["strategy_file"] is not None:
            self._distill_from_strategy(tool)
        self.graph, self.params = tool.transform(self.graph, self.params)
        if stage == MSC_TOOL.QUANTIZE.value:
            self.quant = tool.quant_plan()
        tool.save_strategy(self._strategy_path(stage))
        return source

    def _make_tool(self, stage: str, section: Mapping[str, Any]) -> Any:
        config = {} if section["strategy_file"] is not None else dict(section["config"])
        if stage == MSC_TOOL.DISTILL.value:
            config.setdefault("progress", False)
        tool = create_tool(stage, self.graph, self.params, config)
        if stage == MSC_TOOL.DISTILL.value:
            tool.set_teacher(self.source.graph, self.source.params)
            if self.quant:
                tool.set_quant(self.quant)
        return tool

    def _apply_config(self, stage: str, tool: Any) -> None:
        if stage == MSC_TOOL.QUANTIZE.value:
            quantizer = calibrate_quantizer(self.graph, self.params, tool.config,
                                            self.data.calibration)
            tool.set_strategy(quantizer.strategy())
        elif stage == MSC_TOOL.DISTILL.value:
            tool.distill(*self._train_data())

    def _distill_from_strategy(self, tool: Any) -> None:
        """Distillation is replayed by re-running it with the recorded, seeded config;
        the distiller checks the result against the recorded weight hash."""
        tool.distill(*self._train_data())

    def _train_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.data.train_inputs is not None:
            return self.data.train_inputs, self.data.train_labels
        return np.concatenate(self.data.calibration), None

    def _gym_stage(self, stage: str, section: Mapping[str, Any]) -> dict[str, Any]:
        from mscgym.agents import create_agent
        from mscgym.tasks.task import Task

        records = []
        for entry in section["gym"]:
            env, agent_cfg = entry["env"], entry["agent"]
            common = {"data": self.data, "scorer": env["strategy"],
                      "scorer_options": env["options"], "runner": env["runner"],
                      "profile_repeat": self.config["profile"]["repeat"],
                      "profile_warmup": self.config["profile"]["warmup"]}
            if stage == MSC_TOOL.DISTILL.value:
                task = Task((self.source.graph, self.source.params), "distill",
                            student=Compressed(self.graph, self.params, self.quant), **common)
            else:
                task = Task((self.graph, self.params), stage, **common)
            agent = create_agent(agent_cfg["type"], progress=False, **agent_cfg["options"])
            result = agent.search(task, agent_cfg["budget"])
            record_path = self.workspace.path("gym", entry["record"])
            result.best_record.save(record_path)
            records.append(record_path)
            best = task.compressed(result.best_plan)
            self.graph, self.params = best.graph, best.params
            if stage != MSC_TOOL.PRUNE.value:
                self.quant = best.quant
            self._save_gym_strategy(stage, best)
        return {"gym_records": records}

    def _save_gym_strategy(self, stage: str, best: Compressed) -> None:
        strategy = best.strategies.get(stage)
        if strategy is None:
            return
        graph = self.source.graph if stage == MSC_TOOL.PRUNE.value else best.graph
        params = self.source.params if stage == MSC_TOOL.PRUNE.value else best.params
        tool = create_tool(stage, graph, params, {})
        tool.set_strategy(strategy)
        tool.save_strategy(self._strategy_path(stage))

    # -- public API ---------------------------------------------------------------------
    def optimize(self) -> torch.nn.Module:
        """Run baseline and the optimize stages; return the trainable optimized model
        (torch, with fake-quant where quantized) for the user's own training loop."""
        self._run_stage("baseline", self._baseline)
        for stage in self.config["stages"]:
            self._run_stage(stage, lambda stage=stage: self._stage(stage))
        self._optimized = True
        module = to_torch(self.graph, self.params, self.quant)
        return module.train()

    def update_weights(self, weights: Mapping[str, Any] | torch.nn.Module) -> None:
        """Take trained weights (graph naming, e.g. the optimized module's state_dict)."""
        if isinstance(weights, torch.nn.Module):
            weights = weights_from_torch(weights)
        self.params = {**self.params, **checked_weights(self.graph, weights)}
        self.workspace.save_checkpoint("trained", self.graph, self.params, self.quant)
        self._finalized = False
        state = self.workspace.state()
        if "finalize" in state["finished"]:
            state["finished"].remove("finalize")
            self.workspace.write_json("state.json", state)

    def compile(self) -> dict[str, Any]:
        """Finalize: build the optimized model on the target, profile and check it."""
        if not self._optimized:
            self.optimize()
            if os.path.exists(self.workspace.path("checkpoints", "trained", "graph.json")):
                self.graph, self.params, self.quant = self.workspace.load_checkpoint("trained")
        self._run_stage("finalize", self._finalize)
        self._finalized = True
        return self.report()

    def _finalize(self) -> dict[str, Any]:
        target = self.config["compile"]["target"]
        runner = create_runner(target, self.config["compile"]["device"])
        runner.build(self.graph, self.params, self.quant)
        built = batched(lambda x: runner.run([x])[0], self.data.eval_inputs)
        expected = reference_outputs(self.graph, self.params, self.data.eval_inputs, self.quant)
        agreement = float(np.mean(built.argmax(-1) == expected.argmax(-1)))
        if agreement < 0.98:
            raise MSCError(f"finalize check failed: {target} agrees with the optimized torch "
                           f"model on only {agreement:.1%} of top-1 predictions")
        artifact = runner.export(self.workspace.path("artifact", _artifact_name(
            target, self.config["export"]["name"])))
        return {"artifact": artifact, "check": {"top1_agreement": agreement,
                                                "max_abs_diff": float(np.abs(
                                                    built - expected).max())}}

    def export(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the deployable result: the built artifact plus graph, weights, quant plan."""
        if not self._finalized:
            self.compile()
        folder = os.fspath(path) if path is not None else self.workspace.path("export")
        os.makedirs(folder, exist_ok=True)
        name = self.config["export"]["name"]
        self.graph.export(os.path.join(folder, f"{name}.json"), params=self.params)
        Workspace(folder).write_json(f"{name}.quant.json",
                                     {k: v.to_json() for k, v in self.quant.items()})
        artifact = _artifact_name(self.config["compile"]["target"], name)
        built = self.workspace.path("artifact", artifact)  # finalize built and wrote it
        atomic_write(os.path.join(folder, artifact), lambda tmp: shutil.copyfile(built, tmp))
        return folder

    def report(self) -> dict[str, Any]:
        """Per-stage metrics (JSON and a readable table), written to the workspace."""
        state = self.workspace.state()
        rows = [{"stage": s, **state["stages"][s].get("metrics", {})}
                for s in state["finished"] if s in state["stages"]]
        report = {"stages": rows, "config_hash": self.config_hash,
                  "model": self.source.model_id, "weight_hash": self.source.weight_hash}
        self.workspace.write_json("report.json", report)
        table = format_report(rows)
        with open(self.workspace.path("report.txt"), "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
        return report

    def run(self) -> dict[str, Any]:
        """Deploy mode end to end: optimize, compile (finalize) and export."""
        self.compile()
        self.export()
        return self.report()


def _artifact_name(target: str, name: str) -> str:
    return {"tvm": f"{name}.so", "onnxruntime": f"{name}.onnx", "tensorrt": f"{name}.onnx",
            "torch": f"{name}.safetensors"}[target]


def create_msc_processor(model: Any, config: Mapping[str, Any] | str | os.PathLike[str],
                         data: TaskData | None = None) -> MSCProcessor:
    """A processor for ``model`` (torch module, ONNX file, exported graph, zoo name)."""
    return MSCProcessor(model, config, data)
