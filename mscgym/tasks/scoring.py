"""How a task's plans are judged: its scorer, whether keeping a layer float is a choice
the search may make, and the baseline every score is relative to."""

from __future__ import annotations

from collections.abc import Callable

from mscgym.tasks.metrics import Metrics
from mscgym.tasks.scorers import Scorer


def allows_float_fallback(scorer: Scorer) -> bool:
    """Whether keeping a layer float is a choice the search may make under ``scorer``.

    Only a scorer that rewards compression (speed-up or size) while it bounds or weighs
    quality can prefer a float layer for a reason; under a pure quality scorer
    (``distill_loss``, ``accuracy``) float is unbeatable, so the search would always
    return the unquantized model. There the space searches how to quantize instead.
    """
    if scorer.name == "latency_under_accuracy":
        return True
    if scorer.name == "weighted":
        weights = dict(scorer.options.get("weights", {"speedup": 0.1}))
        return any(float(weights.get(term, 0.0)) != 0.0 for term in ("speedup", "size"))
    return False


class Scoring:
    """A task's scorer and its baseline (the uncompressed model's metrics), measured on
    first use by ``measure_baseline`` or adopted from an earlier measurement."""

    def __init__(self, scorer: Scorer, kind: str,
                 measure_baseline: Callable[[], Metrics]) -> None:
        self.scorer = scorer
        self.float_fallback = allows_float_fallback(scorer)
        self.baseline_is_plan = kind != "distill" and (kind == "prune" or self.float_fallback)
        """Whether the uncompressed model is a plan of the kind's space (the baseline
        plan): for prune, and for quantize where float is a choice. Otherwise (distill,
        quantize under a quality scorer) it is measured as a model of its own."""
        self._measure_baseline = measure_baseline
        self._baseline: Metrics | None = None

    @property
    def baseline(self) -> Metrics:
        if self._baseline is None:
            self._baseline = self._measure_baseline()
        return self._baseline

    def adopt(self, metrics: Metrics) -> None:
        """Score against ``metrics``, a baseline measured earlier, from now on."""
        self._baseline = metrics

    def score(self, metrics: Metrics) -> float:
        return self.scorer.score(metrics, self.baseline)

    def objectives(self, metrics: Metrics) -> tuple[float, float]:
        return self.scorer.objectives(metrics, self.baseline)
