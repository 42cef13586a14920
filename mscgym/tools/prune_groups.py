"""Channel dependency analysis for structured pruning.

Removing output channel ``c`` of a conv or linear layer is only valid if every tensor
those channels flow into loses the same slice: the bias, a following batch norm or
per-channel constant, a depthwise conv's filters, and the input channels of the next
conv or linear (through flatten/reshape, where channel ``c`` becomes a block of
columns). Residual adds tie the channels of both operands together, so their
producers must keep one shared channel set: they form one *channel group*.

:func:`analyze` walks the graph once in topological order and tags every activation
tensor with where its channel axis comes from (a list of :class:`Segment`, several
after a concat). Channels that reach a graph output or an op the analysis does not
understand (attention reshapes, matmul of activations, layer norm over channels)
are *blocked*: their group is kept whole, so the pruned graph stays valid.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mscgym.compiler.dims import Dim, eval_dim
from mscgym.compiler.graph import MSCGraph, MSCNode
from mscgym.compiler.ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, HOST_OP

CONV_OPS = ("msc.conv2d_bias", "nn.conv2d")
CONV_TRANSPOSE_OPS = ("msc.conv2d_transpose_bias", "nn.conv2d_transpose")
LINEAR_OPS = ("msc.linear", "msc.linear_bias")
PASS_THROUGH = (*ELEMENTWISE_UNARY, "clip", "astype")
POOLS = ("nn.max_pool2d", "nn.avg_pool2d", "nn.adaptive_avg_pool2d")
REDUCES = ("mean", "sum", "max", "min")
SHAPE_OPS = ("reshape", "squeeze", "expand_dims")
SOFTMAX = ("nn.softmax", "nn.log_softmax")


@dataclass(frozen=True)
class Segment:
    """A run of channels along a tensor axis.

    ``group`` names the channel group they belong to (None: never pruned); each
    channel covers ``inner`` consecutive elements of the axis (the H*W columns one
    channel becomes after flattening (N, C, H, W) to (N, C*H*W)).
    """

    group: str | None
    channels: int
    inner: int = 1


@dataclass(frozen=True)
class ChannelSlice:
    """Axis ``axis`` of tensor ``tensor`` (weight or activation) is laid out as ``segments``."""

    tensor: str
    axis: int
    segments: tuple[Segment, ...]

    def indices(self, keep: dict[str, np.ndarray]) -> np.ndarray:
        """Positions along the axis that survive when each group keeps ``keep[group]``."""
        parts, offset = [], 0
        for seg in self.segments:
            chans = keep.get(seg.group) if seg.group is not None else None
            if chans is None:
                chans = np.arange(seg.channels)
            cols = (np.asarray(chans, dtype=np.int64)[:, None] * seg.inner
                    + np.arange(seg.inner)[None, :])
            parts.append(cols.reshape(-1) + offset)
            offset += seg.channels * seg.inner
        return np.concatenate(parts)

    def size(self, counts: dict[str, int]) -> int:
        """Length of the axis when each group keeps ``counts[group]`` channels."""
        return sum((counts.get(s.group, s.channels) if s.group is not None else s.channels)
                   * s.inner for s in self.segments)


@dataclass
class ChannelGroup:
    """Layers whose output channels are pruned together (one kept set for all)."""

    name: str
    members: list[str]
    channels: int
    blocked: str | None = None

    @property
    def prunable(self) -> bool:
        return self.blocked is None and self.channels > 1


@dataclass
class ChannelAnalysis:
    """Channel groups of a graph and every tensor axis that pruning them resizes."""

    groups: list[ChannelGroup]
    slices: list[ChannelSlice]
    depthwise: list[str] = field(default_factory=list)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of_layer(self) -> dict[str, ChannelGroup]:
        """Each producer layer -> its group."""
        return {m: g for g in self.groups for m in g.members}

    def shapes(self, graph: MSCGraph, counts: dict[str, int]) -> dict[str, tuple[Dim, ...]]:
        """New shapes of the resized tensors when each group keeps ``counts[group]``."""
        declared = {t.name: t.shape for n in graph.nodes for t in (*n.outputs,
                                                                   *n.weights.values())}
        shapes: dict[str, list[Dim]] = {}
        for item in self.slices:
            shape = shapes.setdefault(item.tensor, list(declared[item.tensor]))
            shape[item.axis] = item.size(counts)
        return {name: tuple(shape) for name, shape in shapes.items()}


# --------------------------------------------------------------------------------------
# the walk
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Seg:
    space: int | None
    channels: int
    inner: int = 1


@dataclass(frozen=True)
class _Info:
    """Where the channel axis of an activation tensor comes from."""

    axis: int
    segs: tuple[_Seg, ...]

    @property
    def length(self) -> int:
        return sum(s.channels * s.inner for s in self.segs)

    def same_layout(self, other: _Info) -> bool:
        return [(s.channels, s.inner) for s in self.segs] == [
            (s.channels, s.inner) for s in other.segs]


class _Tracer:
    def __init__(self, graph: MSCGraph) -> None:
        self.graph = graph
        self.parent: list[int] = []
        self.channels: list[int] = []
        self.members: dict[int, list[str]] = {}
        self.blocked: dict[int, str] = {}
        self.info: dict[str, _Info | None] = {}
        self.raw: list[tuple[str, int, tuple[_Seg, ...]]] = []
        self.depthwise: list[str] = []

    # -- union-find over channel spaces -----------------------------------------------
    def new_space(self, producer: str, channels: int) -> int:
        space = len(self.parent)
        self.parent.append(space)
        self.channels.append(channels)
        self.members[space] = [producer]
        return space

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        ra, rb = sorted((self.find(a), self.find(b)))
        if ra == rb:
            return
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        if rb in self.blocked:
            self.blocked.setdefault(ra, self.blocked.pop(rb))

    def block(self, info: _Info | None, reason: str) -> None:
        if info is None:
            return
        for seg in info.segs:
            if seg.space is not None:
                self.blocked.setdefault(self.find(seg.space), reason)

    def unify(self, a: _Info, b: _Info, reason: str) -> None:
        """Tie two same-layout channel axes together (residual add, concat of peers)."""
        for sa, sb in zip(a.segs, b.segs, strict=True):
            if sa.space is not None and sb.space is not None:
                self.union(sa.space, sb.space)
            else:
                self.block(_Info(a.axis, (sa, sb)), reason)

    def record(self, tensor: str, axis: int, segs: tuple[_Seg, ...]) -> None:
        self.raw.append((tensor, axis, segs))

    # -- walk -------------------------------------------------------------------------
    def run(self) -> ChannelAnalysis:
        for node in self.graph.nodes:
            outs = self.visit(node) if node.optype != "input" else None
            for tensor in node.outputs:
                self.info[tensor.name] = outs if len(node.outputs) == 1 else None
            if outs is not None and len(node.outputs) == 1:
                self.record(node.output.name, outs.axis, outs.segs)
            elif outs is not None:
                self.block(outs, f"multi-output node {node.name!r}")
        for name in self.graph.output_names:
            self.block(self.info.get(name), f"reaches graph output {name!r}")
        return self.finish()

    def finish(self) -> ChannelAnalysis:
        groups: dict[int, ChannelGroup] = {}
        for space in range(len(self.parent)):
            root = self.find(space)
            if root == space:
                members = self.members[root]
                groups[root] = ChannelGroup(members[0], list(members), self.channels[root],
                                            self.blocked.get(root))
        names = {space: groups[self.find(space)] for space in range(len(self.parent))}

        def convert(seg: _Seg) -> Segment:
            group = names[seg.space] if seg.space is not None else None
            live = group.name if group is not None and group.prunable else None
            return Segment(live, seg.channels, seg.inner)

        slices = []
        for tensor, axis, segs in self.raw:
            converted = tuple(convert(s) for s in segs)
            if any(s.group is not None for s in converted):
                slices.append(ChannelSlice(tensor, axis, converted))
        return ChannelAnalysis(list(groups.values()), slices, self.depthwise)

    def visit(self, node: MSCNode) -> _Info | None:
        optype = node.optype
        ins = [self.info.get(t) for t in node.inputs]
        if optype in (*CONV_OPS, *CONV_TRANSPOSE_OPS) and "weight" not in node.weights:
            for info in ins:  # a kernel the graph computes cannot lose channels
                self.block(info, f"consumed by {optype} {node.name!r}, whose kernel is computed")
            return None
        if optype in CONV_OPS:
            return self.conv(node, ins[0])
        if optype in CONV_TRANSPOSE_OPS:
            return self.conv_transpose(node, ins[0])
        if optype == "image.resize2d":  # resizes H and W of each channel alone
            return self.pool(node, ins[0])
        if optype == "nn.pad":
            return self.pad(node, ins[0])
        if optype in LINEAR_OPS:
            return self.linear(node, ins[0])
        if optype == "msc.batch_norm":
            return self.per_channel(node, ins[0], int(node.attrs.get("axis", 1)),
                                    ("gamma", "beta", "mean", "var"))
        if optype in PASS_THROUGH and not node.weights:
            return ins[0]
        if optype in ELEMENTWISE_BINARY:
            return self.binary(node)
        if optype in POOLS:
            return self.pool(node, ins[0])
        if optype in REDUCES:
            return self.reduce(node, ins[0])
        if optype in SHAPE_OPS:
            return self.reshape(node, ins[0])
        if optype == "permute_dims":
            return self.permute(node, ins[0])
        if optype in SOFTMAX:
            return self.softmax(node, ins[0])
        if optype == "concat":
            return self.concat(node)
        if optype == HOST_OP:
            return self.host(node, ins)
        for info in ins:
            self.block(info, f"consumed by {optype} node {node.name!r}, which pruning "
                             "does not follow")
        return None

    # -- layers -----------------------------------------------------------------------
    def conv(self, node: MSCNode, x: _Info | None) -> _Info | None:
        attrs = node.attrs
        weight = node.weights["weight"]
        out_ch, in_per_group = int(weight.shape[0]), int(weight.shape[1])
        groups = int(attrs.get("groups", 1))
        in_ch = self.graph.find_tensor(node.inputs[0]).shape[1]
        layouts_ok = (attrs.get("data_layout", "NCHW") == "NCHW"
                      and attrs.get("kernel_layout", "OIHW") == "OIHW"
                      and attrs.get("out_layout", "NCHW") in ("NCHW", ""))
        if not layouts_ok:
            self.block(x, f"conv {node.name!r} has a layout other than NCHW/OIHW")
            return None
        flat_input = x is not None and x.axis == 1 and all(s.inner == 1 for s in x.segs)
        if groups == 1:
            if x is not None:
                if flat_input:
                    self.record(weight.name, 1, x.segs)
                else:
                    self.block(x, f"reaches conv {node.name!r} on a non-channel axis")
            space = self.new_space(node.name, out_ch)
            segs = (_Seg(space, out_ch),)
            self.record(weight.name, 0, segs)
            if "bias" in node.weights:
                self.record(node.weights["bias"].name, 0, segs)
            return _Info(1, segs)
        if groups == in_ch == out_ch and in_per_group == 1:
            if x is None:
                return None
            if not flat_input:
                self.block(x, f"reaches depthwise conv {node.name!r} on a non-channel axis")
                return None
            self.record(weight.name, 0, x.segs)
            if "bias" in node.weights:
                self.record(node.weights["bias"].name, 0, x.segs)
            self.depthwise.append(node.name)
            return _Info(1, x.segs)
        self.block(x, f"consumed by grouped conv {node.name!r} (groups={groups})")
        return None

    def conv_transpose(self, node: MSCNode, x: _Info | None) -> _Info | None:
        """An ungrouped transposed conv: its IOHW kernel loses the input's pruned channels on
        axis 0; grouped ones keep their input channels whole."""
        attrs = node.attrs
        weight = node.weights["weight"]
        layouts_ok = (attrs.get("data_layout", "NCHW") == "NCHW"
                      and attrs.get("kernel_layout", "IOHW") == "IOHW"
                      and attrs.get("out_layout", "NCHW") in ("NCHW", ""))
        if not layouts_ok or int(attrs.get("groups", 1)) != 1:
            self.block(x, f"consumed by transposed conv {node.name!r} (grouped or not "
                          "NCHW/IOHW)")
            return None
        if x is not None:
            if x.axis == 1 and all(s.inner == 1 for s in x.segs):
                self.record(weight.name, 0, x.segs)
            else:
                self.block(x, f"reaches transposed conv {node.name!r} on a non-channel axis")
        # Its own output channels stay whole: the pruner ranks a layer's channels by the
        # kernel's leading axis, which here holds the input channels.
        out_ch = int(weight.shape[1])
        out = _Info(1, (_Seg(self.new_space(node.name, out_ch), out_ch),))
        self.block(out, f"output channels of transposed conv {node.name!r}")
        return out

    def host(self, node: MSCNode, ins: list[_Info | None]) -> _Info | None:
        """A call TVM runs between two regions of a partitioned model: channels pass
        when they lie on an axis it keeps apart and nothing else it reads is pruned."""
        x = ins[0] if ins else None
        if (x is not None and len(node.outputs) == 1 and x.axis in node.attrs["keeps"]
                and all(info is None for info in ins[1:])):
            return x
        for info in ins:
            self.block(info, f"host op {node.attrs['op']} {node.name!r} (run by TVM) "
                             f"{node.attrs['why']}")
        return None

    def pad(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        widths = [int(w) for w in node.attrs.get("pad_width", [])]
        if widths[2 * x.axis:2 * x.axis + 2] != [0, 0]:
            self.block(x, f"nn.pad {node.name!r} pads the channel axis")
            return None
        return x

    def linear(self, node: MSCNode, x: _Info | None) -> _Info:
        weight = node.weights["weight"]
        in_ndim = self.graph.find_tensor(node.inputs[0]).ndim
        if x is not None:
            if x.axis == in_ndim - 1:
                self.record(weight.name, 1, x.segs)
            else:
                self.block(x, f"reaches linear {node.name!r} on a non-feature axis")
        out_ch = int(weight.shape[0])
        space = self.new_space(node.name, out_ch)
        segs = (_Seg(space, out_ch),)
        self.record(weight.name, 0, segs)
        if "bias" in node.weights:
            self.record(node.weights["bias"].name, 0, segs)
        return _Info(node.output.ndim - 1, segs)

    def per_channel(self, node: MSCNode, x: _Info | None, axis: int,
                    roles: tuple[str, ...]) -> _Info | None:
        if x is None:
            return None
        ndim = self.graph.find_tensor(node.inputs[0]).ndim
        if axis % ndim != x.axis:
            self.block(x, f"{node.optype} {node.name!r} normalizes another axis")
            return None
        for role in roles:
            self.record(node.weights[role].name, 0, x.segs)
        return x

    def binary(self, node: MSCNode) -> _Info | None:
        out_ndim = node.output.ndim
        operands: list[tuple[_Info | None, tuple[Dim, ...], str | None]] = []
        for arg in node.args:
            if arg.get("kind") == "input":
                ref = node.inputs[arg["index"]]
                operands.append((self.info.get(ref), self.graph.find_tensor(ref).shape, None))
            elif arg.get("kind") == "weight":
                tensor = node.weights[arg["role"]]
                operands.append((None, tensor.shape, tensor.name))
        tracked = [(_Info(i.axis + out_ndim - len(shape), i.segs))
                   for i, shape, _ in operands if i is not None]
        if not tracked:
            return None
        first = tracked[0]
        reason = f"{node.optype} {node.name!r} combines it with channels that are not pruned"
        if any(t.axis != first.axis or not t.same_layout(first) for t in tracked[1:]):
            for info in tracked:
                self.block(info, f"{node.optype} {node.name!r} mixes channel layouts")
            return None
        for other in tracked[1:]:
            self.unify(first, other, reason)
        for info, shape, const in operands:
            if info is not None:
                continue
            axis = first.axis - (out_ndim - len(shape))
            if axis < 0 or shape[axis] == 1:
                continue
            if const is not None and shape[axis] == first.length:
                self.record(const, axis, first.segs)
                continue
            for tracked_info in tracked:
                self.block(tracked_info, reason)
            return None
        return first

    def pool(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        if node.attrs.get("layout", "NCHW") != "NCHW" or x.axis != 1:
            self.block(x, f"pool {node.name!r} with a layout other than NCHW")
            return None
        return x

    def reduce(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        ndim = self.graph.find_tensor(node.inputs[0]).ndim
        axes = node.attrs.get("axis")
        if axes is None:
            self.block(x, f"{node.optype} {node.name!r} reduces every axis")
            return None
        axes = sorted(int(a) % ndim for a in axes)
        if x.axis in axes:
            self.block(x, f"{node.optype} {node.name!r} reduces the channel axis")
            return None
        if node.attrs.get("keepdims", False):
            return x
        return _Info(x.axis - sum(a < x.axis for a in axes), x.segs)

    def reshape(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        src = self.graph.find_tensor(node.inputs[0]).shape
        mapped = _map_axis(src, node.output.shape, x.axis)
        if mapped is None:
            self.block(x, f"{node.optype} {node.name!r} splits or moves the channel axis")
            return None
        axis, factor = mapped
        return _Info(axis, tuple(_Seg(s.space, s.channels, s.inner * factor) for s in x.segs))

    def permute(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        ndim = node.output.ndim
        axes = node.attrs.get("axes")
        order = list(range(ndim))[::-1] if axes is None else [int(a) % ndim for a in axes]
        return _Info(order.index(x.axis), x.segs)

    def softmax(self, node: MSCNode, x: _Info | None) -> _Info | None:
        if x is None:
            return None
        if int(node.attrs.get("axis", -1)) % node.output.ndim == x.axis:
            self.block(x, f"{node.optype} {node.name!r} normalizes over the channel axis")
            return None
        return x

    def concat(self, node: MSCNode) -> _Info | None:
        ndim = node.output.ndim
        axis = int(node.attrs.get("axis", 0)) % ndim
        refs = [node.inputs[item["index"]] for arg in node.args if arg.get("kind") == "tuple"
                for item in arg["items"] if item.get("kind") == "input"]
        infos = [self.info.get(r) for r in refs]
        tracked = [i for i in infos if i is not None]
        if not tracked:
            return None
        if all(i is None or (i.axis == axis) for i in infos):
            segs: list[_Seg] = []
            for ref, info in zip(refs, infos, strict=True):
                if info is None:
                    segs.append(_Seg(None, int(self.graph.find_tensor(ref).shape[axis])))
                else:
                    segs.extend(info.segs)
            return _Info(axis, tuple(segs))
        first = tracked[0]
        reason = f"concat {node.name!r} joins it with tensors of another channel layout"
        if len(tracked) == len(infos) and all(
                i.axis == first.axis and i.same_layout(first) for i in tracked):
            for other in tracked[1:]:
                self.unify(first, other, reason)
            return first
        for info in tracked:
            self.block(info, reason)
        return None


# Two valuations of symbolic dims (each name gets a large value derived from its text):
# products of dims that agree on both are equal for every shape a graph meets.
_PROBES = (1_000_003, 2_000_029)


def _prefix(dims: tuple[Dim, ...]) -> tuple[int, ...]:
    """The product of ``dims`` under each probe valuation of the symbolic dims (names or
    expressions such as ``s0 * 8``), so that (N, 8) and (N * 8,) compare equal."""
    values = []
    for probe in _PROBES:
        product = 1
        for dim in dims:
            product *= eval_dim(dim, lambda name, p=probe: p + zlib.crc32(name.encode()) % 65_521)
        values.append(product)
    return tuple(values)


def _map_axis(src: tuple[Dim, ...], dst: tuple[Dim, ...], axis: int) -> tuple[int, int] | None:
    """Where axis ``axis`` of ``src`` lands in ``dst`` after a reshape, and the factor
    each element along it becomes (H*W for (N, C, H, W) -> (N, C*H*W)); None when the
    reshape splits the axis or mixes it with the dims before it."""
    head = _prefix(src[:axis])
    for out_axis in range(len(dst)):
        if _prefix(dst[:out_axis]) != head or not isinstance(dst[out_axis], int):
            continue
        size = 1
        for end in range(axis, len(src)):
            dim = src[end]
            if not isinstance(dim, int):
                break
            size *= dim
            if size == dst[out_axis]:
                inner = size // int(src[axis])
                return out_axis, inner
            if size > dst[out_axis]:
                break
    return None


def analyze(graph: MSCGraph) -> ChannelAnalysis:
    """The channel groups of ``graph`` and the tensor axes pruning each one resizes."""
    return _Tracer(graph).run()


def describe(analysis: ChannelAnalysis) -> list[dict[str, Any]]:
    """Groups as JSON (for reports): name, members, channels, and why when blocked."""
    return [{"name": g.name, "layers": list(g.members), "channels": g.channels,
             "prunable": g.prunable, **({"blocked": g.blocked} if g.blocked else {})}
            for g in analysis.groups]
