"""Our int8 quantization side by side with ONNX Runtime's own ``quantize_static``.

Both sides get the same float model, the same calibration batches
(``zoo.load(name).calibration_batches()``), MinMax calibration, per-channel symmetric
int8 weights, per-tensor activations and the QDQ format, and both run in an ONNX
Runtime CPU session at ORT_ENABLE_ALL. ONNX Runtime's side starts from our float
export (``to_onnx`` + ``save_onnx``, at ``EXPORT_OPSET``), pre-processed by
``quant_pre_process``, and reads the batches through a ``CalibrationDataReader``.
Variants:

* ``mscgym``: the Quantizer's default for ONNX Runtime on x86 (``target: onnxruntime``:
  uint8 asymmetric activations, int8 per-channel weights, every activation between int8
  kernels planned: conv outputs, both residual-add operands, pooling, classifier input),
  calibrated through the RuntimeManager loop, run by the onnxruntime runner;
* ``mscgym-s8``: the same placement with int8 symmetric activations;
* ``mscgym-before``: what the Quantizer planned before full-integer placement (kernel
  inputs only, ``target: generic``) with uint8 activations, the best of its old variants;
* ``ort-s8`` / ``ort-u8``: quantize_static on the same layers (the Conv, Gemm and MatMul
  nodes with a constant weight), with the matching activation type and symmetry;
* ``ort-u8-all``: quantize_static on every op type it quantizes, uint8 activations;
* ``ort-default``: quantize_static with its defaults (every op type it can quantize,
  int8 asymmetric activations) apart from per-channel weights.

It prints accuracy on the test split of the digits models, then, for every model
(digits and 224x224), latency at 1 and 2 ONNX Runtime threads and batch 1 and 8 (medians
of interleaved runs: every variant of one model, thread count and batch is timed in the
same rounds), the speed-up over fp32 and the distill loss against the float model on the
held-out inputs, and the kernels ONNX Runtime runs after its optimizations.

Run: nice python benchmarks/quantize_vs_ort.py [--digits digits-mlp,...] [--models resnet18,...]
         [--variants mscgym,ort-u8,...] [--threads 1,2] [--batches 1,8] [--repeat 12]
         [--digits-repeat 300] [--warmup 3] [--budget 20] [--json OUT]

Every variant, ours included, is timed through the same plain ``InferenceSession.run``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import common
import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from mscgym.compiler.codegen.onnx_codegen import save_onnx, to_onnx
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.runners.ort_runner import onnx_bytes
from mscgym.tools.losses import distill_loss
from mscgym.tools.quantizer import x86_int8_isa

DIGITS = ("digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer")
MODELS = ("resnet18", "mobilenetv2")
VARIANTS = ("mscgym", "mscgym-s8", "mscgym-before", "ort-s8", "ort-u8", "ort-u8-all",
            "ort-default")
_WEIGHTS = {"dtype": "int8", "per_channel": True, "symmetric": True, "method": "minmax"}
OURS: dict[str, dict[str, Any]] = {
    "mscgym": {"target": "onnxruntime", "weight": _WEIGHTS,
               "activation": {"dtype": "uint8", "symmetric": False, "method": "minmax"}},
    "mscgym-s8": {"target": "onnxruntime", "weight": _WEIGHTS,
                  "activation": {"dtype": "int8", "symmetric": True, "method": "minmax"}},
    "mscgym-before": {"target": "generic", "weight": _WEIGHTS,
                      "activation": {"dtype": "uint8", "symmetric": False, "method": "minmax"}},
}
"""Quantizer configs, written out in full so the printed benchmark says what ran."""
_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
EXPORT_OPSET = 20
"""Opset of the float model handed to quantize_static. At opset 21 QuantizeLinear has
``output_dtype``, and ONNX Runtime 1.32 fails to create a session for its own int8
symmetric output when a Q -> DQ pair feeds a Reshape (its QDQ propagation keeps
``output_dtype`` INT8 after converting the zero point to UINT8; digits-transformer
hits it). The kernels are the same at opset 20."""

Logits = Callable[[np.ndarray], np.ndarray]


class BatchReader(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator the same batches our quantizer saw."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self._feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def weight_layers(model_path: str) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes whose weight is an initializer: the layers
    our quantizer quantizes by default (conv and linear layers)."""
    graph = onnx.load(model_path).graph
    constants = {init.name for init in graph.initializer}
    names = [node.name for node in graph.node
             if node.op_type in _WEIGHT_OPS and len(node.input) > 1
             and node.input[1] in constants]
    if not names:
        raise MSCError(f"{model_path}: no Conv/Gemm/MatMul node with a constant weight to "
                       "quantize")
    return names


def ort_quantize(float_path: str, out_path: str, variant: str, input_name: str,
                 batches: Sequence[np.ndarray]) -> None:
    """Quantize the pre-processed float model with ``quantize_static`` as ``variant``."""
    options: dict[str, Any] = {}
    if variant == "ort-s8":
        options = {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                   "nodes_to_quantize": weight_layers(float_path),
                   "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}}
    elif variant == "ort-u8":
        options = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                   "nodes_to_quantize": weight_layers(float_path),
                   "extra_options": {"WeightSymmetric": True}}
    elif variant == "ort-u8-all":
        options = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                   "extra_options": {"WeightSymmetric": True}}
    elif variant != "ort-default":
        raise MSCError(f"unknown ONNX Runtime variant {variant!r}; expected ort-s8, ort-u8, "
                       "ort-u8-all or ort-default")
    quantize_static(float_path, out_path, BatchReader(input_name, batches),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, **options)


@dataclass
class Variant:
    """One quantized (or fp32) model: how to build a session at a thread count, and what
    ONNX Runtime runs for it after optimization."""

    build: Callable[[int], Logits]
    kernels: Counter[str]


def build_variants(name: str, graph: MSCGraph, params: common.Params,
                   batches: Sequence[np.ndarray], variants: Sequence[str],
                   workdir: str) -> dict[str, Variant]:
    """fp32 and every variant of zoo model ``name``, calibrated once on ``batches``."""

    def ours(plan: QuantPlan) -> Variant:
        # The model the onnxruntime runner builds, in the same plain session every variant
        # gets: a wrapper's microseconds would otherwise bias the digits models' ratios.
        model = onnx_bytes(graph, params, plan)

        def build(threads: int) -> Logits:
            session = common.ort_session(model, threads)
            feed = session.get_inputs()[0].name
            return lambda x: session.run(None, {feed: x})[0]
        return Variant(build, common.ort_kernels(model))

    built = {"fp32": ours({})}
    for variant in (v for v in variants if v in OURS):
        built[variant] = ours(common.calibrate(graph, params, batches, OURS[variant]))
    theirs = [v for v in variants if v not in OURS]
    if theirs:
        exported = os.path.join(workdir, f"{name}.onnx")
        prepared = os.path.join(workdir, f"{name}.pre.onnx")
        save_onnx(to_onnx(graph, params, opset=EXPORT_OPSET), exported)
        quant_pre_process(exported, prepared)
        for variant in theirs:
            path = os.path.join(workdir, f"{name}.{variant}.onnx")
            ort_quantize(prepared, path, variant, graph.input_names[0], batches)

            def build(threads: int, path: str = path) -> Logits:
                session = common.ort_session(path, threads)
                feed = session.get_inputs()[0].name
                return lambda x: session.run(None, {feed: x})[0]
            built[variant] = Variant(build, common.ort_kernels(path))
    return built


def model_rows(name: str, variants: Sequence[str], workdir: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """One model: accuracy (digits), distill loss and kernels per variant, and latency rows
    per (threads, batch), every variant of one setting timed in the same rounds."""
    entry, graph, params = common.load_model(name)
    built = build_variants(name, graph, params, common.calibration_arrays(entry), variants,
                           workdir)
    eval_inputs = entry.eval_inputs.numpy()
    teacher = common.float_outputs(entry, entry.eval_inputs)
    test = getattr(entry, "test_data", None)
    result: dict[str, Any] = {"model": name, "variants": {}, "latency": []}
    for threads in args.threads:
        common.set_threads(threads)
        logits = {label: variant.build(threads) for label, variant in built.items()}
        if threads == args.threads[0]:
            for label, f in logits.items():
                entry_row: dict[str, Any] = {
                    "distill_loss": distill_loss(teacher, f(eval_inputs)),
                    "kernels": dict(built[label].kernels)}
                if name.startswith("digits-") and test is not None:
                    entry_row["accuracy"] = entry.accuracy(lambda x, f=f: f(x.numpy()))
                result["variants"][label] = entry_row
        for batch in args.batches:
            sample = np.ascontiguousarray(np.resize(eval_inputs, (batch, *eval_inputs.shape[1:])))
            repeat = args.digits_repeat if name.startswith("digits-") else args.repeat
            latency = common.interleaved_latency(
                {label: (lambda f=f, x=sample: f(x)) for label, f in logits.items()},
                repeat, args.warmup, args.budget)
            base = latency["fp32"].median_ms
            for label in logits:
                result["latency"].append({
                    "threads": threads, "batch": batch, "variant": label,
                    "latency": latency[label].to_json(),
                    "speedup": base / latency[label].median_ms})
    return result


def _accuracy_table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    cells = []
    for row in rows:
        if not all("accuracy" in row["variants"][label] for label in labels):
            continue
        values = [row["variants"][label] for label in labels]
        cells.append([row["model"]] + [f"{v['accuracy']:.2%} ({v['distill_loss']:.1e})"
                                       for v in values])
    return common.format_table(["model"] + labels, cells)


def _speedup_table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """Per model, threads and batch: fp32 ms, each variant's speed-up, and ours vs ORT's
    best variant with a bootstrap interval of that ratio from the two variants' timed runs
    (the best ORT variant is picked after the fact, so the ratio leans against us)."""
    cells = []
    theirs = [label for label in labels if label.startswith("ort-")]
    for row in rows:
        settings = sorted({(r["threads"], r["batch"]) for r in row["latency"]})
        for threads, batch in settings:
            by = {r["variant"]: r for r in row["latency"]
                  if (r["threads"], r["batch"]) == (threads, batch)}
            best = max(theirs, key=lambda v: by[v]["speedup"]) if theirs else None
            line = [row["model"], threads, batch, f"{by['fp32']['latency']['median_ms']:.2f}"]
            line += [f"{by[label]['speedup']:.2f}x" for label in labels if label != "fp32"]
            if best is not None and "mscgym" in by:
                low, high = common.median_ratio_interval(_latency(by[best]), _latency(by["mscgym"]))
                line.append(f"{by['mscgym']['speedup'] / by[best]['speedup']:.2f} "
                            f"[{low:.2f}, {high:.2f}] ({best})")
            cells.append(line)
    headers = ["model", "threads", "batch", "fp32 ms"] + [v for v in labels if v != "fp32"]
    if theirs and "mscgym" in labels:
        headers.append("mscgym / best ORT [95% interval]")
    return common.format_table(headers, cells)


def _latency(row: dict[str, Any]) -> common.Latency:
    latency = row["latency"]
    return common.Latency(list(latency["samples_ms"]), int(latency["warmup"]))


def _quality_table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    cells = [[row["model"]] + [f"{row['variants'][label]['distill_loss']:.2e}"
                               for label in labels] for row in rows]
    return common.format_table(["model"] + labels, cells)


def _kernel_lines(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    lines = []
    for row in rows:
        for label in labels:
            summary = common.kernel_summary(row["variants"][label]["kernels"])
            lines.append(f"{row['model']:<18} {label:<14} {summary}")
    return lines


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers >= 1, "
                                         f"got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", default=",".join(DIGITS), help="digits models")
    parser.add_argument("--models", default=",".join(MODELS), help="224x224 models")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"int8 variants to compare with fp32, from {list(VARIANTS)}")
    parser.add_argument("--threads", type=_int_list, default=[1, 2],
                        help="ONNX Runtime intra-op thread counts (comma-separated)")
    parser.add_argument("--batches", type=_int_list, default=[1, 8],
                        help="batch sizes (comma-separated)")
    parser.add_argument("--repeat", type=int, default=12, help="timed runs per variant")
    parser.add_argument("--digits-repeat", type=int, default=300,
                        help="timed runs per variant on the digits models (tens of us a run)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per variant")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of timed runs one variant may take (at least 5 runs)")
    parser.add_argument("--json", help="also write the results (with samples) here")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")

    started = time.perf_counter()
    env_before = common.environment(args.threads[0])
    names = [n for n in args.digits.split(",") if n] + [n for n in args.models.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="quantize_vs_ort-") as workdir:
        rows = [model_rows(name, variants, workdir, args) for name in names]
    env_after = common.environment(args.threads[0])
    total = time.perf_counter() - started

    labels = ["fp32"] + variants
    print("int8: mscgym Quantizer vs onnxruntime.quantization.quantize_static (QDQ, per-channel "
          "int8 weights, per-tensor activations, MinMax, same calibration batches)")
    print(f"CPU: {env_before['cpu']}; int8 ISA flags: {' '.join(x86_int8_isa()) or 'none'}")
    print(common.environment_line(env_before))
    print(f"load average (1 min): {env_before['load_average_1m']} at start, "
          f"{env_after['load_average_1m']} at end")
    accuracy = _accuracy_table(rows, labels)
    if accuracy.count("\n") > 1:
        print()
        print("accuracy on the digits test split (distill loss vs the float model)")
        print(accuracy)
    print()
    print("distill loss vs the float model on the held-out inputs")
    print(_quality_table(rows, labels))
    print()
    print(f"speed-up over fp32 on ONNX Runtime CPU (fp32 median ms; medians of interleaved "
          f"runs, --repeat {args.repeat} (digits {args.digits_repeat}), --warmup {args.warmup}, "
          f"--budget {args.budget:g} s)")
    print(_speedup_table(rows, labels))
    print()
    print("ONNX Runtime kernels after ORT_ENABLE_ALL optimization")
    print("\n".join(_kernel_lines(rows, labels)))
    print(f"total {total:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "benchmark": "quantize_vs_ort", "args": vars(args), "environment": env_before,
            "int8_isa": x86_int8_isa(), "load_average_1m_end": env_after["load_average_1m"],
            "models": rows, "total_seconds": total,
        })


if __name__ == "__main__":
    main()
