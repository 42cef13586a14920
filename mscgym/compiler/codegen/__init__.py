"""Code generators: an MSCGraph (plus tool strategies) as a runnable model per framework."""

from mscgym.compiler.codegen.onnx_codegen import save_onnx, to_onnx
from mscgym.compiler.codegen.torch_codegen import FakeQuantize, to_torch, weights_from_torch

__all__ = ["FakeQuantize", "save_onnx", "to_onnx", "to_torch", "weights_from_torch"]
