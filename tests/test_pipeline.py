"""The config-driven pipeline: deploy and optimize modes, gym sections, replay, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mscgym import zoo
from mscgym.pipeline import ConfigError, create_msc_processor
from mscgym.pipeline.replay import replay_workspace

FAST = {"profile": {"repeat": 5, "warmup": 1}}


def _config(tmp_path: Path, **stages: object) -> dict:
    return {"workspace": str(tmp_path / "ws"), **FAST, **stages}


def test_deploy_mode_runs_every_stage_and_replays(tmp_path: Path) -> None:
    config = _config(tmp_path, prune={"config": {"density": 0.75}},
                     quantize={"config": {"activation": {"method": "percentile"}}},
                     compile={"target": "onnxruntime"})
    processor = create_msc_processor("digits-cnn", config)
    report = processor.run()
    processor.close()
    stages = [row["stage"] for row in report["stages"]]
    assert stages == ["baseline", "prune", "quantize", "finalize"]
    rows = {row["stage"]: row for row in report["stages"]}
    assert rows["prune"]["params"] < rows["baseline"]["params"]
    assert rows["quantize"]["size_bytes"] < rows["prune"]["size_bytes"] / 3
    assert rows["finalize"]["accuracy"] == rows["quantize"]["accuracy"]
    ws = Path(config["workspace"])
    for name in ("config.json", "report.json", "report.txt", "state.json", "msc.log",
                 "strategies/prune.json", "strategies/quantize.json", "artifact/model.onnx",
                 "export/model.onnx", "export/model.json", "checkpoints/quantize/graph.json"):
        assert (ws / name).exists(), name
    assert "finalize" in (ws / "report.txt").read_text()

    comparison = replay_workspace(ws)
    assert comparison.all_hold, [r for r in comparison.rows if not r["holds"]]
    assert {r["stage"] for r in comparison.rows} == set(stages)


def test_optimize_mode_trains_then_compiles(tmp_path: Path) -> None:
    config = _config(tmp_path, prune={"config": {"density": 0.5}},
                     compile={"target": "tvm"})
    processor = create_msc_processor("digits-cnn", config)
    model = processor.optimize()
    assert any(p.requires_grad for p in model.parameters())
    inputs, labels = zoo.load("digits-cnn").train_data
    before = processor.report()["stages"][-1]["accuracy"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(3):
        for i in range(0, len(inputs), 64):
            optimizer.zero_grad()
            out = model(inputs[i:i + 64])
            out = out[0] if isinstance(out, tuple) else out
            torch.nn.functional.cross_entropy(out, labels[i:i + 64]).backward()
            optimizer.step()
    processor.update_weights(model)
    report = processor.compile()
    export_dir = processor.export(tmp_path / "deploy")
    processor.close()
    final = report["stages"][-1]
    assert final["stage"] == "finalize" and final["runner"] == "tvm"
    assert final["accuracy"] > before + 0.3, (before, final["accuracy"])
    assert final["accuracy"] >= 0.8
    assert (Path(export_dir) / "model.so").exists()


def test_gym_section_searches_and_uses_the_best_record(tmp_path: Path) -> None:
    config = _config(tmp_path, quantize={"gym": [{
        "record": "quantize_best.json",
        "env": {"strategy": "latency_under_accuracy", "mode": "oneshot"},
        "agent": {"type": "random_search", "budget": 4, "options": {"seed": 0}}}]})
    processor = create_msc_processor("digits-cnn", config)
    report = processor.run()
    processor.close()
    ws = Path(config["workspace"])
    record = json.loads((ws / "gym" / "quantize_best.json").read_text())
    strategy = json.loads((ws / "strategies" / "quantize.json").read_text())["strategy"]
    recorded = record["strategies"].get("quantize", {})
    assert {k: {r: {f: v[f] for f in ("dtype", "scale", "zero_point", "axis")}
                for r, v in e.items()} for k, e in strategy.items()} == recorded
    rows = {row["stage"]: row for row in report["stages"]}
    assert rows["quantize"]["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_bad_config_fails_before_any_work(tmp_path: Path) -> None:
    bad = _config(tmp_path, quantize={"config": {}, "strategy": "x.json"})
    with pytest.raises(ConfigError, match=r"'quantize'.*unknown keys \['strategy'\]"):
        create_msc_processor("digits-cnn", bad)
    assert not (tmp_path / "ws").exists()
    with pytest.raises(ConfigError, match=r"compile.target.*'tensorflow'"):
        create_msc_processor("digits-cnn", _config(tmp_path, compile={"target": "tensorflow"}))
    with pytest.raises(ConfigError, match="agent.budget"):
        create_msc_processor("digits-cnn", _config(tmp_path, prune={"gym": [
            {"agent": {"type": "grid_search", "budget": 0}}]}))
    with pytest.raises(ConfigError, match="not valid JSON"):
        path = tmp_path / "broken.json"
        path.write_text("{ not json")
        create_msc_processor("digits-cnn", path)


def test_failed_stage_keeps_earlier_stages_and_rerun_resumes(tmp_path: Path) -> None:
    strategy = tmp_path / "quantize.json"
    strategy.write_text("{ truncated")
    config = _config(tmp_path, prune={"config": {"density": 0.75}},
                     quantize={"strategy_file": str(strategy)})
    processor = create_msc_processor("digits-cnn", config)
    with pytest.raises(Exception, match="quantize.json"):
        processor.run()
    processor.close()
    state = json.loads((tmp_path / "ws" / "state.json").read_text())
    assert state["finished"] == ["baseline", "prune"]
    assert state["failed"]["stage"] == "quantize"

    donor = create_msc_processor("digits-cnn", _config(
        tmp_path / "donor", prune={"config": {"density": 0.75}}, quantize={"config": {}}))
    donor.optimize()
    donor.close()
    strategy.write_text((tmp_path / "donor" / "ws" / "strategies" / "quantize.json").read_text())
    processor = create_msc_processor("digits-cnn", config)
    report = processor.run()
    processor.close()
    assert [r["stage"] for r in report["stages"]] == ["baseline", "prune", "quantize",
                                                       "finalize"]
    log = (tmp_path / "ws" / "msc.log").read_text()
    assert "stage prune: already finished" in log


def test_killed_run_resumes_after_the_last_finished_stage(tmp_path: Path) -> None:
    config = _config(tmp_path, prune={"config": {"density": 0.75}},
                     distill={"config": {"epochs": 40, "progress": False}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    mscgym = [sys.executable, "-c", "import sys; from mscgym.cli import main; "
              "sys.exit(main(sys.argv[1:]))"]
    proc = subprocess.Popen([*mscgym, "run", str(path), "--model", "digits-cnn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = tmp_path / "ws" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state_path.exists() and "prune" in json.loads(state_path.read_text())["finished"]:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(state_path.read_text())
    assert state["finished"] == ["baseline", "prune"]

    config["distill"]["config"]["epochs"] = 40
    processor = create_msc_processor("digits-cnn", path)
    processor.optimize()
    processor.close()
    log = (tmp_path / "ws" / "msc.log").read_text()
    assert "stage baseline: already finished" in log
    assert "stage prune: already finished" in log
    assert json.loads(state_path.read_text())["finished"] == ["baseline", "prune", "distill"]
    assert np.isfinite(processor.report()["stages"][-1]["accuracy"])
