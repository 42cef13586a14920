"""Trust, config types: every pipeline config value has a declared type (one JSON Schema
mechanism, shared with records); a wrong type is refused naming the file and the key,
before a workspace is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mscgym.cli import main
from mscgym.pipeline.config import ConfigError, validate_config


@pytest.mark.parametrize(("section", "value"), [("agent", 5), ("agent", "ab"), ("env", "ab"),
                                                ("env", [1])])
def test_gym_options_of_the_wrong_type(tmp_path: Path, section: str, value: object,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"workspace": str(tmp_path / "ws"), "model": "digits-mlp",
                                  "quantize": {"gym": [{section: {"options": value}}]}}))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert (f"config file {config}: key 'quantize.gym[0].{section}.options': expected an "
            f"object, got {json.dumps(value)}") in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


BAD_CONFIGS = [  # (config, the whole message after "config: ")
    ({"bogus": 1}, "key '<top level>': unknown keys ['bogus']; expected some of ['baseline', "
                   "'compile', 'data', 'distill', 'export', 'log_file', 'model', 'profile', "
                   "'prune', 'quantize', 'verbose', 'workspace']"),
    ({"quantize": {"strategy": "x.json"}}, "key 'quantize': unknown keys ['strategy']; "
                                           "expected some of ['config', 'gym', "
                                           "'strategy_file', 'target']"),
    ({"prune": 3}, "key 'prune': expected an object, got 3"),
    ({"workspace": ""}, "key 'workspace': expected a non-empty string, got \"\""),
    ({"verbose": "loud"}, "key 'verbose': 'loud' is not one of ['critical', 'debug', 'error', "
                          "'info', 'runtime', 'warn', 'warning'] or 'debug:<n>'"),
    ({"verbose": 3}, "key 'verbose': expected a string, got 3"),
    ({"data": {"eval": "x.npy"}}, "key 'data.calibration': required, but missing"),
    ({"profile": {"repeat": 1.5}}, "key 'profile.repeat': expected an integer, got 1.5"),
    ({"profile": {"warmup": True}}, "key 'profile.warmup': expected an integer, got true"),
    ({"profile": {"repeat": 0}}, "key 'profile.repeat': expected an integer >= 1, got 0"),
    ({"baseline": {"check_config": {"atol": -1}}},
     "key 'baseline.check_config.atol': expected a number >= 0, got -1"),
    ({"compile": {"device": "tpu"}}, "key 'compile.device': 'tpu' is not one of ['cpu', "
                                     "'cuda']"),
    ({"quantize": {"strategy_file": 5}},
     "key 'quantize.strategy_file': expected a string or null, got 5"),
    ({"quantize": {"config": []}}, "key 'quantize.config': expected an object, got []"),
    ({"quantize": {"gym": []}}, "key 'quantize.gym': expected a list of at least 1 item(s), "
                                "got []"),
    ({"quantize": {"gym": [{"env": {"mode": "episodic"}}]}},
     "key 'quantize.gym[0].env.mode': 'episodic' is not one of ['layerwise', 'oneshot']"),
    ({"quantize": {"gym": [{"agent": {"budget": "16"}}]}},
     "key 'quantize.gym[0].agent.budget': expected an integer, got \"16\""),
    ({"distill": {"gym": [{"record": 7}]}},
     "key 'distill.gym[0].record': expected a string, got 7"),
    ({"export": {"name": "m", "format": "onnx"}},
     "key 'export': unknown keys ['format']; expected some of ['name']"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_every_config_key_has_a_declared_type(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert str(err.value) == f"config: {message}"


def test_config_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: key '<top level>': expected an object, "
                                          r"got \[1, 2\]$"):
        validate_config([1, 2])  # type: ignore[arg-type]


def test_choices_come_from_the_registries() -> None:
    with pytest.raises(ConfigError, match=r"key 'compile.target': 'tensorflow' is not one of "
                                          r"\[.*'onnxruntime'.*'tvm'\]"):
        validate_config({"compile": {"target": "tensorflow"}})
    with pytest.raises(ConfigError, match=r"key 'quantize.gym\[0\].env.strategy': 'speed' is "
                                          r"not one of \[.*'distill_loss'.*\]"):
        validate_config({"quantize": {"gym": [{"env": {"strategy": "speed"}}]}})
    config = validate_config({"quantize": {"gym": [{"agent": {"type": "bayesian"}}]},
                              "verbose": "debug:3"})
    assert config["quantize"]["gym"][0]["agent"]["type"] == "optuna"
    assert config["quantize"]["gym"][0]["env"]["runner"] == "onnxruntime"
    assert config["verbose"] == "debug:3"


@pytest.mark.parametrize(("stage", "config", "message"), [
    ("quantize", {"weight": {"bits": 3}}, "weight.bits 3: expected one of [4, 8]"),
    ("prune", {"density": 1.5}, "density 1.5: expected a number <= 1"),
])
def test_a_stage_config_is_checked_against_its_tools_schema(
        tmp_path: Path, stage: str, config: dict, message: str) -> None:
    """The tool declares its config's schema once; the pipeline refuses a bad stage config
    with it at validation, before a workspace exists or the model loads."""
    with pytest.raises(ConfigError) as err:
        validate_config({"workspace": str(tmp_path / "ws"), "model": "digits-mlp",
                         stage: {"config": config}})
    assert str(err.value) == f"config key '{stage}.config': {message}"
    assert not (tmp_path / "ws").exists()
