"""Trust, concurrency and interruption: a second search writing a record another process
is writing is refused up front (an OS lock, released when its holder dies), and a
pipeline whose gym keeps every layer float still writes its (empty) strategy, so the
workspace replays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mscgym.cli import main
from mscgym.utils.paths import OutputPathError, exclusive_output

HOLD = """
import sys, time
from mscgym.utils.paths import exclusive_output
with exclusive_output(sys.argv[1], "--record"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path):
    record = tmp_path / "best.json"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(record)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield record, proc
    proc.kill()
    proc.wait()


def test_second_search_on_one_record_is_refused(holder, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    record, proc = holder
    code = main(["search", "--task", "quantize", "--model", "digits-mlp", "--agent", "random",
                 "--budget", "2", "--record", str(record), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--record {record}: another process (pid {proc.pid}) is writing it now" in err
    assert not record.exists()


def test_lock_is_released_when_its_holder_dies(holder) -> None:
    record, proc = holder
    with pytest.raises(OutputPathError, match="another process"), \
            exclusive_output(record, "--record"):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive_output(record, "--record") as target:
        assert target == str(record)
    assert not Path(f"{record}.lock").exists()  # nothing left behind


def test_all_float_gym_stage_writes_its_strategy_and_replays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = tmp_path / "ws"
    config = {"workspace": str(workspace), "model": "digits-mlp",
              "quantize": {"target": "onnxruntime", "gym": [{
                  "record": "quantize_best.json",
                  "env": {"strategy": "latency_under_accuracy", "mode": "oneshot"},
                  "agent": {"type": "grid_search", "budget": 1}}]},
              "profile": {"repeat": 3, "warmup": 1}, "compile": {"target": "onnxruntime"}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["run", str(path)]) == 0
    strategy = json.loads((workspace / "strategies" / "quantize.json").read_text())
    assert strategy["tool"] == "quantize" and strategy["strategy"] == {}
    capsys.readouterr()
    assert main(["run", "--replay", str(workspace)]) == 0, capsys.readouterr()
