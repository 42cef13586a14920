"""What compression buys in latency, and what it costs in quality, on real runtimes.

For each zoo model (224x224, batch 1) it builds seven variants and measures them
interleaved in the same run (see ``common.interleaved_latency``):

* int8 vs fp32 on ONNX Runtime: the Quantizer's ONNX Runtime x86 form (``target:
  onnxruntime``: per-channel int8 weights, per-tensor uint8 asymmetric activations, every
  activation between int8 kernels planned), calibrated through the RuntimeManager loop on
  the zoo's calibration batches; the runner emits QDQ that ONNX Runtime fuses into int8
  kernels;
* pruned (Pruner, density 0.5, round_to 8) vs dense on torch, TVM and ONNX Runtime;
* TVM vs torch eager (the dense model).

Speed-up = baseline median / candidate median. The distill loss of each candidate
(``mscgym.tools.losses.distill_loss``) is measured against the float zoo model on the
held-out crops (``eval_inputs``), so every speed-up comes with its quality cost.

Run: python benchmarks/compression_speed.py [--models resnet18,mobilenetv2]
         [--repeat 30] [--warmup 5] [--budget 40] [--threads N] [--only int8,pruned,tvm]
         [--json OUT]

``--only int8`` builds and times just fp32 and int8 on ONNX Runtime (the untuned TVM
build of a 224x224 model takes seconds a run, most of a full run's time).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common

from mscgym.runtime.runners.ort_runner import onnx_bytes
from mscgym.tools.losses import distill_loss
from mscgym.tools.pruner import model_cost

DENSITY = 0.5
ROUND_TO = 8
COMPARISONS = (
    # (comparison, runner column, baseline variant, candidate variant)
    ("int8 vs fp32", "onnxruntime", "onnxruntime/fp32", "onnxruntime/int8"),
    ("pruned vs dense", "torch", "torch/dense", "torch/pruned"),
    ("pruned vs dense", "tvm", "tvm/dense", "tvm/pruned"),
    ("pruned vs dense", "onnxruntime", "onnxruntime/fp32", "onnxruntime/pruned"),
    ("tvm vs torch eager", "dense", "torch/dense", "tvm/dense"),
)
GROUPS = {"int8": "int8 vs fp32", "pruned": "pruned vs dense", "tvm": "tvm vs torch eager"}
"""``--only`` names: the comparisons of each group (and only the variants they need)."""


def benchmark_model(name: str, args: argparse.Namespace,
                    options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Build, check and time the variants of one model; returns its results."""
    comparisons = [c for c in COMPARISONS if c[0] in {GROUPS[g] for g in args.only}]
    needed = {label for c in comparisons for label in c[2:]}
    started = time.perf_counter()
    entry, graph, params = common.load_model(name)
    config = {"target": "onnxruntime", **common.quantizer_config("uint8", symmetric=False)}
    plan = (common.calibrate(graph, params, common.calibration_arrays(entry), config)
            if "onnxruntime/int8" in needed else {})
    pruned_graph, pruned_params = common.prune(graph, params, DENSITY, ROUND_TO)
    dense_cost, pruned_cost = model_cost(graph), model_cost(pruned_graph)
    every = {
        "onnxruntime/fp32": ("onnxruntime", graph, params, {}),
        "onnxruntime/int8": ("onnxruntime", graph, params, plan),
        "onnxruntime/pruned": ("onnxruntime", pruned_graph, pruned_params, {}),
        "torch/dense": ("torch", graph, params, {}),
        "torch/pruned": ("torch", pruned_graph, pruned_params, {}),
        "tvm/dense": ("tvm", graph, params, {}),
        "tvm/pruned": ("tvm", pruned_graph, pruned_params, {}),
    }
    variants = {label: variant for label, variant in every.items() if label in needed}
    teacher = common.float_outputs(entry, entry.eval_inputs)
    eval_inputs = entry.eval_inputs.numpy()
    sample = [eval_inputs[:1].copy()]
    runners, builds, losses = {}, {}, {}
    for label, (runner_name, g, p, quant) in variants.items():
        runners[label], builds[label] = common.build_runner(runner_name, g, p, quant,
                                                            options)
        losses[label] = distill_loss(teacher, runners[label].run([eval_inputs])[0])
    prepared = time.perf_counter() - started
    latency = common.interleaved_latency(
        {label: common.runner_call(r, sample) for label, r in runners.items()},
        args.repeat, args.warmup, args.budget)
    int8_kernels = common.ort_kernels(onnx_bytes(graph, params, plan)) if plan else {}
    rows = []
    for comparison, column, base, cand in comparisons:
        rows.append({
            "model": name, "comparison": comparison, "runner": column, "baseline": base,
            "candidate": cand, "baseline_latency": latency[base].to_json(),
            "candidate_latency": latency[cand].to_json(),
            "speedup": latency[base].median_ms / latency[cand].median_ms,
            "distill_loss": losses[cand],
        })
    return {
        "model": name, "rows": rows, "build_seconds": builds,
        "distill_loss": losses, "int8_kernels": dict(int8_kernels),
        "quantizer_config": config, "quantized_layers": len(plan),
        "prune": {"density": DENSITY, "round_to": ROUND_TO, "dense": dense_cost,
                  "pruned": pruned_cost},
        "targets": {label: r.target for label, r in runners.items()},
        "prepare_seconds": prepared, "seconds": time.perf_counter() - started,
    }


def _table(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for row in result["rows"]:
            base, cand = row["baseline_latency"], row["candidate_latency"]
            rows.append([row["model"], row["comparison"], row["runner"], common.ms(base),
                         common.ms(cand), f"{base['repeat']}/{cand['repeat']}",
                         f"{row['speedup']:.2f}x", f"{row['distill_loss']:.2e}"])
    headers = ["model", "comparison", "runner", "baseline ms median (p90)",
               "candidate ms median (p90)", "n b/c", "speed-up", "distill loss (cand.)"]
    return common.format_table(headers, rows)


def _groups(text: str) -> list[str]:
    groups = [g for g in text.split(",") if g]
    unknown = sorted(set(groups) - set(GROUPS))
    if not groups or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {list(GROUPS)}, got {text!r}")
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenetv2",
                        help="comma-separated zoo models (224x224 inputs)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per variant")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="seconds of timed runs one variant may take; slower variants "
                             "get fewer runs (at least 5)")
    parser.add_argument("--threads", type=int,
                        help="threads for torch, TVM and ONNX Runtime (default: their own)")
    parser.add_argument("--only", type=_groups, default=list(GROUPS),
                        help=f"comparisons to run (comma-separated, from {list(GROUPS)}; "
                             "default all)")
    parser.add_argument("--json", help="also write the results (with samples) here")
    args = parser.parse_args()

    started = time.perf_counter()
    options = common.set_threads(args.threads)
    env_before = common.environment(args.threads)
    results = [benchmark_model(name, args, options) for name in args.models.split(",") if name]
    env_after = common.environment(args.threads)
    total = time.perf_counter() - started

    print(f"compression speed, batch 1 at 224x224, medians of interleaved runs "
          f"(--repeat {args.repeat}, --warmup {args.warmup}, --budget {args.budget:g} s, "
          f"--threads {args.threads or 'default'})")
    print(common.environment_line(env_before))
    print(f"load average (1 min): {env_before['load_average_1m']} at start, "
          f"{env_after['load_average_1m']} at end")
    print()
    print(_table(results))
    print()
    print("speed-up = baseline median / candidate median; distill loss = KL(float zoo model || "
          "candidate) on the held-out crops (eval_inputs)")
    for result in results:
        prune = result["prune"]
        if result["int8_kernels"]:
            print(f"{result['model']}: int8 = {result['quantized_layers']} planned nodes "
                  f"(kernels and the adds/pools between them), per-channel int8 weights + "
                  f"per-tensor uint8 activations (minmax, target onnxruntime); ORT kernels: "
                  f"{common.kernel_summary(result['int8_kernels'])}")
        dense, pruned = prune["dense"], prune["pruned"]
        print(f"{result['model']}: pruned (density {prune['density']}, round_to "
              f"{prune['round_to']}) keeps {pruned['params'] / dense['params']:.0%} of params, "
              f"{pruned['flops'] / dense['flops']:.0%} of FLOPs")
        builds = ", ".join(f"{k} {v:.1f}" for k, v in result["build_seconds"].items())
        print(f"{result['model']}: build seconds: {builds}")
        if "tvm/dense" in result["targets"]:
            print(f"{result['model']}: TVM target {result['targets']['tvm/dense']}")
    print(f"total {total:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "benchmark": "compression_speed", "args": vars(args), "environment": env_before,
            "load_average_1m_end": env_after["load_average_1m"], "results": results,
            "total_seconds": total,
        })


if __name__ == "__main__":
    main()
