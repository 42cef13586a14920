"""The one Pareto front of the project, computed by Optuna.

Search results (``SearchResult.pareto``) and plots (``mscgym plot``) both need the
points no other point dominates; Optuna already computes that for multi-objective
studies (``study.best_trials``), so both go through an in-memory study here instead of
a comparison loop of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Direction = Literal["minimize", "maximize"]


def pareto_indices(values: Sequence[Sequence[float]], directions: Sequence[Direction]
                   ) -> list[int]:
    """Indices (ascending) of the points of ``values`` that no other point dominates.

    ``directions`` says per objective whether lower or higher is better. Equal points
    are all on the front. A point with a NaN objective cannot be compared, so nothing
    dominates it and it stays on the front (Optuna refuses NaN values, so it is kept out
    of the study).
    """
    import optuna  # a second or so to import: only when a front is asked for

    comparable = [i for i, point in enumerate(values)
                  if not any(math.isnan(float(x)) for x in point)]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per call
    try:
        study = optuna.create_study(directions=list(directions))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([
        optuna.trial.create_trial(values=[float(x) for x in values[i]], params={},
                                  distributions={})
        for i in comparable])
    on_front = {comparable[trial.number] for trial in study.best_trials}
    kept_out = set(range(len(values))) - set(comparable)
    return sorted(on_front | kept_out)
