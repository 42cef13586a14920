"""Latency measurement of a built runner.

Scorers compare plans by latency, so the numbers must be robust to a noisy machine:
warm-up runs first (lazy initialisation, caches, allocator), then timed runs with a
monotonic nanosecond clock; the median and p90 are reported rather than the mean,
with the inter-quartile range as the spread. On a device the timed region ends with
``synchronize`` so queued kernels are not left out.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.runtime.runner import BaseRunner


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one run (milliseconds) over ``repeat`` timed runs."""

    runner: str
    device: str
    target: str
    repeat: int
    warmup: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    samples_ms: list[float] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_samples(cls, runner: BaseRunner, samples_ms: list[float], warmup: int) -> LatencyStats:
        data = np.asarray(samples_ms, dtype=np.float64)
        p25, median, p75, p90 = np.percentile(data, [25, 50, 75, 90])
        return cls(
            runner=runner.name, device=runner.device, target=runner.target,
            repeat=len(samples_ms), warmup=warmup, median_ms=float(median),
            p90_ms=float(p90), mean_ms=float(data.mean()), min_ms=float(data.min()),
            max_ms=float(data.max()), iqr_ms=float(p75 - p25), samples_ms=list(samples_ms),
        )


def profile_runner(
    runner: BaseRunner, inputs: list[np.ndarray], repeat: int = 100, warmup: int = 10
) -> LatencyStats:
    """Time ``runner.run(inputs)``: ``warmup`` untimed runs, then ``repeat`` timed ones."""
    repeat = _count("repeat", repeat, 1)
    warmup = _count("warmup", warmup, 0)
    for _ in range(warmup):
        runner.run(inputs)
    runner.synchronize()
    samples_ms = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        runner.run(inputs)
        runner.synchronize()
        samples_ms.append((time.perf_counter_ns() - start) / 1e6)
    return LatencyStats.from_samples(runner, samples_ms, warmup)


def _count(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise MSCError(f"profile: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)
