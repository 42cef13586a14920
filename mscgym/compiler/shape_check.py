"""Check what a graph declares against what its ops compute, node by node.

A graph file declares every tensor's shape and dtype, and the codegens trust those
declarations (FLOP counts, buffer sizes, reshape targets come from them). A hand-edited
or tampered file could declare a conv output of ``[N, 16, 10**12, 10**12]`` or 33
output channels over 32-channel weights, and nothing would notice until a framework
failed deep inside (or silently computed something else). :func:`check_graph` infers
the output shape of every op of :mod:`mscgym.compiler.ops` (convs and transposed convs,
pools, linear and matmul with batch broadcasting, elementwise ops with broadcasting,
reductions, concat/stack, reshape with Relax's ``-1`` and ``0``, permute, flatten,
squeeze/expand_dims, strided_slice, take, pad, resize) from its inputs, weights and
attributes, checks the types of the attributes it reads, and raises a
:class:`GraphError` naming the node, the op, the declared and the computed shape.
Symbolic dims (the batch) are compared by name; a dim that cannot be known here (it
depends on a symbolic one) is not compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from mscgym.compiler.dims import Dim
from mscgym.compiler.errors import GraphError
from mscgym.compiler.graph import MSCGraph, MSCNode, MSCTensor
from mscgym.compiler.ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, REDUCE

CONV = ("nn.conv2d", "msc.conv2d_bias")
CONV_TRANSPOSE = ("nn.conv2d_transpose", "msc.conv2d_transpose_bias")
POOL = ("nn.max_pool2d", "nn.avg_pool2d")
LINEAR = ("msc.linear", "msc.linear_bias")
NORM = ("nn.layer_norm", "msc.batch_norm", "nn.batch_norm")
SAME_SHAPE = (*ELEMENTWISE_UNARY, "clip")
"""Ops whose output has the shape and dtype of their (first) input."""

_INT_LISTS = {"strides": (1, 2), "dilation": (1, 2), "padding": (0, (1, 2, 4)),
              "pool_size": (1, 2), "output_padding": (0, 2)}
"""Attribute -> (smallest allowed item, allowed lengths) for the 2-D ops' int lists."""
_INT_LISTS_3D = {"strides": (1, 3), "dilation": (1, 3), "padding": (0, (1, 3, 6)),
                 "pool_size": (1, 3)}
"""The same for the 3-D ops (``nn.avg_pool3d``)."""


def _is_int(value: Any) -> bool:
    return type(value) is int


def check_attrs(node: MSCNode) -> None:
    """Types of the attributes the 2-D ops read: int lists, ``groups``, ``ceil_mode``."""
    lists = _INT_LISTS_3D if node.optype.endswith("3d") else _INT_LISTS
    for key, (least, lengths) in lists.items():
        if key not in node.attrs:
            continue
        value = node.attrs[key]
        sizes = lengths if isinstance(lengths, tuple) else (lengths,)
        if (not isinstance(value, list) or len(value) not in sizes
                or not all(_is_int(v) and v >= least for v in value)):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{value!r}, expected a list of {' or '.join(map(str, sizes))} "
                             f"integers >= {least}")
    if "groups" in node.attrs and not (_is_int(node.attrs["groups"]) and node.attrs["groups"] >= 1):
        raise GraphError(f"node {node.name!r} ({node.optype}): attribute 'groups' is "
                         f"{node.attrs['groups']!r}, expected an integer >= 1")
    for key in ("ceil_mode", "count_include_pad"):
        if key in node.attrs and not isinstance(node.attrs[key], bool):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{node.attrs[key]!r}, expected true or false")
    for key in ("data_layout", "kernel_layout", "layout", "out_layout", "out_dtype"):
        # out_dtype None is Relax's "the input's dtype" (TVM's ONNX importer writes it)
        if key in node.attrs and not isinstance(node.attrs[key], str) and not (
                key == "out_dtype" and node.attrs[key] is None):
            raise GraphError(f"node {node.name!r} ({node.optype}): attribute {key!r} is "
                             f"{node.attrs[key]!r}, expected a string")


def _pads(padding: list[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from Relax's 1-, 2- or 4-item padding."""
    if len(padding) == 1:
        return padding[0], padding[0], padding[0], padding[0]
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    return padding[0], padding[1], padding[2], padding[3]


def _window(size: Dim, kernel: int, stride: int, dilation: int, before: int, after: int,
            ceil_mode: bool = False) -> Dim | None:
    """Output length of a sliding window (None when ``size`` is symbolic)."""
    if not _is_int(size):
        return None
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0:
        return -1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1  # the last window must start inside the input or its leading padding
    return out


def _compare(node: MSCNode, what: str, declared: tuple[Dim, ...],
             expected: list[Dim | None]) -> None:
    if len(declared) != len(expected):
        raise GraphError(f"node {node.name!r} ({node.optype}): {what} has rank "
                         f"{len(declared)} {list(declared)}, expected rank {len(expected)}")
    for axis, (have, want) in enumerate(zip(declared, expected, strict=True)):
        if want is None or (_is_int(have) != _is_int(want)):
            continue  # unknown here, or one side symbolic: cannot compare
        if have != want:
            shown = ["?" if w is None else w for w in expected]
            raise GraphError(f"node {node.name!r} ({node.optype}): {what} is {list(declared)}, "
                             f"but its inputs, weights and attributes give {shown} "
                             f"(axis {axis})")


def _nchw(node: MSCNode, shape: tuple[Dim, ...], what: str) -> tuple[Dim, ...]:
    if len(shape) != 4:
        raise GraphError(f"node {node.name!r} ({node.optype}): {what} is {list(shape)}, "
                         "expected a 4-D NCHW tensor")
    return shape


def _conv(graph: MSCGraph, node: MSCNode) -> None:
    if (node.attrs.get("data_layout", "NCHW"), node.attrs.get("kernel_layout", "OIHW")) != (
            "NCHW", "OIHW") or "weight" not in node.weights:
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    weight = node.weights["weight"].shape
    if len(weight) != 4:
        raise GraphError(f"node {node.name!r} ({node.optype}): weight is {list(weight)}, "
                         "expected 4-D OIHW")
    out_c, in_per_group, kh, kw = weight
    groups = node.attrs.get("groups", 1)
    if _is_int(c) and c != in_per_group * groups:
        raise GraphError(f"node {node.name!r} ({node.optype}): input has {c} channels, but "
                         f"the weight {list(weight)} with groups={groups} reads "
                         f"{in_per_group * groups}")
    if out_c % groups:
        raise GraphError(f"node {node.name!r} ({node.optype}): {out_c} output channels do "
                         f"not divide into groups={groups}")
    if "bias" in node.weights:
        _compare(node, "bias", node.weights["bias"].shape, [out_c])
    strides = node.attrs.get("strides", [1, 1])
    dilation = node.attrs.get("dilation", [1, 1])
    top, left, bottom, right = _pads(node.attrs.get("padding", [0, 0, 0, 0]))
    expected = [n, out_c, _window(h, kh, strides[0], dilation[0], top, bottom),
                _window(w, kw, strides[1], dilation[1], left, right)]
    _compare(node, "output", node.output.shape, expected)


def _pool(graph: MSCGraph, node: MSCNode) -> None:
    if node.attrs.get("layout", "NCHW") != "NCHW":
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    kh, kw = node.attrs.get("pool_size", [1, 1])
    strides = node.attrs.get("strides", [1, 1])
    dilation = node.attrs.get("dilation", [1, 1])
    top, left, bottom, right = _pads(node.attrs.get("padding", [0, 0, 0, 0]))
    ceil = bool(node.attrs.get("ceil_mode", False))
    expected = [n, c, _window(h, kh, strides[0], dilation[0], top, bottom, ceil),
                _window(w, kw, strides[1], dilation[1], left, right, ceil)]
    _compare(node, "output", node.output.shape, expected)


def _linear(graph: MSCGraph, node: MSCNode) -> None:
    if "weight" not in node.weights or node.weights["weight"].layout not in ("OI", ""):
        return
    data = graph.node_inputs(node)[0].shape
    weight = node.weights["weight"].shape
    if len(weight) != 2 or not data:
        raise GraphError(f"node {node.name!r} ({node.optype}): weight is {list(weight)} over "
                         f"input {list(data)}, expected a 2-D [out, in] weight")
    out_f, in_f = weight
    if _is_int(data[-1]) and data[-1] != in_f:
        raise GraphError(f"node {node.name!r} ({node.optype}): input has {data[-1]} features, "
                         f"but the weight {list(weight)} reads {in_f}")
    if "bias" in node.weights:
        _compare(node, "bias", node.weights["bias"].shape, [out_f])
    _compare(node, "output", node.output.shape, [*data[:-1], out_f])


def _same_shape(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    _compare(node, "output", node.output.shape, list(source.shape))
    if node.output.dtype != source.dtype:
        raise GraphError(f"node {node.name!r} ({node.optype}): output dtype is "
                         f"{node.output.dtype!r}, but its input {source.name!r} is "
                         f"{source.dtype!r} (the op keeps the dtype)")


def _fail(node: MSCNode, problem: str) -> GraphError:
    return GraphError(f"node {node.name!r} ({node.optype}): {problem}")


_MISSING = object()


def _attr_int(node: MSCNode, key: str, default: Any = _MISSING, none_ok: bool = False) -> Any:
    """An integer attribute (None when ``none_ok``); absent -> ``default`` (else an error)."""
    if key not in node.attrs:
        if default is _MISSING:
            raise _fail(node, f"attribute {key!r} is missing")
        return default
    value = node.attrs[key]
    if _is_int(value) or (none_ok and value is None):
        return value
    raise _fail(node, f"attribute {key!r} is {value!r}, expected an integer"
                      f"{' or null' if none_ok else ''}")


def _attr_ints(node: MSCNode, key: str, none_ok: bool = True) -> list[int] | None:
    """A list-of-integers attribute (absent or None -> None when ``none_ok``)."""
    value = node.attrs.get(key)
    if value is None and none_ok:
        return None
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise _fail(node, f"attribute {key!r} is {value!r}, expected a list of integers"
                          f"{' or null' if none_ok else ''}")
    return value


def _attr_bool(node: MSCNode, key: str, default: bool) -> bool:
    value = node.attrs.get(key, default)
    if not isinstance(value, bool):
        raise _fail(node, f"attribute {key!r} is {value!r}, expected true or false")
    return value


def _axis(node: MSCNode, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)``, made non-negative."""
    if not -rank <= axis < rank:
        raise _fail(node, f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def _axes(node: MSCNode, axes: list[int], rank: int, what: str = "axes") -> list[int]:
    out = [_axis(node, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise _fail(node, f"{what} {axes} repeat an axis")
    return out


def _operand(graph: MSCGraph, node: MSCNode, arg: Any) -> MSCTensor | None:
    """The tensor a call argument names: an input, a weight, or a scalar literal (None
    for anything else)."""
    if not isinstance(arg, dict):
        return None
    if arg.get("kind") == "input":
        return graph.find_tensor(node.inputs[arg["index"]])
    if arg.get("kind") == "weight":
        return node.weights[arg["role"]]
    if arg.get("kind") == "prim":
        return MSCTensor("<literal>", str(arg.get("dtype")), ())
    return None


def _items(graph: MSCGraph, node: MSCNode) -> list[MSCTensor]:
    """The tensors a concat or stack joins: its tuple argument, else its inputs."""
    if node.args and isinstance(node.args[0], dict) and node.args[0].get("kind") == "tuple":
        tensors = [_operand(graph, node, item) for item in node.args[0]["items"]]
        if any(t is None or t.name == "<literal>" for t in tensors):
            raise _fail(node, "its tuple argument holds something other than tensors")
        return [t for t in tensors if t is not None]
    return graph.node_inputs(node)


def _tensor_args(graph: MSCGraph, node: MSCNode) -> list[MSCTensor]:
    """The tensor operands of a call in argument order (the inputs when args are absent)."""
    if not node.args:
        return graph.node_inputs(node)
    tensors = [_operand(graph, node, arg) for arg in node.args]
    return [t for t in tensors if t is not None]


def _shape_arg(node: MSCNode) -> list[Dim] | None:
    arg = next((a for a in node.args if isinstance(a, dict) and a.get("kind") == "shape"), None)
    if arg is None:
        return None
    for dim in arg["value"]:
        if not (_is_int(dim) or isinstance(dim, str)):
            raise _fail(node, f"shape argument {arg['value']!r} holds {dim!r}, expected "
                              "integers or symbolic dims")
    return list(arg["value"])


def _prims(node: MSCNode, arg: Any, what: str) -> list[Dim]:
    """The integer literals of a tuple argument (strided_slice's axes, begin, end...)."""
    items = arg.get("items") if isinstance(arg, dict) and arg.get("kind") == "tuple" else None
    if items is None:
        raise _fail(node, f"its {what} argument is {arg!r}, expected a tuple of integers")
    out: list[Dim] = []
    for item in items:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("kind") != "prim" or not (
                _is_int(value) or isinstance(value, str)) or (
                isinstance(value, str) and not str(item.get("dtype", "")).startswith("int")):
            raise _fail(node, f"its {what} argument holds {item!r}, expected integers")
        out.append(value)
    return out


def _product(dims: list[Dim] | tuple[Dim, ...]) -> int | None:
    if not all(_is_int(d) for d in dims):
        return None
    return math.prod(dims)


def _same_dtype(node: MSCNode, source: MSCTensor) -> None:
    if node.output.dtype != source.dtype:
        raise _fail(node, f"output dtype is {node.output.dtype!r}, but its input "
                          f"{source.name!r} is {source.dtype!r} (the op keeps the dtype)")


def _merge(node: MSCNode, dims: list[Dim], what: str) -> Dim | None:
    """The one dim several tensors must share at an axis (None when not known here)."""
    known = {d for d in dims if _is_int(d)}
    if len(known) > 1:
        raise _fail(node, f"{what}: sizes {dims} differ")
    if known:
        return known.pop()
    return dims[0] if len(set(dims)) == 1 else None


def _broadcast(node: MSCNode, shapes: list[tuple[Dim, ...]]) -> list[Dim | None]:
    """Numpy broadcasting of ``shapes`` (an error when static dims cannot broadcast)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim | None] = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        sized = [d for d in dims if d != 1]
        if not sized:
            out.append(1)
            continue
        known = {d for d in sized if _is_int(d)}
        if len(known) > 1:
            raise _fail(node, f"operand shapes {[list(s) for s in shapes]} do not broadcast "
                              f"(axis {axis} of the result)")
        if known and len(sized) == len([d for d in sized if _is_int(d)]):
            out.append(known.pop())
        elif not known and len(set(sized)) == 1:
            out.append(sized[0])
        else:
            out.append(None)  # a symbolic dim against a static one: decided at run time
    return out


def _conv_transpose(graph: MSCGraph, node: MSCNode) -> None:
    """Relax conv2d_transpose: NCHW data, IOHW weight [in, out / groups, kh, kw]."""
    if (node.attrs.get("data_layout", "NCHW"), node.attrs.get("kernel_layout", "IOHW")) != (
            "NCHW", "IOHW") or "weight" not in node.weights:
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    weight = node.weights["weight"].shape
    if len(weight) != 4:
        raise _fail(node, f"weight is {list(weight)}, expected 4-D IOHW")
    in_c, out_per_group, kh, kw = weight
    groups = node.attrs.get("groups", 1)
    if _is_int(c) and c != in_c:
        raise _fail(node, f"input has {c} channels, but the weight {list(weight)} reads {in_c}")
    if in_c % groups:
        raise _fail(node, f"{in_c} input channels do not divide into groups={groups}")
    out_c = out_per_group * groups
    if "bias" in node.weights:
        _compare(node, "bias", node.weights["bias"].shape, [out_c])
    strides = node.attrs.get("strides", [1, 1])
    dilation = node.attrs.get("dilation", [1, 1])
    extra = node.attrs.get("output_padding", [0, 0])
    for axis in range(2):
        if extra[axis] >= max(strides[axis], dilation[axis]):
            raise _fail(node, f"output_padding {extra} must be smaller than the stride "
                              f"{strides} or the dilation {dilation} on each axis")
    top, left, bottom, right = _pads(node.attrs.get("padding", [0, 0, 0, 0]))

    def size(dim: Dim, k: int, axis: int, before: int, after: int) -> Dim | None:
        if not _is_int(dim):
            return None
        return ((dim - 1) * strides[axis] - before - after + dilation[axis] * (k - 1)
                + extra[axis] + 1)

    expected = [n, out_c, size(h, kh, 0, top, bottom), size(w, kw, 1, left, right)]
    _compare(node, "output", node.output.shape, expected)


def _concat(graph: MSCGraph, node: MSCNode) -> None:
    items = _items(graph, node)
    axis = _attr_int(node, "axis", 0, none_ok=True)
    if not items:
        raise _fail(node, "joins no tensors")
    ranks = {len(t.shape) for t in items}
    if len(ranks) != 1:
        raise _fail(node, f"joins tensors of different ranks {[list(t.shape) for t in items]}")
    rank = ranks.pop()
    if axis is None:  # Relax: 1-D tensors joined end to end
        if rank != 1:
            raise _fail(node, "axis null joins 1-D tensors, got "
                              f"{[list(t.shape) for t in items]}")
        axis = 0
    axis = _axis(node, axis, rank)
    expected: list[Dim | None] = []
    for i in range(rank):
        dims = [t.shape[i] for t in items]
        if i == axis:
            expected.append(sum(dims) if all(_is_int(d) for d in dims) else None)
        else:
            expected.append(_merge(node, dims, f"inputs {[list(t.shape) for t in items]} at "
                                               f"axis {i}"))
    _compare(node, "output", node.output.shape, expected)
    _same_dtype(node, items[0])


def _stack(graph: MSCGraph, node: MSCNode) -> None:
    items = _items(graph, node)
    if not items:
        raise _fail(node, "stacks no tensors")
    shapes = [t.shape for t in items]
    if len({len(s) for s in shapes}) != 1:
        raise _fail(node, f"stacks tensors of different ranks {[list(s) for s in shapes]}")
    rank = len(shapes[0])
    axis = _axis(node, _attr_int(node, "axis", 0, none_ok=True) or 0, rank + 1)
    merged = [_merge(node, [s[i] for s in shapes], f"inputs {[list(s) for s in shapes]}")
              for i in range(rank)]
    _compare(node, "output", node.output.shape, [*merged[:axis], len(items), *merged[axis:]])
    _same_dtype(node, items[0])


def _reshape(graph: MSCGraph, node: MSCNode) -> None:
    """Relax reshape: the target's -1 (at most one) is inferred from the element count,
    and a 0 copies the input's dim at that axis (Relax's reading, which ``to_relax``
    hands on; graphs translated from Relax hold the resolved dims)."""
    source = graph.node_inputs(node)[0]
    target = _shape_arg(node)
    if target is None:
        return
    if sum(1 for d in target if d == -1) > 1 or any(_is_int(d) and d < -1 for d in target):
        raise _fail(node, f"reshape target {target} may hold one -1 and otherwise sizes >= 0")
    dims: list[Dim | None] = []
    for axis, dim in enumerate(target):
        if dim == 0:
            if axis >= len(source.shape):
                raise _fail(node, f"reshape target {target}: the 0 at axis {axis} copies an "
                                  f"axis the input {list(source.shape)} does not have")
            dims.append(source.shape[axis])
        else:
            dims.append(dim)
    total = _product(source.shape)
    rest = _product([d for d in dims if d != -1])
    if -1 in dims:
        index = dims.index(-1)
        if total is not None and rest is not None:
            if rest == 0 or total % rest:
                raise _fail(node, f"cannot reshape {list(source.shape)} ({total} elements) "
                                  f"to {target}")
            dims[index] = total // rest
        else:
            dims[index] = None
    elif total is not None and rest is not None and total != rest:
        raise _fail(node, f"cannot reshape {list(source.shape)} ({total} elements) to "
                          f"{target} ({rest} elements)")
    _compare(node, "output", node.output.shape, dims)
    _same_dtype(node, source)


def _flatten(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    _compare(node, "output", node.output.shape, [_product(source.shape)])
    _same_dtype(node, source)


def _permute_dims(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    rank = len(source.shape)
    axes = _attr_ints(node, "axes")
    order = list(range(rank))[::-1] if axes is None else _axes(node, axes, rank)
    if len(order) != rank:
        raise _fail(node, f"axes {axes} do not permute the {rank} axes of its input")
    _compare(node, "output", node.output.shape, [source.shape[a] for a in order])
    _same_dtype(node, source)


def _squeeze(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    shape = source.shape
    axis = _attr_ints(node, "axis")
    if axis is None:
        if not all(_is_int(d) for d in shape):
            return  # which symbolic dims are 1 is known only at run time
        drop = [i for i, d in enumerate(shape) if d == 1]
    else:
        drop = _axes(node, axis, len(shape), "axis")
        wide = [i for i in drop if _is_int(shape[i]) and shape[i] != 1]
        if wide:
            raise _fail(node, f"squeezes axes {wide} of {list(shape)}, which are not 1")
    _compare(node, "output", node.output.shape,
             [d for i, d in enumerate(shape) if i not in drop])
    _same_dtype(node, source)


def _expand_dims(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    axis = _attr_ints(node, "axis", none_ok=False) or []
    rank = len(source.shape) + len(axis)
    new = set(_axes(node, axis, rank, "axis"))
    rest = iter(source.shape)
    _compare(node, "output", node.output.shape,
             [1 if i in new else next(rest) for i in range(rank)])
    _same_dtype(node, source)


def _strided_slice(graph: MSCGraph, node: MSCNode) -> None:
    """Relax strided_slice, clamped like Python slicing (what every codegen does)."""
    source = graph.node_inputs(node)[0]
    if len(node.args) < 4:
        return
    axes, begin, end = (_prims(node, node.args[i], what) for i, what in
                        ((1, "axes"), (2, "begin"), (3, "end")))
    strides = _prims(node, node.args[4], "strides") if len(node.args) > 4 else [1] * len(axes)
    if not len(axes) == len(begin) == len(end) == len(strides):
        raise _fail(node, f"axes {axes}, begin {begin}, end {end} and strides {strides} "
                          "differ in length")
    if not all(_is_int(a) for a in axes):
        raise _fail(node, f"axes {axes} must be integers")
    shape: list[Dim | None] = list(source.shape)
    for axis, b, e, s in zip(_axes(node, list(axes), len(shape)), begin, end, strides,
                             strict=True):
        if s == 0:
            raise _fail(node, f"strides {strides} hold a 0")
        dim = source.shape[axis]
        known = _is_int(dim) and _is_int(b) and _is_int(e) and _is_int(s)
        shape[axis] = len(range(*slice(b, e, s).indices(dim))) if known else None
    _compare(node, "output", node.output.shape, shape)
    _same_dtype(node, source)


def _reduce(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    rank = len(source.shape)
    axis = _attr_ints(node, "axis")
    keep = _attr_bool(node, "keepdims", False)
    reduced = set(range(rank)) if axis is None else set(_axes(node, axis, rank, "axis"))
    expected = [1 if i in reduced else d for i, d in enumerate(source.shape)
                if keep or i not in reduced]
    _compare(node, "output", node.output.shape, expected)
    _same_dtype(node, source)


def _matmul(graph: MSCGraph, node: MSCNode) -> None:
    """Relax matmul: numpy's, with 1-D operands promoted and batch dims broadcast."""
    operands = _tensor_args(graph, node)
    if len(operands) != 2:
        return
    a, b = (list(t.shape) for t in operands)
    if not a or not b:
        raise _fail(node, f"multiplies {a} by {b}; matmul needs operands of rank >= 1")
    a2 = [1, *a] if len(a) == 1 else a
    b2 = [*b, 1] if len(b) == 1 else b
    if _is_int(a2[-1]) and _is_int(b2[-2]) and a2[-1] != b2[-2]:
        raise _fail(node, f"multiplies {a} by {b}: the reduction sizes {a2[-1]} and "
                          f"{b2[-2]} differ")
    batch = _broadcast(node, [tuple(a2[:-2]), tuple(b2[:-2])])
    expected = [*batch, *([a2[-2]] if len(a) > 1 else []), *([b2[-1]] if len(b) > 1 else [])]
    _compare(node, "output", node.output.shape, expected)
    out_dtype = node.attrs.get("out_dtype")
    want = operands[0].dtype if out_dtype in (None, "", "void") else (
        out_dtype["dtype"] if isinstance(out_dtype, dict) else out_dtype)
    if node.output.dtype != want:
        raise _fail(node, f"output dtype is {node.output.dtype!r}, expected {want!r}")


def _binary(graph: MSCGraph, node: MSCNode) -> None:
    operands = _tensor_args(graph, node)
    if len(operands) != 2:
        return
    _compare(node, "output", node.output.shape,
             _broadcast(node, [operands[0].shape, operands[1].shape]))


def _broadcast_to(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    target = _shape_arg(node)
    if target is None:
        return
    if len(target) < len(source.shape):
        raise _fail(node, f"cannot broadcast {list(source.shape)} to the lower rank {target}")
    for have, want in zip(source.shape[::-1], target[::-1], strict=False):
        if _is_int(have) and _is_int(want) and have not in (1, want):
            raise _fail(node, f"cannot broadcast {list(source.shape)} to {target}")
    _compare(node, "output", node.output.shape, target)
    _same_dtype(node, source)


def _take(graph: MSCGraph, node: MSCNode) -> None:
    operands = _tensor_args(graph, node)
    if len(operands) != 2:
        return
    data, indices = operands
    axis = _attr_int(node, "axis", None, none_ok=True)
    if axis is None:
        expected = list(indices.shape)
    else:
        axis = _axis(node, axis, len(data.shape))
        expected = [*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]]
    _compare(node, "output", node.output.shape, expected)
    _same_dtype(node, data)


def _pad(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    widths = _attr_ints(node, "pad_width", none_ok=False) or []
    if len(widths) != 2 * len(source.shape):
        raise _fail(node, f"pad_width {widths} needs (before, after) for each of the "
                          f"{len(source.shape)} axes")
    if not isinstance(node.attrs.get("pad_mode", "constant"), str):
        raise _fail(node, f"attribute 'pad_mode' is {node.attrs['pad_mode']!r}, expected a "
                          "string")
    expected = [d + widths[2 * i] + widths[2 * i + 1] if _is_int(d)
                else (d if widths[2 * i] == widths[2 * i + 1] == 0 else None)
                for i, d in enumerate(source.shape)]
    _compare(node, "output", node.output.shape, expected)
    _same_dtype(node, source)


def _resize2d(graph: MSCGraph, node: MSCNode) -> None:
    """image.resize2d: the sizes argument gives H and W (the frontends turn ONNX's
    scales and torch's scale factors into sizes)."""
    for key in ("method", "coordinate_transformation_mode", "rounding_method"):
        if key in node.attrs and not isinstance(node.attrs[key], str):
            raise _fail(node, f"attribute {key!r} is {node.attrs[key]!r}, expected a string")
    if node.attrs.get("layout", "NCHW") != "NCHW":
        return
    n, c, _, _ = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    size = _shape_arg(node)
    if size is None:
        return
    if len(size) != 2 or any(_is_int(d) and d < 1 for d in size):
        raise _fail(node, f"sizes {size} must be 2 sizes >= 1 (height, width)")
    _compare(node, "output", node.output.shape, [n, c, *size])


def _adaptive_pool(graph: MSCGraph, node: MSCNode) -> None:
    if node.attrs.get("layout", "NCHW") != "NCHW":
        return
    n, c, h, w = _nchw(node, graph.node_inputs(node)[0].shape, "its input")
    size = _attr_ints(node, "output_size")
    if size is None:
        size = [h, w]
    elif len(size) == 1:
        size = size * 2
    if len(size) != 2 or any(d < 1 for d in size if _is_int(d)):
        raise _fail(node, f"output_size {size} must be 1 or 2 sizes >= 1")
    _compare(node, "output", node.output.shape, [n, c, *size])


def _pool3d(graph: MSCGraph, node: MSCNode) -> None:
    if node.attrs.get("layout", "NCDHW") != "NCDHW":
        return
    shape = graph.node_inputs(node)[0].shape
    if len(shape) != 5:
        raise _fail(node, f"its input is {list(shape)}, expected a 5-D NCDHW tensor")
    kernel = node.attrs.get("pool_size", [1, 1, 1])
    strides = node.attrs.get("strides", [1, 1, 1])
    dilation = node.attrs.get("dilation", [1, 1, 1])
    pads = node.attrs.get("padding", [0, 0, 0])
    pads = pads * (6 // len(pads))
    ceil = bool(node.attrs.get("ceil_mode", False))
    expected = [shape[0], shape[1], *(
        _window(shape[2 + i], kernel[i], strides[i], dilation[i], pads[i], pads[3 + i], ceil)
        for i in range(3))]
    _compare(node, "output", node.output.shape, expected)


def _softmax(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    _axis(node, _attr_int(node, "axis", -1), max(len(source.shape), 1))
    _same_shape(graph, node)


def _astype(graph: MSCGraph, node: MSCNode) -> None:
    source = graph.node_inputs(node)[0]
    _compare(node, "output", node.output.shape, list(source.shape))
    dtype = node.attrs.get("dtype")
    dtype = dtype.get("dtype") if isinstance(dtype, dict) else dtype
    if not isinstance(dtype, str):
        raise _fail(node, f"attribute 'dtype' is {node.attrs.get('dtype')!r}, expected a "
                          "dtype name")
    if node.output.dtype != dtype:
        raise _fail(node, f"output dtype is {node.output.dtype!r}, but the op casts to "
                          f"{dtype!r}")


def _norm(graph: MSCGraph, node: MSCNode) -> None:
    """layer_norm / batch_norm: the output is the input's shape; per-channel weights."""
    source = graph.node_inputs(node)[0]
    rank = len(source.shape)
    if node.optype == "nn.layer_norm":
        axes = _axes(node, _attr_ints(node, "axes", none_ok=False) or [], rank)
        for role in ("gamma", "beta"):
            if role in node.weights:
                _compare(node, role, node.weights[role].shape, [source.shape[a] for a in axes])
    else:
        axis = _axis(node, _attr_int(node, "axis", 1), rank)
        for role in ("gamma", "beta", "mean", "var"):
            if role in node.weights:
                _compare(node, role, node.weights[role].shape, [source.shape[axis]])
    _compare(node, "output", node.output.shape, list(source.shape))


SHAPE_RULES: Mapping[str, Callable[[MSCGraph, MSCNode], None]] = {
    **dict.fromkeys(CONV, _conv), **dict.fromkeys(POOL, _pool),
    **dict.fromkeys(LINEAR, _linear), **dict.fromkeys(SAME_SHAPE, _same_shape),
    **dict.fromkeys(CONV_TRANSPOSE, _conv_transpose), **dict.fromkeys(REDUCE, _reduce),
    **dict.fromkeys(ELEMENTWISE_BINARY, _binary), **dict.fromkeys(NORM, _norm),
    "concat": _concat, "stack": _stack, "reshape": _reshape, "flatten": _flatten,
    "permute_dims": _permute_dims, "squeeze": _squeeze, "expand_dims": _expand_dims,
    "strided_slice": _strided_slice, "matmul": _matmul, "broadcast_to": _broadcast_to,
    "take": _take, "nn.pad": _pad, "image.resize2d": _resize2d,
    "nn.adaptive_avg_pool2d": _adaptive_pool, "nn.avg_pool3d": _pool3d,
    "nn.softmax": _softmax, "nn.log_softmax": _softmax, "astype": _astype,
}
"""Optype -> the rule checking its node: every optype a graph file may name has one."""


def check_graph(graph: MSCGraph) -> None:
    """Raise GraphError at the first node whose attributes have the wrong type or whose
    declared output (or bias) shape is not what its op computes from its inputs."""
    for node in graph.nodes:
        if node.optype == "input":
            continue
        check_attrs(node)
        rule = SHAPE_RULES.get(node.optype)
        if rule is not None and node.inputs:
            rule(graph, node)
