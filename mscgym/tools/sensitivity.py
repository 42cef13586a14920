"""Per-layer quantization sensitivity: which layer's quantization hurts the outputs most.

Each quantized layer of a plan is quantized alone (every other layer float) and the
model's outputs are compared with the float model's on the same inputs. The report
is deterministic (fixed inputs, rows ordered by error then graph order), so agents
can use it as an observation feature and searches can rank layers for fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import LayerQuant, QuantPlan
from mscgym.tools.base import Params
from mscgym.tools.quantizer import Quantizer

Inputs = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]


def _mse(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean((ref - out) ** 2))


def _cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of ``1 - cos(ref, out)`` (samples flattened)."""
    a, b = ref.reshape(ref.shape[0], -1), out.reshape(out.shape[0], -1)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return float(np.mean(1.0 - (a * b).sum(axis=1) / norms))


def _kl(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(out)) over the last axis."""

    def log_softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(ref), log_softmax(out)
    return float(np.mean((np.exp(log_p) * (log_p - log_q)).sum(axis=-1)))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mse": _mse, "cosine": _cosine, "kl": _kl,
}


def as_plan(graph: MSCGraph, params: Params,
            quant: Mapping[str, LayerQuant] | Mapping[str, Any]) -> QuantPlan:
    """A QuantPlan as is, or the plan of a quantizer strategy (validated)."""
    if all(isinstance(v, LayerQuant) for v in quant.values()):
        return dict(quant)
    quantizer = Quantizer(graph, params, {})
    quantizer.set_strategy(dict(quant))
    return quantizer.quant_plan()


def _run(module: torch.nn.Module, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(*inputs)
    items = result if isinstance(result, tuple | list) else (result,)
    return [item.detach().cpu().numpy().astype(np.float64) for item in items]


def layer_sensitivity(
    graph: MSCGraph,
    params: Params,
    quant: Mapping[str, LayerQuant] | Mapping[str, Any],
    inputs: Inputs,
    metric: str = "mse",
) -> list[dict[str, Any]]:
    """Rows ``{layer, optype, error}``, most sensitive first.

    ``quant`` is a QuantPlan or a quantizer strategy (``Quantizer.strategy()``);
    ``inputs`` one array/tensor per graph input (or the single input). ``error`` is
    ``metric`` between the float outputs and the outputs with only that layer
    quantized, averaged over the graph outputs: ``mse``, ``cosine`` (1 - cosine
    similarity per sample) or ``kl`` (KL of the softmaxed outputs).
    """
    if metric not in METRICS:
        raise MSCError(f"layer_sensitivity: unknown metric {metric!r}; expected one of "
                       f"{sorted(METRICS)}")
    plan = as_plan(graph, params, quant)
    unknown = sorted(set(plan) - {n.name for n in graph.nodes})
    if unknown:
        raise MSCError(f"layer_sensitivity: plan names layers {unknown} that graph "
                       f"{graph.name!r} lacks")
    items = [inputs] if isinstance(inputs, np.ndarray | torch.Tensor) else list(inputs)
    if len(items) != len(graph.input_names):
        raise MSCError(f"layer_sensitivity: got {len(items)} inputs, graph {graph.name!r} "
                       f"takes {len(graph.input_names)}")
    tensors = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
               for x in items]
    score = METRICS[metric]
    reference = _run(to_torch(graph, params).eval(), tensors)
    rows = []
    for order, node in enumerate(graph.nodes):
        if node.name not in plan:
            continue
        outputs = _run(to_torch(graph, params, {node.name: plan[node.name]}).eval(), tensors)
        error = float(np.mean([score(r, o) for r, o in zip(reference, outputs, strict=True)]))
        rows.append((error, order, {"layer": node.name, "optype": node.optype, "error": error}))
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [row[2] for row in rows]
