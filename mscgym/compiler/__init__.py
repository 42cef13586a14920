"""The multi-system compiler: MSCGraph IR, translators to and from TVM Relax, codegen."""

from mscgym.compiler.errors import GraphError, GraphFormatError, MSCError, UnsupportedOpError
from mscgym.compiler.frontend import from_onnx, from_torch
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.graph_translator import from_relax, to_relax
from mscgym.compiler.normalize import normalize
from mscgym.compiler.serialize import load_graph
from mscgym.compiler.transform import msc_transform

__all__ = [
    "GraphError",
    "GraphFormatError",
    "MSCError",
    "MSCGraph",
    "MSCNode",
    "MSCTensor",
    "UnsupportedOpError",
    "from_onnx",
    "from_relax",
    "from_torch",
    "load_graph",
    "msc_transform",
    "normalize",
    "to_relax",
]
