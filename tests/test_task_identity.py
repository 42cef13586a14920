"""A task's identity hashes (weights, data, student) are computed once and stay equal to
hashing the arrays afresh; what ``describe`` hands out cannot change them."""

from __future__ import annotations

import pytest

from mscgym.tasks.sources import params_hash
from mscgym.tasks.task import Task


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("digits-mlp", "quantize", profile_repeat=2, profile_warmup=1)


def test_identity_hashes_equal_fresh_hashes_of_weights_and_data(task: Task) -> None:
    described = task.describe()
    assert described["weight_hash"] == params_hash(task.params) == task.source.weight_hash
    assert described["data_hash"] == task.data.data_hash
    assert task.describe() == described


def test_describe_hands_out_copies(task: Task) -> None:
    key = task.plan_key(task.space.baseline_plan())
    described = task.describe()
    described["student"]["prune"] = 0.1
    assert task.describe()["student"] == {"prune": 0.5}
    assert task.plan_key(task.space.baseline_plan()) == key


def test_calibration_of_the_task_graph_is_computed_once(task: Task) -> None:
    first = task.calibration(task.graph, task.params, "int8_channel_minmax")
    assert first  # every quantizable layer has a plan entry
    assert task.calibration(task.graph, task.params, "int8_channel_minmax") is first
    # The same weights in another dict are hashed afresh and land on the same entry.
    assert task.calibration(task.graph, dict(task.params), "int8_channel_minmax") is first
