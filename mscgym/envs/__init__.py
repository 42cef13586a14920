"""Gymnasium environments: msc/Quantize-v0, msc/Prune-v0, msc/Distill-v0, msc/Compress-v0,
and ``msc/<Name>-v0`` of every tool registered later (:mod:`mscgym.tools.registry`)."""

from __future__ import annotations

import gymnasium as gym

from mscgym.tasks.kinds import COMPOSITE_ENV_IDS, env_ids
from mscgym.tools.registry import ToolSpec, subscribe

_ENTRY_POINT = "mscgym.envs.compression_env:CompressionEnv"

ENV_IDS: dict[str, str] = env_ids()
"""Env id -> task kind; kept up to date as tools are registered and unregistered."""


def register_envs() -> None:
    """Register every env id with Gymnasium (idempotent)."""
    for env_id, tool in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=_ENTRY_POINT, kwargs={"tool": tool})


def _follow_registry(spec: ToolSpec, registered: bool) -> None:
    """A tool's env comes and goes with the tool."""
    env_id = spec.gym_id
    if env_id is None or env_id in COMPOSITE_ENV_IDS.values():
        return
    if registered:
        ENV_IDS[env_id] = spec.name
        register_envs()
    else:
        ENV_IDS.pop(env_id, None)
        gym.registry.pop(env_id, None)


register_envs()
subscribe(_follow_registry)
