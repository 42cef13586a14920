"""ONNX models in: normalize the file with ONNX's own tooling, then TVM's ``from_onnx``.

Files as users bring them rarely import as shipped: old exporters list initializers
among the graph inputs, write opsets TVM's importer handles poorly, compute Reshape
targets and Resize sizes through Shape subgraphs, and use LSTM/GRU, which TVM 0.27's
importer lacks. :func:`normalize_onnx` fixes all of that with real ONNX tooling
(``onnx.version_converter``, ``onnx.shape_inference`` and onnxscript's constant folding,
which also evaluates Shape of statically known dims) and unrolls RNNs into
primitive ops (:mod:`mscgym.compiler.frontend.onnx_rnn`). The importer is TVM's own; a
thin subclass only remembers which ONNX node produced each Relax binding, so MSC nodes
keep the ONNX node names and every unsupported op is reported with the node name and
op type the user can find in their file.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from tvm import relax

from mscgym.compiler.errors import MSCError, UnsupportedOpError
from mscgym.compiler.frontend.onnx_rnn import RNN_OPS, rewrite_rnns
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.graph_translator import Params, from_relax
from mscgym.compiler.normalize import named_const

TARGET_OPSET = 17
"""Files older than this are upgraded to it: TVM's importer implements every op's newer
forms (axes as inputs, Resize's coordinate modes) and ``onnx.version_converter`` has
adapters up to it for everything the exporters of the last years write."""

InputShapes = Mapping[str, Sequence[int | str]]


class ONNXImportError(MSCError):
    """An ONNX file cannot be read, normalized or imported; names the file."""


def load_onnx(path_or_model: Any) -> tuple[onnx.ModelProto, str]:
    """(model, where) for a path or a ModelProto; a bad file is an ONNXImportError."""
    if isinstance(path_or_model, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path_or_model)
        return model, f"ONNX model {model.graph.name or '(unnamed)'}"
    if not isinstance(path_or_model, str | os.PathLike):
        raise ONNXImportError(f"expected an ONNX file path or onnx.ModelProto, got "
                              f"{type(path_or_model).__name__}")
    path = os.fspath(path_or_model)
    where = f"ONNX file {path}"
    if not os.path.isfile(path):
        raise ONNXImportError(f"{where}: no such file")
    try:
        model = onnx.load(path)
    except Exception as err:  # protobuf DecodeError, external data errors, ...
        raise ONNXImportError(f"{where}: not a readable ONNX model ({type(err).__name__}: "
                              f"{err})") from None
    if not model.graph.node:
        raise ONNXImportError(f"{where}: the model has no graph nodes (not an ONNX model?)")
    return model, where


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _strip_initializer_inputs(model: onnx.ModelProto) -> None:
    """Drop graph inputs that are initializers (IR < 4 exporters list every weight)."""
    inits = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in inits]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)


def _name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Name each unnamed node after its first output (what a user finds in Netron), so
    the tools below do not invent names the user's file does not have."""
    taken = {n.name for n in model.graph.node if n.name}
    for node in model.graph.node:
        if not node.name and node.output and node.output[0] not in taken:
            node.name = node.output[0]
            taken.add(node.name)


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: InputShapes | None,
                      where: str) -> None:
    """Set the dims of the named inputs (ints fix a dim, strings name a symbolic one)."""
    inputs = {i.name: i for i in model.graph.input}
    for name, shape in (input_shapes or {}).items():
        if name not in inputs:
            raise ONNXImportError(f"{where}: input_shapes names {name!r}, which is not a graph "
                                  f"input (inputs: {sorted(inputs)})")
        tensor = inputs[name].type.tensor_type
        dims = tensor.shape.dim
        if tensor.HasField("shape") and len(dims) and len(dims) != len(shape):
            raise ONNXImportError(f"{where}: input {name!r} has rank {len(dims)}, but "
                                  f"input_shapes gives {tuple(shape)}")
        tensor.shape.Clear()
        for dim in shape:
            entry = tensor.shape.dim.add()
            if isinstance(dim, int | np.integer) and int(dim) > 0:
                entry.dim_value = int(dim)
            elif isinstance(dim, str) and dim:
                entry.dim_param = dim
            else:
                raise ONNXImportError(f"{where}: input_shapes[{name!r}] has dim {dim!r}; "
                                      "expected a positive int or a symbolic name")
    # Dims with neither a value nor a name get a name, so they stay one symbolic dim
    # (TVM would otherwise make a fresh unnamed variable per use).
    for info in model.graph.input:
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and not dim.dim_param:
                dim.dim_param = f"{_identifier(info.name)}_dim{axis}"


def _identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    return text if text[:1].isalpha() else f"d_{text}"


def _upgrade(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    opset = _opset(model)
    if opset >= TARGET_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, TARGET_OPSET)
    except Exception as err:  # the converter raises RuntimeError/ValidationError/...
        warnings.warn(f"{where}: onnx.version_converter could not upgrade opset {opset} to "
                      f"{TARGET_OPSET} ({err}); importing at opset {opset}", stacklevel=3)
        return model


def _infer_shapes(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:
        raise ONNXImportError(f"{where}: ONNX shape inference failed: {err}") from None


def _gather_to_slice(model: onnx.ModelProto) -> None:
    """Gather of one constant scalar index -> Slice + Squeeze (same values).

    TVM's Gather converter guards every index against negatives at run time
    (shape_of/less/where), which no MSC op expresses; a Slice with constant bounds
    imports as one strided_slice. Gathers from Shape stay: TVM folds those itself.
    """
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {}
    for node in graph.node:
        for out in node.output:
            producers[out] = node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    opset = _opset(model)
    new_nodes = []
    added: list[onnx.TensorProto] = []
    for node in graph.node:
        index = consts.get(node.input[1]) if node.op_type == "Gather" else None
        source = producers.get(node.input[0]) if index is not None else None
        if (index is None or index.ndim != 0 or node.input[0] in consts
                or (source is not None and source.op_type == "Shape")):
            new_nodes.append(node)
            continue
        k = int(index)
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
        base = f"{node.output[0]}/slice"
        bounds = {"starts": k, "ends": k + 1 if k != -1 else np.iinfo(np.int64).max,
                  "axes": axis}
        names = []
        for key, value in bounds.items():
            added.append(numpy_helper.from_array(np.array([value], np.int64), f"{base}_{key}"))
            names.append(f"{base}_{key}")
        new_nodes.append(onnx.helper.make_node("Slice", [node.input[0], *names], [base],
                                               name=f"{node.name}/Slice" if node.name else ""))
        squeeze = (onnx.helper.make_node("Squeeze", [base, names[2]], [node.output[0]],
                                         name=node.name) if opset >= 13 else
                   onnx.helper.make_node("Squeeze", [base], [node.output[0]], name=node.name,
                                         axes=[axis]))
        new_nodes.append(squeeze)
    if added:
        graph.initializer.extend(added)
        del graph.node[:]
        graph.node.extend(new_nodes)


def _dims(info: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in info.type.tensor_type.shape.dim]


def _resize_scales_for_computed_sizes(model: onnx.ModelProto) -> None:
    """Resize whose ``sizes`` are computed (Shape -> Slice -> Concat, with a dynamic batch)
    but whose spatial sizes shape inference knows -> the same Resize with constant scales.

    TVM's Resize converter needs constant sizes; with the batch dim symbolic they cannot
    fold. Output size ``floor(in * out/in)`` is ``out`` and the coordinate transforms use
    the same ``out/in`` scale ONNX derives from ``sizes``, so the values are unchanged.
    """
    graph = model.graph
    consts = {i.name for i in graph.initializer}
    consts |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    infos = {i.name: _dims(i) for i in [*graph.input, *graph.value_info, *graph.output]}
    for node in graph.node:
        if (node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]
                or node.input[3] in consts or any(a.name == "axes" for a in node.attribute)):
            continue
        src, out = infos.get(node.input[0]), infos.get(node.output[0])
        if (src is None or out is None or len(src) != len(out) or len(src) < 3
                or not all(isinstance(d, int) and d > 0 for d in (*src[1:], *out[1:]))
                or src[1] != out[1]
                # the batch: equal, or symbolic on both sides (inference renames it)
                or (src[0] != out[0] and (isinstance(src[0], int) or isinstance(out[0], int)))):
            continue
        scales = np.array([1.0, 1.0, *(o / i for i, o in zip(src[2:], out[2:], strict=True))],
                          np.float32)
        name = f"{node.output[0]}/scales"
        graph.initializer.append(numpy_helper.from_array(scales, name))
        data, roi = node.input[0], node.input[1]
        del node.input[:]
        node.input.extend([data, roi, name])


def normalize_onnx(model: onnx.ModelProto, input_shapes: InputShapes | None = None,
                   where: str = "ONNX model") -> onnx.ModelProto:
    """The model in the form TVM's importer takes (see the module docstring)."""
    import onnx_ir
    import onnxscript.optimizer

    _strip_initializer_inputs(model)
    _name_unnamed_nodes(model)
    _fix_input_shapes(model, input_shapes, where)
    # IR < 4 required initializers to be inputs; without them the file needs IR >= 4
    # (the version converter refuses it otherwise), and the upgraded opset its minimum.
    model.ir_version = max(model.ir_version, 4)
    model = _upgrade(model, where)
    model.ir_version = max(model.ir_version,
                           onnx.helper.find_min_ir_version_for(list(model.opset_import), True))
    model = _infer_shapes(model, where)
    model = rewrite_rnns(model)
    try:
        # onnxscript's constant folding (weights made by ConstantOfShape too, Shape of
        # known dims, Identity) and dead-node removal, but not its pattern rewrites:
        # every node the user wrote keeps its name and op type.
        ir_model = onnx_ir.serde.deserialize_model(model)
        onnxscript.optimizer.inline(ir_model)
        onnxscript.optimizer.fold_constants(ir_model, output_size_limit=1 << 26)
        onnxscript.optimizer.remove_unused_nodes(ir_model)
        model = onnx_ir.serde.serialize_model(ir_model)
    except Exception as err:
        raise ONNXImportError(f"{where}: onnxscript's optimizer failed: "
                              f"{type(err).__name__}: {err}") from None
    _gather_to_slice(model)
    model = _infer_shapes(model, where)
    _resize_scales_for_computed_sizes(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ONNXImportError(f"{where}: the normalized model is not valid ONNX: {err}") from None
    return model


def _importer_class() -> type:
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class _NamingImporter(ONNXGraphImporter):
        """TVM's importer, binding each node's result to a var named after the node.

        Converters may return an expression without emitting it; emitting it right away
        keeps every binding in the order of the ONNX nodes, so each binding belongs to
        the next marked var (see :func:`_binding_sources`).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.results: list[tuple[int, Any]] = []
            self.node_index = 0
            self.graph_nodes: Sequence[onnx.NodeProto] = ()

        def _parse_graph_initializers(self, graph: onnx.GraphProto) -> None:
            # Constants, not parameters: converters fold shape arithmetic only over
            # constants, and the span keeps the initializer's name for the weight alias.
            for init in graph.initializer:
                array = numpy_helper.to_array(init).reshape(tuple(init.dims))
                self._nodes[init.name] = named_const(array, init.name)

        def _convert_operator(self, op_name: str, inputs: Any, attrs: dict, opset: int) -> Any:
            # Nodes convert in graph order; "If" nodes never reach this method.
            index = self.node_index
            while index < len(self.graph_nodes) and self.graph_nodes[index].op_type != op_name:
                index += 1
            self.node_index = index + 1
            result = super()._convert_operator(op_name, inputs, attrs, opset)
            if isinstance(result, relax.Call):
                # Bind a tensor result now, not when a later node uses it: then every
                # binding this node made comes before the next node's.
                normalized = self.bb.normalize(result)
                if isinstance(normalized.ty, relax.TensorType):
                    result = self.bb.emit(normalized)
            self.results.append((index, result))
            return result

    return _NamingImporter


def _binding_sources(func: relax.Function, results: Sequence[tuple[int, Any]],
                     nodes: Sequence[onnx.NodeProto]) -> dict[str, str]:
    """Relax var name -> name of the ONNX node that produced the binding.

    A converter's result is either emitted by the converter (then it is the binding's
    var) or emitted when a later node uses it (then it is the binding's value); every
    binding before it, back to the previous node's result, is that node's work too.
    """
    by_hash: dict[int, list[tuple[int, Any]]] = {}
    for index, result in results:
        by_hash.setdefault(hash(result), []).append((index, result))

    def producer(expr: Any) -> int | None:
        return next((i for i, r in by_hash.get(hash(expr), []) if r.same_as(expr)), None)

    sources: dict[str, str] = {}
    pending: list[str] = []
    for block in func.body.blocks:
        for binding in block.bindings:
            pending.append(binding.var.name)
            index = producer(binding.var)
            index = producer(binding.value) if index is None else index
            if index is None:
                continue
            node = nodes[index]
            for name in pending:
                sources[name] = _label(node)
            pending = []
    return sources


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"


def _check_importer_ops(model: onnx.ModelProto, where: str, rewritten: Sequence[str] = ()
                        ) -> None:
    """Every node whose op type TVM's importer has no converter for (and that is not one of
    the ``rewritten`` op types normalization replaces), in one error."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"If", "Constant", *rewritten}
    missing = [(f"ONNX {n.op_type} (no converter in TVM's ONNX importer)", _label(n))
               for n in model.graph.node
               if n.op_type not in known or n.domain not in ("", "ai.onnx")]
    if missing:
        raise UnsupportedOpError.of(missing, where)


def from_onnx(
    path_or_model: Any,
    input_shapes: InputShapes | None = None,
    graph_name: str | None = None,
) -> tuple[MSCGraph, Params]:
    """ONNX file or ModelProto -> normalized ONNX -> TVM's importer -> MSCGraph.

    ``input_shapes`` ({input name: dims}) fixes dynamic dims where given (ints) or names
    them (strings); other dynamic dims stay symbolic where the model allows it. MSC nodes
    are named after the ONNX nodes, weights keep their initializer names as aliases.
    Raises ONNXImportError naming the file for a file that cannot be read or normalized,
    and one UnsupportedOpError naming every unsupported ONNX node at once.
    """
    model, where = load_onnx(path_or_model)
    if graph_name is None:
        graph_name = (os.path.splitext(os.path.basename(os.fspath(path_or_model)))[0]
                      if isinstance(path_or_model, str | os.PathLike)
                      else model.graph.name or "onnx")
    _check_importer_ops(model, where, RNN_OPS)
    model = normalize_onnx(model, input_shapes, where)
    opset = _opset(model)
    _check_importer_ops(model, where)
    importer = _importer_class()(None, "float32", keep_params_in_input=False, sanitize=True)
    importer.graph_nodes = model.graph.node
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importer.from_onnx(model.graph, opset)
    except MSCError:
        raise
    except Exception as err:
        node = model.graph.node[max(importer.node_index - 1, 0)]
        raise ONNXImportError(
            f"{where}: TVM's ONNX importer failed at node {node.name!r} ({node.op_type}): "
            f"{type(err).__name__}: {err}") from None
    sources = _binding_sources(mod["main"], importer.results, model.graph.node)
    op_types = {_label(n): n.op_type for n in model.graph.node}
    try:
        return from_relax(mod, None, graph_name=graph_name, sources=sources)
    except UnsupportedOpError as err:
        by_node: dict[str, list[str]] = {}
        for op, node in err.unsupported:
            by_node.setdefault(node, []).append(op)
        raise UnsupportedOpError.of(
            [(f"ONNX {op_types.get(node, '?')} (as {', '.join(ops)})", node)
             for node, ops in by_node.items()], where) from None
