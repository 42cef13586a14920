"""Quantization parameters as every codegen consumes them.

The quantizer (in ``mscgym.tools``) decides them; each codegen applies them its own
way: fake-quant on torch, quantize/dequantize pairs in Relax and QDQ nodes in ONNX.
They live here, below the tools, so that codegen never imports a tool.

A layer (a node name) is quantized by quantizing its data input and its ``weight``;
a node absent from the plan stays float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mscgym.compiler.errors import MSCError

_DTYPES = {"int8": (8, True), "uint8": (8, False), "int4": (4, True), "uint4": (4, False)}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: ``q = clamp(round(x / scale) + zero_point)``.

    ``axis`` is None for per-tensor, else the channel axis of per-channel scales.
    """

    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise MSCError(f"quant dtype {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise MSCError("quant scale and zero_point must be non-empty and of equal length")
        if self.axis is None and len(self.scale) != 1:
            raise MSCError("per-tensor quantization takes exactly one scale")
        if any(not np.isfinite(s) or s <= 0 for s in self.scale):
            raise MSCError(f"quant scales must be finite and positive, got {self.scale[:4]}...")
        low, high = self.qrange
        if any(z < low or z > high for z in self.zero_point):
            raise MSCError(f"zero points must lie in [{low}, {high}] for {self.dtype}")

    @property
    def bits(self) -> int:
        return _DTYPES[self.dtype][0]

    @property
    def signed(self) -> bool:
        return _DTYPES[self.dtype][1]

    @property
    def qrange(self) -> tuple[int, int]:
        bits, signed = _DTYPES[self.dtype]
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def scale_array(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float32)

    def zero_point_array(self) -> np.ndarray:
        return np.asarray(self.zero_point, dtype=np.int32)

    def broadcast_shape(self, ndim: int) -> tuple[int, ...]:
        """Shape that broadcasts the per-channel params against a tensor of rank ``ndim``."""
        if self.axis is None:
            return ()
        shape = [1] * ndim
        shape[self.axis % ndim] = len(self.scale)
        return tuple(shape)

    def fake_quant(self, x: np.ndarray) -> np.ndarray:
        """Quantize then dequantize ``x`` in numpy (the reference every runner must match)."""
        shape = self.broadcast_shape(x.ndim)
        scale = self.scale_array().reshape(shape)
        zero = self.zero_point_array().reshape(shape)
        low, high = self.qrange
        q = np.clip(np.round(x / scale) + zero, low, high)
        return ((q - zero) * scale).astype(x.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": list(self.scale),
                "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "quant params") -> QuantParams:
        missing = {"dtype", "scale", "zero_point"} - set(data)
        if missing:
            raise MSCError(f"{where}: missing keys {sorted(missing)}")
        try:
            return cls(str(data["dtype"]), tuple(float(s) for s in data["scale"]),
                       tuple(int(z) for z in data["zero_point"]), data.get("axis"))
        except MSCError as err:
            raise MSCError(f"{where}: {err}") from None
        except (TypeError, ValueError) as err:
            raise MSCError(f"{where}: malformed value ({err})") from None


@dataclass(frozen=True)
class LayerQuant:
    """How one layer is quantized: its data input and/or its weight."""

    input: QuantParams | None = None
    weight: QuantParams | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.input is not None:
            out["input"] = self.input.to_json()
        if self.weight is not None:
            out["weight"] = self.weight.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> LayerQuant:
        unknown = set(data) - {"input", "weight"}
        if unknown:
            raise MSCError(f"{where}: unknown keys {sorted(unknown)} (expected input, weight)")
        return cls(
            QuantParams.from_json(data["input"], f"{where}.input") if "input" in data else None,
            QuantParams.from_json(data["weight"], f"{where}.weight") if "weight" in data else None,
        )


QuantPlan = dict[str, LayerQuant]
"""Node name -> how that layer is quantized."""
