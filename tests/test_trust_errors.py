"""Trust, errors: every public error is an MSCError the CLI prints as one clean line,
and a model argument that is neither a zoo name nor a file says so."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pkgutil
from pathlib import Path

import pytest

import mscgym
from mscgym import zoo
from mscgym.cli import main
from mscgym.compiler.errors import MSCError
from mscgym.tasks.sources import resolve_model
from mscgym.zoo.cache import weights_path
from mscgym.zoo.training import RECIPE_VERSION

_OPTIONAL = ("mscgym.runtime.runners.trt_runner", "mscgym.tune", "mscgym.agents.rl",
             "mscgym.agents.ray_agent")


def _public_errors() -> list[type[BaseException]]:
    """Every exception class defined in an importable mscgym module."""
    found = []
    for info in pkgutil.walk_packages(mscgym.__path__, "mscgym."):
        if info.name.startswith(_OPTIONAL):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_error_class_derives_from_one_base() -> None:
    errors = _public_errors()
    names = {e.__name__ for e in errors}
    assert {"RunnerUnavailableError", "ZooCacheError", "ToolConfigError", "RecordError",
            "ConfigError", "GraphFormatError"} <= names
    assert [e.__name__ for e in errors if not issubclass(e, MSCError)] == []


def test_unknown_model_is_named_as_neither_zoo_name_nor_file() -> None:
    with pytest.raises(MSCError, match=r"unknown model 'no-such': not a zoo name \(digits-mlp"
                       r".*\) and not a file"):
        resolve_model("no-such")


def test_cli_prints_library_errors_cleanly(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"workspace": str(tmp_path / "ws"), "quantize": {}}))
    assert main(["run", str(config), "--model", "no-such"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mscgym run: error: unknown model 'no-such': not a zoo name")
    assert "Traceback" not in err


def test_unknown_zoo_name_is_an_msc_error() -> None:
    with pytest.raises(zoo.UnknownModelError, match="no-such"):
        zoo.load("no-such")
    assert issubclass(zoo.UnknownModelError, MSCError)


def test_corrupt_zoo_cache_file_is_rebuilt_by_tasks(tmp_path: Path, monkeypatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path))
    path = weights_path(tmp_path, "digits-mlp", RECIPE_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage, not safetensors")
    with pytest.raises(zoo.ZooCacheError, match="delete the file"):
        zoo.load("digits-mlp")  # the zoo's own API still reports it
    with caplog.at_level(logging.WARNING, logger="mscgym.zoo.registry"):
        source = resolve_model("digits-mlp")
    assert "rebuilding it" in caplog.text and str(path) in caplog.text
    assert source.weight_hash == resolve_model("digits-mlp").weight_hash
    assert zoo.load("digits-mlp").weights_path == path  # a valid file now
