"""Latency measurement of a built runner.

Scorers compare plans by latency, so the numbers must be robust to a noisy machine:
warm-up runs first (lazy initialisation, caches, allocator), then timed runs with a
monotonic nanosecond clock; the median and p90 are reported rather than the mean,
with the inter-quartile range as the spread. On a device the timed region ends with
``synchronize`` so queued kernels are not left out.

A median cannot absorb a noisy window that covers most of a measurement: on a shared
VM one ONNX Runtime session timed about 30 ms for 30 runs and 19 ms after, so a baseline
and a candidate timed a minute apart compare two load levels, not two models.
:func:`profile_paired` therefore times a reference and a candidate in alternating rounds
of the same window and reports the median of the per-round latency ratios, in which the
load of that window cancels.
"""

from __future__ import annotations

import math
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
    samples_ms = [_timed_ms(runner, inputs) for _ in range(repeat)]
    return LatencyStats.from_samples(runner, samples_ms, warmup)


PAIRED_BLOCK = 3
"""Timed runs of each side per round of :func:`profile_paired`."""


@dataclass(frozen=True)
class PairedStats:
    """A reference and a candidate timed in the same rounds (see :func:`profile_paired`).

    ``speedup`` is the median over rounds of reference median / candidate median: above
    1 the candidate is faster. Each side's own :class:`LatencyStats` keep its raw samples.
    """

    reference: LatencyStats
    candidate: LatencyStats
    speedup: float
    round_ratios: list[float] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference.to_json(), "candidate": self.candidate.to_json(),
                "speedup": self.speedup, "round_ratios": list(self.round_ratios)}


def _timed_ms(runner: BaseRunner, inputs: list[np.ndarray]) -> float:
    start = time.perf_counter_ns()
    runner.run(inputs)
    runner.synchronize()
    return (time.perf_counter_ns() - start) / 1e6


def profile_paired(
    reference: BaseRunner, reference_inputs: list[np.ndarray],
    candidate: BaseRunner, candidate_inputs: list[np.ndarray],
    repeat: int = 30, warmup: int = 5,
) -> PairedStats:
    """Time ``reference`` and ``candidate`` interleaved, so host load cancels in the ratio.

    Both get ``warmup`` untimed runs, then ``ceil(repeat / PAIRED_BLOCK)`` rounds; a round
    gives each side (the order alternating from round to round) one untimed run and a
    block of timed ones, and contributes the ratio of the two blocks' medians. The
    untimed run is there because a session whose thread pool slept while the other ran
    needs one run to get its threads back (ONNX Runtime's spinning workers, torch's
    OpenMP pool); without it the side timed second in a round pays for the switch.
    Each side gets ``repeat`` timed runs in all.
    """
    repeat = _count("repeat", repeat, 1)
    warmup = _count("warmup", warmup, 0)
    sides: dict[str, tuple[BaseRunner, list[np.ndarray]]] = {
        "reference": (reference, reference_inputs), "candidate": (candidate, candidate_inputs)}
    for runner, inputs in sides.values():
        for _ in range(warmup):
            runner.run(inputs)
        runner.synchronize()
    rounds = math.ceil(repeat / PAIRED_BLOCK)
    samples: dict[str, list[float]] = {"reference": [], "candidate": []}
    ratios = []
    for index in range(rounds):
        block = (index + 1) * repeat // rounds - index * repeat // rounds
        order = ("reference", "candidate") if index % 2 == 0 else ("candidate", "reference")
        medians: dict[str, float] = {}
        for side in order:
            runner, inputs = sides[side]
            runner.run(inputs)
            runner.synchronize()
            times = [_timed_ms(runner, inputs) for _ in range(block)]
            samples[side].extend(times)
            medians[side] = float(np.median(times))
        ratios.append(medians["reference"] / max(medians["candidate"], 1e-9))
    return PairedStats(
        reference=LatencyStats.from_samples(reference, samples["reference"], warmup),
        candidate=LatencyStats.from_samples(candidate, samples["candidate"], warmup),
        speedup=float(np.median(ratios)), round_ratios=ratios)


def _count(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise MSCError(f"profile: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)
