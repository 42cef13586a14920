"""The multi-system compiler: MSCGraph IR, translators to and from TVM Relax, codegen.

The names below load on first use (:mod:`mscgym.utils.lazy`), so importing a light
submodule such as :mod:`mscgym.compiler.errors` does not import TVM.
"""

from mscgym.utils.lazy import lazy_exports

__all__ = lazy_exports(__name__, {
    "mscgym.compiler.errors": ("GraphError", "GraphFormatError", "MSCError",
                               "UnsupportedOpError"),
    "mscgym.compiler.frontend": ("from_onnx", "from_torch"),
    "mscgym.compiler.graph": ("MSCGraph", "MSCNode", "MSCTensor"),
    "mscgym.compiler.graph_translator": ("from_relax", "to_relax"),
    "mscgym.compiler.normalize": ("normalize",),
    "mscgym.compiler.serialize": ("load_graph",),
    "mscgym.compiler.transform": ("msc_transform",),
})
