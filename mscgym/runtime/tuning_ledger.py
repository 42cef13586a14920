"""Process-wide totals of MetaSchedule tuning, read by searches to report what they paid.

Kept apart from :mod:`mscgym.runtime.tuning` so that reading the totals imports no TVM
(the agents and the CLI read them whatever the runner). Tuning done in other processes
(Ray trials) is not counted here.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TuningTotals:
    """Workloads tuned, trials measured and seconds spent tuning."""

    workloads: int = 0
    trials: int = 0
    seconds: float = 0.0

    def since(self, earlier: TuningTotals) -> TuningTotals:
        """What was added after ``earlier`` (a snapshot of the same ledger)."""
        return TuningTotals(self.workloads - earlier.workloads, self.trials - earlier.trials,
                            self.seconds - earlier.seconds)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


_lock = threading.Lock()
_totals = TuningTotals()


def add(workloads: int, trials: int, seconds: float) -> None:
    """Count one tuning call (called by :func:`mscgym.runtime.tuning.tune`)."""
    global _totals
    with _lock:
        _totals = TuningTotals(_totals.workloads + workloads, _totals.trials + trials,
                               _totals.seconds + seconds)


def snapshot() -> TuningTotals:
    """The totals so far in this process."""
    return _totals
