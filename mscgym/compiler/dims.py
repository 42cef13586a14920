"""Dimensions of MSCGraph tensors: static ints or symbolic names and expressions.

Pure Python, so that the graph IR and the codegens that only evaluate shapes need no TVM.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from mscgym.compiler.errors import MSCError

Dim = int | str
"""A static dimension, or the name (or ``+ - * //`` expression) of a symbolic one."""

_AST_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.FloorDiv: "FloorDiv"}


def eval_dim(dim: Dim, resolve: Callable[[str], Any]) -> Any:
    """Evaluate a dim: names go through ``resolve``; the text is parsed, never executed."""
    if isinstance(dim, int):
        return dim
    try:
        tree = ast.parse(dim, mode="eval").body
    except SyntaxError:
        raise MSCError(f"dimension {dim!r} is not a valid dim expression") from None

    def visit(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return resolve(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            left, right = visit(node.left), visit(node.right)
            kind = _AST_OPS[type(node.op)]
            if kind == "Add":
                return left + right
            if kind == "Sub":
                return left - right
            if kind == "Mul":
                return left * right
            return left // right
        raise MSCError(f"dimension {dim!r}: only names, integers, +, -, * and // are allowed")

    return visit(tree)
