"""Trust, config types: every pipeline config value has a declared type (one JSON Schema
mechanism, shared with records); a wrong type is refused naming the file and the key,
before a workspace is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mscgym.cli import main


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
