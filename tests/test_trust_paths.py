"""Trust, output paths: every output location is checked when the arguments are read
(before any work), and paths named in a config file stay inside the workspace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mscgym.cli import main
from mscgym.pipeline import ConfigError, create_msc_processor
from mscgym.pipeline.workspace import Workspace
from mscgym.utils.paths import OutputPathError, check_output_path, inside

SEARCH = ["search", "--task", "quantize", "--model", "digits-mlp", "--agent", "random",
          "--budget", "2", "--no-progress"]


@pytest.fixture()
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("x")
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--record", "{file}/best.json"], "afile is not a directory"),
    (["--record", "{tmp}"], "is a directory; expected a file path"),
    (["--record", "{tmp}/ok.json", "--history", "{file}/sub/h.json"], "afile is not a directory"),
    (["--record", "{tmp}/ok.json", "--history", "{tmp}"], "is a directory"),
    (["--record", "{tmp}/ok.json", "--logdir", "{file}"], "is a file; expected a directory"),
    (["--record", ""], "expected a path"),
])
def test_search_outputs_are_checked_first(tmp_path: Path, afile: Path, extra: list[str],
                                          message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(file=afile, tmp=tmp_path) for a in extra]
    assert main([*SEARCH, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _files(tmp_path) == ["afile"]  # nothing was searched or written


def test_replay_and_plot_outputs(tmp_path: Path, afile: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "r.json"
    record.write_text("{}")
    assert main(["replay", str(record), "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["plot", str(record), "--out", str(afile)]) == 2
    assert "is a file; expected a directory" in capsys.readouterr().err
    assert main(["inspect", "digits-mlp", "--dot", str(afile / "g.dot")]) == 2
    assert "afile is not a directory" in capsys.readouterr().err
    assert _files(tmp_path) == ["afile", "r.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match="is not writable"):
        check_output_path(locked / "x.json", "--record")


def _run_config(tmp_path: Path, **keys: object) -> Path:
    config = {"workspace": str(tmp_path / "ws"), "quantize": {}, **keys}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("keys", "message"), [
    ({"log_file": "../../x.log"}, "config key 'log_file': '../../x.log' leaves the workspace"),
    ({"log_file": "/tmp/mscgym-trust-x.log"}, "config key 'log_file'"),
    ({"export": {"name": "/tmp/mscgym-trust-model"}}, "config key 'export.name'"),
    ({"export": {"name": "../../model"}}, "config key 'export.name'"),
    ({"quantize": {"gym": [{"record": "../../../x.json"}]}},
     "config key 'quantize.gym[0].record': '../../../x.json' leaves the workspace"),
])
def test_config_paths_stay_in_the_workspace(tmp_path: Path, keys: dict[str, object],
                                            message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _run_config(tmp_path, **keys)
    assert main(["run", str(config), "--model", "digits-mlp"]) == 2
    err = capsys.readouterr().err
    assert message in err and "expected a path relative to the workspace" in err
    assert _files(tmp_path) == ["config.json", "ws"]
    assert not Path("/tmp/mscgym-trust-x.log").exists()


def test_workspace_under_a_file(tmp_path: Path, afile: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"workspace": str(afile / "ws"), "quantize": {}}))
    assert main(["run", str(config), "--model", "digits-mlp"]) == 2
    assert "workspace" in (err := capsys.readouterr().err) and "afile is not a directory" in err


def test_symlink_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = Workspace(tmp_path / "ws")
    os.symlink(outside, tmp_path / "ws" / "gym")
    with pytest.raises(OutputPathError, match=rf"resolves to {outside}/best.json, outside "
                                              "the workspace"):
        workspace.path("gym", "best.json")
    assert inside(tmp_path, "ws", "state.json") == str(tmp_path / "ws" / "state.json")


# -- strategy_file: relative = in the workspace (written there); absolute = the user's own
# file, which must exist when the run starts and is only ever read ------------------------
def test_absolute_strategy_file_must_exist_before_any_work(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "quantize.json"
    config = {"workspace": str(tmp_path / "ws"), "quantize": {"strategy_file": str(missing)}}
    with pytest.raises(ConfigError, match=rf"config key 'quantize.strategy_file': {missing} "
                                          "does not exist; give an existing strategy file, or "
                                          "a relative path"):
        create_msc_processor("digits-mlp", config)
    assert not missing.parent.exists()


def test_absolute_strategy_file_is_never_written(tmp_path: Path) -> None:
    own = tmp_path / "mine" / "quantize.json"
    own.parent.mkdir()
    own.write_text("{}")
    config = {"workspace": str(tmp_path / "ws"), "profile": {"repeat": 2, "warmup": 0},
              "quantize": {"strategy_file": str(own), "config": {}}}
    processor = create_msc_processor("digits-mlp", config)
    own.unlink()  # gone after validation: the stage refuses, it does not write there
    try:
        with pytest.raises(ConfigError, match=rf"'quantize.strategy_file': {own} is gone; an "
                                              "absolute strategy file is the user's own, only "
                                              "read, never written"):
            processor.optimize()
    finally:
        processor.close()
    assert sorted(p.name for p in own.parent.iterdir()) == []


def test_relative_strategy_file_through_a_symlink_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "ws").mkdir()
    os.symlink(outside, tmp_path / "ws" / "strategies_link")
    config = {"workspace": str(tmp_path / "ws"),
              "quantize": {"strategy_file": "strategies_link/quantize.json"}}
    with pytest.raises(OutputPathError, match=r"config key 'quantize.strategy_file': "
                                              r"'strategies_link/quantize.json' resolves to "
                                              rf"{outside}/quantize.json, outside the workspace"):
        create_msc_processor("digits-mlp", config)
    assert list(outside.iterdir()) == []
