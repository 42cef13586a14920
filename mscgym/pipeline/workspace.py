"""The pipeline workspace: resolved config, strategies, gym records, checkpoints, report.

Every file is written atomically and ``state.json`` is updated only after a stage's
outputs are on disk, so a killed run leaves the earlier stages intact and a re-run
resumes after the last finished stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import LayerQuant, QuantPlan
from mscgym.compiler.serialize import load_graph
from mscgym.pipeline.config import ConfigError
from mscgym.utils.files import atomic_write_text, read_json
from mscgym.utils.paths import check_output_path, inside, relative_inside

Params = dict[str, np.ndarray]


class Workspace:
    """Paths and state of one pipeline run; every path it hands out is inside ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = check_output_path(root, "workspace", "dir")
        os.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str, key: str = "workspace path") -> str:
        """``root/parts...``; one that leaves the workspace (``..``, an absolute part, a
        symlink out of it) raises OutputPathError naming ``key``."""
        inside(self.root, *parts, key=key)
        return os.path.join(self.root, *parts)

    def check_config_paths(self, config: Mapping[str, Any]) -> None:
        """Refuse, before any work, a validated config whose output names would leave the
        workspace: ``log_file``, each gym ``record`` and ``export.name``."""
        named = [("log_file", config.get("log_file"), ()),
                 ("export.name", (config.get("export") or {}).get("name"), ("artifact",))]
        for stage in config.get("stages", ()):
            for i, entry in enumerate((config.get(stage) or {}).get("gym") or ()):
                named.append((f"{stage}.gym[{i}].record", entry.get("record"), ("gym",)))
        for key, value, folder in named:
            if isinstance(value, str):
                self.path(*folder, relative_inside(value, key), key=f"config key {key!r}:")

    # -- JSON files --------------------------------------------------------------------
    def write_json(self, relative: str, data: Any) -> str:
        target = self.path(relative)
        atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True, default=str))
        return target

    def read_json(self, relative: str) -> Any:
        return read_json(self.path(relative), ConfigError, "workspace file")

    # -- state --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if not os.path.exists(self.path("state.json")):
            return {"finished": [], "stages": {}}
        return self.read_json("state.json")

    def finish_stage(self, name: str, summary: dict[str, Any], config_hash: str) -> None:
        state = self.state()
        if name not in state["finished"]:
            state["finished"].append(name)
        state["stages"][name] = {"status": "done", **summary}
        state["config_hash"] = config_hash
        state.pop("failed", None)
        self.write_json("state.json", state)

    def fail_stage(self, name: str, error: BaseException) -> None:
        state = self.state()
        state["failed"] = {"stage": name, "error": f"{type(error).__name__}: {error}"}
        self.write_json("state.json", state)

    # -- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self, stage: str, graph: MSCGraph, params: Params, quant: QuantPlan
                        ) -> str:
        folder = self.path("checkpoints", stage)
        os.makedirs(folder, exist_ok=True)
        graph.export(os.path.join(folder, "graph.json"), params=params)
        self.write_json(os.path.join("checkpoints", stage, "quant.json"),
                        {k: v.to_json() for k, v in quant.items()})
        return folder

    def load_checkpoint(self, stage: str) -> tuple[MSCGraph, Params, QuantPlan]:
        folder = os.path.join("checkpoints", stage)
        graph, params = load_graph(self.path(folder, "graph.json"))
        quant_json = self.read_json(os.path.join(folder, "quant.json"))
        quant = {name: LayerQuant.from_json(entry, f"{folder}/quant.json: layer {name!r}")
                 for name, entry in quant_json.items()}
        return graph, params, quant
