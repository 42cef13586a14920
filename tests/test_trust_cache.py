"""Trust, caches: a cached TVM library is verified against its stored hash before it is
loaded; truncated, swapped and garbage files are rebuilt (each run in a fresh
subprocess, so a SIGBUS in the loader would show as a killed process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mscgym.runtime.cache import store_artifact, verified_artifact

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from mscgym.compiler.frontend import from_torch
    from mscgym.runtime.runners.tvm_runner import TVMRunner

    out = {}
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    for seed, name in enumerate(sys.argv[1:]):
        torch.manual_seed(seed)
        module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
        graph, params = from_torch(module, (torch.zeros(2, 4),))
        runner = TVMRunner()
        runner.build(graph, params, {})
        got = runner.run([x])[0]
        want = module(torch.from_numpy(x)).detach().numpy()
        out[name] = {"path": runner._library_path, "ok": bool(np.allclose(got, want, atol=1e-5))}
    print(json.dumps(out))
""")
KINDS = ("truncated", "swapped", "swapped_with_hash", "garbage", "no_hash")
SOURCE = "source"


def _run(cache: Path) -> tuple[dict, str]:
    env = {**os.environ, "MSCGYM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *KINDS, SOURCE], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # -7 would be SIGBUS
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(entry["ok"] for entry in result.values()), result
    return result, proc.stderr


def _corrupt(path: Path, other: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "swapped":
        shutil.copyfile(other, path)
    elif how == "swapped_with_hash":
        shutil.copyfile(other, path)
        shutil.copyfile(f"{other}.sha256", f"{path}.sha256")
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "no_hash":
        os.unlink(f"{path}.sha256")


def _store(path: Path, key: str, data: bytes) -> None:
    store_artifact(path, key, lambda tmp: Path(tmp).write_bytes(data))


@pytest.mark.parametrize("how", KINDS)
def test_verification_refuses_and_deletes(tmp_path: Path, how: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    path, other = tmp_path / ("a" * 64 + ".so"), tmp_path / ("b" * 64 + ".so")
    _store(path, path.stem, b"library a" * 100)
    _store(other, other.stem, b"library b" * 100)
    assert verified_artifact(path, path.stem) and verified_artifact(other, other.stem)
    _corrupt(path, other, how)
    assert not verified_artifact(path, path.stem)
    assert not path.exists() and not Path(f"{path}.sha256").exists()
    assert f"artifact cache: {path} is not used" in caplog.text
    assert verified_artifact(other, other.stem)


@pytest.mark.slow  # three fresh processes that import TVM and compile 11 libraries
def test_bad_artifacts_are_rebuilt(tmp_path: Path) -> None:
    first, _ = _run(tmp_path)
    paths = {name: Path(entry["path"]) for name, entry in first.items()}
    assert len(set(paths.values())) == len(paths)  # one entry per graph
    for how in KINDS:
        _corrupt(paths[how], paths[SOURCE], how)
    _, stderr = _run(tmp_path)
    for how in KINDS:
        assert f"artifact cache: {paths[how]} is not used" in stderr, (how, stderr[-3000:])
        stored = json.loads(Path(f"{paths[how]}.sha256").read_text())
        assert stored["key"] == paths[how].stem
    assert f"{paths[SOURCE]} is not used" not in stderr
    assert stderr.count("rebuilding it") == len(KINDS)
    _, again = _run(tmp_path)  # the rebuilt entries are good: loaded without a warning
    assert "is not used" not in again
