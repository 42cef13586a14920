"""Helpers shared by the benchmark scripts: models, calibration, pruning, runners,
interleaved latency measurement, ONNX Runtime kernel counts and table printing.

Benchmarks report ratios against a baseline measured in the same run. On a shared
machine the load changes by several times within a minute, so measuring one variant
after another would compare different load levels. :func:`interleaved_latency`
therefore measures in rounds that give every variant a short block of runs (rotating
the order), so baseline and candidate samples come from the same minutes, and
reports medians and p90s.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import tvm

from mscgym import zoo
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.manager import calibrate_quantizer
from mscgym.runtime.registry import create_runner
from mscgym.runtime.runner import BaseRunner
from mscgym.tools import MSC_TOOL, create_tool
from mscgym.utils.files import atomic_write_text

Params = dict[str, np.ndarray]
MIN_REPEAT = 5
"""Fewest timed runs of a variant, whatever its per-variant time budget."""
WARMUP_SHARE = 0.25
"""Share of a variant's time budget that warm-up runs may take (at least one run)."""
BLOCK = 3
"""Timed runs of one variant per round of :func:`interleaved_latency`."""


def quantizer_config(activation_dtype: str = "int8", symmetric: bool = True) -> dict[str, Any]:
    """Per-channel symmetric int8 weights, per-tensor activations, min/max calibration.

    Written out in full (it equals the quantizer's defaults for ``int8``) so the printed
    benchmark says exactly what was measured.
    """
    return {
        "weight": {"dtype": "int8", "per_channel": True, "symmetric": True, "method": "minmax"},
        "activation": {"dtype": activation_dtype, "symmetric": symmetric, "method": "minmax"},
    }


def load_model(name: str) -> tuple[zoo.ZooModel, MSCGraph, Params]:
    """The zoo model and its graph (dynamic batch, as tasks build it)."""
    entry = zoo.load(name)
    graph, params = from_torch(entry.model, entry.example_inputs)
    return entry, graph, params


def calibration_arrays(entry: zoo.ZooModel) -> list[np.ndarray]:
    """The zoo's calibration batches (``calibration_batches()`` defaults) as arrays."""
    return [batch.numpy() for batch in entry.calibration_batches()]


def calibrate(graph: MSCGraph, params: Params, batches: Sequence[np.ndarray],
              config: Mapping[str, Any], runner: str = "onnxruntime") -> QuantPlan:
    """A quant plan calibrated by MSC's loop: run the batches through the runtime
    manager until the quantizer says it is calibrated."""
    return calibrate_quantizer(graph, params, config, batches, runner).quant_plan()


def prune(graph: MSCGraph, params: Params, density: float, round_to: int
          ) -> tuple[MSCGraph, Params]:
    """The structurally pruned graph and its sliced weights."""
    pruner = create_tool(MSC_TOOL.PRUNE, graph, params,
                         {"density": density, "round_to": round_to})
    return pruner.transform(graph, params)


def set_threads(threads: int | None) -> dict[str, dict[str, Any]]:
    """Pin torch, TVM and ONNX Runtime to ``threads`` each (None: keep their defaults).

    Returns the runner options that carry the setting (ONNX Runtime takes it per
    session). On a machine shared with other jobs, a runtime that spins on a barrier
    across all cores can lose a lot whenever one of its threads is descheduled, so a
    fixed small count gives steadier numbers there. ``TVM_NUM_THREADS`` is read when TVM
    starts its thread pool, i.e. on the first parallel TVM call, which comes later.
    """
    if threads is None:
        return {}
    if isinstance(threads, bool) or threads < 1:
        raise MSCError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    return {"onnxruntime": {"intra_op_threads": threads}}


def build_runner(name: str, graph: MSCGraph, params: Params, quant: QuantPlan,
                 options: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> tuple[BaseRunner, float]:
    """A built runner (with ``options[name]`` as its runner options) and the seconds the
    build took (artifact cache hits are fast)."""
    start = time.perf_counter()
    runner = create_runner(name, options=dict((options or {}).get(name, {})))
    runner.build(graph, params, quant)
    return runner, time.perf_counter() - start


def runner_call(runner: BaseRunner, inputs: list[np.ndarray]) -> Callable[[], None]:
    """One timed call of a runner, ending with ``synchronize`` as ``profile_runner`` does."""
    def call() -> None:
        runner.run(inputs)
        runner.synchronize()
    return call


def float_outputs(entry: zoo.ZooModel, inputs: torch.Tensor) -> np.ndarray:
    """The float teacher: the zoo's own torch model on ``inputs``."""
    with torch.no_grad():
        return entry.model(inputs).numpy()


# ------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency:
    """Timed runs of one variant (milliseconds)."""

    samples_ms: list[float]
    warmup: int

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms, dtype=np.float64), q))

    @property
    def median_ms(self) -> float:
        return self.percentile(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def iqr_ms(self) -> float:
        return self.percentile(75) - self.percentile(25)

    def to_json(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "iqr_ms": self.iqr_ms,
                "repeat": self.n, "warmup": self.warmup, "samples_ms": self.samples_ms}


def _time_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e6


def interleaved_latency(calls: Mapping[str, Callable[[], object]], repeat: int, warmup: int,
                        budget_s: float) -> dict[str, Latency]:
    """Latency of every call, measured in rounds that give each variant a short block.

    Warm-up runs come first (``warmup``, fewer if they would take more than
    ``WARMUP_SHARE`` of ``budget_s``, at least one). Then ``ceil(repeat / BLOCK)``
    rounds, in a rotating order, each run every variant for one untimed run and a
    block of timed ones. The untimed run matters: after another runtime had the cores,
    a multi-threaded runtime needs one run to get its sleeping threads back (torch at
    two threads measured about 6x slower when variants alternated run by run). A
    variant gets ``repeat`` timed runs, or as many as fit in ``budget_s`` with those
    extra runs (at least ``MIN_REPEAT``), spread evenly over the rounds, so a slow
    variant (an untuned TVM build) keeps the run time bounded yet is sampled across
    the whole measurement like the rest.
    """
    if repeat < 1 or warmup < 0 or budget_s <= 0:
        raise MSCError(f"interleaved_latency: expected repeat >= 1, warmup >= 0 and budget > 0, "
                       f"got {repeat}, {warmup}, {budget_s}")
    rounds = math.ceil(repeat / BLOCK)
    quotas: dict[str, int] = {}
    warmups: dict[str, int] = {}
    for label, call in calls.items():
        times = [_time_ms(call)]
        while len(times) < warmup and sum(times) < WARMUP_SHARE * budget_s * 1e3:
            times.append(_time_ms(call))
        per_call_s = float(np.median(times[1:] if len(times) > 1 else times)) / 1e3
        fits = math.floor(budget_s / per_call_s) if per_call_s > 0 else 2 * repeat
        timed = fits - rounds if fits >= 2 * rounds else fits // 2  # + one untimed per round
        quotas[label] = max(min(repeat, MIN_REPEAT), min(repeat, timed))
        warmups[label] = len(times)
    labels = list(calls)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for index in range(rounds):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            quota = quotas[label]
            block = (index + 1) * quota // rounds - index * quota // rounds
            if block:
                calls[label]()
                samples[label].extend(_time_ms(calls[label]) for _ in range(block))
    return {label: Latency(samples[label], warmups[label]) for label in labels}


def median_ratio_interval(numerator: Latency, denominator: Latency, level: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``numerator.median / denominator.median``: both
    sample sets resampled independently. Two variants running the same kernels differ
    only by noise; this says how far apart one run can put them."""
    rng = np.random.default_rng(seed)
    a = np.asarray(numerator.samples_ms, dtype=np.float64)
    b = np.asarray(denominator.samples_ms, dtype=np.float64)
    ratios = (np.median(rng.choice(a, (resamples, a.size)), axis=1)
              / np.median(rng.choice(b, (resamples, b.size)), axis=1))
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


# ------------------------------------------------------------------------------------------
# ONNX Runtime
# ------------------------------------------------------------------------------------------
def ort_session(model: bytes | str, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with the onnxruntime runner's settings (ORT_ENABLE_ALL, default or
    ``threads`` intra-op threads), for ONNX models that do not come from our codegen."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


_KERNEL_ORDER = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearAdd",
                 "QLinearGlobalAveragePool", "Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul",
                 "Transpose",
                 "QuantizeLinear", "DequantizeLinear")


def ort_kernels(model: bytes | str) -> Counter[str]:
    """Node types of the graph ONNX Runtime runs after its ORT_ENABLE_ALL optimizations.

    That shows whether QDQ pairs were fused into int8 kernels (QLinearConv, QGemm, ...)
    or left as float kernels on dequantized tensors.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = path
        options.log_severity_level = 3  # the NCHWc serialization warning is expected here
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(path).graph
    return Counter(node.op_type for node in graph.node)


def kernel_summary(counts: Mapping[str, int]) -> str:
    """The compute and QDQ node counts of :func:`ort_kernels`, e.g. ``QLinearConv:5 Conv:6``."""
    return " ".join(f"{op}:{counts[op]}" for op in _KERNEL_ORDER if counts.get(op))


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header rule; numbers right-aligned, text left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        parts = [v.rjust(w) if n else v.ljust(w)
                 for v, w, n in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    numeric = [bool(cells) and all(_numeric(r[i]) for r in cells) for i in range(len(headers))]
    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2))
                          for w, n in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(list(headers), numeric), rule] + [line(r, numeric) for r in cells])


def _numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("x%")
    try:
        float(head)
    except ValueError:
        return False
    return True


def ms(latency: Mapping[str, Any]) -> str:
    """``median (p90)`` in milliseconds, from :meth:`Latency.to_json`."""
    return f"{latency['median_ms']:.2f} ({latency['p90_ms']:.2f})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for text in handle:
                if text.startswith("model name"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment(threads: int | None = None) -> dict[str, Any]:
    """Versions, CPU, thread settings (``threads`` as given to :func:`set_threads`) and
    load: what the numbers depend on."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "tvm": tvm.__version__,
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_intra_op_threads": (threads if threads is not None
                                         else "default (one per physical core)"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "unset"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def environment_line(env: Mapping[str, Any]) -> str:
    return (f"{env['cpu']}, {env['logical_cpus']} logical CPUs; threads: torch "
            f"{env['torch_threads']}, onnxruntime intra-op {env['onnxruntime_intra_op_threads']},"
            f" OMP_NUM_THREADS {env['OMP_NUM_THREADS']}, TVM_NUM_THREADS "
            f"{env['TVM_NUM_THREADS']}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
            f"tvm {env['tvm']}, python {env['python']}")


def write_json(path: str, data: Any) -> None:
    """Write the results atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
