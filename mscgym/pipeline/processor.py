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
from mscgym.pipeline.config import ConfigError, log_level, target_device, validate_config
from mscgym.pipeline.report import format_report
from mscgym.pipeline.workspace import Workspace
from mscgym.runtime.manager import calibrate_tool, checked_weights
from mscgym.runtime.registry import create_runner, runner_class
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.measure import (
    Compressed,
    Measurement,
    batched,
    measure,
    reference_outputs,
)
from mscgym.tasks.sources import (
    ModelFile,
    ModelSource,
    Params,
    TaskData,
    data_from_files,
    resolve_model,
)
from mscgym.tasks.spaces import QUANT_CHOICES
from mscgym.tools import MSC_TOOL
from mscgym.tools.base import save_strategy_file
from mscgym.tools.registry import ToolContext, apply_tools, new_tool, tool_spec
from mscgym.utils.files import atomic_write

logger = logging.getLogger("mscgym.pipeline")

TARGET_QUANT_CHOICES: dict[str, tuple[str, ...]] = {
    "tensorrt": ("int8_channel_minmax", "int8_channel_percentile", "int8_channel_entropy",
                 "int8_channel_mse"),
}
"""Quantization forms a target's int8 kernels take. TensorRT's explicit quantization
takes symmetric int8 only (zero points 0) with per-channel weights; a target not listed
takes every form in :data:`QUANT_CHOICES`."""


def target_quant_choices(target: str) -> tuple[str, ...]:
    """The per-layer quantization choices a gym may offer for ``target``."""
    return TARGET_QUANT_CHOICES.get(target, QUANT_CHOICES)


def target_quantizer_config(target: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` in the form ``target`` runs: for TensorRT symmetric int8, per-channel
    weights; a config asking for another form is refused, naming the key."""
    config = dict(config)
    if target != "tensorrt":
        return config
    config.setdefault("target", "tensorrt")  # the Quantizer's TensorRT QDQ placement
    required = {"weight": {"dtype": "int8", "per_channel": True, "symmetric": True},
                "activation": {"dtype": "int8", "symmetric": True}}
    for section, values in required.items():
        given = dict(config.get(section) or {})
        for key, value in values.items():
            if given.get(key, value) != value:
                raise ConfigError(f"config key 'quantize.config.{section}.{key}': target "
                                  f"'tensorrt' takes {value!r} (symmetric int8, per-channel "
                                  f"weights), got {given[key]!r}")
            given[key] = value
        config[section] = given
    return config


def load_task_data(section: Mapping[str, str], base_dir: str) -> TaskData:
    """Task data from the config's ``data`` section (.npy files, loaded without pickle)."""

    def load(key: str) -> np.ndarray:
        path = section[key]
        path = path if os.path.isabs(path) else os.path.join(base_dir, path)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError(f"config key 'data.{key}': cannot load {path} ({err})") from None

    for key in ("calibration", "eval", "labels"):
        if key in section:
            load(key)  # each file is checked here, so an error names its config key
    paths = {k: v if os.path.isabs(v) else os.path.join(base_dir, v) for k, v in section.items()}
    # data_from_files gives the data an id naming the files, which records rebuild from
    return data_from_files(paths["calibration"], paths["eval"], paths.get("labels"))


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
        self._check_strategy_files()
        if "quantize" in self.config["stages"]:  # the target's form, refused before work
            target_quantizer_config(self.config["quantize"]["target"],
                                    self.config["quantize"]["config"])
        self._invalidate_missing_strategies()
        self._teacher: np.ndarray | None = None
        self.evaluations = 0
        """Real (uncached) gym evaluations this processor ran: 0 when every stage was
        restored or applied from its strategy file."""
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
        root.setLevel(log_level(self.config["verbose"]))
        # MSC's "runtime" level: info, plus each build and run of the runtime managers.
        runtime_level = logging.DEBUG if self.config["verbose"] == "runtime" else logging.NOTSET
        logging.getLogger("mscgym.runtime").setLevel(runtime_level)
        return handler

    def strategy_file(self, stage: str) -> str | None:
        """The stage's configured strategy file (a path inside the workspace) as an
        absolute path, or None when the config names none."""
        path = self.config[stage]["strategy_file"]
        if path is None:
            return None
        if os.path.isabs(path):  # the user's own file, read as given (never written)
            return path
        return self.workspace.path(path, key=f"config key '{stage}.strategy_file':")

    def _check_strategy_files(self) -> None:
        """Before any work: a strategy file the run would write (it does not exist yet)
        must lie in the workspace; an absolute path elsewhere must name an existing file."""
        for stage in self.config["stages"]:
            path = self.strategy_file(stage)
            if path is not None and os.path.isabs(self.config[stage]["strategy_file"]) and (
                    not os.path.exists(path)):
                raise ConfigError(f"config key '{stage}.strategy_file': {path} does not exist; "
                                  "give an existing strategy file, or a relative path for the "
                                  "run to write its strategy to inside the workspace")

    def _invalidate_missing_strategies(self) -> None:
        """A finished stage whose strategy file was deleted runs again (and so does
        every stage after it): the file, not the checkpoint, is the record of a stage."""
        state = self.workspace.state()
        for stage in self.config["stages"]:
            path = self.strategy_file(stage)
            if path is None or stage not in state["finished"] or os.path.exists(path):
                continue
            logger.info("stage %s: strategy file %s is gone, the stage runs again", stage, path)
            state["finished"] = state["finished"][:state["finished"].index(stage)]
            self.workspace.write_json("state.json", state)
            return

    def close(self) -> None:
        logging.getLogger("mscgym").removeHandler(self._log_handler)
        self._log_handler.close()

    @property
    def data(self) -> TaskData:
        return self.source.data

    def _measurement(self, runner: str | None = None) -> Measurement:
        profile = self.config["profile"]
        runner = runner or self.config["compile"]["target"]
        return Measurement(runner, target_device(runner, self.config["compile"]["device"]), {},
                           profile["repeat"], profile["warmup"])

    def _teacher_outputs(self) -> np.ndarray:
        if self._teacher is None:
            self._teacher = reference_outputs(self.source.graph, self.source.params,
                                              self.data.eval_inputs)
        return self._teacher

    def _measure(self, graph: MSCGraph, params: Params, quant: QuantPlan,
                 runner: str | None = None) -> dict[str, Any]:
        metrics = measure(Compressed(graph, params, quant), self.data, self._teacher_outputs(),
                          self._measurement(runner))
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
            # an optimize stage is measured on its own target, the others on compile's
            target = self.config[name]["target"] if name in self.config["stages"] else None
            summary["metrics"] = self._measure(self.graph, self.params, self.quant, target)
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
        """One optimize stage: an existing strategy file is applied as is (no search);
        otherwise the gym searches, or the tool config plans, and the strategy is
        written to the strategy file for the next run to apply."""
        section = self.config[stage]
        path = self.strategy_file(stage)
        from_file = path is not None and os.path.exists(path)
        if path is not None and not from_file and os.path.isabs(section["strategy_file"]):
            raise ConfigError(f"config key '{stage}.strategy_file': {path} is gone; an absolute "
                              "strategy file is the user's own, only read, never written")
        if section["gym"] and not from_file:
            return self._gym_stage(stage, section)
        context = ToolContext(
            teacher=(self.source.graph, self.source.params),
            calibrate=lambda tool: calibrate_tool(tool, self.data.calibration),
            train_data=self._train_data)
        tool = new_tool(stage, self.graph, self.params,
                        {} if from_file else self._tool_config(stage, section), context)
        if from_file:
            # A quantizer's strategy is its calibration; a distiller's is replayed by
            # training again with the recorded, seeded config.
            tool.load_strategy(path)
            source: dict[str, Any] = {"strategy_file": path}
        else:
            source = {"config": section["config"]}
        applied = apply_tools(self.graph, self.params, [(stage, tool)], context, self.quant)
        self.graph, self.params, self.quant = applied.graph, applied.params, applied.quant
        tool.save_strategy(self._strategy_path(stage))
        if path is not None and not from_file:
            tool.save_strategy(path)
        return source

    @staticmethod
    def _tool_config(stage: str, section: Mapping[str, Any]) -> dict[str, Any]:
        """The stage's tool config: a quantizer's in the form its target runs, a
        distiller's without a progress bar."""
        config = dict(section["config"])
        if stage == MSC_TOOL.QUANTIZE.value:
            config = target_quantizer_config(section["target"], config)
        if stage == MSC_TOOL.DISTILL.value:
            config.setdefault("progress", False)
        return config

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
                      "device": target_device(env["runner"], self.config["compile"]["device"]),
                      "profile_repeat": self.config["profile"]["repeat"],
                      "profile_warmup": self.config["profile"]["warmup"]}
            if stage == MSC_TOOL.DISTILL.value:
                task = Task((self.source.graph, self.source.params), "distill",
                            student=Compressed(self.graph, self.params, self.quant), **common)
            else:
                # A stage that starts from the user's model file records the file, so
                # `mscgym validate`/`replay` can rebuild its task; later stages start from
                # an in-memory model.
                source = self.source.file
                model: Any = (ModelFile(source["path"], source["input_shapes"] or None)
                              if source is not None and self.graph is self.source.graph
                              else (self.graph, self.params))
                task = Task(model, stage,
                            quant_choices=target_quant_choices(section["target"]), **common)
            agent = create_agent(agent_cfg["type"], progress=False, **agent_cfg["options"])
            result = agent.search(task, agent_cfg["budget"])
            self.evaluations += result.evaluations
            record_path = self.workspace.path("gym", entry["record"])
            result.best_record.save(record_path)
            records.append(record_path)
            best = task.compressed(result.best_plan)
            self._save_gym_strategy(stage, best, self.graph, self.params)
            self.graph, self.params = best.graph, best.params
            self.quant = {**self.quant, **best.quant}
        return {"gym_records": records, "gym_evaluations": self.evaluations}

    def _save_gym_strategy(self, stage: str, best: Compressed, graph: MSCGraph,
                           params: Params) -> None:
        """Write the best plan's strategy of the stage's tool over ``graph`` (the graph the
        stage started from) as that tool's strategy file."""
        spec = tool_spec(stage)
        strategy = best.strategies.get(stage)
        if strategy is None:  # the best plan keeps the model as it is; the file says so
            strategy = spec.unchanged_strategy(graph, params)
        version = spec.cls().strategy_version
        save_strategy_file(self._strategy_path(stage), stage, version, graph.name, strategy)
        path = self.strategy_file(stage)
        if path is not None:  # MSC: the gym writes its best strategy to the strategy file
            save_strategy_file(path, stage, version, graph.name, strategy)

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
        artifact = runner.export(self.workspace.path(
            "artifact", self.config["export"]["name"] + runner.artifact_suffix))
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
        artifact = name + runner_class(self.config["compile"]["target"]).artifact_suffix
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


def create_msc_processor(model: Any, config: Mapping[str, Any] | str | os.PathLike[str],
                         data: TaskData | None = None) -> MSCProcessor:
    """A processor for ``model`` (torch module, ONNX file, exported graph, zoo name)."""
    return MSCProcessor(model, config, data)
