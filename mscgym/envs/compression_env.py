"""Gymnasium environments over compression tasks.

Two episode forms share one class. ``layerwise`` (AMC/HAQ): one step per search
dimension (a layer, or a distillation knob), the observation describes that layer
and the previous action, the reward comes at the end from the task's scorer.
``oneshot``: a single MultiDiscrete action picks the whole plan in one step, which is
what grid and Bayesian search want. Spaces stay within what stable-baselines3 takes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mscgym.compiler.errors import MSCError
from mscgym.envs.features import FEATURES, layer_features
from mscgym.tasks.task import Task

MODES = ("layerwise", "oneshot")


class CompressionEnv(gym.Env):
    """A compression task as a Gymnasium environment.

    Construct it from a :class:`Task` or from the task's arguments (``model``,
    ``tool``, ``scorer``, ``runner``, ...). ``budget`` caps the number of plans the
    environment will evaluate; further episodes end truncated with reward 0.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: Task | None = None,
        *,
        tool: str = "quantize",
        model: Any = "digits-cnn",
        mode: str = "layerwise",
        budget: int | None = None,
        seed: int | None = None,
        **task_kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise MSCError(f"unknown env mode {mode!r}; expected one of {list(MODES)}")
        task_kwargs.setdefault("profile_repeat", 20)
        self.task = task if task is not None else Task(model, tool, **task_kwargs)
        self.mode = mode
        self.budget = budget
        self.dims = list(self.task.space)
        self._sizes = self.task.space.sizes
        self._table = layer_features(self.task)
        self._max_choices = max(self._sizes)
        low = np.zeros(len(FEATURES), dtype=np.float32)
        high = np.ones(len(FEATURES), dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        if mode == "layerwise":
            self.action_space = spaces.Discrete(self._max_choices)
        else:
            self.action_space = spaces.MultiDiscrete(self._sizes)
        self._step = 0
        self._indices: list[int] = []
        self._evaluated: set[str] = set()
        if seed is not None:
            self.reset(seed=seed)

    # -- helpers ----------------------------------------------------------------------
    def choice_index(self, dim_index: int, action: int) -> int:
        """Map a Discrete(max_choices) action onto dimension ``dim_index``'s choices."""
        return int(action) * self._sizes[dim_index] // self._max_choices

    def _observation(self) -> np.ndarray:
        if self.mode == "oneshot":
            return self._table.mean(axis=0).astype(np.float32)
        row = self._table[min(self._step, len(self.dims) - 1)].copy()
        if self._indices:
            last = len(self._indices) - 1
            row[FEATURES.index("previous_action")] = self._indices[-1] / max(
                self._sizes[last] - 1, 1)
        return row

    def _finish(self) -> tuple[float, bool, dict[str, Any]]:
        plan = self.task.space.decode(self._indices)
        key = self.task.plan_key(plan)
        if (self.budget is not None and key not in self._evaluated
                and len(self._evaluated) >= self.budget):
            return 0.0, True, {"plan": plan, "budget_exhausted": True}
        self._evaluated.add(key)
        metrics = self.task.evaluate(plan)
        score = self.task.score(metrics)
        return score, False, {"plan": plan, "metrics": metrics.to_json(), "score": score}

    # -- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._step = 0
        self._indices = []
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._step >= len(self.dims) or (self.mode == "oneshot" and self._indices):
            raise MSCError("episode is over; call reset()")
        if self.mode == "oneshot":
            indices = [int(a) for a in np.asarray(action).reshape(-1)]
            self.task.space.decode(indices)
            self._indices = indices
            self._step = len(self.dims)
        else:
            self._indices.append(self.choice_index(self._step, int(action)))
            self._step += 1
        if self._step < len(self.dims):
            return self._observation(), 0.0, False, False, {}
        reward, truncated, info = self._finish()
        return self._observation(), float(reward), not truncated, truncated, info
