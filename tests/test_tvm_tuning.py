"""MetaSchedule tuning on the TVM runner: the database persists across processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from mscgym.compiler.codegen.relax_codegen import to_relax
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime import channels_last, tuning, tuning_ledger
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


@pytest.mark.parametrize("fallback", ["default", "dlight"])
def test_untuned_workloads_take_the_fallback_and_build_info_says_so(tmp_path, monkeypatch,
                                                                     fallback):
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    model, (graph, params) = _tiny()
    runner = TVMRunner("cpu", {"db": str(tmp_path / "empty"), "fallback": fallback})
    runner.build(graph, params, QuantPlan())
    info = runner.build_info
    assert info["fallback"] == fallback and info["tuned_workloads"] == 0
    assert info["tuned_kernels"] == 0 and info["kernels"] > 0
    assert info["fallback_kernels"] + info["default_kernels"] == info["kernels"]
    if fallback == "dlight":
        assert info["fallback_kernels"] > 0  # dlight's GEMV/Reduction rule takes the matmul
    else:
        assert info["fallback_kernels"] == 0
    x = torch.randn(1, 8)
    assert torch.allclose(torch.from_numpy(runner.run([x.numpy()])[0]), model(x), atol=1e-5)


def test_dynamic_batch_graph_runs_batch1_on_its_static_build(tmp_path, monkeypatch):
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    graph, params = from_torch(model, (torch.randn(1, 8),), dynamic_batch=True)
    without = TVMRunner("cpu", {"db": str(tmp_path / "absent")})
    without.build(graph, params, QuantPlan())
    assert "batch1" not in without.build_info  # no records: one symbolic build
    runner = TVMRunner("cpu", {"db": str(tmp_path / "empty")})
    tuning.open_database(runner._db_path)  # a database without records for this graph
    runner.build(graph, params, QuantPlan())
    static = runner.build_info["batch1"]
    assert static["workloads"] > 0 and static["tuned_workloads"] == 0
    for batch in (1, 3):
        x = torch.randn(batch, 8)
        out = runner.run([x.numpy()])[0]
        assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-5)
    # Both builds come from the disk cache the second time.
    cached = TVMRunner("cpu", {"db": str(tmp_path / "empty")})
    cached.build(graph, params, QuantPlan())
    assert cached.build_info["cached"] and cached.build_info["batch1"]["cached"]


def test_convs_run_channels_last_behind_the_nchw_interface(tmp_path, monkeypatch):
    """Tuned kernels compute convolutions in NHWC (``channels_last.CONV_LAYOUTS``); the caller
    still feeds NCHW and gets the network's own outputs."""
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, groups=16), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 8, 1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 12, 12)
    graph, params = from_torch(model, (x,), dynamic_batch=False)
    target = tuning.host_target()
    fused = tuning.fuse(to_relax(graph, params, "main", quant=QuantPlan()), target)
    main = fused["main"]
    assert [int(d) for d in main.params[0].ty.shape] == [1, 3, 12, 12]
    calls = [b.value for block in main.body.blocks for b in block.bindings
             if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"]
    kernels = [call.args[0].name_hint for call in calls]
    conv_outputs = [[int(d) for d in call.ty.shape] for call in calls
                    if "conv2d" in call.args[0].name_hint]
    assert conv_outputs == [[1, 12, 12, 16], [1, 5, 5, 16], [1, 5, 5, 8]]
    # One transpose in, one before the classifier: the ReLU6 (a clip) stays channels-last.
    assert sum("transpose" in name for name in kernels) == 2, kernels
    runner = TVMRunner("cpu", {"db": str(tmp_path / "empty")})
    runner.build(graph, params, QuantPlan())
    out = runner.run([x.numpy()])[0]
    assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-5)


def _conv_then_stack(tuple_literal: bool) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 6, 6), "float32"))
    weight = relax.const(np.ones((8, 4, 3, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, weight, padding=1))
            pair = relax.Tuple([y, y]) if tuple_literal else bb.emit(relax.Tuple([y, y]))
            out = bb.emit_output(relax.op.sum(relax.op.stack(pair, axis=1), axis=1))
        bb.emit_func_output(out)
    return bb.get()


def test_stack_is_converted_and_a_failing_layout_rule_keeps_the_model_layout(caplog):
    """TVM's layout rule for ``stack`` fails inside ConvertLayout: a stack of a tuple
    literal is rewritten (concat of expand_dims) and goes channels-last; one we cannot
    rewrite (a tuple variable) leaves the module as it was, with a warning."""
    converted = channels_last.to_channels_last(_conv_then_stack(tuple_literal=True))
    assert "NHWC" in converted["main"].script()
    kept = _conv_then_stack(tuple_literal=False)
    with caplog.at_level(logging.WARNING, logger="mscgym.runtime.channels_last"):
        assert channels_last.to_channels_last(kept).same_as(kept)
    assert any("ConvertLayout failed" in r.getMessage() for r in caplog.records)


def test_fallback_option_is_checked():
    with pytest.raises(Exception, match="fallback"):
        TVMRunner("cpu", {"fallback": "naive"})


@pytest.mark.slow  # MetaSchedule tuning (2 trials per workload) on 2 busy cores
def test_dynamic_batch_graph_is_tuned_and_timed_as_its_static_batch1_build(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    graph, params = from_torch(model, (torch.randn(1, 8),), dynamic_batch=True)
    before = tuning_ledger.snapshot()
    runner = TVMRunner("cpu", {"db": str(tmp_path / "db"),
                               "tune": {"trials": 2, "cost_model": "random"}})
    runner.build(graph, params, QuantPlan())
    report = runner.tuning_report
    assert report.workloads > 0 and report.tuned == report.workloads
    # The tuned records are the static batch-1 workloads, and the batch-1 build uses them.
    assert runner.build_info["batch1"]["tuned_workloads"] == report.workloads
    paid = tuning_ledger.snapshot().since(before)
    assert paid.trials == report.trials > 0 and paid.workloads == report.tuned
    for batch in (1, 3):
        x = torch.randn(batch, 8)
        out = runner.run([x.numpy()])[0]
        assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-5)
    # A larger budget tunes the same workloads again, once, for the trials they lack (one
    # each here, not three); the same budget never does.
    for trials, tuned_again in ((3, report.workloads), (3, 0), (2, 0)):
        again = TVMRunner("cpu", {"db": str(tmp_path / "db"),
                                  "tune": {"trials": trials, "cost_model": "random"}})
        again.build(graph, params, QuantPlan())
        assert again.tuning_report.tuned == tuned_again
        assert again.tuning_report.trials <= tuned_again


SEARCH_SCRIPT = textwrap.dedent("""
    import json, sys
    from mscgym.agents.registry import create_agent
    from mscgym.cli.search import format_summary
    from mscgym.tasks.task import Task
    task = Task("digits-mlp", "quantize", runner="tvm", profile_repeat=2, profile_warmup=1,
                runner_options={"db": sys.argv[1],
                                "tune": {"trials": 2, "cost_model": "random"}})
    first = create_agent("random", seed=0, progress=False).search(task, 2)
    again = create_agent("random", seed=0, progress=False).search(task, 2)
    print(json.dumps({"first": first.extra["tvm_tuning"], "again": again.extra["tvm_tuning"],
                      "summary": format_summary(task, first, "best.json")}))
""")


# In a subprocess, as the CLI runs it: inside the pytest process, after another tuning
# test, MetaSchedule's logger set-up failed formatting a handler name that was None
# (``tvm.s_tir.meta_schedule.logging._parameterize_config``); the cause is not pinned down.
@pytest.mark.slow  # a two-plan search on the tvm runner with tuning
def test_search_on_tvm_reports_the_tuning_it_paid(tmp_path):
    result = subprocess.run([sys.executable, "-c", SEARCH_SCRIPT, str(tmp_path / "db")],
                            check=True, capture_output=True, text=True, timeout=900)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    paid = out["first"]
    assert paid["workloads"] > 0 and paid["trials"] > 0 and paid["seconds"] > 0
    assert out["again"]["trials"] == 0  # every workload is in the database
    assert f"{paid['trials']} trials" in out["summary"] and "tvm tuning:" in out["summary"]


PREPACK_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    from mscgym.compiler.frontend import from_torch
    from mscgym.compiler.quant_spec import QuantPlan
    from mscgym.runtime.runners.tvm_runner import TVMRunner
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 8, 3)).eval()
    x = torch.randn(1, 3, 12, 12)
    graph, params = from_torch(model, (x,), dynamic_batch=False)
    runner = TVMRunner("cpu", {"db": sys.argv[1], "cache": False,
                               "tune": {"trials": 2, "cost_model": "random"}})
    runner.build(graph, params, QuantPlan())
    diff = float(np.abs(runner.run([x.numpy()])[0] - model(x).detach().numpy()).max())
    print(json.dumps({"info": runner.build_info, "diff": diff}))
""")


@pytest.mark.slow  # MetaSchedule tuning (2 trials per workload), in a subprocess as above
def test_tuned_convs_read_weights_packed_once_at_build_time(tmp_path):
    env = {**os.environ, "MSCGYM_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", PREPACK_SCRIPT, str(tmp_path / "db")],
                            check=True, capture_output=True, text=True, timeout=900, env=env)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    info = out["info"]
    # The two convs and the transposes into and out of channels-last.
    assert info["tuned_kernels"] == info["kernels"] == 4
    # Both convs' schedules chose a packed weight layout, and the packing was folded into
    # the build's constants (a packer left in the module would run on every inference).
    assert info["prepacked_kernels"] == 2
    assert out["diff"] < 1e-4
