"""ONNX models in through TVM's own ``relax.frontend.onnx.from_onnx``."""

from __future__ import annotations

import os
from typing import Any

from tvm import relax

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import Params, from_relax


def from_onnx(
    model_or_path: Any, graph_name: str | None = None
) -> tuple[MSCGraph, Params]:
    """ONNX model (or file path) -> TVM's ``from_onnx`` -> MSCGraph."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    if isinstance(model_or_path, str | os.PathLike):
        model = onnx.load(os.fspath(model_or_path))
        name = graph_name or os.path.splitext(os.path.basename(model_or_path))[0]
    else:
        model = model_or_path
        name = graph_name or (model.graph.name or "onnx")
    onnx.checker.check_model(model)
    mod = relax_from_onnx(model, keep_params_in_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"]) if "num_input" in (func.attrs or {}) else len(
        model.graph.input) - len(detached.get("main", []))
    param_vars = [p.name for p in func.params[num_input:]]
    params = dict(zip(param_vars, detached.get("main", []), strict=True))
    return from_relax(mod, params, graph_name=name)
