"""Frontends: framework models -> TVM's own importers -> Relax -> MSCGraph."""

from mscgym.compiler.frontend.onnx_frontend import from_onnx
from mscgym.compiler.frontend.torch_frontend import from_torch

__all__ = ["from_onnx", "from_torch"]
