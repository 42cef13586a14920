"""The pipeline config: validated up front, with errors naming the key and what it takes.

The shape follows MSC's processor config::

    {
      "workspace": "msc_workspace", "verbose": "info", "log_file": "msc.log",
      "model": "digits-cnn",                       # when not passed in code
      "data": {"calibration": "calib.npy", "eval": "x.npy", "labels": "y.npy"},
      "baseline": {"check_config": {"atol": 1e-4, "rtol": 1e-4, "runner": "torch"}},
      "prune": {"strategy_file": null, "target": "onnxruntime", "config": {...},
                "gym": [{"record": "prune_best.json",
                         "env": {"strategy": "distill_loss", "mode": "oneshot"},
                         "agent": {"type": "grid_search", "budget": 16}}]},
      "quantize": {...}, "distill": {...},          # optimized in the order given
      "profile": {"repeat": 50, "warmup": 5},
      "compile": {"target": "onnxruntime", "device": "cpu"},
      "export": {"name": "model"}
    }

As in MSC, a stage's ``strategy_file`` (a relative path lies in the workspace) is
applied when it exists, with no search; when it does not, the stage's gym (or tool
config) makes the strategy and writes it there, which is how a run is recorded and
replayed. A stage's ``target`` decides the form of its strategy and where the stage is
measured; a target this machine cannot run (TensorRT without the package or a CUDA GPU)
is refused here, naming what is missing, never replaced by another.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

from mscgym.agents.registry import canonical_agent
from mscgym.compiler.errors import MSCError
from mscgym.pipeline.schema import config_schema
from mscgym.runtime.registry import runner_class
from mscgym.runtime.runner import RunnerUnavailableError
from mscgym.tools.registry import pipeline_stages, tool_spec
from mscgym.utils.files import read_json
from mscgym.utils.schema import check_document

STAGES = pipeline_stages()
"""The built-in tools' stages; a config is validated against the tools registered when it
is read (:func:`mscgym.tools.registry.pipeline_stages`)."""
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "runtime": logging.INFO,
               "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
               "critical": logging.CRITICAL}
"""The ``logging`` level of each of MSC's verbose levels (``pipeline.schema.VERBOSITY``)."""


class ConfigError(MSCError):
    """The pipeline config has an unknown key or a value of the wrong kind."""


def log_level(verbose: str) -> int:
    """The ``logging`` level of a validated ``verbose`` value."""
    return _LOG_LEVELS[verbose.split(":", 1)[0]]


def target_device(target: str, device: str = "cpu") -> str:
    """The device a target runs on: TensorRT only on CUDA, the others on ``device``."""
    return "cuda" if target == "tensorrt" else device


def _target(name: str, where: str, device: str) -> str:
    """A runner name (the schema checked it is one) that can run here; one that cannot
    is refused with what is missing."""
    try:
        runner_class(name).check_available(target_device(name, device))
    except RunnerUnavailableError as err:
        raise ConfigError(f"config key {where!r}: target {name!r} cannot run here: {err}. "
                          "Give a target this machine has (e.g. 'onnxruntime' or 'tvm') or run "
                          "on one that has it") from None
    return name


def _gym(entries: list[dict[str, Any]], stage: str, target: str, device: str
         ) -> list[dict[str, Any]]:
    out = []
    for i, entry in enumerate(entries):
        here = f"{stage}.gym[{i}]"
        env, agent = entry.get("env", {}), entry.get("agent", {})
        out.append({
            "record": entry.get("record", f"{stage}_best.json"),
            "env": {
                "strategy": env.get("strategy", "distill_loss"),
                "mode": env.get("mode", "oneshot"),
                "options": dict(env.get("options", {})),
                "runner": _target(env.get("runner", target), f"{here}.env.runner", device),
            },
            "agent": {
                "type": canonical_agent(agent.get("type", "grid_search")),
                "budget": agent.get("budget", 16),
                "options": dict(agent.get("options", {})),
            },
        })
    return out


def validate_config(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """The config with defaults filled in; any bad key raises ConfigError before work.

    Keys, types, ranges and choices are checked against the config's one JSON Schema
    (:func:`mscgym.pipeline.schema.config_schema`); here remain the defaults and what
    needs this machine (whether each target can run here)."""
    where = "config"
    if isinstance(config, str | os.PathLike):
        where = f"config file {os.fspath(config)}"
        config = read_json(config, ConfigError, "config file")
    check_document(config, config_schema(pipeline_stages()), ConfigError, where)
    raw = copy.deepcopy(dict(config))
    out: dict[str, Any] = {
        "workspace": raw.get("workspace", "msc_workspace"),
        "verbose": raw.get("verbose", "info"),
        "log_file": raw.get("log_file", "msc.log"),
    }
    if "model" in raw:
        out["model"] = raw["model"]
    if "data" in raw:
        out["data"] = dict(raw["data"])
    compile_ = raw.get("compile", {})
    device = compile_.get("device", "cpu")
    out["compile"] = {"target": _target(compile_.get("target", "onnxruntime"), "compile.target",
                                        device), "device": device}
    check = raw.get("baseline", {}).get("check_config", {})
    out["baseline"] = {"check_config": {
        "atol": check.get("atol", 1e-4),
        "rtol": check.get("rtol", 1e-4),
        "runner": _target(check.get("runner", "torch"), "baseline.check_config.runner", device),
    }}
    stages = []
    for key in raw:
        if key not in pipeline_stages():
            continue
        section = raw[key]
        target = _target(section.get("target", "onnxruntime"), f"{key}.target", device)
        spec = tool_spec(key)
        if spec.config_schema is not None:  # the tool's own schema, before any work
            check_document(section.get("config", {}), spec.config_schema, ConfigError,
                           f"{where} key '{key}.config'", inline=True)
        out[key] = {
            "target": target,
            "config": dict(section.get("config", {})),
            "strategy_file": section.get("strategy_file"),
            # with a strategy_file: the gym writes it, or it is replayed
            "gym": _gym(section["gym"], key, target, device) if "gym" in section else [],
        }
        stages.append(key)
    out["stages"] = stages
    profile = raw.get("profile", {})
    out["profile"] = {"repeat": profile.get("repeat", 50), "warmup": profile.get("warmup", 5)}
    out["export"] = {"name": raw.get("export", {}).get("name", "model")}
    return out
