"""Trust, readers: non-UTF-8 files, files of the wrong top-level type and bad storage
URLs are clear errors naming the file; outputs get the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from mscgym.cli import main
from mscgym.compiler.frontend import from_torch
from mscgym.pipeline.config import ConfigError, validate_config
from mscgym.records import RecordError, load_record
from mscgym.tasks.cache import EvaluationCache
from mscgym.tools import create_tool
from mscgym.tools.base import ToolConfigError
from mscgym.utils.files import atomic_write_bytes, atomic_write_text, current_umask
from mscgym.utils.paths import OutputPathError, check_storage_url

LATIN1 = "{\"name\": \"caf\xe9\"}".encode("latin-1")


@pytest.fixture()
def latin1(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.json"
    path.write_bytes(LATIN1)
    return path


def test_non_utf8_record_is_named(latin1: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RecordError, match=rf"record {latin1}: not UTF-8 text \(byte 0xe9"):
        load_record(latin1)
    for command in (["validate", str(latin1)], ["replay", str(latin1)],
                    ["plot", str(latin1), "--out", str(latin1.parent / "plots")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert str(latin1) in err and "not UTF-8" in err and "Traceback" not in err
    assert not (latin1.parent / "plots").exists()


def test_non_utf8_strategy_file_is_named(latin1: Path) -> None:
    graph, params = from_torch(torch.nn.Sequential(torch.nn.Linear(4, 3)),
                               (torch.zeros(1, 4),))
    tool = create_tool("quantize", graph, params, {})
    with pytest.raises(ToolConfigError, match=rf"strategy file {latin1}: not UTF-8"):
        tool.load_strategy(latin1)


@pytest.mark.parametrize(("content", "got"), [("[[\"workspace\", \"w\"]]", "a JSON list"),
                                              ("5", "a JSON int"), ("null", "null")])
def test_config_file_of_the_wrong_type(tmp_path: Path, content: str, got: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=rf"config file {path}: expected a JSON object at "
                                          rf"the top level, got {got}"):
        validate_config(str(path))
    assert main(["run", str(path), "--model", "digits-mlp"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_record_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("[1, 2]")
    with pytest.raises(RecordError, match=rf"record {path}: expected a JSON object .* got a "
                                          "JSON list"):
        load_record(path)


def test_unreadable_evaluation_cache_entry_is_a_miss(tmp_path: Path) -> None:
    cache = EvaluationCache(str(tmp_path))
    (tmp_path / "k1.json").write_bytes(LATIN1)
    (tmp_path / "k2.json").write_text("[1]")
    assert cache.get("k1") is None and cache.get("k2") is None
    assert cache.misses == 2


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "not a database URL"),
    ("sqlite:///{tmp}/missing/dir/study.db", "directory .*missing/dir of the SQLite file does "
                                             "not exist"),
    ("sqlite:///{tmp}/afile/study.db", "afile of the SQLite file does not exist"),
])
def test_bad_storage_urls(tmp_path: Path, url: str, message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    url = url.format(tmp=tmp_path)
    with pytest.raises(OutputPathError, match=message):
        check_storage_url(url)
    record = tmp_path / "best.json"
    code = main(["search", "--task", "quantize", "--model", "digits-mlp", "--agent", "optuna",
                 "--budget", "2", "--record", str(record), "--storage", url, "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert url in err and "Traceback" not in err
    assert not record.exists()


def test_atomic_writes_use_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
    atomic_write_text(tmp_path / "c.json", json.dumps({}))
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o666 & ~old
