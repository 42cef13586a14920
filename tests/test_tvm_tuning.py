"""MetaSchedule tuning on the TVM runner: the database persists across processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mscgym.compiler.frontend import from_torch
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.runners.tvm_runner import TVMRunner

BUILD_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from mscgym.compiler.frontend import from_torch
    from mscgym.compiler.quant_spec import QuantPlan
    from mscgym.runtime.runners.tvm_runner import TVMRunner
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    graph, params = from_torch(model, (torch.randn(1, 8),), dynamic_batch=False)
    runner = TVMRunner("cpu", {"db": sys.argv[1], "cache": False,
                               "tune": {"trials": 2, "cost_model": "random"}})
    runner.build(graph, params, QuantPlan())
    print(json.dumps({"report": runner.tuning_report.as_dict(), "info": runner.build_info}))
""")


def _tiny() -> tuple:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    return model, from_torch(model, (torch.randn(1, 8),), dynamic_batch=False)


@pytest.mark.slow  # tuning plus a second process importing TVM: minutes on 2 busy cores
def test_second_process_loads_database_without_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    db = tmp_path / "db"
    model, (graph, params) = _tiny()
    runner = TVMRunner("cpu", {"db": str(db), "tune": {"trials": 2, "cost_model": "random"}})
    runner.build(graph, params, QuantPlan())
    first = runner.tuning_report
    assert first.workloads > 0 and first.already_tuned == 0
    assert first.tuned == first.workloads and first.trials > 0
    assert runner.build_info["tuned_workloads"] == runner.build_info["workloads"]
    x = torch.randn(1, 8)
    out = runner.run([x.numpy()])[0]
    assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-5)

    result = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(db)], check=True,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ,
                                 "MSCGYM_CACHE_DIR": str(tmp_path / "cache")})
    second = json.loads(result.stdout.strip().splitlines()[-1])
    assert second["report"]["trials"] == 0 and second["report"]["tuned"] == 0
    assert second["report"]["already_tuned"] == first.workloads
    assert second["info"]["tuned_workloads"] == first.workloads


def test_build_says_when_database_is_absent(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    _, (graph, params) = _tiny()
    runner = TVMRunner("cpu", {"db": str(tmp_path / "missing")})
    with caplog.at_level(logging.INFO, logger="mscgym.runtime.runners.tvm_runner"):
        runner.build(graph, params, QuantPlan())
    assert runner.build_info["tuned_workloads"] == 0 and runner.build_info["workloads"] > 0
    assert "llvm" in runner.build_info["target"] and "num-cores" in runner.build_info["target"]
    assert any("no tuning database" in r.getMessage() for r in caplog.records)


def test_tune_option_is_checked():
    with pytest.raises(Exception, match="unknown keys"):
        TVMRunner("cpu", {"tune": {"trails": 4}})
