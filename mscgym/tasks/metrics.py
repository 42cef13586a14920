"""Metrics of one evaluated plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DETERMINISTIC_METRICS = ("accuracy", "distill_loss", "size_bytes", "params", "flops")
"""Metrics that a replay must reproduce (up to float rounding); latency is measured."""


@dataclass
class Metrics:
    """What one evaluation measured.

    ``distill_loss`` is KL(teacher || student) of the output distributions on held-out
    inputs (0 for the float model); ``accuracy`` is None where the data has no labels;
    latency is the median (with p90 and inter-quartile spread) at batch 1 on ``runner``.

    ``paired_speedup`` is the float model's latency over this model's, both timed in
    alternating rounds of the same window (:func:`mscgym.runtime.profiling.profile_paired`):
    a noisy host slows both sides of a round alike, so the ratio holds where two medians
    taken minutes apart do not. It is exactly 1 for the float model itself and None where
    latency was timed alone (a pipeline stage, metrics recorded before pairing existed);
    scorers prefer it to the ratio of ``latency_ms`` values when it is there.
    """

    distill_loss: float
    accuracy: float | None
    latency_ms: float
    latency_p90_ms: float
    latency_iqr_ms: float
    size_bytes: int
    params: int
    flops: int
    runner: str
    device: str
    target: str = ""
    paired_speedup: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metrics:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "distill_loss": self.distill_loss,
                "latency_ms": self.latency_ms, "size_bytes": self.size_bytes}
