"""MSCGraph: the compiler's own graph IR.

A DAG of nodes over named tensors. Nodes are named after the source model's module
path (``layer1.0.conv1``) so that tool strategies and search records stay readable
and stable from run to run; weights are named ``<node>.<role>`` and keep the
framework's own name (the torch ``state_dict`` key) as an alias.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mscgym.compiler.dims import Dim, eval_dim
from mscgym.compiler.errors import GraphError


@dataclass
class MSCTensor:
    """A typed tensor: activations between nodes, or a node's weight."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    layout: str = ""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def concrete_shape(self, symbols: dict[str, int] | None = None) -> tuple[int, ...]:
        """The shape with symbolic dims resolved from ``symbols`` (unknown names = 1)."""
        return tuple(int(eval_dim(d, lambda n: (symbols or {}).get(n, 1))) for d in self.shape)

    def numel(self, symbols: dict[str, int] | None = None) -> int:
        """Element count, resolving symbolic dims from ``symbols`` (unknown names = 1)."""
        total = 1
        for dim in self.concrete_shape(symbols):
            total *= dim
        return total

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "layout": self.layout}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MSCTensor:
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("layout", ""))

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        layout = f" {self.layout}" if self.layout else ""
        return f"{self.name}<{dims}|{self.dtype}{layout}>"


@dataclass
class MSCNode:
    """One layer of the graph (MSC called these joints).

    ``args`` says how the node's call is assembled from its ``inputs`` (by index),
    its ``weights`` (by role) and literal values (shapes, scalars), so that a node
    can be turned back into exactly the Relax call it came from; ``attrs_type`` names
    the Relax attrs class of ``attrs`` (TVM does not register one for every op).
    """

    name: str
    optype: str
    inputs: list[str]
    outputs: list[MSCTensor]
    attrs: dict[str, Any] = field(default_factory=dict)
    args: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, MSCTensor] = field(default_factory=dict)
    weight_alias: dict[str, str] = field(default_factory=dict)
    attrs_type: str = ""

    @property
    def scope(self) -> str:
        """The module path that contains this node (``layer1.0`` for ``layer1.0.conv1``)."""
        return self.name.rsplit(".", 1)[0] if "." in self.name else ""

    @property
    def output(self) -> MSCTensor:
        return self.outputs[0]

    def weight_name(self, role: str) -> str:
        return self.weights[role].name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optype": self.optype,
            "inputs": list(self.inputs),
            "outputs": [t.to_json() for t in self.outputs],
            "attrs": copy.deepcopy(self.attrs),
            "args": copy.deepcopy(self.args),
            "weights": {role: t.to_json() for role, t in self.weights.items()},
            "weight_alias": dict(self.weight_alias),
            "attrs_type": self.attrs_type,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MSCNode:
        return cls(
            name=data["name"],
            optype=data["optype"],
            inputs=list(data["inputs"]),
            outputs=[MSCTensor.from_json(t) for t in data["outputs"]],
            attrs=dict(data.get("attrs", {})),
            args=list(data.get("args", [])),
            weights={r: MSCTensor.from_json(t) for r, t in data.get("weights", {}).items()},
            weight_alias=dict(data.get("weight_alias", {})),
            attrs_type=data.get("attrs_type", ""),
        )

    def __str__(self) -> str:
        outs = ", ".join(str(t) for t in self.outputs)
        ins = ", ".join(self.inputs)
        text = f"{self.name} [{self.optype}]: ({ins}) -> {outs}"
        if self.weights:
            text += " weights{" + ", ".join(f"{r}: {t}" for r, t in self.weights.items()) + "}"
        if self.attrs:
            text += " attrs{" + ", ".join(f"{k}={v}" for k, v in self.attrs.items()) + "}"
        return text


class MSCGraph:
    """A named DAG of :class:`MSCNode` in topological order.

    ``func_attrs`` carries what the entry function needs beyond its body (the number
    of data inputs, bounds of symbolic dims) and ``return_tuple`` whether it returns
    a tuple, so that the Relax function can be rebuilt exactly.
    """

    def __init__(
        self,
        name: str,
        nodes: list[MSCNode],
        input_names: list[str],
        output_names: list[str],
        func_attrs: dict[str, Any] | None = None,
        return_tuple: bool = True,
    ) -> None:
        self.name = name
        self.nodes = list(nodes)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.func_attrs = dict(func_attrs or {})
        self.return_tuple = return_tuple
        self._reindex()

    def _reindex(self) -> None:
        self._node_by_name: dict[str, MSCNode] = {}
        self._producer: dict[str, MSCNode] = {}
        self._consumers: dict[str, list[MSCNode]] = {}
        for node in self.nodes:
            if node.name in self._node_by_name:
                raise GraphError(f"graph {self.name!r}: duplicate node name {node.name!r}")
            self._node_by_name[node.name] = node
            for tensor in node.outputs:
                if tensor.name in self._producer:
                    raise GraphError(f"graph {self.name!r}: tensor {tensor.name!r} is produced "
                                     f"twice ({self._producer[tensor.name].name}, {node.name})")
                self._producer[tensor.name] = node
        for node in self.nodes:
            for ref in node.inputs:
                if ref not in self._producer:
                    raise GraphError(f"graph {self.name!r}: node {node.name!r} reads tensor "
                                     f"{ref!r}, which no earlier node produces")
                self._consumers.setdefault(ref, []).append(node)
        for ref in self.input_names + self.output_names:
            if ref not in self._producer:
                raise GraphError(f"graph {self.name!r}: graph input/output {ref!r} is not a tensor "
                                 "of the graph")

    # -- queries -------------------------------------------------------------------
    def __iter__(self) -> Iterator[MSCNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._node_by_name

    def find_node(self, name: str) -> MSCNode:
        try:
            return self._node_by_name[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no node {name!r}") from None

    def find_tensor(self, name: str) -> MSCTensor:
        node = self.find_producer(name)
        return next(t for t in node.outputs if t.name == name)

    def find_producer(self, tensor_name: str) -> MSCNode:
        try:
            return self._producer[tensor_name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no tensor {tensor_name!r}") from None

    def find_consumers(self, tensor_name: str) -> list[MSCNode]:
        return list(self._consumers.get(tensor_name, []))

    def get_inputs(self) -> list[MSCTensor]:
        return [self.find_tensor(n) for n in self.input_names]

    def get_outputs(self) -> list[MSCTensor]:
        return [self.find_tensor(n) for n in self.output_names]

    def node_inputs(self, node: MSCNode) -> list[MSCTensor]:
        return [self.find_tensor(n) for n in node.inputs]

    def parents(self, node: MSCNode) -> list[MSCNode]:
        return [self.find_producer(n) for n in node.inputs]

    def children(self, node: MSCNode) -> list[MSCNode]:
        seen: dict[str, MSCNode] = {}
        for tensor in node.outputs:
            for child in self.find_consumers(tensor.name):
                seen.setdefault(child.name, child)
        return list(seen.values())

    def weight_nodes(self) -> list[MSCNode]:
        return [n for n in self.nodes if n.weights]

    def weight_tensors(self) -> dict[str, MSCTensor]:
        return {t.name: t for n in self.nodes for t in n.weights.values()}

    def topological_order(self) -> list[MSCNode]:
        """Nodes ordered so that every producer precedes its consumers (Kahn, stable)."""
        indegree = {n.name: len({p.name for p in self.parents(n)}) for n in self.nodes}
        ready = [n for n in self.nodes if indegree[n.name] == 0]
        order: list[MSCNode] = []
        while ready:
            node = ready.pop(0)
            order.append(node)
            for child in self.children(node):
                indegree[child.name] -= 1
                if indegree[child.name] == 0:
                    ready.append(child)
        if len(order) != len(self.nodes):
            raise GraphError(f"graph {self.name!r} has a cycle")
        return order

    # -- summaries -----------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        """A small, comparable summary: inputs, outputs, node and op-type counts."""
        optypes = Counter(n.optype for n in self.nodes if n.optype != "input")
        return {
            "name": self.name,
            "inputs": [t.to_json() for t in self.get_inputs()],
            "outputs": [t.to_json() for t in self.get_outputs()],
            "nodes": sum(optypes.values()),
            "weights": sum(len(n.weights) for n in self.nodes),
            "optypes": dict(sorted(optypes.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": list(self.input_names),
            "outputs": list(self.output_names),
            "func_attrs": copy.deepcopy(self.func_attrs),
            "return_tuple": self.return_tuple,
            "nodes": [n.to_json() for n in self.nodes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MSCGraph:
        return cls(
            name=data["name"],
            nodes=[MSCNode.from_json(n) for n in data["nodes"]],
            input_names=data["inputs"],
            output_names=data["outputs"],
            func_attrs=data.get("func_attrs", {}),
            return_tuple=data.get("return_tuple", True),
        )

    def clone(self) -> MSCGraph:
        return MSCGraph.from_json(self.to_json())

    def with_outputs(self, tensors: Sequence[str]) -> MSCGraph:
        """A copy returning, after the graph's outputs, the named tensors (as a tuple).

        How tools watch intermediate tensors: the runtime manager builds it so collectors
        and quantizer calibration see them, the distiller to match student and teacher
        features. No tensors: the graph itself. An unknown name is a GraphError.
        """
        if not tensors:
            return self
        for name in tensors:
            self.find_tensor(name)
        extended = self.clone()
        extended.output_names = list(self.output_names) + list(tensors)
        extended.return_tuple = True
        return extended

    def export(self, path: str | os.PathLike[str], params: Mapping[str, Any] | None = None) -> None:
        """Write the graph as versioned JSON (plus ``params`` as safetensors beside it).

        See :mod:`mscgym.compiler.serialize`; ``load_graph`` reads the files back.
        """
        from mscgym.compiler.serialize import export_graph  # serialize imports this module

        export_graph(self, path, params)

    def visualize(self, path: str | os.PathLike[str]) -> None:
        """Write a drawing of the graph: ``.prototxt`` (opens in Netron) or ``.dot`` (Graphviz)."""
        from mscgym.compiler.visualize import write_visualization  # imports this module

        write_visualization(self, path)

    def __str__(self) -> str:
        head = (f"graph {self.name}({', '.join(str(t) for t in self.get_inputs())}) -> "
                f"({', '.join(self.output_names)})")
        body = [f"  {node}" for node in self.nodes if node.optype != "input"]
        return "\n".join([head, *body])

    def __repr__(self) -> str:
        return f"MSCGraph(name={self.name!r}, nodes={len(self.nodes)})"
