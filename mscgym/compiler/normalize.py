"""Normalize a Relax function into the form MSCGraph is translated from.

Normalization binds the weights as constants whose span carries the framework's name
for the weight, folds eval-mode batch norm into the preceding convolution, folds
layout ops applied to weights (the bias reshape and the dense-weight transpose that
the torch frontend emits), removes eval-mode dropout (an identity), turns a
``minimum(maximum(x, lo), hi)`` pair over scalar constants (TVM's lowering of ONNX Clip)
back into one ``clip``, and puts the constant operand of commutative ops on the right.
The result is still plain Relax: building it gives the same numbers as the input, and
``to_relax(from_relax(mod))`` is structurally equal to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tvm
from tvm import ir, relax
from tvm.relax import _ffi_api as _relax_api
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

from mscgym.compiler.errors import MSCError

ParamValue = np.ndarray | tvm.runtime.Tensor


def named_const(data: np.ndarray, name: str | None) -> relax.Expr:
    """A Relax constant whose span records the weight's source name."""
    span = ir.Span(ir.SourceName(name), 0, 0, 0, 0) if name else None
    array = np.require(data, requirements="C")  # ascontiguousarray would make 0-d arrays 1-d
    return _relax_api.MakeTensorConst(tvm.runtime.tensor(array), None, span)


def const_name(const: relax.Expr) -> str | None:
    span = const.span
    return span.source_name.name if span is not None else None


def const_value(const: relax.Expr) -> np.ndarray:
    return const.value.numpy()


def bind_params(
    func: relax.Function, params: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> relax.Function:
    """Bind ``params`` as named constants, in any form TVM users hold them.

    ``params`` is either ``relax.frontend.detach_params`` output (function name -> the
    list of its weights, which are the parameters after ``num_input``) or a mapping of
    parameter name -> ``tvm.runtime.Tensor``, numpy array or torch tensor.
    """
    params = _by_param_name(func, params)
    known = {p.name for p in func.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise MSCError(f"params {unknown} are not parameters of the function "
                       f"(parameters: {sorted(known)})")
    names = names or {}
    binding = {}
    for key, value in params.items():
        binding[key] = named_const(_as_numpy(value, key), names.get(key, key))
    func = func.bind_params(binding)
    if func.attrs is not None and "params" in func.attrs:
        func = func.without_attr("params")
    return func


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, tvm.runtime.Tensor):
        return value.numpy()
    if type(value).__module__.startswith("torch"):  # a torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise MSCError(f"param {name!r}: expected a tensor (tvm, numpy or torch), got "
                       f"{type(value).__name__}")
    return array


def _by_param_name(func: relax.Function, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` keyed by parameter name (``detach_params`` output resolved)."""
    lists = {k: v for k, v in params.items() if isinstance(v, list | tuple)}
    if not lists:
        return dict(params)
    if len(lists) != len(params):
        raise MSCError("params mix detach_params lists (function name -> [tensors]) with "
                       f"single tensors: {sorted(params)}")
    symbol = func.attrs["global_symbol"] if func.attrs is not None and (
        "global_symbol" in func.attrs) else None
    key = str(symbol) if symbol is not None and str(symbol) in lists else (
        next(iter(lists)) if len(lists) == 1 else None)
    if key is None:
        raise MSCError(f"detach_params output has weights for functions {sorted(lists)}; "
                       "pass the entry function's entry")
    weights = list(lists[key])
    num_input = (int(func.attrs["num_input"]) if func.attrs is not None
                 and "num_input" in func.attrs else len(func.params) - len(weights))
    targets = func.params[num_input:]
    if len(targets) != len(weights):
        raise MSCError(f"detach_params output for {key!r} has {len(weights)} weights, but the "
                       f"function has {len(targets)} parameters after its {num_input} inputs")
    return {p.name: w for p, w in zip(targets, weights, strict=True)}


def _fold_weight_layout(func: relax.Function) -> relax.Function:
    """reshape/permute_dims of a constant -> the reshaped/transposed constant, name kept."""
    const = is_const()
    reshape = is_op("relax.reshape")(const, wildcard())
    permute = is_op("relax.permute_dims")(const)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        data = const_value(matches[const])
        if expr.op.name == "relax.reshape":
            shape = [int(d) for d in expr.ty.shape]
            return named_const(data.reshape(shape), const_name(matches[const]))
        axes = expr.attrs.axes
        perm = [int(a) for a in axes] if axes is not None else None
        return named_const(np.transpose(data, perm), const_name(matches[const]))

    return rewrite_call(reshape | permute, rewriter, func)


def _fold_batch_norm(func: relax.Function) -> relax.Function:
    """conv2d (+ bias) -> eval batch_norm -> [0]  becomes  conv2d(W') + b'."""
    data, weight, bias = wildcard(), is_const(), is_const()
    conv = is_op("relax.nn.conv2d")(data, weight)
    conv_bias = is_op("relax.add")(conv, bias)
    gamma, beta, mean, var = is_const(), is_const(), is_const(), is_const()
    norm = is_op("relax.nn.batch_norm")(conv_bias | conv, gamma, beta, mean, var)
    pattern = TupleGetItemPattern(norm, 0)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        norm_call, conv_call = matches[norm], matches[conv]
        if (norm_call.attrs.training or int(norm_call.attrs.axis) != 1
                or conv_call.attrs.kernel_layout != "OIHW"):
            return expr
        w = const_value(matches[weight])
        channels = w.shape[0]
        b = (const_value(matches[bias]).reshape(channels) if bias in matches
             else np.zeros(channels, w.dtype))
        g, beta_v = const_value(matches[gamma]), const_value(matches[beta])
        mu, sigma2 = const_value(matches[mean]), const_value(matches[var])
        scale = g / np.sqrt(sigma2 + float(norm_call.attrs.epsilon))
        new_w = (w * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
        new_b = ((b - mu) * scale + beta_v).astype(w.dtype).reshape(1, channels, 1, 1)
        bias_name = const_name(matches[bias]) if bias in matches else const_name(matches[beta])
        folded = relax.Call(conv_call.op, [matches[data], named_const(new_w, const_name(
            matches[weight]))], conv_call.attrs)
        return relax.op.add(folded, named_const(new_b, bias_name))

    return rewrite_call(pattern, rewriter, func)


_TE_BINARY = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}


def _te_clip_to_relax(func: relax.Function) -> relax.Function:
    """call_tir(maximum|minimum, (x, scalar const)) -> relax.maximum/minimum(x, const).

    TVM's ONNX frontend emits Clip (ReLU6) as TE maximum/minimum kernels over NaN-guarded
    bounds; once the guards are folded, these are plain Relax elementwise ops again.
    """
    pattern = is_op("relax.call_tir")(wildcard(), wildcard())

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        if not isinstance(expr, relax.Call):  # a var the matcher followed to the call
            return expr
        callee, args = expr.args[0], expr.args[1]
        name = getattr(callee, "name_hint", "").rstrip("0123456789")
        fields = getattr(args, "fields", ())
        if name not in _TE_BINARY or len(fields) != 2 or not isinstance(
                fields[1], tvm.ir.expr.GenericConst):
            return expr
        bound = fields[1]
        if const_value(bound).ndim != 0:
            return expr
        return _TE_BINARY[name](fields[0], named_const(const_value(bound), None))

    return rewrite_call(pattern, rewriter, func)


def _static_shape(ty: relax.Type) -> tuple[int, ...] | None:
    shape = getattr(ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _te_pad_to_relax(mod: tvm.IRModule, func: relax.Function) -> relax.Function:
    """call_tir(pad, (x,)) -> relax.nn.pad(x, widths, "constant", value).

    TVM's ONNX frontend emits Pad (constant mode) as TOPI's pad kernel, whose widths live
    only in its TIR. They are read back by running that kernel once on an all-NaN input:
    the non-NaN cells are padding, their value the pad value. Any other kernel, a
    non-float or symbolic shape, or a result that is not such a block is left as it was.
    """
    pattern = is_op("relax.call_tir")(wildcard(), wildcard())

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        if not isinstance(expr, relax.Call):  # a var the matcher followed to the call
            return expr
        callee, args = expr.args[0], expr.args[1]
        fields = getattr(args, "fields", ())
        if (getattr(callee, "name_hint", "").rstrip("0123456789_") != "pad" or len(fields) != 1
                or not isinstance(fields[0], relax.Var)):
            return expr
        source, target = _static_shape(fields[0].ty), _static_shape(expr.ty)
        dtype = str(getattr(expr.ty, "dtype", ""))
        if source is None or target is None or len(source) != len(target) or not (
                dtype.startswith("float") and str(fields[0].ty.dtype) == dtype):
            return expr
        kernel = mod[callee].with_attr("global_symbol", "main")
        data = tvm.runtime.tensor(np.full(source, np.nan, dtype))
        out = tvm.runtime.tensor(np.zeros(target, dtype))
        tvm.compile(tvm.IRModule({"main": kernel}), target="llvm")["main"](data, out)
        result = out.numpy()
        inside = np.isnan(result)
        widths = []
        for axis, (size, total) in enumerate(zip(source, target, strict=True)):
            hit = np.flatnonzero(inside.any(axis=tuple(a for a in range(len(target))
                                                       if a != axis)))
            if len(hit) != size:
                return expr
            widths += [int(hit[0]), total - size - int(hit[0])]
        block = tuple(slice(widths[2 * a], widths[2 * a] + n) for a, n in enumerate(source))
        values = np.unique(result[~inside])
        if not inside[block].all() or inside.sum() != inside[block].size or len(values) > 1:
            return expr
        value = float(values[0]) if len(values) else 0.0
        return relax.op.nn.pad(fields[0], widths, "constant", value)

    return rewrite_call(pattern, rewriter, func)


def _remove_dropout(func: relax.Function) -> relax.Function:
    """dropout(x)[0] -> x: inference never drops, so the op is an identity.

    The rewrite leaves ``y = x`` bindings; :func:`normalize` canonicalizes them away.
    """
    data = wildcard()
    pattern = TupleGetItemPattern(is_op("relax.nn.dropout")(data), 0)
    return rewrite_call(pattern, lambda _expr, matches: matches[data], func)


def _scalar_bound(expr: relax.Expr) -> float | None:
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        return None
    value = const_value(expr)
    return float(value) if value.ndim == 0 and value.dtype.kind == "f" else None


def _fuse_clip(func: relax.Function) -> relax.Function:
    """minimum(maximum(x, lo), hi) with scalar float constants lo <= hi -> clip(x, lo, hi).

    This is how TVM's ONNX importer lowers Clip (and ReLU6); as one ``clip`` the codegens
    emit the op runtimes fuse into the preceding conv (ONNX Clip, ``torch.clamp``) and
    quantization treats it as the monotone op it is.
    """
    data, low, high = wildcard(), is_const(), is_const()
    pattern = is_op("relax.minimum")(is_op("relax.maximum")(data, low), high)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        lo, hi = _scalar_bound(matches[low]), _scalar_bound(matches[high])
        if lo is None or hi is None or lo > hi or isinstance(matches[data],
                                                             tvm.ir.expr.GenericConst):
            return expr
        return relax.op.clip(matches[data], tvm.tirx.FloatImm("float64", lo),
                             tvm.tirx.FloatImm("float64", hi))

    return rewrite_call(pattern, rewriter, func)


def _const_to_rhs(func: relax.Function) -> relax.Function:
    """add/multiply(const, x) -> add/multiply(x, const)."""
    const, other = is_const(), wildcard()
    pattern = is_op("relax.add")(const, other) | is_op("relax.multiply")(const, other)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        if isinstance(matches[other], type(matches[const])):
            return expr
        return relax.Call(expr.op, [matches[other], matches[const]], expr.attrs)

    return rewrite_call(pattern, rewriter, func)


def _calls_tir(func: relax.Function) -> bool:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(
        isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.call_tir"))
    return any(found)


def normalize(
    mod: tvm.IRModule,
    params: Mapping[str, ParamValue] | None = None,
    entry_name: str = "main",
    names: Mapping[str, str] | None = None,
) -> tvm.IRModule:
    """Return ``mod`` with ``entry_name`` normalized (see the module docstring).

    ``params`` maps function parameter names to weights; ``names`` maps the same
    parameter names to the framework's names for them (e.g. torch state_dict keys).
    """
    if entry_name not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise MSCError(f"module has no function {entry_name!r}")
    func = mod[entry_name]
    if params:
        func = bind_params(func, params, names)
    func = _fold_weight_layout(func)
    func = _fold_batch_norm(func)
    if _calls_tir(func):
        folded = relax.transform.FoldConstant()(tvm.IRModule({**{
            gv: mod[gv] for gv in mod.get_global_vars() if gv.name_hint != entry_name},
            entry_name: func}))
        func = _te_pad_to_relax(folded, _te_clip_to_relax(folded[entry_name]))
    func = _remove_dropout(func)
    func = _fuse_clip(func)
    func = _const_to_rhs(func)
    func = relax.analysis.remove_all_unused(func)
    out = relax.transform.CanonicalizeBindings()(tvm.IRModule({entry_name: func}))
    return relax.transform.Normalize()(out)
