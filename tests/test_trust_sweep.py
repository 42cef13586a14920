"""Trust, interrupted sweeps: a Ray sweep stopped with Ctrl-C is an error (not a partial
success), resuming it finishes it, and a resume asking for more trials than the
experiment was started with is refused instead of silently running none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    from mscgym.compiler.errors import MSCError
    from mscgym.tasks.task import Task
    from mscgym.tune import run_sweep

    task = Task("digits-mlp", "quantize", profile_repeat=3)
    try:
        result = run_sweep(task, num_samples=int(sys.argv[2]), max_concurrent=1, num_cpus=1,
                           storage_path=sys.argv[1], name="exp", seed=0, progress=False,
                           resume=sys.argv[3] == "resume", search_alg="basic")
    except MSCError as err:
        print("MSCError:", err, flush=True)
        sys.exit(3)
    print("trials", len(result.history), "resumed", result.extra["resumed_trials"], flush=True)
""")
TRIALS = 40  # enough that the sweep is still running when the first result lands


def _start(storage: Path, samples: int, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(storage), str(samples), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finished_trials(storage: Path) -> int:
    return sum('"task_key"' in p.read_text() for p in (storage / "exp").glob("*/result.json"))


@pytest.mark.slow  # three processes that start Ray
def test_interrupted_sweep_is_an_error_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    proc = _start(tmp_path, TRIALS, "fresh")
    deadline = time.monotonic() + 300
    while _finished_trials(tmp_path) < 1 and proc.poll() is None:
        assert time.monotonic() < deadline, "no trial finished"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, (out[-600:], err[-1500:])
    assert "interrupted with" in out and "run it again with resume=True" in out

    proc = _start(tmp_path, TRIALS + 2, "resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, (out[-600:], err[-1500:])
    assert f"was started with {TRIALS} trials; a resumed experiment cannot grow" in out

    proc = _start(tmp_path, TRIALS, "resume")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out[-600:], err[-1500:])
    assert f"trials {TRIALS} resumed" in out
