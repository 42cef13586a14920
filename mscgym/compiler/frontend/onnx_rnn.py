"""Rewrite ONNX ``LSTM`` and ``GRU`` nodes into primitive ONNX ops before TVM's importer.

TVM 0.27's Relax ONNX importer has no converter for LSTM or GRU. Instead of a second
importer, each such node is unrolled over its (static) sequence length into MatMul,
Add, Sigmoid, Tanh, Mul, Sub, Slice, Gather, Unsqueeze and Concat nodes that compute
exactly ONNX's equations (gate order ``iofc`` for LSTM and ``zrh`` for GRU, forward,
reverse and bidirectional directions, ``linear_before_reset``, biases, peepholes,
``initial_h``/``initial_c``, ``layout`` and the ``Y``/``Y_h``/``Y_c`` outputs). The input
projection of all time steps is one MatMul; each step adds the recurrent MatMul. Constant
weights are split per direction and transposed here, so they reach TVM as constants the
translator turns into linear layers; computed weights get Gather/Transpose nodes instead.
Every new node and tensor is named after the original node, so errors and MSC node
names still point at the node in the user's file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mscgym.compiler.errors import MSCError

RNN_OPS = ("LSTM", "GRU")

_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}
_GATES = {"LSTM": 4, "GRU": 3}


class _Emitter:
    """Adds nodes and constants for one RNN node, all named after it."""

    def __init__(self, graph: onnx.GraphProto, node: onnx.NodeProto, opset: int,
                 constants: dict[str, np.ndarray], taken: set[str]) -> None:
        self.node = node
        self.opset = opset
        self.constants = constants
        self.taken = taken
        self.base = node.name or f"{node.op_type}_{node.output[0]}"
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def fresh(self, hint: str) -> str:
        name, index = f"{self.base}/{hint}", 1
        while name in self.taken:
            name, index = f"{self.base}/{hint}_{index}", index + 1
        self.taken.add(name)
        return name

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.require(value, requirements="C"), name))
        self.constants[name] = value
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str, output: str | None = None,
           **attrs: object) -> str:
        out = output or self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.fresh(f"{hint}/{op_type}"), **attrs))
        return out

    def unsqueeze(self, value: str, axis: int, hint: str) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [value, self.const(f"{hint}_axes",
                                                           np.array([axis], np.int64))], hint)
        return self.op("Unsqueeze", [value], hint, axes=[axis])

    def take(self, value: str, index: int, axis: int, hint: str) -> str:
        """``value[index]`` along ``axis`` (the axis is removed)."""
        return self.op("Gather", [value, self.const(f"{hint}_index", np.array(index, np.int64))],
                       hint, axis=axis)

    def gate(self, value: str, index: int, hidden: int, hint: str) -> str:
        """Columns ``[index*hidden, (index+1)*hidden)`` of a ``[batch, G*hidden]`` tensor."""
        consts = [self.const(f"{hint}_{k}", np.array([v], np.int64))
                  for k, v in (("start", index * hidden), ("end", (index + 1) * hidden),
                               ("axis", 1))]
        return self.op("Slice", [value, *consts], hint)

    def add(self, a: str | None, b: str | None, hint: str) -> str | None:
        if a is None or b is None:
            return a if b is None else b
        return self.op("Add", [a, b], hint)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _static_dim(shapes: dict[str, list[int | str | None]], name: str, axis: int,
                node: onnx.NodeProto, what: str) -> int:
    dims = shapes.get(name)
    dim = dims[axis] if dims is not None and axis < len(dims) else None
    if not isinstance(dim, int):
        raise MSCError(
            f"{node.op_type} node {node.name!r}: its {what} is dynamic ({dim!r}); mscgym "
            f"unrolls {node.op_type} over a static sequence, so fix the input's shape "
            "(input_shapes={name: (...)} or --input-shape NAME=AxBxC)")
    return dim


def _per_direction(em: _Emitter, name: str, direction: int, hint: str,
                   transpose: bool) -> str:
    """Slice ``name`` ([num_dir, ...]) at ``direction``; transposed (2-D) if asked."""
    if name in em.constants:
        value = em.constants[name][direction]
        return em.const(hint, value.T.copy() if transpose else value.copy())
    picked = em.take(name, direction, 0, hint)
    return em.op("Transpose", [picked], f"{hint}_T", perm=[1, 0]) if transpose else picked


def _bias_parts(em: _Emitter, bias: str | None, direction: int, gates: int, hidden: int,
                op_type: str, linear_before_reset: bool) -> tuple[str | None, str | None]:
    """(bias added to the input projection, recurrent bias of GRU's h gate kept apart)."""
    if not bias:
        return None, None
    if bias in em.constants:
        value = em.constants[bias][direction]
        wb, rb = value[:gates * hidden], value[gates * hidden:]
        if op_type == "GRU":
            merged = wb.copy()
            merged[:2 * hidden] += rb[:2 * hidden]
            return em.const(f"d{direction}/B", merged), em.const(f"d{direction}/Rbh",
                                                                 rb[2 * hidden:].copy())
        return em.const(f"d{direction}/B", wb + rb), None
    row = em.take(bias, direction, 0, f"d{direction}/B_row")
    ends = [("Wb", 0, gates * hidden), ("Rb", gates * hidden, 2 * gates * hidden)]
    parts = {}
    for label, start, end in ends:
        consts = [em.const(f"d{direction}/{label}_{k}", np.array([v], np.int64))
                  for k, v in (("start", start), ("end", end), ("axis", 0))]
        parts[label] = em.op("Slice", [row, *consts], f"d{direction}/{label}")
    if op_type == "GRU":
        zr = []
        for label in ("Wb", "Rb"):
            consts = [em.const(f"d{direction}/{label}zr_{k}", np.array([v], np.int64))
                      for k, v in (("start", 0), ("end", 2 * hidden), ("axis", 0))]
            zr.append(em.op("Slice", [parts[label], *consts], f"d{direction}/{label}zr"))
        consts = [em.const(f"d{direction}/Rbh_{k}", np.array([v], np.int64))
                  for k, v in (("start", 2 * hidden), ("end", 3 * hidden), ("axis", 0))]
        rbh = em.op("Slice", [parts["Rb"], *consts], f"d{direction}/Rbh")
        wbh_consts = [em.const(f"d{direction}/Wbh_{k}", np.array([v], np.int64))
                      for k, v in (("start", 2 * hidden), ("end", 3 * hidden), ("axis", 0))]
        wbh = em.op("Slice", [parts["Wb"], *wbh_consts], f"d{direction}/Wbh")
        zr_sum = em.op("Add", zr, f"d{direction}/Bzr")
        merged = em.op("Concat", [zr_sum, wbh], f"d{direction}/B", axis=0)
        return merged, rbh
    return em.op("Add", [parts["Wb"], parts["Rb"]], f"d{direction}/B"), None


def _lstm_step(em: _Emitter, d: int, t: int, x_proj: str, r_t: str, peep: str | None,
               hidden: int, h_prev: str | None, c_prev: str | None) -> tuple[str, str]:
    tag = f"d{d}/t{t}"
    pre = em.take(x_proj, t, 0, f"{tag}/x")
    if h_prev is not None:
        pre = em.op("Add", [pre, em.op("MatMul", [h_prev, r_t], f"{tag}/hR")], f"{tag}/gates")
    i, o, f, c = (em.gate(pre, k, hidden, f"{tag}/{g}") for k, g in enumerate("iofc"))
    if peep is not None and c_prev is not None:
        i = em.op("Add", [i, em.op("Mul", [c_prev, em.gate(peep, 0, hidden, f"{tag}/Pi")],
                                   f"{tag}/PiC")], f"{tag}/i_peep")
        f = em.op("Add", [f, em.op("Mul", [c_prev, em.gate(peep, 2, hidden, f"{tag}/Pf")],
                                   f"{tag}/PfC")], f"{tag}/f_peep")
    i = em.op("Sigmoid", [i], f"{tag}/i_act")
    c_new = em.op("Mul", [i, em.op("Tanh", [c], f"{tag}/c_act")], f"{tag}/ic")
    if c_prev is not None:
        f = em.op("Sigmoid", [f], f"{tag}/f_act")
        c_new = em.op("Add", [em.op("Mul", [f, c_prev], f"{tag}/fC"), c_new], f"{tag}/C")
    if peep is not None:
        o = em.op("Add", [o, em.op("Mul", [c_new, em.gate(peep, 1, hidden, f"{tag}/Po")],
                                   f"{tag}/PoC")], f"{tag}/o_peep")
    o = em.op("Sigmoid", [o], f"{tag}/o_act")
    h_new = em.op("Mul", [o, em.op("Tanh", [c_new], f"{tag}/C_act")], f"{tag}/H")
    return h_new, c_new


def _gru_step(em: _Emitter, d: int, t: int, x_proj: str, r_t: str, rbh: str | None,
              hidden: int, h_prev: str | None, linear_before_reset: bool) -> str:
    tag = f"d{d}/t{t}"
    xs = em.take(x_proj, t, 0, f"{tag}/x")
    xz, xr, xh = (em.gate(xs, k, hidden, f"{tag}/x{g}") for k, g in enumerate("zrh"))
    if h_prev is None:
        # A zero initial state: the recurrent products vanish; only GRU's Rbh survives
        # (scaled by r when the reset gate applies after the linear map).
        z = em.op("Sigmoid", [xz], f"{tag}/z")
        if rbh is not None and linear_before_reset:
            r = em.op("Sigmoid", [xr], f"{tag}/r")
            xh = em.op("Add", [xh, em.op("Mul", [r, rbh], f"{tag}/rRbh")], f"{tag}/h_pre")
        elif rbh is not None:
            xh = em.op("Add", [xh, rbh], f"{tag}/h_pre")
        h_cand = em.op("Tanh", [xh], f"{tag}/h_act")
        one_minus_z = em.op("Sub", [em.const(f"{tag}/one", np.array(1.0, np.float32)), z],
                            f"{tag}/1mz")
        return em.op("Mul", [one_minus_z, h_cand], f"{tag}/H")
    r_z = em.gate(r_t, 0, hidden, f"{tag}/Rz")
    r_r = em.gate(r_t, 1, hidden, f"{tag}/Rr")
    r_h = em.gate(r_t, 2, hidden, f"{tag}/Rh")
    z = em.op("Sigmoid", [em.op("Add", [xz, em.op("MatMul", [h_prev, r_z], f"{tag}/hRz")],
                                f"{tag}/z_pre")], f"{tag}/z")
    r = em.op("Sigmoid", [em.op("Add", [xr, em.op("MatMul", [h_prev, r_r], f"{tag}/hRr")],
                                f"{tag}/r_pre")], f"{tag}/r")
    if linear_before_reset:
        rec = em.add(em.op("MatMul", [h_prev, r_h], f"{tag}/hRh"), rbh, f"{tag}/hRh_b")
        rec = em.op("Mul", [r, rec], f"{tag}/r_hRh")
    else:
        rh = em.op("Mul", [r, h_prev], f"{tag}/rH")
        rec = em.add(em.op("MatMul", [rh, r_h], f"{tag}/rHRh"), rbh, f"{tag}/rHRh_b")
    h_cand = em.op("Tanh", [em.op("Add", [xh, rec], f"{tag}/h_pre")], f"{tag}/h_act")
    # H = (1 - z) * h + z * H_prev = h + z * (H_prev - h)
    delta = em.op("Sub", [h_prev, h_cand], f"{tag}/dH")
    return em.op("Add", [h_cand, em.op("Mul", [z, delta], f"{tag}/zdH")], f"{tag}/H")


def _check_supported(node: onnx.NodeProto, constants: dict[str, np.ndarray],
                     seq_len: int) -> None:
    acts = _attr(node, "activations", None)
    default = _DEFAULT_ACTIVATIONS[node.op_type]
    if acts is not None:
        names = tuple(a.decode() if isinstance(a, bytes) else a for a in acts)
        expected = default * (len(names) // len(default) or 1)
        if names != expected:
            raise MSCError(f"{node.op_type} node {node.name!r}: activations {list(names)} are "
                           f"not supported (only ONNX's defaults {list(default)})")
    if _attr(node, "clip", None) is not None:
        raise MSCError(f"{node.op_type} node {node.name!r}: the 'clip' attribute is not "
                       "supported")
    if int(_attr(node, "input_forget", 0)):
        raise MSCError(f"{node.op_type} node {node.name!r}: input_forget=1 is not supported")
    if len(node.input) > 4 and node.input[4]:
        lens = constants.get(node.input[4])
        if lens is None or not np.all(lens == seq_len):
            raise MSCError(f"{node.op_type} node {node.name!r}: sequence_lens must be a constant "
                           f"equal to the sequence length {seq_len} (variable-length batches "
                           "are not supported)")


def _rewrite_node(node: onnx.NodeProto, graph: onnx.GraphProto, opset: int,
                  constants: dict[str, np.ndarray], shapes: dict[str, list[int | str | None]],
                  taken: set[str]) -> _Emitter:
    op_type = node.op_type
    gates = _GATES[op_type]
    em = _Emitter(graph, node, opset, constants, taken)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x, w, r, bias = inputs[0], inputs[1], inputs[2], inputs[3]
    layout = int(_attr(node, "layout", 0))
    direction = _attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise MSCError(f"{op_type} node {node.name!r}: unknown direction {direction!r}")
    num_dir = 2 if direction == "bidirectional" else 1
    seq_len = _static_dim(shapes, x, 1 if layout else 0, node, "sequence length")
    _check_supported(node, constants, seq_len)
    hidden = int(_attr(node, "hidden_size", 0)) or _static_dim(shapes, r, 2, node,
                                                                "hidden size")
    linear_before_reset = bool(_attr(node, "linear_before_reset", 0))
    initial_h, initial_c = inputs[5], (inputs[6] if op_type == "LSTM" else "")
    peepholes = inputs[7] if op_type == "LSTM" else ""
    if layout:  # batch-first tensors -> ONNX's layout 0 (sequence or direction first)
        x = em.op("Transpose", [x], "X_seq_first", perm=[1, 0, 2])
        initial_h, initial_c = (em.op("Transpose", [s], f"{s}_dir_first", perm=[1, 0, 2])
                                if s else s for s in (initial_h, initial_c))
    ys, hs, cs = [], [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or d == 1
        w_t = _per_direction(em, w, d, f"d{d}/W_T", transpose=True)
        r_t = _per_direction(em, r, d, f"d{d}/R_T", transpose=True)
        b, rbh = _bias_parts(em, bias, d, gates, hidden, op_type, linear_before_reset)
        x_proj = em.add(em.op("MatMul", [x, w_t], f"d{d}/XW"), b, f"d{d}/XW_b")
        h = _per_direction(em, initial_h, d, f"d{d}/H0", False) if initial_h else None
        c = _per_direction(em, initial_c, d, f"d{d}/C0", False) if initial_c else None
        peep = (em.unsqueeze(_per_direction(em, peepholes, d, f"d{d}/P", False), 0,
                             f"d{d}/P_row") if peepholes else None)
        outputs: dict[int, str] = {}
        steps = range(seq_len - 1, -1, -1) if reverse else range(seq_len)
        for t in steps:
            if op_type == "LSTM":
                h, c = _lstm_step(em, d, t, x_proj, r_t, peep, hidden, h, c)
            else:
                h = _gru_step(em, d, t, x_proj, r_t, rbh, hidden, h, linear_before_reset)
            outputs[t] = em.unsqueeze(h, 0, f"d{d}/t{t}/Y")
        y = (em.op("Concat", [outputs[t] for t in range(seq_len)], f"d{d}/Y", axis=0)
             if seq_len > 1 else outputs[0])
        ys.append(em.unsqueeze(y, 1, f"d{d}/Y_dir"))
        hs.append(em.unsqueeze(h, 0, f"d{d}/Y_h"))
        if op_type == "LSTM":
            cs.append(em.unsqueeze(c, 0, f"d{d}/Y_c"))
    wanted = list(node.output) + [""] * (3 - len(node.output))
    results = [(ys, [2, 0, 1, 3], 1), (hs, [1, 0, 2], 0), (cs, [1, 0, 2], 0)]
    for out_name, (parts, perm, axis) in zip(wanted, results, strict=False):
        if not out_name:
            continue
        if layout:
            joined = parts[0] if num_dir == 1 else em.op("Concat", parts, "out_dirs", axis=axis)
            em.op("Transpose", [joined], "out", output=out_name, perm=perm)
        elif num_dir == 1:
            em.op("Identity", [parts[0]], "out", output=out_name)
        else:
            em.op("Concat", parts, "out", output=out_name, axis=axis)
    return em


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    shapes: dict[str, list[int | str | None]] = {}
    graph = model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in tensor.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def rewrite_rnns(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every LSTM and GRU node of its main graph unrolled into primitive ops.

    ``model`` must carry inferred shapes (``onnx.shape_inference``): the sequence length
    of each node's input must be static.
    """
    graph = model.graph
    if not any(n.op_type in RNN_OPS for n in graph.node):
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    constants = _constants(graph)
    shapes = _shapes(model)
    taken = {name for n in graph.node for name in (*n.input, *n.output, n.name)}
    taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type not in RNN_OPS or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        em = _rewrite_node(node, graph, opset, constants, shapes, taken)
        new_nodes.extend(em.nodes)
        graph.initializer.extend(em.initializers)
    del graph.node[:]
    graph.node.extend(new_nodes)
    rewritten = {n.output[0] for n in new_nodes}
    kept = [v for v in graph.value_info if v.name not in rewritten]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model
