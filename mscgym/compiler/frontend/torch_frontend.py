"""torch modules in through ``torch.export`` and TVM's own ``from_exported_program``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tvm import relax

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import Params, from_relax


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
    from tvm.relax.frontend.torch import from_exported_program

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
    mod = from_exported_program(exported, keep_params_as_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    param_vars = [p.name for p in func.params[num_input:]]
    params = dict(zip(param_vars, detached.get("main", []), strict=True))
    names = {spec.arg.name: spec.target for spec in exported.graph_signature.input_specs
             if spec.target is not None}
    name = graph_name or type(model).__name__
    return from_relax(mod, params, names=names, graph_name=name)
