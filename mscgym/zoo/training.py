"""Deterministic recipes that turn a freshly initialized zoo network into usable weights.

Digits models are trained with Adam; the untrained ImageNet-sized models only get their
BatchNorm running statistics set from calibration crops. Both run single-threaded with
deterministic algorithms and a forked RNG, so the result is the same bytes run to run and
the caller's global torch state (seed, threads, determinism flag) is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Bump whenever a recipe, an initialization or a data set changes, so cached weights
# from older recipes are never reused (the version is part of the cache file name).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class TrainRecipe:
    """Hyperparameters of one supervised training run (Adam, cosine-decayed learning rate)."""

    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, use one thread and deterministic kernels; restore everything afterwards."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(threads)


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Construct a network with its random initialization drawn from ``seed``."""
    with deterministic(seed):
        return factory()


def train_classifier(
    model: nn.Module, inputs: np.ndarray, labels: np.ndarray, recipe: TrainRecipe
) -> None:
    """Train ``model`` in place with cross entropy on (inputs, labels), then set eval mode."""
    x = torch.from_numpy(np.array(inputs, dtype=np.float32))
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    with deterministic(recipe.seed):
        order = torch.Generator().manual_seed(recipe.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=recipe.epochs * steps_per_epoch
        )
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(recipe.epochs):
            for batch in torch.randperm(len(x), generator=order).split(recipe.batch_size):
                optimizer.zero_grad()
                loss_fn(model(x[batch]), y[batch]).backward()
                optimizer.step()
                schedule.step()
    model.eval()


def set_batchnorm_statistics(
    model: nn.Module, batches: Sequence[torch.Tensor], seed: int = 0
) -> None:
    """Replace BatchNorm running statistics by their exact average over ``batches``.

    A randomly initialized network with the default running stats (mean 0, var 1) lets
    activations blow up or vanish layer by layer; statistics measured on real images keep
    every layer well scaled, which quantization calibration and distillation need. Only
    buffers change: the forward passes run under ``no_grad`` in train mode with
    ``momentum=None`` (cumulative average), then the model is put back in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    with deterministic(seed), torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        for batch in batches:
            model(batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()
