"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where it can be, so it is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temp file over ``path`` in one step.

    The temp file is private while written (mkstemp makes it 0600) and gets the mode a
    plain ``open`` would have given it (0666, or 0777 if ``write`` made it executable,
    less the umask) before it is moved into place.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(target), dir=directory)
    os.close(fd)
    try:
        write(tmp)
        executable = os.stat(tmp).st_mode & 0o111
        os.chmod(tmp, (0o777 if executable else 0o666) & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


_JSON_KINDS = {dict: "a JSON object", list: "a JSON list", str: "a JSON string"}


def _json_kind(value: Any) -> str:
    for kind, name in _JSON_KINDS.items():
        if isinstance(value, kind):
            return name
    return "null" if value is None else f"a JSON {type(value).__name__}"


def read_json(path: str | os.PathLike[str], error: type[Exception], what: str,
              expected: type | None = dict) -> Any:
    """Parse a JSON file; an unreadable, non-UTF-8 or malformed file, or one whose top
    level is not of type ``expected`` (an object unless told; None accepts anything),
    raises ``error`` naming it as ``"<what> <path>: ..."``."""
    where = f"{what} {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as err:
        raise error(f"{where}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise error(f"{where}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                    f"{err.start}); expected a UTF-8 JSON file") from None
    except json.JSONDecodeError as err:
        raise error(f"{where}: not valid JSON ({err})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to be a JSON file mscgym reads") from None
    if expected is not None and not isinstance(data, expected):
        raise error(f"{where}: expected {_JSON_KINDS.get(expected, expected.__name__)} at the "
                    f"top level, got {_json_kind(data)}")
    return data
