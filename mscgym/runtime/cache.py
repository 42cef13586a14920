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
(the zoo keeps its weights beside it), else ``~/.cache/mscgym/runtime``. Like the zoo
cache it is trusted: a library found there is loaded as native code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.utils.hashing import arrays_hash

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
