"""TVM untuned vs MetaSchedule-tuned vs torch eager and ONNX Runtime, batch 1, one run.

Per model: the graph is built with a static batch of 1 (MetaSchedule tunes static
shapes), then four variants are timed interleaved (``common.interleaved_latency``):
torch eager, ONNX Runtime, the TVM build with TVM's default schedules (host target, no
database) and the TVM build after tuning every workload with ``--trials`` MetaSchedule
trials (a fresh database under ``--db``, so the tuning wall time printed is what a first
build pays; a second build of the same workloads pays none).

    python benchmarks/tvm_tuning.py --models digits-cnn resnet18 --trials 32
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

import common
import numpy as np

from mscgym import zoo
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.quant_spec import QuantPlan


def bench_model(name: str, trials: int, db_root: str, cost_model: str, repeat: int,
                warmup: int, budget: float, options: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs, dynamic_batch=False)
    inputs = [entry.example_inputs[0].numpy()]
    quant = QuantPlan()
    untuned_db = tempfile.mkdtemp(prefix="mscgym-untuned-db-")
    built: dict[str, Any] = {}
    runners = {}
    for label, runner, extra in [
        ("torch eager", "torch", {}),
        ("onnxruntime", "onnxruntime", {}),
        ("tvm untuned", "tvm", {"db": untuned_db, "cache": False}),
        ("tvm tuned", "tvm", {"db": db_root, "cache": False,
                              "tune": {"trials": trials, "cost_model": cost_model}}),
    ]:
        runner_options = {runner: {**options.get(runner, {}), **extra}}
        built_runner, seconds = common.build_runner(runner, graph, params, quant,
                                                    runner_options)
        runners[label] = built_runner
        built[label] = {"build_s": round(seconds, 1)}
        if runner == "tvm":
            built[label].update(built_runner.build_info)
            report = built_runner.tuning_report
            if report is not None:
                built[label]["tuning"] = report.as_dict()
    shutil.rmtree(untuned_db, ignore_errors=True)
    reference = runners["torch eager"].run(inputs)[0]
    for label, runner in runners.items():
        diff = float(np.max(np.abs(runner.run(inputs)[0] - reference)))
        built[label]["max_abs_diff_vs_torch"] = diff
    calls = {label: common.runner_call(r, inputs) for label, r in runners.items()}
    latency = common.interleaved_latency(calls, repeat, warmup, budget)
    return {"model": name, "build": built,
            "latency": {k: v.to_json() for k, v in latency.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits-cnn", "resnet18", "mobilenetv2"])
    parser.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per workload")
    parser.add_argument("--cost-model", default="xgb", choices=["xgb", "random"])
    parser.add_argument("--db", default=None,
                        help="tuning database root (default: a fresh temporary directory)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    options = common.set_threads(args.threads)
    db_root = args.db or tempfile.mkdtemp(prefix="mscgym-tvm-tuning-")
    print(common.environment_line(common.environment(args.threads)))
    print(f"MetaSchedule: {args.trials} trials per workload, cost model {args.cost_model}, "
          f"database {db_root}")
    results = []
    for name in args.models:
        started = time.perf_counter()
        result = bench_model(name, args.trials, db_root, args.cost_model, args.repeat,
                             args.warmup, args.budget, options)
        results.append(result)
        lat = result["latency"]
        tuning = result["build"]["tvm tuned"].get("tuning", {})
        rows = [[label, common.ms(lat[label]),
                 f"{lat['torch eager']['median_ms'] / lat[label]['median_ms']:.2f}x",
                 f"{lat['onnxruntime']['median_ms'] / lat[label]['median_ms']:.2f}x",
                 f"{result['build'][label]['max_abs_diff_vs_torch']:.1e}"]
                for label in lat]
        print(f"\n{name} (batch 1); tuned workloads "
              f"{result['build']['tvm tuned'].get('tuned_workloads')}/"
              f"{result['build']['tvm tuned'].get('workloads')}, tuning "
              f"{tuning.get('trials', 0)} trials in {tuning.get('seconds', 0.0):.0f} s; "
              f"target {result['build']['tvm tuned']['target']}; "
              f"model total {time.perf_counter() - started:.0f} s")
        print(common.format_table(
            ["variant", "median (p90) ms", "speed-up vs torch", "vs ORT", "max |diff|"], rows))
    if args.json:
        common.write_json(args.json, {"trials": args.trials, "results": results})


if __name__ == "__main__":
    main()
