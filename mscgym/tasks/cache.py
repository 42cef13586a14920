"""Evaluation cache: a plan evaluated twice costs nothing the second time.

Keys are fingerprints of everything the result depends on (model weights, data,
plan, runner, device, measurement settings). Entries live in memory and, when a
directory is given, as JSON files there, so a resumed search reuses earlier work.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from mscgym.tasks.metrics import Metrics
from mscgym.utils.files import atomic_write_text


def fingerprint(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class EvaluationCache:
    """Fingerprint -> JSON result, with hit/miss counts."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = os.fspath(directory) if directory is not None else None
        self._memory: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._memory.get(key)
        if value is None and self.directory is not None and os.path.exists(self._path(key)):
            try:
                with open(self._path(key), encoding="utf-8") as handle:
                    value = json.load(handle)
            except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: a miss
                value = None
            if not isinstance(value, dict):
                value = None
            if value is not None:
                self._memory[key] = value
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._memory[key] = value
        if self.directory is not None:
            atomic_write_text(self._path(key), json.dumps(value, sort_keys=True))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate,
                "entries": len(self._memory)}


Evaluated = tuple[Metrics, dict[str, Any]]
"""An evaluation's metrics and the resulting tool strategies."""


class Evaluations:
    """A task's evaluations: answered from the cache where it holds the key, else
    computed, stored and counted (how many, and the seconds they took)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.cache = EvaluationCache(directory)
        self.count = 0
        self.seconds = 0.0

    def lookup(self, key: str) -> Evaluated | None:
        cached = self.cache.get(key)
        if cached is None:
            return None
        return Metrics.from_json(cached["metrics"]), cached["strategies"]

    def store(self, key: str, metrics: Metrics, strategies: dict[str, Any]) -> None:
        self.cache.put(key, {"metrics": metrics.to_json(), "strategies": strategies})

    def evaluate(self, key: str, compute: Callable[[], Evaluated],
                 use_cache: bool = True) -> Evaluated:
        """The cached result of ``key`` (when ``use_cache``), else ``compute()``, stored."""
        if use_cache:
            cached = self.lookup(key)
            if cached is not None:
                return cached
        start = time.perf_counter()
        metrics, strategies = compute()
        self.seconds += time.perf_counter() - start
        self.count += 1
        self.store(key, metrics, strategies)
        return metrics, strategies
