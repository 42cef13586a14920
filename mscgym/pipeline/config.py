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
import re
from collections.abc import Mapping
from typing import Any

from mscgym.agents.registry import agent_names, canonical_agent
from mscgym.compiler.errors import MSCError
from mscgym.pipeline.schema import CONFIG_SCHEMA
from mscgym.runtime.registry import runner_class, runner_names
from mscgym.runtime.runner import RunnerUnavailableError
from mscgym.tasks.scorers import SCORERS
from mscgym.utils.files import read_json
from mscgym.utils.schema import check_document

STAGES = ("prune", "quantize", "distill")
VERBOSITY = ("debug", "info", "runtime", "warn", "warning", "error", "critical")
"""MSC's verbose levels; ``runtime`` is ``info`` plus the runtime's build and run log,
and ``debug:<n>`` (MSC's debug level n) is ``debug``."""
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "runtime": logging.INFO,
               "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
               "critical": logging.CRITICAL}
TOP_KEYS = {"workspace", "verbose", "log_file", "model", "data", "baseline", *STAGES, "profile",
            "compile", "export"}
_STAGE_KEYS = {"strategy_file", "target", "config", "gym"}
_GYM_KEYS = {"record", "env", "agent"}


class ConfigError(MSCError):
    """The pipeline config has an unknown key or a value of the wrong kind."""


def _expect_keys(section: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        raise ConfigError(f"config key {where!r}: expected an object with keys "
                          f"{sorted(allowed)}, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"config key {where!r}: unknown keys {unknown}; expected some of "
                          f"{sorted(allowed)}")
    return dict(section)


def _choice(value: Any, choices: Any, where: str) -> Any:
    if value not in choices:
        raise ConfigError(f"config key {where!r}: {value!r} is not one of {sorted(choices)}")
    return value


def _number(value: Any, where: str, minimum: float, integer: bool = False) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"config key {where!r}: expected {what} >= {minimum}, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key {where!r}: expected a non-empty string, got {value!r}")
    return value


def log_level(verbose: str) -> int:
    """The ``logging`` level of a validated ``verbose`` value."""
    return _LOG_LEVELS[verbose.split(":", 1)[0]]


def _verbose(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"debug:\d+", value):
        return value
    return _choice(value, VERBOSITY, "verbose")


def target_device(target: str, device: str = "cpu") -> str:
    """The device a target runs on: TensorRT only on CUDA, the others on ``device``."""
    return "cuda" if target == "tensorrt" else device


def _target(value: Any, where: str, device: str) -> str:
    """A runner name that can run here; one that cannot is refused with what is missing."""
    name = _choice(value, runner_names(), where)
    try:
        runner_class(name).check_available(target_device(name, device))
    except RunnerUnavailableError as err:
        raise ConfigError(f"config key {where!r}: target {name!r} cannot run here: {err}. "
                          "Give a target this machine has (e.g. 'onnxruntime' or 'tvm') or run "
                          "on one that has it") from None
    return name


def _gym(entries: Any, stage: str, target: str, device: str) -> list[dict[str, Any]]:
    where = f"{stage}.gym"
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"config key {where!r}: expected a non-empty list of "
                          "{record, env, agent} objects")
    out = []
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        entry = _expect_keys(entry, _GYM_KEYS, here)
        env = _expect_keys(entry.get("env", {}), {"strategy", "mode", "options", "runner"},
                           f"{here}.env")
        agent = _expect_keys(entry.get("agent", {}), {"type", "budget", "options"},
                             f"{here}.agent")
        out.append({
            "record": _string(entry.get("record", f"{stage}_best.json"), f"{here}.record"),
            "env": {
                "strategy": _choice(env.get("strategy", "distill_loss"), SCORERS,
                                    f"{here}.env.strategy"),
                "mode": _choice(env.get("mode", "oneshot"), ("oneshot", "layerwise"),
                                f"{here}.env.mode"),
                "options": dict(env.get("options", {})),
                "runner": _target(env.get("runner", target), f"{here}.env.runner", device),
            },
            "agent": {
                "type": canonical_agent(_choice(agent.get("type", "grid_search"), agent_names(),
                                                f"{here}.agent.type")),
                "budget": _number(agent.get("budget", 16), f"{here}.agent.budget", 1, True),
                "options": dict(agent.get("options", {})),
            },
        })
    return out


def validate_config(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """The config with defaults filled in; any bad key raises ConfigError before work."""
    where = "config"
    if not isinstance(config, Mapping):
        where = f"config file {os.fspath(config)}"
        config = read_json(config, ConfigError, "config file")
    check_document(config, CONFIG_SCHEMA, ConfigError, where)
    raw = _expect_keys(copy.deepcopy(dict(config)), TOP_KEYS, "<top level>")
    out: dict[str, Any] = {
        "workspace": _string(raw.get("workspace", "msc_workspace"), "workspace"),
        "verbose": _verbose(raw.get("verbose", "info")),
        "log_file": _string(raw.get("log_file", "msc.log"), "log_file"),
    }
    if "model" in raw:
        out["model"] = _string(raw["model"], "model")
    if "data" in raw:
        data = _expect_keys(raw["data"], {"calibration", "eval", "labels"}, "data")
        for key in ("calibration", "eval"):
            if key not in data:
                raise ConfigError(f"config key 'data.{key}': required (a .npy file)")
        out["data"] = {k: _string(v, f"data.{k}") for k, v in data.items()}
    compile_ = _expect_keys(raw.get("compile", {}), {"target", "device"}, "compile")
    device = _choice(compile_.get("device", "cpu"), ("cpu", "cuda"), "compile.device")
    out["compile"] = {"target": _target(compile_.get("target", "onnxruntime"), "compile.target",
                                        device), "device": device}
    baseline = _expect_keys(raw.get("baseline", {}), {"check_config"}, "baseline")
    check = _expect_keys(baseline.get("check_config", {}), {"atol", "rtol", "runner"},
                         "baseline.check_config")
    out["baseline"] = {"check_config": {
        "atol": _number(check.get("atol", 1e-4), "baseline.check_config.atol", 0),
        "rtol": _number(check.get("rtol", 1e-4), "baseline.check_config.rtol", 0),
        "runner": _target(check.get("runner", "torch"), "baseline.check_config.runner", device),
    }}
    stages = []
    for key in raw:
        if key not in STAGES:
            continue
        section = _expect_keys(raw[key], _STAGE_KEYS, key)
        stage: dict[str, Any] = {
            "target": _target(section.get("target", "onnxruntime"), f"{key}.target", device),
            "config": dict(_expect_keys(section.get("config", {}), set(section.get(
                "config", {})), f"{key}.config")),
            "strategy_file": None,
            "gym": [],
        }
        if section.get("strategy_file") is not None:
            stage["strategy_file"] = _string(section["strategy_file"], f"{key}.strategy_file")
        if "gym" in section:  # with a strategy_file: the gym writes it, or it is replayed
            stage["gym"] = _gym(section["gym"], key, stage["target"], device)
        out[key] = stage
        stages.append(key)
    out["stages"] = stages
    profile = _expect_keys(raw.get("profile", {}), {"repeat", "warmup"}, "profile")
    out["profile"] = {"repeat": _number(profile.get("repeat", 50), "profile.repeat", 1, True),
                      "warmup": _number(profile.get("warmup", 5), "profile.warmup", 0, True)}
    export = _expect_keys(raw.get("export", {}), {"name"}, "export")
    out["export"] = {"name": _string(export.get("name", "model"), "export.name")}
    return out
