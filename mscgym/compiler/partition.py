"""Split a Relax function into regions a target runs, the rest left to TVM (the host).

MSC's multi-system idea: when the target lacks some ops, each run of calls it supports
becomes a region (its own MSCGraph, run by the target) and the calls it lacks stay Relax
and run on TVM. Each runner declares the ops it supports (:func:`target_ops`): ONNX
Runtime the ONNX codegen's op table, TensorRT the patterns of TVM's own
``relax.backend.contrib.tensorrt``, TVM and torch every op MSCGraph translates.

The partition orders the function's bindings topologically, keeping same-placed ones
together (independent branches join one region), and cuts them into maximal runs of
same-placed bindings, so every segment only reads values of the segments before it.
The result is an ordinary Relax module, the *host*: one function per segment
(attributes: ``msc_target``, where it runs; ``msc_region``, whether it is a region)
and a ``main`` that calls them in order. Built by TVM alone it computes the same
as the input, and :func:`segments_of` reads the segments back from it.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, HOST_OP, SUPPORTED_OPS
from mscgym.compiler.relax_codec import encode_shape

HOST = "tvm"
"""Where the calls no region takes run."""
TARGET_ATTR = "msc_target"
"""Function attribute of a segment: the runner it is meant for (``tvm`` for the host)."""
REGION_ATTR = "msc_region"
"""Function attribute of a segment: 1 for a region (an MSCGraph), 0 for host code."""
_REGION, _HOST = "region", "host"
_EVERY_OP = None


@functools.cache
def target_ops(target: str) -> frozenset[str] | None:
    """The Relax ops (``relax.<name>``) ``target`` runs; None means every op MSCGraph
    translates (TVM and torch run whatever MSCGraph holds)."""
    if target == "onnxruntime":
        from mscgym.compiler.codegen import onnx_codegen

        emitted = {f"relax.{op}" for op in onnx_codegen.EMITTED_OPTYPES
                   if not op.startswith("msc.")}
        # composites (msc.conv2d_bias, msc.linear...) are conv2d/matmul plus add
        return frozenset(emitted | {"relax.add"})
    if target == "tensorrt":
        import tvm.relax.backend.contrib.tensorrt  # noqa: F401 - registers its patterns
        from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

        ops = set()
        for entry in get_patterns_with_prefix("tensorrt"):
            op = getattr(getattr(entry.pattern, "op", None), "expr", None)
            if isinstance(op, tvm.ir.Op):
                ops.add(op.name)
        return frozenset(ops)
    if target in ("tvm", "torch"):
        return _EVERY_OP
    raise MSCError(f"partition: unknown target {target!r}; expected onnxruntime, tensorrt, "
                   "tvm or torch")


def region_supports(target: str) -> Callable[[str], bool]:
    """Whether a Relax op can sit in a region of ``target``: MSCGraph translates it and
    the target runs it."""
    ops = target_ops(target)
    return lambda op: op in SUPPORTED_OPS and (ops is None or op in ops)


@dataclass(frozen=True)
class Segment:
    """One function of the host module, in call order."""

    name: str
    target: str
    func: relax.Function
    ops: tuple[str, ...]
    is_region: bool


def _op_name(value: relax.Expr) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return str(value.op.name)
    return None


def _place(bindings: Sequence[relax.Binding], supports: Callable[[str], bool]) -> list[str]:
    """Where each binding runs (a region or the host). A call goes by its op; a tuple
    item follows the call it reads (a multi-output op and its items stay together);
    anything else (tuples, aliases) joins the binding before it."""
    placed: list[str] = []
    producer: dict[relax.Var, str] = {}
    for binding in bindings:
        value = binding.value
        op = _op_name(value)
        if op is not None:
            where = _REGION if supports(op) else _HOST
        elif isinstance(value, relax.TupleGetItem) and value.tuple_value in producer:
            where = producer[value.tuple_value]
        else:
            where = placed[-1] if placed else _REGION
        producer[binding.var] = where
        placed.append(where)
    return placed


def _grouped_order(bindings: Sequence[relax.Binding], placed: Sequence[str]) -> list[int]:
    """A topological order of ``bindings`` that keeps same-placed ones together: while a
    binding of the current placement is ready (its inputs computed) it comes next, the
    earliest first; only then does the order switch placement. So independent branches
    share a region (``conv_a(x)``, ``cumsum``, ``conv_b(x)`` gives one region holding
    both convs, not two), as a dependency-aware merge (TVM's ``MergeCompositeFunctions``)
    groups them."""
    index = {b.var: i for i, b in enumerate(bindings)}
    users: list[list[int]] = [[] for _ in bindings]
    waiting = []
    for i, binding in enumerate(bindings):
        deps = {index[v] for v in _free_vars([binding.value]) if v in index}
        for j in deps:
            users[j].append(i)
        waiting.append(len(deps))
    ready: dict[str, list[int]] = {_REGION: [], _HOST: []}
    for i, count in enumerate(waiting):
        if count == 0:
            heapq.heappush(ready[placed[i]], i)
    order: list[int] = []
    current = placed[0] if placed else _REGION
    while len(order) < len(bindings):
        if not ready[current]:
            current = _HOST if current == _REGION else _REGION
        pick = heapq.heappop(ready[current])
        order.append(pick)
        for user in users[pick]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready[placed[user]], user)
    return order


def _free_vars(exprs: Iterable[relax.Expr]) -> list[relax.Var]:
    seen: dict[relax.Var, None] = {}
    for expr in exprs:
        for var in relax.analysis.free_vars(expr):
            seen.setdefault(var, None)
    return list(seen)


def _segment_function(name: str, bindings: Sequence[relax.Binding], inputs: list[relax.Var],
                      outputs: list[relax.Var], target: str, region: bool) -> relax.Function:
    """A function of ``bindings``: parameters bind the values it reads, it returns the
    values later segments read (a tuple when more than one)."""
    params = [relax.Var(var.name, var.ty) for var in inputs]
    aliases = [relax.VarBinding(var, param) for var, param in zip(inputs, params, strict=True)]
    result = outputs[0] if len(outputs) == 1 else relax.Tuple(outputs)
    out = relax.Var(f"{name}_out", _type_of(result))
    block = relax.DataflowBlock([*aliases, *bindings, relax.VarBinding(out, result)])
    func = relax.Function(params, relax.SeqExpr([block], out), _type_of(result))
    func = func.with_attr(TARGET_ATTR, target).with_attr(REGION_ATTR, int(region))
    mod = relax.transform.CanonicalizeBindings()(tvm.IRModule({name: func}))
    return relax.utils.copy_with_new_vars(mod[name]).with_attr("global_symbol", name)


def _type_of(expr: relax.Expr) -> relax.Type:
    if isinstance(expr, relax.Tuple):
        return relax.TupleType([_type_of(f) for f in expr.fields])
    return expr.ty


def partition(mod: tvm.IRModule, target: str, entry_name: str = "main") -> tvm.IRModule:
    """The host module of ``mod[entry_name]`` for ``target`` (see the module docstring).

    ``mod`` must have its weights bound (as ``normalize`` leaves it). The host's ``main``
    takes the same inputs and returns the same outputs as ``mod[entry_name]``.
    """
    func = mod[entry_name]
    if not isinstance(func.body, relax.SeqExpr):
        raise MSCError(f"partition: {entry_name!r} has no body of bindings")
    bindings = [b for block in func.body.blocks for b in block.bindings]
    if not all(isinstance(b, relax.VarBinding) for b in bindings):
        raise MSCError(f"partition: {entry_name!r} has match_cast bindings, which regions "
                       "cannot split")
    placed = _place(bindings, region_supports(target))
    order = _grouped_order(bindings, placed)
    bindings, placed = [bindings[i] for i in order], [placed[i] for i in order]
    runs: list[tuple[str, list[relax.VarBinding]]] = []
    for binding, where in zip(bindings, placed, strict=True):
        if runs and runs[-1][0] == where:
            runs[-1][1].append(binding)
        else:
            runs.append((where, [binding]))
    result = func.body.body
    # relax values only: free_vars also lists the symbolic dims (TIR vars) shapes use,
    # which every segment defines from the types of its parameters
    values = set(func.params) | {b.var for b in bindings}
    # the values each segment reads, and which of its values later segments (or the
    # function's result) read
    reads = [set(_free_vars([b.value for b in run])) & values for _, run in runs]
    defined = [[b.var for b in run] for _, run in runs]
    needed_after: list[set[relax.Var]] = []
    later = set(_free_vars([result]))
    for i in range(len(runs) - 1, -1, -1):
        needed_after.insert(0, set(later))
        later |= reads[i]
    builder = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    env: dict[relax.Var, relax.Expr] = dict(zip(func.params, params, strict=True))
    counts = {_REGION: 0, _HOST: 0}
    with builder.function("main", params):
        with builder.dataflow():
            for i, (where, run) in enumerate(runs):
                own = set(defined[i])
                inputs = [v for v in _free_vars([b.value for b in run])
                          if v in values and v not in own]
                outputs = [v for v in defined[i] if v in needed_after[i]]
                if not outputs:
                    continue  # nothing after it reads this segment
                name = f"{'region' if where == _REGION else HOST}{counts[where]}"
                counts[where] += 1
                seg = _segment_function(name, run, inputs, outputs,
                                        target if where == _REGION else HOST, where == _REGION)
                gvar = builder.add_func(seg, name)
                call = builder.emit(relax.Call(gvar, [env[v] for v in inputs]))
                if len(outputs) == 1:
                    env[outputs[0]] = call
                else:
                    for k, var in enumerate(outputs):
                        env[var] = builder.emit(relax.TupleGetItem(call, k))
            out = builder.emit_output(_substitute(result, env))
        builder.emit_func_output(out)
    host = builder.get()
    main = host["main"]
    if func.attrs is not None and "num_input" in func.attrs:
        main = main.with_attr("num_input", func.attrs["num_input"])
    host = tvm.IRModule({**{gv: host[gv] for gv in host.get_global_vars()
                            if gv.name_hint != "main"}, "main": main})
    return relax.transform.Normalize()(host)


def _substitute(expr: relax.Expr, env: dict[relax.Var, relax.Expr]) -> relax.Expr:
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(f, env) for f in expr.fields])
    if isinstance(expr, relax.Var):
        return env[expr]
    raise MSCError(f"partition: cannot map the function result {type(expr).__name__}")


def is_partitioned(mod: tvm.IRModule) -> bool:
    """Whether ``mod`` is a host module :func:`partition` made."""
    return any(isinstance(mod[gv], relax.Function) and mod[gv].attrs is not None
               and TARGET_ATTR in mod[gv].attrs for gv in mod.get_global_vars())


def segments_of(host: tvm.IRModule) -> list[Segment]:
    """The host's segments in the order ``main`` calls them."""
    main = host["main"]
    segments = []
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                func = host[value.op]
                segments.append(Segment(value.op.name_hint, str(func.attrs[TARGET_ATTR]),
                                        func, tuple(_ops_of(func)),
                                        bool(int(func.attrs[REGION_ATTR]))))
    return segments


def fallback_ops(host: tvm.IRModule) -> list[str]:
    """The ops the host runs on TVM (the target lacks them), sorted, each once."""
    return sorted({op for seg in segments_of(host) if not seg.is_region for op in seg.ops})


# --------------------------------------------------------------------------------------
# the whole model as one graph, for analyses that follow tensors across regions
# --------------------------------------------------------------------------------------
# A host call is a HOST_OP node of the stitched graph. Its attrs: ``op`` (the Relax op),
# ``keeps`` (the axes of its first input whose entries it keeps apart, so a channel there
# stays one channel of its output) and ``why`` (what it does to the other axes).

_AXIS_OPS = ("relax.cumsum", "relax.cumprod", "relax.sort", "relax.flip")
_EXTRA_UNARY = ("clip", "astype", "floor", "ceil", "round", "sign", "sin", "cos",
                "nn.leakyrelu", "nn.softplus")
_UNARY = frozenset(f"relax.{op}" for op in (*ELEMENTWISE_UNARY, *_EXTRA_UNARY))
_BINARY = frozenset(f"relax.{op}" for op in ELEMENTWISE_BINARY)


def _is_scalar(expr: relax.Expr) -> bool:
    ty = expr.ty
    return (isinstance(expr, relax.Constant) and isinstance(ty, relax.TensorType)
            and ty.shape is not None and all(int(d) == 1 for d in ty.shape))


def channel_rule(call: relax.Call) -> tuple[list[int], str]:
    """Which axes of ``call``'s first input a host op keeps apart (entry ``i`` of such an
    axis only ever meets entry ``i``), and what it does otherwise; the prune analysis
    lets channels through a host op only along those axes."""
    op = _op_name(call)
    ty = call.args[0].ty if call.args else None
    ndim = len(ty.shape) if isinstance(ty, relax.TensorType) and ty.shape is not None else 0
    every = list(range(ndim))
    if op in _UNARY:
        return every, "is elementwise"
    if op in _BINARY:
        if all(_is_scalar(arg) for arg in call.args[1:]):
            return every, "is elementwise with a scalar"
        return [], "combines two tensors"
    if op in _AXIS_OPS:
        axis = getattr(call.attrs, "axis", None)
        if axis is None:
            return [], "runs over the flattened tensor"
        axis = int(axis) % ndim
        return [a for a in every if a != axis], f"runs along axis {axis}"
    return [], "is not known to keep channels apart"


@dataclass
class Stitched:
    """The partitioned model as one MSCGraph: the regions' nodes (a name that two regions
    share gets its region as prefix, ``region1.relu``), each host call a :data:`HOST_OP`
    node, the regions' inputs wired to the tensors that feed them. Tools whose analysis
    must follow tensors through the host (prune's channel groups) work on it; it is
    never built or run.

    ``renames[segment]`` maps the segment's tensor and node names to the stitched ones
    (a region's inputs to the tensors feeding them); ``host_inputs[segment]`` lists the
    stitched tensors a host segment reads, in parameter order.
    """

    graph: MSCGraph
    params: dict[str, np.ndarray]
    renames: dict[str, dict[str, str]]
    host_inputs: dict[str, list[str]]


def _renamed(name: str, old: str, new: str) -> str:
    rest = name[len(old):]
    if name.startswith(old) and rest[:1] in (":", "."):
        return new + rest
    return f"{new}:{name}"


def stitch(host: tvm.IRModule, regions: Mapping[str, tuple[MSCGraph, Mapping[str, Any]]],
           name: str) -> Stitched:
    """The :class:`Stitched` graph of ``host``, whose region segments translate to
    ``regions[segment] = (graph, params)``."""
    main = host["main"]
    counts: dict[str, int] = {}
    for graph, _ in regions.values():
        for node in graph.nodes:
            if node.optype != "input":
                counts[node.name] = counts.get(node.name, 0) + 1
    nodes: list[MSCNode] = []
    params: dict[str, np.ndarray] = {}
    renames: dict[str, dict[str, str]] = {}
    host_inputs: dict[str, list[str]] = {}
    env: dict[relax.Var, Any] = {}
    inputs = []
    for param in main.params:
        tensor = MSCTensor(param.name, str(param.ty.dtype),
                           encode_shape(param.ty.shape, f"input {param.name!r}"))
        nodes.append(MSCNode(param.name, "input", [], [tensor]))
        env[param] = param.name
        inputs.append(param.name)
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                seg = value.op.name_hint
                args = [host_value(a, env, "stitch") for a in value.args]
                if seg in regions:
                    graph, weights = regions[seg]
                    outs = _stitch_region(seg, graph, weights, args, counts, nodes, params,
                                          renames)
                else:
                    host_inputs[seg] = list(args)
                    outs = _stitch_host(seg, host[value.op], args, nodes)
                tuple_ret = isinstance(host[value.op].ret_ty, relax.TupleType)
                env[binding.var] = tuple(outs) if tuple_ret else outs[0]
            else:
                env[binding.var] = host_value(value, env, "stitch")
    result = host_value(main.body.body, env, "stitch")
    outputs = list(_flatten(result))
    return Stitched(MSCGraph(name, nodes, inputs, outputs), params, renames, host_inputs)


def _flatten(value: Any) -> Iterable[str]:
    if isinstance(value, tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def host_value(expr: relax.Expr, env: Mapping[relax.Var, Any], where: str) -> Any:
    """What the host function's ``expr`` (a var, tuple or tuple item) holds in ``env``,
    the values the segments computed so far; one walk for running, stitching and
    training a partitioned module."""
    if isinstance(expr, relax.Tuple):
        return tuple(host_value(f, env, where) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return host_value(expr.tuple_value, env, where)[expr.index]
    if expr in env:
        return env[expr]
    raise MSCError(f"{where}: the host reads {expr}, which no segment computed")


def _stitch_region(seg: str, graph: MSCGraph, weights: Mapping[str, Any], args: list[Any],
                   counts: Mapping[str, int], nodes: list[MSCNode],
                   params: dict[str, np.ndarray], renames: dict[str, dict[str, str]]
                   ) -> list[str]:
    rename = renames.setdefault(seg, {})
    if len(args) != len(graph.input_names):
        raise MSCError(f"stitch: region {seg!r} takes {len(graph.input_names)} inputs, the "
                       f"host passes {len(args)}")
    for tensor, arg in zip(graph.input_names, args, strict=True):
        if not isinstance(arg, str):
            raise MSCError(f"stitch: region {seg!r} reads a tuple as input {tensor!r}")
        rename[tensor] = arg
    for node in graph.nodes:
        if node.optype == "input":
            continue
        new = node.name if counts[node.name] == 1 else f"{seg}.{node.name}"
        rename[node.name] = new
        outputs = []
        for tensor in node.outputs:
            rename[tensor.name] = _renamed(tensor.name, node.name, new)
            outputs.append(MSCTensor(rename[tensor.name], tensor.dtype, tensor.shape,
                                     tensor.layout))
        roles = {}
        for role, tensor in node.weights.items():
            rename[tensor.name] = _renamed(tensor.name, node.name, new)
            roles[role] = MSCTensor(rename[tensor.name], tensor.dtype, tensor.shape,
                                    tensor.layout)
            params[rename[tensor.name]] = np.asarray(weights[tensor.name])
        nodes.append(MSCNode(new, node.optype, [rename[t] for t in node.inputs], outputs,
                             dict(node.attrs), list(node.args), roles,
                             dict(node.weight_alias), node.attrs_type))
    return [rename[t] for t in graph.output_names]


def _stitch_host(seg: str, func: relax.Function, args: list[Any],
                 nodes: list[MSCNode]) -> list[str]:
    env: dict[relax.Var, Any] = dict(zip(func.params, args, strict=True))
    for block in func.body.blocks:
        for binding in block.bindings:
            value, var = binding.value, binding.var
            if isinstance(value, relax.Call) and _op_name(value) is not None:
                reads = [env[a] for a in value.args if isinstance(a, relax.Var) and a in env]
                keeps, why = channel_rule(value)
                name = f"{seg}.{var.name}"
                types = var.ty.fields if isinstance(var.ty, relax.TupleType) else [var.ty]
                outputs = [MSCTensor(f"{name}:{i}", str(t.dtype),
                                     encode_shape(t.shape, f"host value {name!r}"))
                           for i, t in enumerate(types)]
                nodes.append(MSCNode(name, HOST_OP, [r for r in reads if isinstance(r, str)],
                                     outputs, {"op": _op_name(value), "keeps": keeps,
                                               "why": why}))
                names = [t.name for t in outputs]
                env[var] = tuple(names) if isinstance(var.ty, relax.TupleType) else names[0]
            else:
                env[var] = host_value(value, env, "stitch")
    result = host_value(func.body.body, env, "stitch")
    return list(result) if isinstance(result, tuple) else [result]


def retype(func: relax.Function, shapes: Sequence[Sequence[Any]]) -> relax.Function:
    """``func`` (a host segment) re-inferred for inputs of static ``shapes`` where they
    differ from its parameters (pruned channels); dims that agree keep the parameter's
    own (possibly symbolic) expression."""
    params, changed = [], False
    for param, shape in zip(func.params, shapes, strict=True):
        dims = []
        for old, new in zip(param.ty.shape, shape, strict=True):
            same = isinstance(new, str) or (isinstance(old, tvm.tirx.IntImm) and int(old) == new)
            dims.append(old if same else new)
            changed |= not same
        params.append(relax.Var(param.name, relax.TensorType(dims, param.ty.dtype)))
    if not changed:
        return func
    env: dict[relax.Var, relax.Expr] = dict(zip(func.params, params, strict=True))
    builder = relax.BlockBuilder()
    with builder.function("main", params, dict(func.attrs) if func.attrs else None):
        with builder.dataflow():
            for block in func.body.blocks:
                for binding in block.bindings:
                    env[binding.var] = builder.emit(_rebuilt(binding.value, env))
            out = builder.emit_output(_rebuilt(func.body.body, env))
        builder.emit_func_output(out)
    return builder.get()["main"]


def _rebuilt(expr: relax.Expr, env: Mapping[relax.Var, relax.Expr]) -> relax.Expr:
    if isinstance(expr, relax.Var):
        return env[expr]
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_rebuilt(f, env) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_rebuilt(expr.tuple_value, env), expr.index)
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        args = [_rebuilt(a, env) if isinstance(a, relax.Var | relax.Tuple) else a
                for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    raise MSCError(f"retype: cannot rebuild a {type(expr).__name__} of a host segment")


def host_vjp(func: relax.Function, name: str) -> tvm.IRModule:
    """A module to run host segment ``func`` inside a trained model: ``main`` computes it,
    ``vjp_adjoint(*inputs, *output_grads)`` returns ``(_, input_grads)``, the gradient of
    ``sum(output * output_grad)`` by TVM's own ``relax.transform.Gradient`` (a
    vector-Jacobian product). An op TVM cannot differentiate is an error naming it."""
    outputs = (list(func.ret_ty.fields) if isinstance(func.ret_ty, relax.TupleType)
               else [func.ret_ty])
    params = [relax.Var(p.name, p.ty) for p in func.params]
    grads = [relax.Var(f"grad{i}", ty) for i, ty in enumerate(outputs)]
    env: dict[relax.Var, relax.Expr] = dict(zip(func.params, params, strict=True))
    builder = relax.BlockBuilder()
    with builder.function("vjp", [*params, *grads]):
        with builder.dataflow():
            for block in func.body.blocks:
                for binding in block.bindings:
                    env[binding.var] = builder.emit(_rebuilt(binding.value, env))
            result = _rebuilt(func.body.body, env)
            fields = ([builder.emit(relax.TupleGetItem(result, i)) for i in range(len(grads))]
                      if isinstance(func.ret_ty, relax.TupleType) else [result])
            total = None
            for field, grad in zip(fields, grads, strict=True):
                term = builder.emit(relax.op.sum(relax.op.multiply(field, grad)))
                total = term if total is None else builder.emit(relax.op.add(total, term))
            out = builder.emit_output(total)
        builder.emit_func_output(out)
    module = builder.get()
    try:
        module = relax.transform.Gradient("vjp", require_grads=module["vjp"].params[:len(params)]
                                          )(module)
    except RuntimeError as err:  # tvm.error.InternalError: no FPrimalGradient for an op
        ops = sorted({op for op in _ops_of(func)})
        raise MSCError(f"host segment {name!r} ({ops}): TVM cannot differentiate it, so a "
                       f"student cannot be trained through it: {str(err).splitlines()[-1]}"
                       ) from None
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main"),
                         "vjp_adjoint": module["vjp_adjoint"]})


def _ops_of(func: relax.Function) -> list[str]:
    ops: list[str] = []
    relax.analysis.post_order_visit(func, lambda e: ops.append(str(e.op.name))
                                    if _op_name(e) is not None else None)
    return ops
