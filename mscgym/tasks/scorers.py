"""Scorers turn Metrics into a reward (higher is better) or an objective vector.

Scores are relative to the float baseline of the same task and runner, so rewards
are comparable across models. No scorer divides by a quantity that can be zero: a
zero distillation loss or a zero latency reading is clamped, not divided by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.metrics import Metrics

_EPS = 1e-12


def speedup(metrics: Metrics, baseline: Metrics) -> float:
    """How much faster ``metrics``' model is than the baseline's.

    The paired ratio (both timed in the same window, see :class:`Metrics`) when the
    evaluation measured one: host noise cancels in it. Otherwise the ratio of the two
    medians, which were timed at different moments (metrics from before pairing).
    """
    if metrics.paired_speedup is not None:
        return float(metrics.paired_speedup)
    return baseline.latency_ms / max(metrics.latency_ms, _EPS)


def size_ratio(metrics: Metrics, baseline: Metrics) -> float:
    return metrics.size_bytes / max(baseline.size_bytes, 1)


def accuracy_drop(metrics: Metrics, baseline: Metrics) -> float:
    if metrics.accuracy is None or baseline.accuracy is None:
        raise MSCError("this scorer needs accuracy, and the task's data has no labels")
    return baseline.accuracy - metrics.accuracy


@dataclass
class Scorer:
    """A named scoring rule. ``objectives`` (all maximized) serve Pareto search."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def score(self, metrics: Metrics, baseline: Metrics) -> float:
        return float(_RULES[self.name](metrics, baseline, self.options))

    def objectives(self, metrics: Metrics, baseline: Metrics) -> tuple[float, float]:
        """(quality, speed-up): quality is accuracy where labelled, else -distill_loss."""
        quality = metrics.accuracy if metrics.accuracy is not None else -metrics.distill_loss
        return float(quality), float(speedup(metrics, baseline))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}


def _distill_loss(metrics: Metrics, baseline: Metrics, options: Mapping[str, Any]) -> float:
    return -metrics.distill_loss


def _accuracy(metrics: Metrics, baseline: Metrics, options: Mapping[str, Any]) -> float:
    accuracy_drop(metrics, baseline)
    return float(metrics.accuracy)


def _latency_under_accuracy(metrics: Metrics, baseline: Metrics,
                            options: Mapping[str, Any]) -> float:
    """HAQ/AMC: maximize speed-up while the quality loss stays within a bound.

    With labels, the bound is on the accuracy drop (``max_drop``, default 0.01 = one
    point); without, on the distillation loss (``max_distill_loss``) and, when
    ``min_agreement`` is given, on the top-1 agreement with the float model too. Outside the
    bound the reward is negative and grows with the violation, so any feasible plan
    beats any infeasible one.
    """
    if metrics.accuracy is not None and baseline.accuracy is not None:
        violation = accuracy_drop(metrics, baseline) - float(options.get("max_drop", 0.01))
        scale = 100.0
    else:
        violation = metrics.distill_loss - float(options.get("max_distill_loss", 0.05))
        scale = 10.0
        if "min_agreement" in options:
            # a second bound: top-1 agreement with the float model on held-out inputs
            agreement = metrics.extra.get("top1_agreement")
            if agreement is None:
                raise MSCError("min_agreement needs metrics with a top1_agreement, and "
                               "these have none (measured before it existed?)")
            violation = max(violation, float(options["min_agreement"]) - float(agreement))
    if violation > 0:
        return -1.0 - scale * violation
    return speedup(metrics, baseline)


def _weighted(metrics: Metrics, baseline: Metrics, options: Mapping[str, Any]) -> float:
    weights = dict(options.get("weights", {"accuracy": 1.0, "speedup": 0.1}))
    terms = {
        "accuracy": lambda: metrics.accuracy if metrics.accuracy is not None else 0.0,
        "distill_loss": lambda: -metrics.distill_loss,
        "speedup": lambda: speedup(metrics, baseline),
        "size": lambda: -size_ratio(metrics, baseline),
    }
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise MSCError(f"weighted scorer: unknown weights {unknown}; expected {sorted(terms)}")
    return sum(float(w) * terms[k]() for k, w in weights.items())


_RULES: dict[str, Callable[[Metrics, Metrics, Mapping[str, Any]], float]] = {
    "distill_loss": _distill_loss,
    "accuracy": _accuracy,
    "latency_under_accuracy": _latency_under_accuracy,
    "weighted": _weighted,
}
SCORERS = tuple(_RULES)


def get_scorer(name: str | Scorer, **options: Any) -> Scorer:
    if isinstance(name, Scorer):
        return name
    if name not in _RULES:
        raise MSCError(f"unknown scorer {name!r}; expected one of {list(SCORERS)}")
    return Scorer(name, dict(options))
