"""Trust, task data: data whose shape, dtype or labels do not fit the model is refused
before any work, naming the array and what the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mscgym.cli import main
from mscgym.tasks.data_check import DataMismatchError
from mscgym.tasks.sources import TaskData, resolve_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = resolve_model("digits-mlp")
    path = tmp_path_factory.mktemp("model") / "mlp.json"
    source.graph.export(path, params=source.params)
    return path


def _data(inputs: np.ndarray, labels: np.ndarray | None = None) -> TaskData:
    return TaskData("files:test", [inputs[:4]], inputs, labels)


@pytest.mark.parametrize(("inputs", "labels", "message"), [
    (np.zeros((8, 1, 9, 9), np.float32), None,
     r"calibration batch 0 are float32\[4, 1, 9, 9\]; the model input 'x' takes "
     r"float32\['s\d+', 1, 8, 8\]"),
    (np.zeros((8, 1, 8, 8), np.float64), None,
     r"calibration batch 0 are float64\[4, 1, 8, 8\]; the model input"),
    (np.zeros((8, 64), np.float32), None, r"calibration batch 0 are float32\[4, 64\]"),
    (np.zeros((8, 1, 8, 8), np.float32), np.zeros(7, np.int64),
     r"7 evaluation labels for 8 inputs; expected one label per input"),
    (np.zeros((8, 1, 8, 8), np.float32), np.full(8, 12),
     r"evaluation labels range over \[12, 12\], but the model has 10 output classes"),
    (np.zeros((8, 1, 8, 8), np.float32), np.zeros(8, np.float32),
     r"evaluation labels are float32\[8\]; expected a 1-D array of integer class indices"),
])
def test_data_that_does_not_fit_is_refused(model_file: Path, inputs: np.ndarray,
                                           labels: np.ndarray | None, message: str) -> None:
    with pytest.raises(DataMismatchError, match=rf"data 'files:test': {message}"):
        resolve_model(model_file, _data(inputs, labels))


def test_cli_refuses_data_before_searching(model_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((16, 1, 9, 9), np.float32))
    record = tmp_path / "best.json"
    code = main(["search", "--task", "quantize", "--model", str(model_file), "--data",
                 str(data), "--agent", "random", "--budget", "2", "--record", str(record),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "float32[16, 1, 9, 9]" in err or "1, 9, 9]" in err
    assert "the model input 'x' takes float32" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
