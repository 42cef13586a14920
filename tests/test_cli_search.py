"""``mscgym search``, ``replay`` and ``validate`` end to end on digits-cnn."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from mscgym.cli import main
from mscgym.records import load_record

MSCGYM = Path(sys.executable).parent / "mscgym"
FAST = ["--profile-repeat", "5", "--no-progress"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A random search's record (written in-process) and what it printed (a module-scoped
    fixture cannot use capsys)."""
    path = tmp_path_factory.mktemp("tmp") / "best.json"
    capture = tmp_path_factory.mktemp("out") / "stdout.txt"
    with capture.open("w") as handle, redirect_stdout(handle):
        # distill_loss searches how to quantize (no float choice), so the best plan
        # quantizes whatever the timing: every agent now reports the float baseline when
        # nothing beats it, and the replay below checks a quantize strategy
        code = main(["search", "--task", "quantize", "--model", "digits-cnn", "--agent",
                     "random", "--budget", "4", "--scorer", "distill_loss",
                     "--record", str(path), *FAST])
    assert code == 0
    return path, capture.read_text()


def test_search_prints_a_summary_and_writes_the_record(searched: tuple[Path, str]) -> None:
    path, out = searched
    for text in ("random on quantize digits-cnn (onnxruntime/cpu)", "baseline", "best",
                 "accuracy", "distill loss", "latency (ms)", "speed-up", "size (KB)",
                 "of baseline", "evaluations:", "cache hit rate", "wall", f"record:       {path}"):
        assert text in out
    record = load_record(path)
    assert record.task["model"] == "digits-cnn" and record.task["tool"] == "quantize"
    assert record.task["profile"]["repeat"] == 5
    assert record.extra["agent"] == "random" and record.extra["budget"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["best.json"]  # written atomically


def test_replay_and_validate_round_trip(searched: tuple[Path, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = searched
    recorded = load_record(path).metrics
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"accuracy:     {recorded.accuracy:.4f} (recorded {recorded.accuracy:.4f}, same)" in out
    assert "quantize matches the record" in out
    # A test must not hinge on timing: latency is re-measured by the tests that compare it.
    assert main(["validate", str(path), "--skip", "latency_ms"]) == 0
    out = capsys.readouterr().out
    assert "all 5 metrics hold (not compared: latency_ms)" in out
    for metric in ("distill_loss", "accuracy", "size_bytes", "params", "flops"):
        assert metric in out


def test_console_script_replays_and_saves_outputs(searched: tuple[Path, str]) -> None:
    path, _ = searched
    output = path.with_name("outputs.npy")
    proc = subprocess.run([str(MSCGYM), "replay", str(path), "--output", str(output)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {output}" in proc.stdout
    outputs = np.load(output, allow_pickle=False)
    assert outputs.ndim == 2 and outputs.shape[1] == 10


def test_validate_fails_for_an_edited_metric_and_refuses_a_tampered_record(
        searched: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    path = searched[0]
    data = json.loads(path.read_text())
    data["metrics"]["accuracy"] = 0.5
    edited = path.with_name("edited.json")
    edited.write_text(json.dumps(data))
    assert main(["validate", str(edited), "--skip", "latency_ms"]) == 1
    assert "1 of 5 metrics do not hold: accuracy (not compared: latency_ms)" in (
        capsys.readouterr().out)
    data = json.loads(path.read_text())
    data["task"]["weight_hash"] = "0" * 64
    tampered = path.with_name("tampered.json")
    tampered.write_text(json.dumps(data))
    assert main(["validate", str(tampered)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mscgym validate: error: record {tampered}: model weight hash does "
                          "not match: recorded 0000")
    assert "Traceback" not in err


def test_prune_search_with_the_greedy_agent(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prune.json"
    assert main(["search", "--task", "prune", "--model", "digits-cnn", "--agent", "greedy",
                 "--budget", "3", "--record", str(path), *FAST]) == 0
    assert "greedy on prune digits-cnn" in capsys.readouterr().out
    record = load_record(path)
    assert set(record.plan) == {"prune:conv1", "prune:conv2", "prune:conv3"}
    assert record.extra["steps"] == 3


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "no-such-model", "--agent", "random", "--budget", "2"],
     "mscgym search: error: unknown model 'no-such-model': not a zoo name (digits-mlp, "),
    (["--model", "digits-cnn", "--agent", "annealing", "--budget", "2"],
     "mscgym search: error: unknown agent 'annealing'; expected one of ['grid', 'random', "),
    (["--model", "digits-cnn", "--agent", "random", "--budget", "0"],
     "mscgym search: error: argument --budget: expected a positive integer, got 0"),
    (["--model", "digits-cnn", "--agent", "random", "--budget", "2", "--sampler", "tpe"],
     "mscgym search: error: --sampler applies only to --agent optuna"),
    (["--model", "digits-cnn", "--agent", "random", "--budget", "2", "--scorer", "accuracy",
      "--max-drop", "0.02"],
     "mscgym search: error: --max-drop applies only to --scorer latency_under_accuracy"),
], ids=["model", "agent", "budget", "sampler", "max-drop"])
def test_bad_flags_exit_2_with_a_clear_message(flags: list[str], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "never.json"
    assert main(["search", "--task", "quantize", *flags, "--record", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not path.exists()
