"""Trust, the record lock: a second writer waits up to a bound, then is refused naming the
lock file and the pid and host holding it; the lock of a dead process of this host (kept
alive by a forked child) is taken over. Every holder is a real second process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mscgym.utils.paths import OutputPathError, exclusive_output

HOLD_UNTIL_TOLD = """
import sys
from mscgym.utils.paths import exclusive_output
with exclusive_output(sys.argv[1], "--record"):
    print("locked", flush=True)
    sys.stdin.readline()
"""

DIE_HOLDING = """
import os, sys, time
from mscgym.utils.paths import exclusive_output
with exclusive_output(sys.argv[1], "--record"):
    child = os.fork()
    if child == 0:  # inherits the locked file: the OS lock outlives the parent
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)  # dies holding the lock, without releasing it
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    record = tmp_path / "best.json"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_TOLD, str(record)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield record, proc
    proc.kill()
    proc.wait()


def test_stuck_lock_times_out_naming_the_lock_file_pid_and_host(holder) -> None:
    record, proc = holder
    with pytest.raises(OutputPathError) as err, exclusive_output(record, "--record",
                                                                 timeout=0.2):
        pass
    message = str(err.value)
    assert f"lock file {record}.lock is held by pid {proc.pid} on host " \
           f"{socket.gethostname()}, still after 0.2 s" in message
    assert f"another process (pid {proc.pid}) is writing it now" in message
    assert proc.poll() is None  # the holder was left alone


def test_waiter_gets_the_lock_once_the_holder_releases_it(holder) -> None:
    record, proc = holder
    assert proc.stdin is not None

    def release() -> None:
        proc.stdin.write("done\n")
        proc.stdin.flush()

    threading.Timer(0.3, release).start()
    with exclusive_output(record, "--record", timeout=60) as target:
        assert target == str(record)
        assert Path(f"{record}.lock").read_text() == f"{os.getpid()} {socket.gethostname()}"
    assert proc.wait(timeout=60) == 0
    assert not Path(f"{record}.lock").exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    record = tmp_path / "best.json"
    proc = subprocess.Popen([sys.executable, "-c", DIE_HOLDING, str(record)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    orphan = int(proc.stdout.readline())
    try:
        assert proc.wait(timeout=60) == 0  # reaped: its pid no longer exists
        assert Path(f"{record}.lock").read_text().split()[0] == str(proc.pid)
        with exclusive_output(record, "--record", timeout=0) as target:  # no waiting
            assert target == str(record)
            assert Path(f"{record}.lock").read_text().split()[0] == str(os.getpid())
        assert not Path(f"{record}.lock").exists()
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_lock_recorded_for_another_host_is_not_taken_over(holder) -> None:
    """A pid on another host cannot be checked from here, so its lock is waited for."""
    record, proc = holder
    fd = os.open(f"{record}.lock", os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"999999999 elsewhere.example", 0)
    finally:
        os.close(fd)
    with pytest.raises(OutputPathError, match=r"held by pid 999999999 on host "
                                              r"elsewhere\.example"), \
            exclusive_output(record, "--record", timeout=0.1):
        pass
    assert proc.poll() is None
