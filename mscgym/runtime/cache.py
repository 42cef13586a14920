"""Built-artifact cache: never build the same compressed model twice.

Searches evaluate many plans and often revisit one (a grid point, a replayed record,
the float baseline), and building is the slow part of an evaluation (a TVM compile
takes seconds, a resnet18 ONNX export too). Artifacts are keyed by a fingerprint of
everything that decides their content: the graph, the weights, the quant plan, the
runner and its target, the versions of mscgym and of the framework, and for disk
artifacts a hash of the codegen's source.

TVM libraries go to disk (``<cache dir>/runtime/tvm/<fingerprint>.so``) so that other
processes (parallel trials, a later replay) reuse them; ONNX bytes and torch modules
live in a small in-process LRU. The cache directory is ``$MSCGYM_CACHE_DIR/runtime``
(the zoo keeps its weights beside it), else ``~/.cache/mscgym/runtime``. A library
found there is loaded as native code, so it must not be trusted blindly: beside each
artifact a ``.sha256`` file holds its fingerprint and content hash
(:func:`store_artifact`), and :func:`verified_artifact` checks both before anything
is loaded. A truncated, swapped (another entry's library) or garbage file is deleted
with a warning and rebuilt, never mapped (a truncated library would kill the process
with SIGBUS inside the loader).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.utils.files import atomic_write, atomic_write_text
from mscgym.utils.hashing import arrays_hash, file_sha256

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "MSCGYM_CACHE_DIR"
DEFAULT_CACHE_ROOT = Path("~/.cache/mscgym")
MEMORY_ENTRIES = 8
"""In-process entries kept per store; ONNX bytes of resnet18 are ~45 MB each."""


def runtime_cache_dir() -> Path:
    """``$MSCGYM_CACHE_DIR/runtime``, else ``~/.cache/mscgym/runtime`` (read on every call)."""
    root = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT
    return Path(root).expanduser() / "runtime"


def mscgym_version() -> str:
    return metadata.version("mscgym")


@functools.cache
def source_hash(modules: tuple[str, ...]) -> str:
    """sha256 of the source files of ``modules`` (read once per process).

    Disk artifacts outlive the process that built them; in a development checkout the
    codegen changes without the version number changing, and this retires what the
    older code built.
    """
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise MSCError(f"artifact cache: cannot find the source of module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def fingerprint(
    graph: MSCGraph,
    params: Mapping[str, Any],
    quant: QuantPlan,
    runner: str,
    target: str,
    framework_version: str,
    sources: tuple[str, ...] = (),
) -> str:
    """sha256 identifying the artifact a runner builds from these inputs.

    Only the weights the graph uses count, so extra entries in ``params`` (weights of
    layers a pruner removed) do not split the cache. ``sources`` names the modules
    that generate the artifact; their source is hashed in (for artifacts on disk).
    """
    used = graph.weight_tensors()
    document = {
        "graph": graph.to_json(),
        "weights": arrays_hash({k: v for k, v in params.items() if k in used}),
        "quant": {name: quant[name].to_json() for name in sorted(quant)},
        "runner": runner,
        "target": target,
        "versions": {"mscgym": mscgym_version(), runner: framework_version},
        "sources": source_hash(sources) if sources else None,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Counter:
    hits: int = 0
    misses: int = 0


STORES = ("tvm", "onnx", "torch")
_LOCK = threading.Lock()
_COUNTERS: dict[str, _Counter] = {store: _Counter() for store in STORES}


def record(store: str, hit: bool) -> None:
    """Count one lookup in ``store`` (``tvm``, ``onnx``, ``torch``)."""
    with _LOCK:
        counter = _COUNTERS.setdefault(store, _Counter())
        if hit:
            counter.hits += 1
        else:
            counter.misses += 1


def cache_stats() -> dict[str, dict[str, int]]:
    """Hits and misses per store (``tvm``, ``onnx``, ``torch``) since the process started."""
    with _LOCK:
        return {name: {"hits": c.hits, "misses": c.misses} for name, c in _COUNTERS.items()}


class MemoryCache:
    """A thread-safe LRU of built artifacts of one store, counted in :func:`cache_stats`."""

    def __init__(self, store: str, max_entries: int = MEMORY_ENTRIES) -> None:
        self.store = store
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        """The artifact for ``key`` (now the most recent), or None; counts a hit or miss."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
        record(self.store, value is not None)
        return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def artifact_path(store: str, key: str, suffix: str) -> Path:
    """Where the on-disk artifact of ``key`` lives, e.g. ``<cache dir>/tvm/<key>.so``."""
    return runtime_cache_dir() / store / f"{key}{suffix}"


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def store_artifact(path: str | os.PathLike[str], key: str,
                   write: Callable[[str], None]) -> None:
    """Write an artifact atomically with ``write(tmp_path)``, then its ``.sha256`` file
    (fingerprint and content hash) beside it."""
    target = Path(path)
    atomic_write(target, write)
    atomic_write_text(_digest_path(target), json.dumps(
        {"key": key, "sha256": file_sha256(target)}, sort_keys=True))


def verified_artifact(path: str | os.PathLike[str], key: str) -> bool:
    """Whether the artifact at ``path`` exists and is the one stored for ``key``: its
    ``.sha256`` file names ``key`` and the file's content hash. A file that fails is
    deleted (with its hash file) and a warning says why, so the caller rebuilds it."""
    target = Path(path)
    if not target.exists():
        return False
    digest_file = _digest_path(target)
    problem = None
    try:
        stored = json.loads(digest_file.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            problem = f"hash file {digest_file} is malformed"
        elif stored.get("key") != key:
            problem = f"it was stored for another entry ({str(stored.get('key'))[:16]}...)"
        elif stored.get("sha256") != file_sha256(target):
            problem = "its content does not match its stored hash (truncated or replaced)"
    except FileNotFoundError:
        problem = f"it has no hash file {digest_file.name}"
    except (OSError, ValueError) as err:
        problem = f"hash file {digest_file} cannot be read ({err})"
    if problem is None:
        return True
    logger.warning("artifact cache: %s is not used, %s; rebuilding it", target, problem)
    for stale in (target, digest_file):
        stale.unlink(missing_ok=True)
    return False
