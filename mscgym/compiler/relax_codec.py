"""Conversion between Relax values (attrs, shapes, prim values, types) and plain JSON."""

from __future__ import annotations

from typing import Any

import tvm
import tvm_ffi
from tvm import tirx

from mscgym.compiler.dims import Dim, eval_dim
from mscgym.compiler.errors import MSCError

_BINOPS = {"Add": "+", "Sub": "-", "Mul": "*", "FloorDiv": "//"}


def _dim_text(expr: Any, where: str) -> str:
    if isinstance(expr, tvm.tirx.IntImm):
        return str(int(expr.value))
    if isinstance(expr, tvm.tirx.Var):
        return str(expr.name)
    kind = type(expr).__name__
    if kind in _BINOPS:
        return f"({_dim_text(expr.a, where)} {_BINOPS[kind]} {_dim_text(expr.b, where)})"
    raise MSCError(f"{where}: symbolic dimension {expr} uses {kind}; only +, -, *, // of "
                   "named dims and integers are supported")


def encode_dim(dim: Any, where: str) -> Dim:
    """A static dim as int; a symbolic one as its name or an arithmetic expression string."""
    if isinstance(dim, int):
        return dim
    if isinstance(dim, tvm.tirx.IntImm):
        return int(dim.value)
    text = _dim_text(dim, where)
    return text[1:-1] if text.startswith("(") else text


def encode_shape(shape: Any, where: str) -> tuple[Dim, ...]:
    return tuple(encode_dim(d, where) for d in shape)


class SymbolTable:
    """Maps symbolic dim names to one shared ``tirx.Var`` each, as Relax requires."""

    def __init__(self) -> None:
        self._vars: dict[str, tirx.Var] = {}

    def var(self, name: str) -> tirx.Var:
        if name not in self._vars:
            self._vars[name] = tirx.Var(name, "int64")
        return self._vars[name]

    def dim(self, dim: Dim) -> Any:
        return eval_dim(dim, self.var)

    def shape(self, shape: tuple[Dim, ...] | list[Dim]) -> list[Any]:
        return [self.dim(d) for d in shape]


def encode_value(value: Any) -> Any:
    """An attribute value as JSON: arrays -> lists, imms -> numbers, dtypes -> str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, tvm.tirx.IntImm):
        return int(value.value)
    if isinstance(value, tvm.tirx.FloatImm):
        return float(value.value)
    if isinstance(value, tvm.tirx.Var):
        return {"sym": str(value.name)}
    if isinstance(value, tvm.DataType | tvm_ffi.dtype):
        return {"dtype": str(value)}
    if isinstance(value, tvm_ffi.Array | list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, tvm_ffi.Map | dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    raise MSCError(f"cannot encode attribute value {value!r} of type {type(value).__name__}")


def decode_value(value: Any, symbols: SymbolTable) -> Any:
    if isinstance(value, list):
        return [decode_value(v, symbols) for v in value]
    if isinstance(value, dict):
        if set(value) == {"dtype"}:
            return value["dtype"]
        if set(value) == {"sym"}:
            return symbols.dim(value["sym"])
        return {k: decode_value(v, symbols) for k, v in value.items()}
    return value


def encode_attrs(attrs: Any) -> tuple[dict[str, Any], str]:
    """The attrs' fields as JSON, and the type key of the attrs class ("" when none)."""
    if attrs is None:
        return {}, ""
    info = type(attrs).__tvm_ffi_type_info__
    return {f.name: encode_value(getattr(attrs, f.name)) for f in info.fields}, info.type_key


def make_attrs(type_key: str, attrs: dict[str, Any], symbols: SymbolTable) -> Any:
    """Rebuild an Attrs object from its type key and JSON fields (None when attr-less)."""
    if not type_key:
        return None
    fields = {k: decode_value(v, symbols) for k, v in attrs.items()}
    return tvm.ir.make_node(type_key, **fields)


def is_prim(arg: Any) -> bool:
    """Relax in TVM 0.27 passes scalar literals (e.g. clip bounds) as IntImm/FloatImm."""
    return isinstance(arg, tvm.tirx.IntImm | tvm.tirx.FloatImm)


def encode_prim(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, tvm.tirx.IntImm):
        return {"kind": "prim", "dtype": str(value.ty.dtype), "value": int(value.value)}
    if isinstance(value, tvm.tirx.FloatImm):
        return {"kind": "prim", "dtype": str(value.ty.dtype), "value": repr(float(value.value))}
    raise MSCError(f"{where}: prim value {value} is not a literal")


def decode_prim(arg: dict[str, Any]) -> Any:
    dtype = arg["dtype"]
    if dtype.startswith("float"):
        return tvm.tirx.FloatImm(dtype, float(arg["value"]))
    return tvm.tirx.IntImm(dtype, int(arg["value"]))
