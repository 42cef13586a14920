"""Gymnasium environments over compression tasks.

Two episode forms share one class. ``layerwise`` (AMC/HAQ): one step per search
dimension (a layer, or a distillation knob), the observation describes that layer
and the previous action, the reward comes at the end from the task's scorer.
``oneshot``: a single MultiDiscrete action picks the whole plan in one step, which is
what grid and Bayesian search want. Spaces stay within what stable-baselines3 takes.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from mscgym.compiler.errors import MSCError
from mscgym.envs.features import FEATURES, layer_features
from mscgym.tasks.kinds import kind_tools
from mscgym.tasks.spaces import DENSITY_CHOICES, QUANT_CHOICES
from mscgym.tasks.task import DISTILL_CHOICES, Task

MODES = ("layerwise", "oneshot")

_FORKED = False
"""Whether this process is a fork of another (set in the child by ``os.register_at_fork``)."""


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_mark_forked)


def _fork_safe_threads() -> None:
    """In a forked process, run torch single-threaded before it does any work.

    GNU OpenMP (torch's CPU thread pool) is not fork-safe: a child forked from a process
    whose OpenMP workers had started waits forever at the first parallel region for
    threads that do not exist in it. Vector env workers are processes already, so one
    thread each loses nothing.
    """
    if _FORKED and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _choices_bound(tool: str, task_kwargs: dict[str, Any]) -> int | None:
    """An upper bound on the choices of any dimension a task with these arguments has.

    The layer-wise action space is ``Discrete`` of this bound, known before the task is
    built: quantization choices (plus float), densities and distillation knobs (a
    larger dimension is refused when the task is built). Actions map proportionally onto each
    dimension's own choices, so every choice stays reachable. None for a kind with a tool
    beyond those (registered later): its env builds the task to read its space.
    """
    if not set(kind_tools(tool)) <= {"prune", "quantize", "distill"}:
        return None
    sizes = [*(len(c) for c in DISTILL_CHOICES.values())]
    if tool in ("quantize", "compress"):
        sizes.append(len(tuple(task_kwargs.get("quant_choices", QUANT_CHOICES))) + 1)
    if tool in ("prune", "compress"):
        sizes.append(len(tuple(task_kwargs.get("densities", DENSITY_CHOICES))))
    return max(sizes)


class CompressionEnv(gym.Env):
    """A compression task as a Gymnasium environment.

    Construct it from a :class:`Task` or from the task's arguments (``model``,
    ``tool``, ``scorer``, ``runner``, ...). ``budget`` caps the number of plans the
    environment will evaluate; further episodes end truncated with reward 0.

    Built from arguments in layer-wise mode, the task (model translation, calibration,
    profiling) is built on first use (``reset`` or ``.task``), not in the constructor:
    ``gym.make_vec(..., vectorization_mode="async")`` constructs one env in the parent
    to read the spaces and then forks the workers, and a parent that had already started
    torch's, TVM's and ONNX Runtime's thread pools would hand the forked workers locks
    that no thread will ever release. The one-shot form needs the number of layers for
    its ``MultiDiscrete`` action space, so it builds the task at once. A worker forked from
    a process whose torch thread pool already ran builds and runs with one torch thread
    (see :func:`_fork_safe_threads`).

    ``render_mode="ansi"``: ``render()`` returns the plan chosen so far as text.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        task: Task | None = None,
        *,
        tool: str = "quantize",
        model: Any = "digits-cnn",
        mode: str = "layerwise",
        budget: int | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise MSCError(f"unknown env mode {mode!r}; expected one of {list(MODES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise MSCError(f"unknown render_mode {render_mode!r}; expected None or one of "
                           f"{self.metadata['render_modes']}")
        task_kwargs.setdefault("profile_repeat", 20)
        self.render_mode = render_mode
        self.mode = mode
        self.budget = budget
        self._task = task
        self._task_args = (model, tool, task_kwargs)
        self._step = 0
        self._indices: list[int] = []
        self._evaluated: set[str] = set()
        self._last_score: float | None = None
        self._features: np.ndarray | None = None
        low = np.zeros(len(FEATURES), dtype=np.float32)
        high = np.ones(len(FEATURES), dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._max_choices: int | None = (None if task is not None
                                         else _choices_bound(tool, task_kwargs))
        if self._max_choices is None:
            self._max_choices = max(self.task.space.sizes)
        if mode == "layerwise":
            self.action_space = spaces.Discrete(self._max_choices)
        else:
            self.action_space = spaces.MultiDiscrete(self.task.space.sizes)
        if seed is not None:
            self.reset(seed=seed)

    @property
    def task(self) -> Task:
        """The task behind the env, built on first use (see the class docstring)."""
        if self._task is None:
            model, tool, task_kwargs = self._task_args
            _fork_safe_threads()
            task = Task(model, tool, **task_kwargs)
            if self._max_choices is not None and max(task.space.sizes) > self._max_choices:
                raise MSCError(f"task {tool}/{model} has a dimension with "
                               f"{max(task.space.sizes)} choices, more than the "
                               f"{self._max_choices} actions of this env")
            self._task = task
        return self._task

    @property
    def dims(self) -> list[Any]:
        return list(self.task.space)

    @property
    def _sizes(self) -> list[int]:
        return self.task.space.sizes

    @property
    def _table(self) -> np.ndarray:
        if self._features is None:
            self._features = layer_features(self.task)
        return self._features

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
        self._last_score = score
        return score, False, {"plan": plan, "metrics": metrics.to_json(), "score": score}

    def render(self) -> str | None:
        """With ``render_mode="ansi"``: the plan chosen so far, one dimension a line."""
        if self.render_mode is None:
            return None
        dims = self.dims
        lines = [f"{self.task.tool} {self.task.source.model_id}: step {self._step}/"
                 f"{len(dims)}"]
        for dim, index in zip(dims, self._indices, strict=False):
            choice = dim.choices[index]
            mark = "" if choice == dim.baseline else "  *"
            lines.append(f"  {dim.name} = {choice}{mark}")
        if len(self._indices) < len(dims):
            lines.append(f"  ({len(dims) - len(self._indices)} dimensions still to choose)")
        elif self._last_score is not None:
            lines.append(f"  score {self._last_score:.4g}")
        return "\n".join(lines) + "\n"

    # -- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._step = 0
        self._indices = []
        self._last_score = None
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
