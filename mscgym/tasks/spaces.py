"""Search spaces: named dimensions with finite choice lists, and plans over them.

A plan maps each dimension name (``quantize:conv1``, ``prune:layer1.0.conv1``,
``distill:temperature``) to one of its choices. Choices are plain JSON values so a
plan is readable in a record and replayable without this code's internals; agents see
the same space as index vectors (what Gymnasium's MultiDiscrete and Optuna expect).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mscgym.compiler.errors import MSCError

Plan = dict[str, Any]

QUANT_CHOICES: tuple[str, ...] = (
    "float",
    "uint8a_channel_minmax",
    "int8_channel_minmax",
    "int8_tensor_minmax",
    "int8_channel_percentile",
    "int8_channel_entropy",
    "int8_channel_mse",
    "int4w_channel_minmax",
)
"""Per-layer quantization choices: weights dtype/granularity and activation calibration.
``uint8a`` keeps int8 per-channel weights with asymmetric uint8 activations, the form
ONNX Runtime's x86 int8 kernels (u8 x s8 dot products) fuse most readily: in one
interleaved run on resnet18 (ONNX Runtime 1.32, its default threads) every layer
``uint8a`` ran 2.1x faster than float, every layer ``int8_channel_minmax`` 1.05x. The order
is the order the grid agent's uniform plans try (choice ``k`` everywhere, ``k = 1, 2, ...``),
so the fast forms come first and a small budget reaches them; a recorded space keeps its
own order. A layer's choice covers its activations
too: its data input, its output where the runtime needs it quantized, and the int8 ops
(residual adds, pooling, concat) between it and other int8 layers, which the Quantizer
plans from which layers are int8 (``mscgym.tools.quantizer.compose_plan``)."""


class PlanError(MSCError):
    """A plan names an unknown dimension, misses one, or picks a value not offered."""


def float_range(start: float, stop: float, step: float, digits: int = 6) -> tuple[float, ...]:
    """``start, start+step, ...`` up to and including ``stop``, never past it.

    Counting steps in integers (and rounding) avoids the float drift that made the
    original MSC gym's ranges overshoot their end (e.g. 0.30000000000000004 or an
    extra value beyond ``stop``).
    """
    if step == 0:
        raise MSCError("float_range step must not be 0")
    count = int(round((stop - start) / step, 9)) + 1
    if count < 1:
        raise MSCError(f"float_range({start}, {stop}, {step}) is empty")
    values = [round(start + i * step, digits) for i in range(count)]
    lo, hi = min(start, stop), max(start, stop)
    return tuple(v for v in values if lo - 1e-12 <= v <= hi + 1e-12)


DENSITY_CHOICES: tuple[float, ...] = float_range(1.0, 0.3, -0.1)
"""Per-group pruning densities, from dense (1.0) down to 0.3."""


@dataclass(frozen=True)
class Dimension:
    """One decision: a name, its choices, and the baseline (no-compression) choice."""

    name: str
    choices: tuple[Any, ...]
    baseline: Any

    def __post_init__(self) -> None:
        if not self.choices:
            raise MSCError(f"dimension {self.name!r} has no choices")
        if self.baseline not in self.choices:
            raise MSCError(f"dimension {self.name!r}: baseline {self.baseline!r} is not a choice")

    @property
    def tool(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.name.split(":", 1)[1]

    def index(self, value: Any) -> int:
        for i, choice in enumerate(self.choices):
            if choice == value:
                return i
        raise PlanError(f"plan value {value!r} for {self.name!r} is not one of "
                        f"{list(self.choices)}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "choices": list(self.choices), "baseline": self.baseline}


class SearchSpace:
    """An ordered list of dimensions; the order is the layer order of the model."""

    def __init__(self, dims: Iterable[Dimension]) -> None:
        self.dims = list(dims)
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise MSCError("search space has duplicate dimension names")
        self._by_name = {d.name: d for d in self.dims}

    def __len__(self) -> int:
        return len(self.dims)

    def __iter__(self):  # noqa: ANN204 - iterator of Dimension
        return iter(self.dims)

    def __getitem__(self, name: str) -> Dimension:
        return self._by_name[name]

    @property
    def sizes(self) -> list[int]:
        return [len(d.choices) for d in self.dims]

    @property
    def cardinality(self) -> int:
        total = 1
        for size in self.sizes:
            total *= size
        return total

    def baseline_plan(self) -> Plan:
        return {d.name: d.baseline for d in self.dims}

    def validate(self, plan: Mapping[str, Any]) -> Plan:
        """Return the plan in space order; unknown/missing names or values raise PlanError."""
        unknown = sorted(set(plan) - set(self._by_name))
        if unknown:
            raise PlanError(f"plan has unknown dimensions {unknown}")
        missing = [d.name for d in self.dims if d.name not in plan]
        if missing:
            raise PlanError(f"plan misses dimensions {missing}")
        for dim in self.dims:
            dim.index(plan[dim.name])
        return {d.name: plan[d.name] for d in self.dims}

    def complete(self, partial: Mapping[str, Any]) -> Plan:
        """Fill the dimensions ``partial`` leaves out with their baseline choices."""
        return self.validate({**self.baseline_plan(), **partial})

    def encode(self, plan: Mapping[str, Any]) -> list[int]:
        plan = self.validate(plan)
        return [d.index(plan[d.name]) for d in self.dims]

    def decode(self, indices: Sequence[int]) -> Plan:
        if len(indices) != len(self.dims):
            raise PlanError(f"expected {len(self.dims)} indices, got {len(indices)}")
        plan = {}
        for dim, index in zip(self.dims, indices, strict=True):
            i = int(index)
            if not 0 <= i < len(dim.choices):
                raise PlanError(f"index {i} out of range for {dim.name!r} "
                                f"({len(dim.choices)} choices)")
            plan[dim.name] = dim.choices[i]
        return plan

    def to_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.dims]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> SearchSpace:
        return cls(Dimension(d["name"], tuple(d["choices"]), d["baseline"]) for d in data)
