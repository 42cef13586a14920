"""The model registry: names, how each model is built and prepared, and ``load``.

``load`` builds a network from a fixed seed, then either restores its weights from the
on-disk cache or prepares them (trains digits models; sets BatchNorm statistics of the
untrained ImageNet models) and caches them, and wraps the result with its data as a
:class:`ZooModel`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mscgym.utils.hashing import state_dict_hash
from mscgym.zoo import cache, data
from mscgym.zoo.mobilenet import digits32_mobilenet, digits_mobilenet, mobilenetv2
from mscgym.zoo.names import list_models
from mscgym.zoo.resnet import cifar_resnet20, digits_resnet, resnet18
from mscgym.zoo.small import DigitsCNN, DigitsMLP
from mscgym.zoo.training import (
    RECIPE_VERSION,
    TrainRecipe,
    build_seeded,
    set_batchnorm_statistics,
    train_classifier,
)
from mscgym.zoo.transformer import DigitsTransformer

logger = logging.getLogger(__name__)

# Batch size of the forward passes that measure BatchNorm statistics of untrained models.
_BN_STATS_BATCH = 16


DIGITS32_RESNET_WIDTH = 24
"""Channels of the first stage of ``digits32-resnet20``: 1.5x the paper's 16, so one image
takes more than a millisecond on ONNX Runtime (16 measured about 0.8 ms on 2 cores)."""


def digits32_resnet20() -> nn.Module:
    """ResNet-20 for the 1x32x32 digits (see :data:`DIGITS32_RESNET_WIDTH`)."""
    return cifar_resnet20(DIGITS32_RESNET_WIDTH)


@dataclass(frozen=True)
class ModelSpec:
    """How to make one zoo model: its network, its data and (for digits) its training."""

    name: str
    factory: Callable[[], nn.Module]
    dataset: Callable[[], data.ZooData]
    recipe: TrainRecipe | None  # None: untrained, only BatchNorm statistics are set
    seed: int = 0


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("digits-mlp", DigitsMLP, data.digits, TrainRecipe(epochs=30, lr=2e-3)),
        ModelSpec("digits-cnn", DigitsCNN, data.digits, TrainRecipe(epochs=15, lr=3e-3)),
        ModelSpec("digits-resnet", digits_resnet, data.digits, TrainRecipe(epochs=15, lr=3e-3)),
        ModelSpec(
            "digits-mobilenet", digits_mobilenet, data.digits, TrainRecipe(epochs=12, lr=5e-3)
        ),
        ModelSpec(
            "digits-transformer",
            DigitsTransformer,
            data.digits,
            TrainRecipe(epochs=30, lr=3e-3),
        ),
        ModelSpec("digits32-resnet20", digits32_resnet20, data.digits32,
                  TrainRecipe(epochs=6, lr=3e-3)),
        ModelSpec("digits32-mobilenetv2", digits32_mobilenet, data.digits32,
                  TrainRecipe(epochs=6, lr=3e-3)),
        ModelSpec("resnet18", resnet18, data.sample_crops, None),
        ModelSpec("mobilenetv2", mobilenetv2, data.sample_crops, None),
    )
}


class ZooModel:
    """A ready-to-use zoo model with its data, hashes and evaluation helpers.

    Attributes:
        name: registry name.
        model: the network, float32 on CPU, in eval mode.
        example_inputs: one-sample input tuple for ``torch.export.export``.
        input_shape: shape of ``example_inputs[0]``.
        train_data: (inputs, labels) of the labelled train split (fine-tuning and
            distillation), or ``None`` without labels.
        test_data: (inputs, labels) of the labelled test split, or ``None`` without labels.
        eval_inputs: held-out inputs (the test inputs where labelled) for distillation loss.
        weight_hash: sha256 of the state_dict as loaded (``utils.hashing.state_dict_hash``).
        data_hash: sha256 of the calibration pool and held-out data.
        weights_path: the cache file the weights were read from or written to.
    """

    def __init__(
        self, name: str, model: nn.Module, dataset: data.ZooData, weights_path: Path
    ) -> None:
        self.name = name
        self.model = model
        self.weights_path = weights_path
        self.weight_hash = state_dict_hash(model.state_dict())
        self.data_hash = dataset.hash
        self._calibration_pool = dataset.train_inputs
        self.eval_inputs = torch.tensor(dataset.eval_inputs)
        self.train_data: tuple[torch.Tensor, torch.Tensor] | None = None
        if dataset.train_labels is not None:
            self.train_data = (
                torch.tensor(dataset.train_inputs),
                torch.tensor(dataset.train_labels),
            )
        self.test_data: tuple[torch.Tensor, torch.Tensor] | None = None
        if dataset.eval_labels is not None:
            self.test_data = (self.eval_inputs, torch.tensor(dataset.eval_labels))
        self.example_inputs: tuple[torch.Tensor, ...] = (self.eval_inputs[:1].clone(),)
        self.input_shape: tuple[int, ...] = tuple(self.example_inputs[0].shape)

    def __repr__(self) -> str:
        return f"ZooModel(name={self.name!r}, weight_hash={self.weight_hash[:12]}...)"

    def calibration_batches(self, n_batches: int = 4, batch_size: int = 16) -> list[torch.Tensor]:
        """Return ``n_batches`` batches of training-split inputs, the same on every call.

        Samples are taken in order from the calibration pool (the train split for digits,
        the calibration crops for ImageNet models) and wrap around when more are asked for
        than the pool holds; test inputs are never used.
        """
        if n_batches < 1 or batch_size < 1:
            raise ValueError(
                f"n_batches and batch_size must be >= 1, got {n_batches}, {batch_size}"
            )
        indices = np.arange(n_batches * batch_size) % len(self._calibration_pool)
        return [
            torch.tensor(self._calibration_pool[chunk]) for chunk in np.split(indices, n_batches)
        ]

    def accuracy(
        self, fn: Callable[[torch.Tensor], object], batch_size: int | None = None
    ) -> float:
        """Return the fraction of test samples whose argmax logit from ``fn`` is the label.

        ``fn`` maps an input batch (torch tensor) to logits of shape (batch, classes) as a
        torch tensor, numpy array or anything with ``.numpy()``. With ``batch_size`` the
        test set goes in chunks of exactly that size (the last one padded by repeating its
        final sample, padded outputs dropped), which suits compiled static-shape models;
        without it the whole test set is one batch. ``fn`` runs under ``torch.no_grad``.
        """
        if self.test_data is None:
            raise ValueError(
                f"zoo model {self.name!r} has no labelled test data, so accuracy is undefined; "
                "compare outputs with the float model on eval_inputs instead"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        inputs, labels = self.test_data
        size = batch_size or len(inputs)
        correct = 0
        for start in range(0, len(inputs), size):
            chunk = inputs[start : start + size]
            real = len(chunk)
            if real < size:
                chunk = torch.cat([chunk, chunk[-1:].expand(size - real, *chunk.shape[1:])])
            with torch.no_grad():
                logits = _to_numpy(fn(chunk))
            if logits.ndim != 2 or logits.shape[0] != len(chunk):
                raise ValueError(
                    f"fn must return logits of shape ({len(chunk)}, classes), got {logits.shape}"
                )
            predictions = logits[:real].argmax(axis=1)
            correct += int((predictions == labels[start : start + real].numpy()).sum())
        return correct / len(inputs)


def _to_numpy(output: object) -> np.ndarray:
    """Convert a torch tensor, runtime tensor with ``.numpy()`` or array-like to numpy."""
    if isinstance(output, torch.Tensor):
        return output.detach().cpu().numpy()
    numpy = getattr(output, "numpy", None)
    if callable(numpy):
        return np.asarray(numpy())
    return np.asarray(output)


def load(name: str, cache_dir: str | os.PathLike[str] | None = None,
         rebuild_corrupt: bool = False) -> ZooModel:
    """Return zoo model ``name``, preparing and caching its weights on first use.

    ``cache_dir`` defaults to ``$MSCGYM_CACHE_DIR`` or ``~/.cache/mscgym/zoo``. A cached
    file that is corrupt or does not fit the network raises :class:`ZooCacheError`, or,
    with ``rebuild_corrupt`` (what tasks, records and the pipeline use), is logged as a
    warning and rebuilt, so one bad file cannot stop every later run.
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise cache.UnknownModelError(
            f"unknown zoo model {name!r}; known models: {', '.join(list_models())}")
    dataset = spec.dataset()
    model = build_seeded(spec.factory, spec.seed)
    path = cache.weights_path(cache.resolve_cache_dir(cache_dir), name, RECIPE_VERSION)
    metadata = {"model": name, "recipe_version": str(RECIPE_VERSION), "data_hash": dataset.hash}
    if path.exists():
        try:
            cache.load_weights(path, model, metadata)
        except cache.ZooCacheError as err:
            if not rebuild_corrupt:
                raise
            logger.warning("%s; rebuilding it", err)
            path.unlink(missing_ok=True)
            return load(name, cache_dir)
    else:
        started = time.perf_counter()
        _prepare(spec, model, dataset)
        logger.info("prepared zoo model %s in %.1f s", name, time.perf_counter() - started)
        cache.save_weights(path, model, metadata)
    return ZooModel(name, model.eval(), dataset, path)


def _prepare(spec: ModelSpec, model: nn.Module, dataset: data.ZooData) -> None:
    """Train (labelled data) or set BatchNorm statistics (unlabelled) in place."""
    if spec.recipe is not None:
        if dataset.train_labels is None:
            raise ValueError(f"zoo model {spec.name!r} has a training recipe but no labels")
        train_classifier(model, dataset.train_inputs, dataset.train_labels, spec.recipe)
        return
    pool = torch.tensor(dataset.train_inputs)
    set_batchnorm_statistics(model, pool.split(_BN_STATS_BATCH), spec.seed)
