"""Offline data sets for the zoo: everything comes from files that ship with scikit-learn.

Two sources, so no run ever downloads anything:

* ``digits``: the 1,797 8x8 handwritten digits of ``sklearn.datasets.load_digits``, split
  80/20 (stratified, fixed seed) into a train split (training and calibration) and a
  labelled test split (accuracy).
* ``digits32``: the same split with every image upsampled bilinearly to 32x32, so
  CIFAR-sized networks (ResNet-20, MobileNetV2) run where latency is in milliseconds and
  accuracy is still measured on labels.
* ``sample_crops``: 224x224 crops at fixed offsets from the two photos of
  ``sklearn.datasets.load_sample_images``. They have no labels; they exist so ImageNet-sized
  models can be calibrated and their distillation loss measured on real image statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.datasets import load_digits, load_sample_images
from sklearn.model_selection import train_test_split
from torch import from_numpy
from torch.nn.functional import interpolate

from mscgym.utils.hashing import arrays_hash

# Mean and std of all digit pixels after scaling to [0, 1]; fixed constants (not recomputed
# per split) so every consumer normalizes identically.
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3760
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
# Calibration and evaluation crops sit at disjoint offsets (top, left) of the 427x640 photos.
_CALIBRATION_TOPS = (0, 68, 135, 203)
_CALIBRATION_LEFTS = (0, 104, 208, 312, 416)
_EVAL_TOPS = (34, 169)
_EVAL_LEFTS = (52, 260, 364)


@dataclass(frozen=True)
class ZooData:
    """Arrays behind one zoo data set (read-only numpy, float32 NCHW inputs, int64 labels).

    ``train_inputs`` is the pool calibration batches are cut from (never the test split).
    ``eval_inputs`` is the held-out set; ``eval_labels`` is ``None`` where there are no labels.
    """

    name: str
    train_inputs: np.ndarray
    train_labels: np.ndarray | None
    eval_inputs: np.ndarray
    eval_labels: np.ndarray | None

    @property
    def hash(self) -> str:
        """sha256 of every array, so records can tell data sets apart by content."""
        return arrays_hash(
            {
                "train_inputs": self.train_inputs,
                "train_labels": self.train_labels,
                "eval_inputs": self.eval_inputs,
                "eval_labels": self.eval_labels,
            }
        )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@cache
def digits() -> ZooData:
    """Return the normalized digits split (cached: every zoo digits model shares it)."""
    bunch = load_digits()
    images = bunch.images.astype(np.float32).reshape(-1, 1, 8, 8) / np.float32(16.0)
    images = (images - np.float32(DIGITS_MEAN)) / np.float32(DIGITS_STD)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    return ZooData(
        name="digits",
        train_inputs=_read_only(np.ascontiguousarray(x_train, dtype=np.float32)),
        train_labels=_read_only(np.ascontiguousarray(y_train)),
        eval_inputs=_read_only(np.ascontiguousarray(x_test, dtype=np.float32)),
        eval_labels=_read_only(np.ascontiguousarray(y_test)),
    )


DIGITS32_SIZE = 32


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (half-pixel centres, as ONNX Resize) upsampling of NCHW float32 images."""
    resized = interpolate(from_numpy(np.array(images)), size=(size, size), mode="bilinear",
                          align_corners=False)
    return _read_only(np.ascontiguousarray(resized.numpy(), dtype=np.float32))


@cache
def digits32() -> ZooData:
    """Return the digits split upsampled to 32x32 (same samples, labels and normalization)."""
    small = digits()
    return ZooData(
        name="digits32",
        train_inputs=_upsample(small.train_inputs, DIGITS32_SIZE),
        train_labels=small.train_labels,
        eval_inputs=_upsample(small.eval_inputs, DIGITS32_SIZE),
        eval_labels=small.eval_labels,
    )


def _crops(
    images: list[np.ndarray], tops: tuple[int, ...], lefts: tuple[int, ...], flips: bool
) -> np.ndarray:
    """Cut CROP_SIZE squares at every (top, left), optionally adding mirrored copies."""
    crops = []
    for image in images:
        for top in tops:
            for left in lefts:
                crop = image[top : top + CROP_SIZE, left : left + CROP_SIZE]
                crops.append(crop)
                if flips:
                    crops.append(crop[:, ::-1])
    batch = np.stack(crops).astype(np.float32) / np.float32(255.0)
    batch = (batch - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


@cache
def sample_crops() -> ZooData:
    """Return unlabeled ImageNet-normalized crops: 80 for calibration, 12 held out."""
    images = list(load_sample_images().images)
    return ZooData(
        name="sample-crops",
        train_inputs=_read_only(_crops(images, _CALIBRATION_TOPS, _CALIBRATION_LEFTS, True)),
        train_labels=None,
        eval_inputs=_read_only(_crops(images, _EVAL_TOPS, _EVAL_LEFTS, False)),
        eval_labels=None,
    )
