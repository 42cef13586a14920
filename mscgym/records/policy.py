"""How close a re-measurement must come to a record: a policy in code, not in the record.

A record carries the tolerances it was written with, but a record cannot vouch for
itself: ``tolerances: {}`` or ``{"accuracy": {"abs": 1e12}}`` would otherwise make any
faked metric "hold". So :func:`effective_tolerances` starts from this policy (per
metric, adjusted per runner) and lets the record only *tighten* it: for every key the
policy sets, the smaller of the two values counts; keys the policy does not set (which
could only widen the allowed difference) are ignored; a metric the policy does not
check may be added by the record, which only adds a check. Latency is re-measured
with at least :data:`MIN_LATENCY_REPEAT` timed runs, so a record made with a handful of
runs is not checked against an equally noisy re-measurement.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

Tolerance = dict[str, float]

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "accuracy": {"abs": 0.0},
    "distill_loss": {"abs": 1e-6, "rel": 1e-3},
    "size_bytes": {"abs": 0},
    "params": {"abs": 0},
    "flops": {"abs": 0},
    "latency_ms": {"rel": 1.0, "iqr": 5.0},
}
"""Deterministic metrics must agree (to float rounding for the loss); latency must lie
within 100% of the recorded median or 5 recorded inter-quartile spreads of it,
whichever is wider, since CPU timings drift between runs and machines."""

RUNNER_TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "tensorrt": {"accuracy": {"abs": 0.005}, "distill_loss": {"abs": 1e-4, "rel": 1e-2}},
}
"""Per-runner changes to the policy: TensorRT picks its int8 kernels (and so their
rounding) per build, so its outputs agree only to a tolerance between builds."""

PAIRED_SPEEDUP_TOLERANCE: Tolerance = {"rel": 0.5}
"""How close a re-measured paired speed-up must come to a recorded one; part of the
``latency_ms`` check (skipping latency skips it too, as it is the same timing). 50% of
a speed-up lets a record overstate it at most 2x, as the latency tolerance does. A
record without a paired speed-up (made before pairing) has nothing to check here."""

MIN_LATENCY_REPEAT = 20
"""The fewest timed runs a validation re-measures latency with."""

SCORE_REL_TOL = 1e-9
"""The recorded score must be the task's score of the recorded metrics to this
relative tolerance (float rounding only)."""


def policy_tolerances(runner: str) -> dict[str, Tolerance]:
    """The policy's tolerances for a record measured on ``runner``."""
    policy = copy.deepcopy(DEFAULT_TOLERANCES)
    policy.update(copy.deepcopy(RUNNER_TOLERANCES.get(runner, {})))
    return policy


def tighten(policy: Mapping[str, float], recorded: Mapping[str, float] | None) -> Tolerance:
    """The policy tolerance with every key the record sets lower taken from the record."""
    if recorded is None:
        return dict(policy)
    return {key: min(float(value), float(recorded[key])) if key in recorded else float(value)
            for key, value in policy.items()}


def effective_tolerances(runner: str, recorded: Mapping[str, Mapping[str, float]]
                         ) -> dict[str, Tolerance]:
    """What a validation checks: every policy metric (tightened by the record), plus the
    metrics only the record names, with its own tolerance."""
    policy = policy_tolerances(runner)
    out = {metric: tighten(tol, recorded.get(metric)) for metric, tol in policy.items()}
    for metric, tol in recorded.items():
        if metric not in policy:
            out[metric] = {key: float(value) for key, value in tol.items()}
    return out


def latency_repeat(recorded_repeat: int) -> int:
    """Timed runs a validation uses: the record's, but never fewer than the floor."""
    return max(int(recorded_repeat), MIN_LATENCY_REPEAT)
