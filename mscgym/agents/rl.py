"""Reinforcement learning: stable-baselines3 PPO on the layer-wise environment.

As in AMC and HAQ, the policy picks one choice per dimension (layer) per step and
gets the task's score as the reward at the end of the episode. The budget counts
episodes, i.e. plans: ``budget - 1`` training episodes (PPO collects
``n_steps = len(space) * episodes_per_update`` steps per update and is stopped by a
callback once those episodes are done), then one more plan from the trained policy
acting deterministically. Every finished episode's plan and metrics go into the
history; repeated plans are answered by the task cache. PPO is seeded, so the same
seed on the same task gives the same episodes up to float nondeterminism in torch.
"""

from __future__ import annotations

import os
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from mscgym.agents.base import Agent
from mscgym.agents.evaluator import Evaluator
from mscgym.compiler.errors import MSCError
from mscgym.envs.compression_env import CompressionEnv
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task


class _EpisodeCallback(BaseCallback):
    """Records each finished episode as a step; stops PPO when ``reserve`` steps are left."""

    def __init__(self, task: Task, evaluator: Evaluator, reserve: int) -> None:
        super().__init__()
        self.task = task
        self.evaluator = evaluator
        self.reserve = reserve
        self.episodes = 0
        self._evaluations = task.evaluations

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if not done:
                continue
            if "metrics" not in info:
                raise MSCError(f"rl agent: episode ended without metrics (info keys "
                               f"{sorted(info)}); the env must not have a budget of its own")
            cached = self.task.evaluations == self._evaluations
            self._evaluations = self.task.evaluations
            self.evaluator.record(info["plan"], Metrics.from_json(info["metrics"]),
                                  cached=cached, phase="train")
            self.episodes += 1
        return self.evaluator.remaining > self.reserve


class PPOAgent(Agent):
    """PPO over the layer-wise env; see the module docstring."""

    name = "rl"

    def __init__(self, *, seed: int = 0, episodes_per_update: int = 4,
                 learning_rate: float = 3e-4, n_epochs: int = 4, gamma: float = 1.0,
                 ent_coef: float = 0.01, progress: bool = True,
                 logdir: str | os.PathLike[str] | None = None) -> None:
        if int(episodes_per_update) < 1:
            raise MSCError(f"rl agent: episodes_per_update must be >= 1, "
                           f"got {episodes_per_update!r}")
        options = {"episodes_per_update": int(episodes_per_update),
                   "learning_rate": float(learning_rate), "n_epochs": int(n_epochs),
                   "gamma": float(gamma), "ent_coef": float(ent_coef)}
        super().__init__(seed=seed, progress=progress, logdir=logdir, options=options)

    def _run(self, task: Task, evaluator: Evaluator) -> dict[str, Any]:
        env = CompressionEnv(task, mode="layerwise", seed=self.seed)
        n_steps = len(task.space) * self.options["episodes_per_update"]
        model = PPO(
            "MlpPolicy", env, n_steps=n_steps, batch_size=n_steps,
            n_epochs=self.options["n_epochs"], learning_rate=self.options["learning_rate"],
            gamma=self.options["gamma"], ent_coef=self.options["ent_coef"], seed=self.seed,
            device="cpu", verbose=0,
            tensorboard_log=os.fspath(self.logdir) if self.logdir is not None else None)
        callback = _EpisodeCallback(task, evaluator, reserve=1)
        if evaluator.remaining > 1:
            model.learn(total_timesteps=(evaluator.remaining - 1) * len(task.space),
                        callback=callback, tb_log_name="ppo")
        policy_env = CompressionEnv(task, mode="layerwise")
        obs, _ = policy_env.reset(seed=self.seed)
        before = task.evaluations
        finished = False
        while not finished:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = policy_env.step(int(action))
            finished = terminated or truncated
        evaluator.record(info["plan"], Metrics.from_json(info["metrics"]),
                         cached=task.evaluations == before, phase="policy")
        return {"timesteps": int(model.num_timesteps), "train_episodes": callback.episodes,
                "n_steps": n_steps}
