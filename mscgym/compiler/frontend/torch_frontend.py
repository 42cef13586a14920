"""torch modules in through ``torch.export`` and TVM's own ``from_exported_program``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import Params, from_relax
from mscgym.compiler.transform import exported_names


def from_torch(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    dynamic_batch: bool = True,
    graph_name: str | None = None,
) -> tuple[MSCGraph, Params]:
    """torch module -> ``torch.export`` -> TVM's ``from_exported_program`` -> MSCGraph.

    With ``dynamic_batch`` the leading dim of every input is exported symbolic, so the
    same graph serves batch-1 latency and batched evaluation and training.
    """
    model = model.eval()
    example_inputs = tuple(example_inputs)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
        # torch.export specializes size-1 dims, so trace the batch at size 2.
        example_inputs = tuple(x.expand(2, *x.shape[1:]).contiguous() if x.shape[0] == 1 else x
                               for x in example_inputs)
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    return from_exported(exported, graph_name or type(model).__name__)


def from_exported(exported: torch.export.ExportedProgram, graph_name: str
                  ) -> tuple[MSCGraph, Params]:
    """A ``torch.export`` program (e.g. from ``torch.export.load``) -> MSCGraph."""
    from tvm.relax.frontend.torch import from_exported_program

    with warnings.catch_warnings():
        # torch's own run_decompositions (called by TVM) deep-copies the module call graph,
        # re-creating the LeafSpec objects torch itself deprecated; nothing of ours to fix.
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        mod = from_exported_program(exported, keep_params_as_input=True)
    mod = tvm.IRModule({"main": _torch_nearest(mod["main"])})
    mod, detached = relax.frontend.detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    param_vars = [p.name for p in func.params[num_input:]]
    params = dict(zip(param_vars, detached.get("main", []), strict=True))
    return from_relax(mod, params, names=exported_names(exported), graph_name=graph_name)


def _torch_nearest(func: relax.Function) -> relax.Function:
    """Nearest resizes as torch computes them: ``floor(out_index * in / out)``.

    TVM's importer writes torch's ``upsample_nearest2d`` as a half-pixel resize with
    round-half-to-even, which picks other pixels whenever the scale is not an integer
    upscale (e.g. ``F.interpolate(x, scale_factor=0.5)``); ONNX names torch's rule
    ``asymmetric`` with ``floor``.
    """
    data, size = wildcard(), wildcard()
    pattern = is_op("relax.image.resize2d")(data, size)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        attrs = expr.attrs
        if (attrs.method != "nearest_neighbor" or attrs.rounding_method != "round"
                or attrs.coordinate_transformation_mode != "half_pixel"):
            return expr
        info = type(attrs).__tvm_ffi_type_info__
        fields = {f.name: getattr(attrs, f.name) for f in info.fields}
        fields.update(coordinate_transformation_mode="asymmetric", rounding_method="floor")
        return relax.Call(expr.op, [matches[data], matches[size]],
                          tvm.ir.make_node(info.type_key, **fields))

    return rewrite_call(pattern, rewriter, func)
