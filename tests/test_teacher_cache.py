"""The teacher's outputs cached across fine-tunings (``Distiller.set_teacher(outputs=...)``):
the same trained weights as running the teacher per batch, computed once per teacher,
inputs and matched tensors, never reused for another teacher."""

from __future__ import annotations

import pytest
import torch

from mscgym import zoo
from mscgym.compiler.frontend import from_torch
from mscgym.tools import create_tool
from mscgym.tools.distiller import TeacherOutputs

SAMPLES = 192  # a slice of the training split keeps each fine-tuning well under a second


@pytest.fixture(scope="module")
def setup():
    model = zoo.load("digits-resnet")
    graph, params = from_torch(model.model, (model.eval_inputs[:4],))
    student = create_tool("prune", graph, params, {"density": 0.5}).transform(graph, params)
    train_inputs, train_labels = model.train_data
    inputs = torch.as_tensor(train_inputs[:SAMPLES])
    labels = torch.as_tensor(train_labels[:SAMPLES])
    return (graph, params), student, inputs, labels


def _fine_tune(setup, cache, *, teacher=None, student=None, intermediate=(), epochs=1) -> str:
    (graph, params), pruned, inputs, labels = setup
    s_graph, s_params = student or pruned
    config = {"loss": "kl+ce", "epochs": epochs, "lr": 1e-3, "seed": 0, "progress": False,
              "intermediate": "auto" if intermediate == "auto" else []}
    distiller = create_tool("distill", s_graph, s_params, config)
    distiller.set_teacher(*(teacher or (graph, params)), outputs=cache)
    assert bool(distiller.matched) == (intermediate == "auto")
    distiller.distill(inputs, labels)
    return distiller.strategy()["weights_sha256"]


def test_cached_outputs_give_the_same_weights_and_are_computed_once(setup) -> None:
    cache = TeacherOutputs()
    plain = _fine_tune(setup, None, epochs=2)
    assert _fine_tune(setup, cache, epochs=2) == plain
    assert (cache.hits, cache.misses) == (0, 1)
    assert _fine_tune(setup, cache, epochs=1) == _fine_tune(setup, None, epochs=1)
    assert (cache.hits, cache.misses) == (1, 1)


def test_matched_features_and_another_teacher_are_other_entries(setup) -> None:
    cache = TeacherOutputs()
    _fine_tune(setup, cache)
    # "auto" adds the residual stages' features (shapes agree with an unpruned student)
    # to the teacher's outputs: another entry
    (graph, params), *_ = setup
    assert _fine_tune(setup, cache, student=(graph, params), intermediate="auto") == _fine_tune(
        setup, None, student=(graph, params), intermediate="auto")
    assert (cache.hits, cache.misses) == (0, 2)
    other = {name: value * 0.5 if value.ndim > 1 else value for name, value in params.items()}
    assert _fine_tune(setup, cache, teacher=(graph, other)) == _fine_tune(
        setup, None, teacher=(graph, other))
    assert (cache.hits, cache.misses) == (0, 3)  # never the first teacher's outputs
