"""Replay a pipeline workspace: rerun it from its recorded config and strategies, compare.

The replay runs in ``<workspace>/replay`` with every optimize stage taken from the
strategy file the original run wrote (no search, no tool config), then compares the
reports stage by stage: deterministic metrics must match, latency is only reported.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from typing import Any

from mscgym.pipeline.config import ConfigError
from mscgym.pipeline.processor import MSCProcessor
from mscgym.pipeline.workspace import Workspace
from mscgym.tasks.metrics import DETERMINISTIC_METRICS
from mscgym.utils.files import atomic_write

_TOLERANCE = {"distill_loss": 1e-6}


@dataclass
class ReplayComparison:
    """Per stage and metric: recorded vs replayed, and whether it holds."""

    rows: list[dict[str, Any]]
    replay_workspace: str

    @property
    def all_hold(self) -> bool:
        return all(row["holds"] for row in self.rows)


def replay_config(workspace: Workspace) -> dict[str, Any]:
    """The recorded config with each optimize stage pinned to its strategy file.

    The strategies are copied into the replay workspace (``recorded/<stage>.json``) and
    named relative to it, so the replay reads only files inside its own workspace."""
    recorded = copy.deepcopy(workspace.read_json("config.json"))
    stages = recorded.pop("stages", [])
    config = {k: v for k, v in recorded.items() if k not in stages}
    replay = Workspace(workspace.path("replay"))
    for stage in stages:  # the recorded order: a stage's position is part of the result
        path = workspace.path("strategies", f"{stage}.json")
        if not os.path.exists(path):
            raise ConfigError(f"workspace {workspace.root}: stage {stage!r} has no strategy "
                              f"file {path}; was the run finished?")
        relative = os.path.join("recorded", f"{stage}.json")
        os.makedirs(replay.path("recorded"), exist_ok=True)
        atomic_write(replay.path(relative), lambda tmp, path=path: shutil.copyfile(path, tmp))
        config[stage] = {"target": recorded[stage]["target"], "strategy_file": relative}
    config["workspace"] = replay.root
    return config


def replay_workspace(path: str | os.PathLike[str], model: Any = None) -> ReplayComparison:
    """Rerun the workspace at ``path`` and compare its report with the recorded one."""
    workspace = Workspace(path)
    recorded = workspace.read_json("report.json")
    shutil.rmtree(workspace.path("replay"), ignore_errors=True)
    config = replay_config(workspace)
    processor = MSCProcessor(model, config)
    try:
        report = processor.run()
    finally:
        processor.close()
    replayed = {row["stage"]: row for row in report["stages"]}
    rows = []
    for row in recorded["stages"]:
        stage = row["stage"]
        for metric in DETERMINISTIC_METRICS:
            old, new = row.get(metric), replayed.get(stage, {}).get(metric)
            tolerance = _TOLERANCE.get(metric, 0.0)
            holds = old == new if old is None or new is None else abs(old - new) <= tolerance
            rows.append({"stage": stage, "metric": metric, "recorded": old, "replayed": new,
                         "holds": bool(holds)})
    return ReplayComparison(rows, processor.workspace.root)
