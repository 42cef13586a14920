"""TVM untuned vs MetaSchedule-tuned vs torch eager and ONNX Runtime, batch 1, one run.

Per model: the graph is built with a static batch of 1 (MetaSchedule tunes static
shapes), then these variants are timed interleaved (``common.interleaved_latency``):
torch eager, ONNX Runtime, and TVM builds for the host target with
- ``tvm default``: no database, TVM's default lowering (naive loop nests);
- ``tvm dlight``: no database, dlight's CPU rules (GEMV, Reduction) where they match;
- ``tvm N-trial``: each workload tuned with a small budget (``--small-trials``, random
  sampling of MetaSchedule's design space, no cost model): what a search pays per new
  workload;
- ``tvm tuned``: each workload tuned with ``--trials`` MetaSchedule trials (evolutionary
  search with the XGBoost cost model).
Each tuned variant gets a fresh database, so the tuning wall time printed is what a
first build pays; a second build of the same workloads pays none.

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


def bench_model(name: str, trials: int, small_trials: int, db_root: str, cost_model: str,
                repeat: int, warmup: int, budget: float, options: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs, dynamic_batch=False)
    inputs = [entry.example_inputs[0].numpy()]
    quant = QuantPlan()
    untuned_db = tempfile.mkdtemp(prefix="mscgym-untuned-db-")
    small_db = tempfile.mkdtemp(prefix="mscgym-small-db-")
    built: dict[str, Any] = {}
    runners = {}
    variants = [
        ("torch eager", "torch", {}),
        ("onnxruntime", "onnxruntime", {}),
        ("tvm default", "tvm", {"db": untuned_db, "cache": False}),
        ("tvm dlight", "tvm", {"db": untuned_db, "cache": False, "fallback": "dlight"}),
    ]
    if small_trials:
        variants.append((f"tvm {small_trials}-trial", "tvm", {
            "db": small_db, "cache": False,
            "tune": {"trials": small_trials, "cost_model": "random"}}))
    if trials:
        variants.append(("tvm tuned", "tvm", {
            "db": db_root, "cache": False,
            "tune": {"trials": trials, "cost_model": cost_model}}))
    for label, runner, extra in variants:
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
    shutil.rmtree(small_db, ignore_errors=True)
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
    parser.add_argument("--trials", type=int, default=32,
                        help="MetaSchedule trials per workload (0: no tuned variant)")
    parser.add_argument("--small-trials", type=int, default=4,
                        help="trials per workload of the small-budget variant (0: none)")
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
        result = bench_model(name, args.trials, args.small_trials, db_root, args.cost_model,
                             args.repeat, args.warmup, args.budget, options)
        results.append(result)
        lat = result["latency"]
        target = result["build"]["tvm default"]["target"]
        rows = [[label, common.ms(lat[label]),
                 f"{lat['torch eager']['median_ms'] / lat[label]['median_ms']:.2f}x",
                 f"{lat['onnxruntime']['median_ms'] / lat[label]['median_ms']:.2f}x",
                 f"{result['build'][label]['max_abs_diff_vs_torch']:.1e}"]
                for label in lat]
        print(f"\n{name} (batch 1); target {target}; "
              f"model total {time.perf_counter() - started:.0f} s")
        for label, build in result["build"].items():
            if label.startswith("tvm "):
                report = build.get("tuning", {})
                # The "default" fallback is TVM's default schedule: no kernels of its own.
                fallback = ("" if build.get("fallback") == "default"
                            else f"{build.get('fallback_kernels')} {build.get('fallback')}, ")
                print(f"  {label}: {build.get('tuned_workloads')}/{build.get('workloads')} "
                      f"workloads tuned; kernels: {build.get('tuned_kernels')} tuned, "
                      f"{fallback}"
                      f"{build.get('default_kernels')} default of {build.get('kernels')}, "
                      f"{build.get('prepacked_kernels')} with prepacked weights; "
                      f"tuning {report.get('trials', 0)} trials in "
                      f"{report.get('seconds', 0.0):.0f} s; build {build['build_s']} s")
        print(common.format_table(
            ["variant", "median (p90) ms", "speed-up vs torch", "vs ORT", "max |diff|"], rows),
            flush=True)
        if args.json:  # after every model, so a long run keeps what it measured
            common.write_json(args.json, {"trials": args.trials,
                                          "small_trials": args.small_trials,
                                          "results": results})


if __name__ == "__main__":
    main()
