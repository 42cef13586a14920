"""Losses that compare a student with its teacher.

Two kinds of consumers: the distiller trains with the torch losses (differentiable,
the soft-target KL scaled by ``T**2`` as in Hinton et al. so its gradients keep their
size whatever the temperature), and tasks score a compressed model with the pure
:func:`distill_loss` metric on the outputs any runner returns (numpy arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from mscgym.compiler.errors import MSCError

OUTPUT_LOSSES = ("kl", "mse", "kl+ce")
FEATURE_LOSSES = ("mse",)


def kl_loss(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over samples.

    The class axis is the last one; every leading axis counts as a sample.
    """
    classes = student.shape[-1]
    log_p = F.log_softmax(teacher.reshape(-1, classes) / temperature, dim=-1)
    log_q = F.log_softmax(student.reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return kl * (temperature * temperature)


def mse_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of logits (or features), mean over every element."""
    return F.mse_loss(student, teacher)


def ce_loss(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's logits against hard labels."""
    return F.cross_entropy(student.reshape(-1, student.shape[-1]), labels.reshape(-1))


def output_loss(
    kind: str, teacher: torch.Tensor, student: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The soft-target term of the config's ``loss``: KL for "kl"/"kl+ce", else MSE."""
    if kind in ("kl", "kl+ce"):
        return kl_loss(teacher, student, temperature)
    if kind == "mse":
        return mse_loss(teacher, student)
    raise MSCError(f"distiller loss {kind!r} is not one of {list(OUTPUT_LOSSES)}")


def feature_loss(kind: str, teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Loss between an intermediate tensor of the teacher and the student's."""
    if kind == "mse":
        return mse_loss(teacher, student)
    raise MSCError(f"intermediate loss {kind!r} is not one of {list(FEATURE_LOSSES)}")


def distill_loss(teacher_outputs: Any, student_outputs: Any, temperature: float = 1.0) -> float:
    """KL(teacher || student) of softmax at ``temperature``, mean over the batch.

    The metric tasks report as ``distill_loss``: 0 exactly when the outputs agree,
    positive otherwise, finite for any finite logits (zeros included), since it works
    on log-softmax in float64 and never divides by a probability. It is not scaled by
    ``T**2`` (that scaling only keeps training gradients comparable across
    temperatures). Each argument is one output (numpy array or torch tensor, class
    axis last) or a sequence of outputs, as a runner returns them; several outputs
    give the mean of their losses.
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise MSCError(f"distill_loss: temperature must be a finite number > 0, "
                       f"got {temperature!r}")
    teachers, students = _as_output_list(teacher_outputs), _as_output_list(student_outputs)
    if not teachers:
        raise MSCError("distill_loss: no outputs to compare")
    if len(teachers) != len(students):
        raise MSCError(f"distill_loss: the teacher gives {len(teachers)} outputs, the student "
                       f"{len(students)}")
    losses = []
    for index, (teacher, student) in enumerate(zip(teachers, students, strict=True)):
        if teacher.shape != student.shape or teacher.ndim == 0:
            raise MSCError(f"distill_loss: output {index} has teacher shape {teacher.shape} and "
                           f"student shape {student.shape}; expected equal shapes with a class "
                           "axis")
        log_p = _log_softmax(teacher.reshape(-1, teacher.shape[-1]) / temperature)
        log_q = _log_softmax(student.reshape(-1, student.shape[-1]) / temperature)
        per_sample = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
        losses.append(max(float(np.mean(per_sample)), 0.0))
    return float(np.mean(losses))


def _as_output_list(outputs: Any) -> list[np.ndarray]:
    items = outputs if isinstance(outputs, Sequence) else [outputs]
    arrays = []
    for item in items:
        value = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        arrays.append(np.asarray(value, dtype=np.float64))
    return arrays


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
