"""Gymnasium environments: msc/Quantize-v0, msc/Prune-v0, msc/Distill-v0, msc/Compress-v0."""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "msc/Quantize-v0": "quantize",
    "msc/Prune-v0": "prune",
    "msc/Distill-v0": "distill",
    "msc/Compress-v0": "compress",
}


def register_envs() -> None:
    """Register every env id with Gymnasium (idempotent)."""
    for env_id, tool in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="mscgym.envs.compression_env:CompressionEnv",
                         kwargs={"tool": tool})


register_envs()
