"""Output locations, checked before the work that fills them.

A search or a pipeline runs for minutes before it writes anything, so a bad output
path (its parent is a file, it is a directory, it is not writable) must be refused
when the arguments are read, not after the work. Every command line option and
config key naming an output goes through :func:`check_output_path`; every path a
config file names inside a workspace goes through :func:`inside` (relative, and
still inside the workspace once ``..`` and symlinks are resolved), so a file cannot
make mscgym write elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Literal

from mscgym.errors import MSCError

logger = logging.getLogger(__name__)


class OutputPathError(MSCError):
    """An output location cannot be written, or a path from a file leaves its workspace."""


def _nearest_existing(path: str) -> str:
    current = path
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_output_path(path: str | os.PathLike[str], what: str,
                      kind: Literal["file", "dir"] = "file") -> str:
    """The absolute ``path`` when mscgym can create (or replace) a ``kind`` there, else
    :class:`OutputPathError` naming ``what`` (the option or key), the path and why.

    Missing parent directories are fine (they are created), but the nearest existing
    one must be a writable directory; an existing target must be of the right kind.
    """
    text = os.fspath(path)
    if not text.strip():
        raise OutputPathError(f"{what}: expected a path, got an empty string")
    target = os.path.abspath(text)
    if os.path.isdir(target) and kind == "file":
        raise OutputPathError(f"{what} {text}: is a directory; expected a file path")
    if os.path.lexists(target) and not os.path.isdir(target) and kind == "dir":
        raise OutputPathError(f"{what} {text}: is a file; expected a directory")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise OutputPathError(f"{what} {text}: is not writable")
    ancestor = _nearest_existing(os.path.dirname(target))
    if not os.path.isdir(ancestor):
        raise OutputPathError(f"{what} {text}: {ancestor} is not a directory, so nothing can "
                              "be created under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {text}: directory {ancestor} is not writable")
    return target


def output_arg(kind: Literal["file", "dir"] = "file", suffix: str | None = None
               ) -> Callable[[str], str]:
    """An argparse ``type=`` that checks an output path while the arguments are parsed
    (the path comes back as given, so messages keep the user's spelling)."""

    def parse(text: str) -> str:
        if suffix is not None and not text.endswith(suffix):
            raise argparse.ArgumentTypeError(f"{text!r} must end in {suffix}")
        try:
            check_output_path(text, "path", kind)
        except OutputPathError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("path ")) from None
        return text

    parse.__name__ = f"output {kind}"
    return parse


def relative_inside(value: str, key: str) -> str:
    """``value`` if it is a relative path that stays below its base directory (no
    absolute path, no ``..`` out of it), else OutputPathError naming the config key."""
    normal = os.path.normpath(value)
    if os.path.isabs(value) or normal == ".." or normal.startswith(".." + os.sep):
        raise OutputPathError(f"config key {key!r}: {value!r} leaves the workspace; expected "
                              "a path relative to the workspace, without '..'")
    return value


def inside(root: str | os.PathLike[str], *parts: str, key: str = "path") -> str:
    """``root/parts...`` after checking that, with symlinks and ``..`` resolved, it is
    still inside ``root`` (``key`` names where the path came from in the error)."""
    base = os.path.realpath(os.fspath(root))
    joined = os.path.join(base, *parts)
    resolved = os.path.realpath(joined)
    if os.path.commonpath([base, resolved]) != base:
        raise OutputPathError(f"{key} {os.path.join(*parts) if parts else ''!r} resolves to "
                              f"{resolved}, outside the workspace {base}")
    return joined


def check_storage_url(url: str, what: str = "storage") -> str:
    """An Optuna/SQLAlchemy storage URL, checked: it parses, and a SQLite file's
    directory exists and is writable (raw SQLAlchemy errors otherwise come late)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise OutputPathError(f"{what} {url!r}: not a database URL ({err}); expected e.g. "
                              "sqlite:///study.db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = parsed.database
        directory = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(directory):
            raise OutputPathError(f"{what} {url!r}: directory {directory} of the SQLite file "
                                  "does not exist")
        check_output_path(database, f"{what} {url!r}: SQLite file")
    return url


LOCK_TIMEOUT_S = 2.0
"""How long :func:`exclusive_output` waits for another holder by default: long enough for
one that is just finishing its write, short enough that a second search is refused up
front instead of waiting for the first one's minutes of work."""
_LOCK_POLL_S = 0.05


def _lock_owner(fd: int) -> tuple[int | None, str | None]:
    """The (pid, host) a lock file records (``"<pid> <host>"``; None where not recorded)."""
    words = os.pread(fd, 256, 0).decode(errors="replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


def _holder_is_dead(pid: int | None, host: str | None) -> bool:
    """Whether the recorded holder is a process of this host that no longer exists. The
    OS lock outlives its taker when a child forked while holding it lives on, so the lock
    of a dead pid is stale; a holder on another host cannot be checked from here."""
    if pid is None or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _unlink_if_same(fd: int, lock_path: str) -> None:
    """Remove ``lock_path`` only while it is still the file ``fd`` has open (not a lock
    another process made since), under a lock on its directory so that no two processes
    check and remove at once."""
    directory = os.open(os.path.dirname(lock_path) or ".", os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
                os.unlink(lock_path)
    finally:
        os.close(directory)  # closing releases the directory lock


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike[str], what: str,
                     timeout: float = LOCK_TIMEOUT_S) -> Iterator[str]:
    """Hold ``<path>.lock`` (an OS file lock, released even if the process dies) while
    a long job produces ``path``: a second job writing the same output waits up to
    ``timeout`` seconds, then is refused with an error naming the lock file and the pid
    and host holding it, instead of running for minutes and silently overwriting the
    first's result. The lock of a process of this host that no longer exists (its lock
    lives on in a forked child) is taken over."""
    target = check_output_path(path, what)
    lock_path = f"{target}.lock"
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _lock_owner(fd)
            if _holder_is_dead(pid, host):
                logger.warning("%s %s: taking over the stale lock %s of pid %s, which no "
                               "longer runs", what, os.fspath(path), lock_path, pid)
                _unlink_if_same(fd, lock_path)
                os.close(fd)
                continue
            os.close(fd)
            left = deadline - time.monotonic()
            if left <= 0:
                holder = f"pid {pid if pid is not None else '?'} on host {host or '?'}"
                raise OutputPathError(
                    f"{what} {os.fspath(path)}: another process (pid "
                    f"{pid if pid is not None else '?'}) is writing it now: lock file "
                    f"{lock_path} is held by {holder}, still after {timeout:g} s; wait for "
                    "it or choose another path") from None
            time.sleep(min(_LOCK_POLL_S, left))
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the lock file as we opened it: take a fresh one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)
        yield target
    finally:
        _unlink_if_same(fd, lock_path)
        os.close(fd)
