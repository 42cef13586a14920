"""Tests for mscgym.zoo: real training and real files, no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mscgym import zoo
from mscgym.zoo import data as zoo_data
from mscgym.zoo.cache import resolve_cache_dir, weights_path
from mscgym.zoo.training import RECIPE_VERSION

DIGITS_MODELS = [
    "digits-mlp",
    "digits-cnn",
    "digits-resnet",
    "digits-mobilenet",
    "digits-transformer",
]
DIGITS32_MODELS = ["digits32-resnet20", "digits32-mobilenetv2"]
IMAGENET_PARAMETERS = {"resnet18": 11_689_512, "mobilenetv2": 3_504_872}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so each model is trained or calibrated only once."""
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="session")
def load_cached(cache_dir: Path):
    """Load zoo models from the session cache, keeping each loaded model for reuse."""
    loaded: dict[str, zoo.ZooModel] = {}

    def _load(name: str) -> zoo.ZooModel:
        if name not in loaded:
            loaded[name] = zoo.load(name, cache_dir=cache_dir)
        return loaded[name]

    return _load


def test_list_models() -> None:
    assert zoo.list_models() == [*DIGITS_MODELS, *DIGITS32_MODELS, "resnet18", "mobilenetv2"]


def _cached_or_slow(name: str) -> pytest.param:
    """A model in the user's zoo cache loads in a second; without it the test trains it
    (minutes on 2 cores), so it is marked slow."""
    cached = weights_path(resolve_cache_dir(), name, RECIPE_VERSION).exists()
    return pytest.param(name, marks=() if cached else pytest.mark.slow)


@pytest.mark.parametrize("name", [_cached_or_slow(n) for n in DIGITS32_MODELS])
def test_digits32_models_are_accurate_on_labels(name: str) -> None:
    m = zoo.load(name)
    assert m.input_shape == (1, 1, 32, 32)
    assert m.train_data is not None and m.train_data[0].shape[1:] == (1, 32, 32)
    assert m.test_data is not None and len(m.test_data[0]) == 360
    assert m.accuracy(m.model) >= 0.97
    assert m.accuracy(m.model, batch_size=64) == m.accuracy(m.model)


def test_digits32_data_are_the_digits_upsampled() -> None:
    small, large = zoo_data.digits(), zoo_data.digits32()
    np.testing.assert_array_equal(small.eval_labels, large.eval_labels)
    assert large.train_inputs.shape == (len(small.train_inputs), 1, 32, 32)
    pooled = large.eval_inputs.reshape(-1, 1, 8, 4, 8, 4).mean(axis=(3, 5))
    assert np.corrcoef(pooled.ravel(), small.eval_inputs.ravel())[0, 1] > 0.95


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="no-such-model") as info:
        zoo.load("no-such-model")
    for name in zoo.list_models():
        assert name in str(info.value)


@pytest.mark.parametrize("name", DIGITS_MODELS)
def test_digits_model_accuracy(name: str, load_cached) -> None:
    m = load_cached(name)
    assert m.name == name
    assert not m.model.training
    assert m.input_shape == (1, 1, 8, 8)
    assert all(p.dtype == torch.float32 for p in m.model.parameters())
    assert m.test_data is not None
    assert torch.equal(m.eval_inputs, m.test_data[0])
    with torch.no_grad():
        assert m.accuracy(m.model) >= 0.95


def test_accuracy_accepts_numpy_and_fixed_batches(load_cached) -> None:
    m = load_cached("digits-mlp")
    with torch.no_grad():
        whole = m.accuracy(m.model)
        seen_sizes: set[int] = set()

        def static_numpy(batch: torch.Tensor) -> np.ndarray:
            seen_sizes.add(len(batch))
            return m.model(batch).numpy()

        chunked = m.accuracy(static_numpy, batch_size=7)
    assert seen_sizes == {7}  # 360 test samples: the last chunk is padded, not short
    assert abs(whole - chunked) <= 1 / len(m.test_data[1])


def test_accuracy_rejects_bad_logits(load_cached) -> None:
    m = load_cached("digits-mlp")
    with pytest.raises(ValueError, match="logits of shape"):
        m.accuracy(lambda batch: torch.zeros(len(batch)))


def test_calibration_batches_come_from_train_split(load_cached) -> None:
    m = load_cached("digits-cnn")
    batches = m.calibration_batches(n_batches=3, batch_size=5)
    assert [tuple(b.shape) for b in batches] == [(5, 1, 8, 8)] * 3
    again = m.calibration_batches(n_batches=3, batch_size=5)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    test_rows = {row.numpy().tobytes() for row in m.test_data[0]}
    assert not any(row.numpy().tobytes() in test_rows for b in batches for row in b)
    with pytest.raises(ValueError, match="must be >= 1"):
        m.calibration_batches(n_batches=0)


def test_fresh_loads_are_identical(tmp_path: Path) -> None:
    first = zoo.load("digits-mlp", cache_dir=tmp_path / "a")
    second = zoo.load("digits-mlp", cache_dir=tmp_path / "b")
    cached = zoo.load("digits-mlp", cache_dir=tmp_path / "a")
    assert first.weight_hash == second.weight_hash == cached.weight_hash
    assert len(first.weight_hash) == 64
    assert first.data_hash == second.data_hash
    with torch.no_grad():
        outputs = [m.model(first.test_data[0]) for m in (first, second, cached)]
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0], outputs[2])
    assert first.weights_path == weights_path(tmp_path / "a", "digits-mlp", RECIPE_VERSION)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [first.weights_path.name]


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MSCGYM_CACHE_DIR", str(tmp_path))
    assert resolve_cache_dir() == tmp_path
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("MSCGYM_CACHE_DIR")
    assert resolve_cache_dir() == Path.home() / ".cache" / "mscgym" / "zoo"


def test_corrupt_cache_file_names_the_file(tmp_path: Path) -> None:
    path = weights_path(tmp_path, "digits-mlp", RECIPE_VERSION)
    path.write_bytes(b"this is not a safetensors file")
    with pytest.raises(zoo.ZooCacheError, match="delete the file") as info:
        zoo.load("digits-mlp", cache_dir=tmp_path)
    assert str(path) in str(info.value)


def _rewrite(source: Path, target: Path, edit) -> None:
    """Copy a cache file, passing its tensors through ``edit`` and keeping its metadata."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(edit(tensors), str(target), metadata=metadata)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: {**t, "fc1.weight": t["fc1.weight"][:, :32].contiguous()}, "expected"),
        (lambda t: {k: v for k, v in t.items() if k != "fc3.bias"}, "does not fit"),
        (lambda t: {**t, "fc3.bias": t["fc3.bias"] + 1}, "weight hash"),
    ],
    ids=["shape", "missing-key", "tampered"],
)
def test_mismatched_cache_file_names_the_file(
    edit, message: str, load_cached, tmp_path: Path
) -> None:
    good = load_cached("digits-mlp").weights_path
    bad = weights_path(tmp_path, "digits-mlp", RECIPE_VERSION)
    _rewrite(good, bad, edit)
    with pytest.raises(zoo.ZooCacheError, match=message) as info:
        zoo.load("digits-mlp", cache_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_cache_file_of_another_model_is_refused(load_cached, tmp_path: Path) -> None:
    good = load_cached("digits-mlp").weights_path
    bad = weights_path(tmp_path, "digits-cnn", RECIPE_VERSION)
    _rewrite(good, bad, lambda tensors: tensors)
    with pytest.raises(zoo.ZooCacheError, match="model='digits-mlp'") as info:
        zoo.load("digits-cnn", cache_dir=tmp_path)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMETERS))
def test_imagenet_models(name: str, load_cached) -> None:
    m = load_cached(name)
    assert m.input_shape == (1, 3, 224, 224)
    assert sum(p.numel() for p in m.model.parameters()) == IMAGENET_PARAMETERS[name]
    with torch.no_grad():
        out = m.model(*m.example_inputs)
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()
    assert 1e-3 < out.std().item() < 1e3  # BatchNorm statistics keep activations in scale
    assert m.test_data is None
    with pytest.raises(ValueError, match="no labelled test data"):
        m.accuracy(m.model)
    assert m.eval_inputs.shape == (12, 3, 224, 224)
    calibration = torch.cat(m.calibration_batches(n_batches=2, batch_size=4))
    assert calibration.shape == (8, 3, 224, 224)
    held_out = {row.numpy().tobytes() for row in m.eval_inputs}
    assert not any(row.numpy().tobytes() in held_out for row in calibration)


@pytest.mark.parametrize("name", [*DIGITS_MODELS, "resnet18", "mobilenetv2"])
def test_models_export(name: str, load_cached) -> None:
    m = load_cached(name)
    exported = torch.export.export(m.model, m.example_inputs)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("dropout" in t or "scaled_dot_product" in t for t in targets), targets
    with torch.no_grad():
        expected = m.model(*m.example_inputs)
        assert torch.allclose(exported.module()(*m.example_inputs), expected, atol=1e-5)
