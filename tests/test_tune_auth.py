"""Ray sweeps against a cluster started with Ray's token authentication.

A real ``ray start --head --block`` runs in a subprocess with ``RAY_AUTH_MODE=token`` and
a token in a file; the sweeps run in other subprocesses (so this process's Ray state and
auth config stay untouched) and the cluster is torn down in the fixture's finalizer.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from mscgym.compiler.errors import MSCError  # noqa: E402
from mscgym.tune.sweep import auth_token_source  # noqa: E402

BIN = Path(sys.executable).parent
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray auth setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


class Cluster:
    def __init__(self, root: Path, address: str, token_file: Path) -> None:
        self.root, self.address, self.token_file = root, address, token_file
        self.token = token_file.read_text()


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[Cluster]:
    # Ray's socket paths must stay short, so the temp dir lives directly in /tmp
    root = Path(tempfile.mkdtemp(prefix="msc-rayauth-", dir="/tmp"))
    token_file = root / "token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    port = _free_port()
    log = open(root / "ray-start.log", "w+")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={root / 'ray'}"],
        env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file)),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "--block" not in (root / "ray-start.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start --head did not come up:\n"
                            + (root / "ray-start.log").read_text()[-3000:])
            time.sleep(0.5)
        yield Cluster(root, f"127.0.0.1:{port}", token_file)
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: Ray stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:  # anything left of the cluster (it ran in its own session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=480)


@pytest.mark.slow
def test_sweep_with_token_file_and_clear_errors_without(auth_cluster: Cluster) -> None:
    root = auth_cluster.root
    search = [str(BIN / "mscgym"), "search", "--task", "quantize", "--model", "digits-cnn",
              "--agent", "ray", "--budget", "2", "--address", auth_cluster.address,
              "--storage-path", str(root / "results"), "--no-progress"]
    # the token as Ray documents it (a file named by RAY_AUTH_TOKEN_PATH), no RAY_AUTH_MODE
    ok = _run([*search, "--record", str(root / "best.json")],
              _env(RAY_AUTH_TOKEN_PATH=str(auth_cluster.token_file)), root)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert (root / "best.json").is_file()
    assert "2 plans" in ok.stdout
    assert auth_cluster.token not in ok.stdout + ok.stderr

    connect = [sys.executable, "-c",
               "import sys\nfrom mscgym.compiler.errors import MSCError\n"
               "from mscgym.tune.sweep import SweepSettings, ensure_ray\n"
               "try:\n    ensure_ray(SweepSettings(address=sys.argv[1]))\n"
               "except MSCError as err:\n    print(err)\n    sys.exit(3)\n",
               auth_cluster.address]
    wrong = _run(connect, _env(RAY_AUTH_TOKEN="not-the-cluster-token"), root)
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr[-3000:]
    assert "the token comes from the RAY_AUTH_TOKEN environment variable" in wrong.stdout
    assert "RAY_AUTH_TOKEN_PATH" in wrong.stdout and "ray get-auth-token" in wrong.stdout

    home = root / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    missing = _run(connect, _env(HOME=str(home)), root)
    assert missing.returncode == 3, missing.stdout + missing.stderr[-3000:]
    assert "no token is set" in missing.stdout
    assert auth_cluster.token not in "".join(
        p.stdout + p.stderr for p in (wrong, missing))


def test_unreadable_token_path_is_a_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "absent"))
    with pytest.raises(MSCError, match=r"RAY_AUTH_TOKEN_PATH names .*absent.*cannot be read"):
        auth_token_source()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "empty"))
    with pytest.raises(MSCError, match=r"empty"):
        auth_token_source()
    (tmp_path / "tok").write_text("abc")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    source = auth_token_source()
    assert source is not None and "RAY_AUTH_TOKEN_PATH" in source and "abc" not in source
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret-value")
    source = auth_token_source()
    assert source == "the RAY_AUTH_TOKEN environment variable"


def test_address_applies_only_to_the_ray_agent(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mscgym.cli import main

    code = main(["search", "--task", "quantize", "--model", "digits-cnn", "--budget", "1",
                 "--record", str(tmp_path / "best.json"), "--address", "127.0.0.1:6379"])
    assert code == 2
    assert "--address applies only to --agent ray" in capsys.readouterr().err
