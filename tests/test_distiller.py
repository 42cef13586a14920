"""Tests for the distiller: real pruning, real quantization, real training, no mocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mscgym import zoo
from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.frontend import from_torch
from mscgym.runtime.manager import RuntimeManager
from mscgym.tools import MSC_TOOL, ToolConfigError, create_tool
from mscgym.tools.distiller import Distiller, weights_sha256
from mscgym.tools.losses import distill_loss, kl_loss

# One-pixel shifts of the digits: the teacher labels them (soft targets), so the student
# learns from five times as many inputs without any test data.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


@pytest.fixture(scope="module")
def resnet() -> zoo.ZooModel:
    return zoo.load("digits-resnet")


@pytest.fixture(scope="module")
def teacher(resnet: zoo.ZooModel):
    return from_torch(resnet.model, (resnet.eval_inputs[:4],))


@pytest.fixture(scope="module")
def pruned(teacher):
    graph, params = teacher
    return create_tool("prune", graph, params, {"density": 0.5}).transform(graph, params)


def accuracy(model: zoo.ZooModel, graph, params, quant=None) -> float:
    module = to_torch(graph, params, quant).eval()
    return model.accuracy(lambda x: module(x)[0])


def shifted(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs moved by each of SHIFTS, the uncovered border filled with background."""
    background = float(inputs.min())
    copies = []
    for dy, dx in SHIFTS:
        moved = torch.roll(inputs, shifts=(dy, dx), dims=(2, 3))
        if dy:
            moved[:, :, 0 if dy > 0 else -1, :] = background
        if dx:
            moved[:, :, :, 0 if dx > 0 else -1] = background
        copies.append(moved)
    return torch.cat(copies), labels.repeat(len(SHIFTS))


def test_pruned_student_recovers_within_two_points(resnet, teacher, pruned) -> None:
    graph, params = teacher
    student_graph, student_params = pruned
    teacher_acc = accuracy(resnet, graph, params)
    before = accuracy(resnet, student_graph, student_params)
    distiller = create_tool("distill", student_graph, student_params,
                            {"loss": "kl+ce", "epochs": 5, "lr": 5e-3, "progress": False,
                             "intermediate": "auto"})
    distiller.set_teacher(graph, params)
    assert distiller.matched == []  # every residual stage lost half its channels
    history = distiller.distill(*shifted(*resnet.train_data),
                                eval_fn=lambda predict: resnet.accuracy(predict))
    out_graph, out_params = distiller.transform(student_graph, student_params)
    after = accuracy(resnet, out_graph, out_params)
    print(f"\nteacher {teacher_acc:.4f}  pruned before {before:.4f}  after {after:.4f}  "
          f"history {[round(h['eval'], 4) for h in history]}")
    assert out_graph is student_graph and set(out_params) == set(student_params)
    assert after == pytest.approx(history[-1]["eval"])
    assert before < teacher_acc - 0.2
    assert after >= teacher_acc - 0.02
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["ce"] is not None


def test_quantized_student_trains_with_fake_quant(resnet, teacher) -> None:
    graph, params = teacher
    manager = RuntimeManager(graph, params, {"runner": "torch"})
    quantizer = manager.create_tool(MSC_TOOL.QUANTIZE,
                                    {"weight": {"dtype": "int4", "per_channel": False}})
    manager.load_model()
    while not quantizer.calibrated:
        for batch in resnet.calibration_batches(4, 32):
            manager.run(batch)
        quantizer.calibrate()
    manager.load_model(reuse_weights=True)
    before = resnet.accuracy(lambda x: manager.run(x)[0])
    distiller = manager.create_tool(MSC_TOOL.DISTILL, {"loss": "kl+ce", "epochs": 2, "lr": 3e-4,
                                                       "intermediate": "auto", "progress": False})
    distiller.set_quant(quantizer.quant_plan())
    assert [p.student for p in distiller.matched] == ["layer1.0.conv2", "layer2.1.conv2"]
    history = distiller.distill(*resnet.train_data)
    manager.load_model(reuse_weights=True)
    after = resnet.accuracy(lambda x: manager.run(x)[0])
    print(f"\nint4 student before {before:.4f}  after {after:.4f}")
    assert after >= before
    assert all(h["feature_loss"] > 0 and h["eval"] is None for h in history)
    # The plan is in the training loop: the same run without it ends on other weights.
    inputs, labels = resnet.train_data
    hashes = []
    for plan in ({}, quantizer.quant_plan()):
        short = manager.create_tool(MSC_TOOL.DISTILL, {"epochs": 1, "progress": False})
        short.set_quant(plan)
        short.distill(inputs[:128], labels[:128])
        hashes.append(short.strategy()["weights_sha256"])
    assert hashes[0] != hashes[1]


def test_distill_loss_metric() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((16, 10)).astype(np.float32)
    other = rng.standard_normal((16, 10)).astype(np.float32)
    assert distill_loss(logits, logits, 4.0) == 0.0
    assert distill_loss([logits], [torch.from_numpy(logits)], 1.0) == 0.0
    assert distill_loss(logits, other, 4.0) > 0.0
    zeros = np.zeros((4, 10), np.float32)
    assert distill_loss(zeros, zeros, 2.0) == 0.0
    assert np.isfinite(distill_loss(zeros, np.full((4, 10), 1e4, np.float32), 0.5))
    big = np.zeros((4, 10), np.float32)
    big[:, 0] = 1e4
    assert np.isfinite(distill_loss(big, zeros, 1.0)) and distill_loss(big, zeros, 1.0) > 0
    # The training loss is the same KL, scaled by T**2.
    torch_kl = kl_loss(torch.from_numpy(logits), torch.from_numpy(other), 4.0).item()
    assert torch_kl == pytest.approx(16.0 * distill_loss(logits, other, 4.0), rel=1e-5)
    with pytest.raises(MSCError, match="temperature"):
        distill_loss(logits, other, 0.0)
    with pytest.raises(MSCError, match="shape"):
        distill_loss(logits, other[:, :5], 1.0)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"loss": "hinge"}, "loss"),
        ({"alpha": 1.5}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lamb"}, "optimizer"),
        ({"progress": "yes"}, "progress"),
        ({"intermediate": "all"}, "intermediate"),
        ({"intermediate": [{"student": "layer9.conv", "teacher": "fc"}]}, "layer9.conv"),
        ({"intermediate": [{"student": "fc", "teacher": "fc", "loss": "l1"}]}, "loss"),
        ({"schedule": "step"}, "schedule"),
        ({"threads": -1}, "threads"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_config_names_the_key(teacher, config, key) -> None:
    graph, params = teacher
    with pytest.raises(ToolConfigError, match=key):
        Distiller(graph, params, config)


def test_bad_teacher_pairs_and_labels(resnet, teacher, pruned) -> None:
    graph, params = teacher
    distiller = Distiller(*pruned, {"intermediate": [{"student": "fc", "teacher": "nope"}]})
    with pytest.raises(ToolConfigError, match="'teacher'.*nope"):
        distiller.set_teacher(graph, params)
    mismatch = Distiller(*pruned, {"intermediate": [{"student": "conv1", "teacher": "conv1"}]})
    with pytest.raises(ToolConfigError, match="different shapes"):
        mismatch.set_teacher(graph, params)
    needs_labels = Distiller(graph, params, {"loss": "kl+ce", "progress": False})
    with pytest.raises(ToolConfigError, match="train_labels"):
        needs_labels.distill(resnet.train_data[0])
    with pytest.raises(ToolConfigError, match="set_quant.*ghost"):
        needs_labels.set_quant({"ghost": None})


def _short_run(resnet, teacher, pruned, seed: int) -> Distiller:
    inputs, labels = resnet.train_data
    distiller = Distiller(*pruned, {"loss": "kl+ce", "epochs": 1, "seed": seed,
                                    "progress": False})
    distiller.set_teacher(*teacher)
    distiller.distill(inputs[:256], labels[:256])
    return distiller


def test_same_seed_gives_identical_weights(resnet, teacher, pruned) -> None:
    threads = torch.get_num_threads()
    first, second = (_short_run(resnet, teacher, pruned, seed=3) for _ in range(2))
    assert torch.get_num_threads() == threads  # the run's single thread is not left behind
    other = _short_run(resnet, teacher, pruned, seed=4)
    a, b = first.distilled_params, second.distilled_params
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert first.strategy() == second.strategy()
    assert other.strategy()["weights_sha256"] != first.strategy()["weights_sha256"]
    assert first.strategy()["weights_sha256"] == weights_sha256(a)
    assert any(not np.array_equal(a[k], pruned[1][k]) for k in a)


def test_strategy_round_trip_and_stale_graph(resnet, teacher, pruned, tmp_path) -> None:
    distiller = _short_run(resnet, teacher, pruned, seed=0)
    path = distiller.save_strategy(tmp_path / "distill.json")
    document = json.loads(open(path, encoding="utf-8").read())
    assert document["tool"] == "distill"
    strategy = document["strategy"]
    assert strategy["config"]["seed"] == 0 and strategy["matched"] == []
    assert set(strategy["final"]) == {"loss", "distill_loss", "feature_loss", "ce", "eval"}
    replay = Distiller(*pruned, {})
    replay.set_teacher(*teacher)
    replay.load_strategy(path)
    assert replay.strategy() == strategy
    bad = dict(strategy, weights_sha256="xyz")
    with pytest.raises(ToolConfigError, match="weights_sha256"):
        replay.set_strategy(bad)
    with pytest.raises(ToolConfigError, match="temperature"):
        replay.set_strategy(dict(strategy, config={"temperature": -1}))
    # The distilled weights belong to the pruned graph, not the float one.
    with pytest.raises(ToolConfigError, match="shape"):
        distiller.transform(*teacher)
