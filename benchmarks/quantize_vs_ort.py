"""Our int8 quantization side by side with ONNX Runtime's own ``quantize_static``.

Both sides get the same float model, the same calibration batches
(``zoo.load(name).calibration_batches()``), MinMax calibration, per-channel symmetric
int8 weights, per-tensor activations and the QDQ format, and both run in an ONNX
Runtime CPU session at ORT_ENABLE_ALL. ONNX Runtime's side starts from our float
export (``to_onnx`` + ``save_onnx``, at ``EXPORT_OPSET``), pre-processed by
``quant_pre_process``, and reads the batches through a ``CalibrationDataReader``.
Variants:

* ``mscgym-s8``: the Quantizer (int8 symmetric activations, its default), calibrated
  through the RuntimeManager loop, run by the onnxruntime runner;
* ``mscgym-u8``: the same with uint8 asymmetric activations;
* ``ort-s8`` / ``ort-u8``: quantize_static on the same layers (the Conv, Gemm and MatMul
  nodes with a constant weight), with the matching activation type and symmetry;
* ``ort-default``: quantize_static with its defaults (every op type it can quantize,
  int8 asymmetric activations) apart from per-channel weights.

It prints accuracy on the test split of the digits models and latency (median of
interleaved runs, batch 1) with the distill loss against the float model on the
held-out crops for the 224x224 models.

Run: python benchmarks/quantize_vs_ort.py [--digits digits-mlp,...] [--models resnet18,...]
         [--variants mscgym-s8,ort-s8,...] [--repeat 30] [--warmup 5] [--budget 40]
         [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
from mscgym.runtime.runner import BaseRunner
from mscgym.runtime.runners.ort_runner import onnx_bytes
from mscgym.tools.losses import distill_loss

DIGITS = ("digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer")
MODELS = ("resnet18", "mobilenetv2")
VARIANTS = ("mscgym-s8", "ort-s8", "mscgym-u8", "ort-u8", "ort-default")
_OURS = {"mscgym-s8": ("int8", True), "mscgym-u8": ("uint8", False)}
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
    elif variant != "ort-default":
        raise MSCError(f"unknown ONNX Runtime variant {variant!r}; expected ort-s8, ort-u8 or "
                       "ort-default")
    quantize_static(float_path, out_path, BatchReader(input_name, batches),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, **options)


def build_variants(name: str, graph: MSCGraph, params: common.Params,
                   batches: Sequence[np.ndarray],
                   variants: Sequence[str], workdir: str, threads: int | None,
                   options: dict[str, dict[str, Any]]
                   ) -> dict[str, tuple[Logits, Counter[str]]]:
    """fp32 and every variant of zoo model ``name``: a function input batch -> logits, and
    the kernels ONNX Runtime runs."""
    built: dict[str, tuple[Logits, Counter[str]]] = {}
    fp32, _ = common.build_runner("onnxruntime", graph, params, {}, options)
    built["fp32"] = (_runner_logits(fp32), common.ort_kernels(onnx_bytes(graph, params, {})))
    for variant in (v for v in variants if v in _OURS):
        dtype, symmetric = _OURS[variant]
        plan = common.calibrate(graph, params, batches, common.quantizer_config(dtype, symmetric))
        runner, _ = common.build_runner("onnxruntime", graph, params, plan, options)
        built[variant] = (_runner_logits(runner),
                          common.ort_kernels(onnx_bytes(graph, params, plan)))
    theirs = [v for v in variants if v not in _OURS]
    if theirs:
        exported = os.path.join(workdir, f"{name}.onnx")
        prepared = os.path.join(workdir, f"{name}.pre.onnx")
        save_onnx(to_onnx(graph, params, opset=EXPORT_OPSET), exported)
        quant_pre_process(exported, prepared)
        for variant in theirs:
            path = os.path.join(workdir, f"{name}.{variant}.onnx")
            ort_quantize(prepared, path, variant, graph.input_names[0], batches)
            session = common.ort_session(path, threads)
            feed = session.get_inputs()[0].name
            built[variant] = (lambda x, s=session, n=feed: s.run(None, {n: x})[0],
                              common.ort_kernels(path))
    return built


def _runner_logits(runner: BaseRunner) -> Logits:
    return lambda x: runner.run([x])[0]


def accuracy_rows(names: Sequence[str], variants: Sequence[str], workdir: str,
                  threads: int | None, options: dict[str, dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Per digits model: test accuracy and distill loss of fp32 and every variant."""
    rows = []
    for name in names:
        entry, graph, params = common.load_model(name)
        built = build_variants(name, graph, params, common.calibration_arrays(entry), variants,
                               workdir, threads, options)
        inputs = entry.test_data[0]
        teacher = common.float_outputs(entry, inputs)
        row: dict[str, Any] = {"model": name, "variants": {}}
        for label, (logits, kernels) in built.items():
            row["variants"][label] = {
                "accuracy": entry.accuracy(lambda x, f=logits: f(x.numpy())),
                "distill_loss": distill_loss(teacher, logits(inputs.numpy())),
                "kernels": dict(kernels),
            }
        rows.append(row)
    return rows


def latency_rows(names: Sequence[str], variants: Sequence[str], workdir: str,
                 threads: int | None, options: dict[str, dict[str, Any]],
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per 224x224 model and variant: interleaved latency at batch 1, the speed-up over
    fp32 and the distill loss on the held-out crops."""
    rows = []
    for name in names:
        entry, graph, params = common.load_model(name)
        built = build_variants(name, graph, params, common.calibration_arrays(entry), variants,
                               workdir, threads, options)
        eval_inputs = entry.eval_inputs.numpy()
        teacher = common.float_outputs(entry, entry.eval_inputs)
        sample = eval_inputs[:1].copy()
        latency = common.interleaved_latency(
            {label: (lambda f=logits, x=sample: f(x)) for label, (logits, _) in built.items()},
            args.repeat, args.warmup, args.budget)
        base = latency["fp32"].median_ms
        for label, (logits, kernels) in built.items():
            rows.append({"model": name, "variant": label, "latency": latency[label].to_json(),
                         "speedup": base / latency[label].median_ms,
                         "distill_loss": distill_loss(teacher, logits(eval_inputs)),
                         "kernels": dict(kernels)})
    return rows


def _accuracy_table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    cells = []
    for row in rows:
        values = [row["variants"][label] for label in labels]
        cells.append([row["model"]] + [f"{v['accuracy']:.2%} ({v['distill_loss']:.1e})"
                                       for v in values])
    return common.format_table(["model"] + labels, cells)


def _latency_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for row in rows:
        latency = row["latency"]
        cells.append([row["model"], row["variant"], common.ms(latency), latency["repeat"],
                      f"{row['speedup']:.2f}x", f"{row['distill_loss']:.2e}",
                      common.kernel_summary(row["kernels"])])
    headers = ["model", "variant", "ms median (p90)", "n", "speed-up vs fp32", "distill loss",
               "ORT kernels after optimization"]
    return common.format_table(headers, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", default=",".join(DIGITS),
                        help="digits models for the accuracy table")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="224x224 models for the latency table")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"int8 variants to compare with fp32, from {list(VARIANTS)}")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per variant")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="seconds of timed runs one variant may take (at least 5 runs)")
    parser.add_argument("--threads", type=int,
                        help="ONNX Runtime intra-op threads (default: its own)")
    parser.add_argument("--json", help="also write the results (with samples) here")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")

    started = time.perf_counter()
    options = common.set_threads(args.threads)
    env_before = common.environment(args.threads)
    with tempfile.TemporaryDirectory(prefix="quantize_vs_ort-") as workdir:
        accuracy = accuracy_rows([n for n in args.digits.split(",") if n], variants, workdir,
                                 args.threads, options)
        latency = latency_rows([n for n in args.models.split(",") if n], variants, workdir,
                               args.threads, options, args)
    env_after = common.environment(args.threads)
    total = time.perf_counter() - started

    labels = ["fp32"] + variants
    print("int8: mscgym Quantizer vs onnxruntime.quantization.quantize_static (QDQ, per-channel "
          "int8 weights, per-tensor activations, MinMax, same calibration batches)")
    print(common.environment_line(env_before))
    print(f"load average (1 min): {env_before['load_average_1m']} at start, "
          f"{env_after['load_average_1m']} at end")
    if accuracy:
        print()
        print("accuracy on the test split (distill loss vs the float model in parentheses)")
        print(_accuracy_table(accuracy, labels))
    if latency:
        print()
        print(f"latency, batch 1 at 224x224, ONNX Runtime CPU, medians of interleaved runs "
              f"(--repeat {args.repeat}, --warmup {args.warmup}, --budget {args.budget:g} s, "
              f"--threads {args.threads or 'default'}); distill loss on the held-out crops")
        print(_latency_table(latency))
    print(f"total {total:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "benchmark": "quantize_vs_ort", "args": vars(args), "environment": env_before,
            "load_average_1m_end": env_after["load_average_1m"], "accuracy": accuracy,
            "latency": latency, "total_seconds": total,
        })


if __name__ == "__main__":
    main()
