"""Split a Relax function into regions a target runs, the rest left to TVM (the host).

MSC's multi-system idea: when the target lacks some ops, each run of calls it supports
becomes a region (its own MSCGraph, run by the target) and the calls it lacks stay Relax
and run on TVM. Each runner declares the ops it supports (:func:`target_ops`): ONNX
Runtime the ONNX codegen's op table, TensorRT the patterns of TVM's own
``relax.backend.contrib.tensorrt``, TVM and torch every op MSCGraph translates.

The partition walks the function's bindings in order (a topological order) and cuts it
into maximal runs of same-placed bindings, so every segment only reads values of the
segments before it. The result is an ordinary Relax module, the *host*: one function per
segment (attributes: ``msc_target``, where it runs; ``msc_region``, whether it is a
region) and a ``main`` that calls them in order. Built by TVM alone it computes the same
as the input, and :func:`segments_of` reads the segments back from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import tvm
from tvm import relax

from mscgym.compiler.errors import MSCError
from mscgym.compiler.ops import SUPPORTED_OPS

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
                ops: list[str] = []
                relax.analysis.post_order_visit(func, lambda e, ops=ops: ops.append(
                    str(e.op.name)) if _op_name(e) is not None else None)
                segments.append(Segment(value.op.name_hint, str(func.attrs[TARGET_ATTR]),
                                        func, tuple(ops), bool(int(func.attrs[REGION_ATTR]))))
    return segments


def fallback_ops(host: tvm.IRModule) -> list[str]:
    """The ops the host runs on TVM (the target lacks them), sorted, each once."""
    return sorted({op for seg in segments_of(host) if not seg.is_region for op in seg.ops})
