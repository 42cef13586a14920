"""Distillation of a partitioned model: one student, trained end to end across regions.

The student of a partitioned model is the whole model, not one region: each region is
the torch module of its (pruned, fake-quantized) MSCGraph, and each host segment (the
calls the target lacks, e.g. ``cumsum``) runs on TVM inside the torch graph as an
autograd function whose backward is TVM's own ``relax.transform.Gradient`` of the
segment (:func:`mscgym.compiler.partition.host_vjp`). So the loss on the model's
outputs trains the weights of every region through the host calls between them, and
the trained weights go back to the regions under the user's layer names. The teacher
is the float model, built the same way.

A host call TVM cannot differentiate is refused with an error naming it; intermediate
feature pairs are refused too (the loss is on the model's outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import tvm
from tvm import relax

from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.partition import Stitched, host_value, host_vjp
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError
from mscgym.tools.distiller import Distiller


class HostSegment:
    """One host segment built by TVM with its vector-Jacobian product."""

    def __init__(self, name: str, func: relax.Function) -> None:
        self.name = name
        self.returns_tuple = isinstance(func.ret_ty, relax.TupleType)
        executable = tvm.compile(host_vjp(func, name), target="llvm")
        self._vm = relax.VirtualMachine(executable, tvm.cpu())

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        out = self._vm["main"](*[_tvm(x) for x in inputs])
        outs = list(out) if self.returns_tuple else [out]
        return tuple(torch.from_numpy(o.numpy()) for o in outs)

    def backward(self, inputs: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, ...]:
        _, input_grads = self._vm["vjp_adjoint"](*[_tvm(x) for x in (*inputs, *grads)])
        return tuple(torch.from_numpy(g.numpy()) for g in input_grads)


def _tvm(tensor: torch.Tensor) -> tvm.runtime.Tensor:
    return tvm.runtime.tensor(np.ascontiguousarray(tensor.detach().cpu().numpy()))


class _HostCall(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, segment: HostSegment, *inputs: torch.Tensor) -> Any:
        outputs = segment.forward(inputs)
        ctx.segment, ctx.like = segment, [(o.shape, o.dtype) for o in outputs]
        ctx.save_for_backward(*inputs)
        return outputs

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> Any:
        full = tuple(torch.zeros(shape, dtype=dtype) if g is None else g
                     for g, (shape, dtype) in zip(grads, ctx.like, strict=True))
        return (None, *ctx.segment.backward(ctx.saved_tensors, full))


class PartitionedModule(torch.nn.Module):
    """The partitioned model as one torch module: regions as torch modules, host
    segments as TVM autograd calls, wired as the host's ``main`` calls them.
    ``state_dict`` is keyed by the stitched (user's) weight names."""

    def __init__(self, main: relax.Function, regions: Mapping[str, torch.nn.Module],
                 hosts: Mapping[str, HostSegment], renames: Mapping[str, Mapping[str, str]]
                 ) -> None:
        super().__init__()
        self.main = main
        self.regions = torch.nn.ModuleDict(dict(regions))
        self.hosts = dict(hosts)
        self.renames = {k: dict(v) for k, v in renames.items()}

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[Any, Any] = dict(zip(self.main.params, inputs, strict=True))
        for block in self.main.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                    name = value.op.name_hint
                    args = [host_value(a, env, "partitioned training") for a in value.args]
                    if name in self.regions:
                        env[binding.var] = self.regions[name](*args)
                    else:
                        outs = _HostCall.apply(self.hosts[name], *args)
                        env[binding.var] = outs if self.hosts[name].returns_tuple else outs[0]
                else:
                    env[binding.var] = host_value(value, env, "partitioned training")
        result = host_value(self.main.body.body, env, "partitioned training")
        return result if isinstance(result, tuple) else (result,)

    def state_dict(self, *args: Any, **kwargs: Any) -> OrderedDict[str, Any]:  # type: ignore[override]
        merged: OrderedDict[str, Any] = OrderedDict()
        for region, module in self.regions.items():
            for key, value in module.state_dict().items():
                merged[self.renames[region][key]] = value
        return merged


@dataclass
class RegionModel:
    """What the distiller builds one side (student or teacher) from: the stitched graph,
    each region's graph and quant plan, each host segment's function."""

    stitched: Stitched
    graphs: dict[str, MSCGraph]
    quant: dict[str, QuantPlan]
    hosts: dict[str, relax.Function]


class PartitionDistiller(Distiller):
    """The :class:`Distiller` of a partitioned model (see the module docstring): its
    graph is the stitched student, its teacher the stitched float model; strategy,
    config and losses are the single distiller's."""

    def __init__(self, main: relax.Function, student: RegionModel, teacher: RegionModel,
                 config: dict[str, Any] | None) -> None:
        super().__init__(student.stitched.graph, student.stitched.params, config)
        if self.config["intermediate"]:
            raise ToolConfigError(
                "distiller config key 'intermediate': a partitioned model is distilled on "
                "its outputs only (pairs inside regions are not matched across the host); "
                "use []")
        self._main, self._student, self._teacher = main, student, teacher
        self.set_teacher(teacher.stitched.graph, teacher.stitched.params)
        self._hosts: dict[tuple[str, str], HostSegment] = {}

    def _to_torch(self, graph: MSCGraph, params: Params,
                  quant: QuantPlan | None = None) -> torch.nn.Module:
        side = self._student if graph is self._student.stitched.graph else self._teacher
        renames = side.stitched.renames
        regions = {}
        for region, region_graph in side.graphs.items():
            own = {key: params[renames[region][key]] for key in region_graph.weight_tensors()}
            regions[region] = to_torch(region_graph, own, side.quant.get(region))
        hosts = {}
        for name, func in side.hosts.items():
            key = (name, str([str(p.ty) for p in func.params]))
            if key not in self._hosts:
                self._hosts[key] = HostSegment(name, func)
            hosts[name] = self._hosts[key]
        return PartitionedModule(self._main, regions, hosts, renames)

    def region_params(self, region: str) -> Params | None:
        """The distilled weights of ``region`` under its own names (None before
        :meth:`distill`)."""
        trained = self.distilled_params
        if trained is None:
            return None
        rename = self._student.stitched.renames[region]
        return {key: trained[rename[key]]
                for key in self._student.graphs[region].weight_tensors()}


class RegionDistill(BaseTool):
    """The distilled weights a :class:`PartitionDistiller` hands one region's manager."""

    kind = MSC_TOOL.DISTILL

    def __init__(self, distiller: PartitionDistiller, region: str, graph: MSCGraph,
                 params: Params) -> None:
        super().__init__(graph, params, None)
        self.distiller, self.region = distiller, region

    @property
    def distilled_params(self) -> Params | None:
        return self.distiller.region_params(self.region)

    def set_quant(self, plan: QuantPlan) -> None:
        """The student's quantization is the region quantizer's, set when it was built."""

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        trained = self.distilled_params
        return (graph, params) if trained is None else (graph, {**params, **trained})

    def strategy(self) -> dict[str, Any]:
        return self.distiller.strategy()

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        self.distiller.set_strategy(strategy)
