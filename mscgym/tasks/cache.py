"""Evaluation cache: a plan evaluated twice costs nothing the second time.

Keys are fingerprints of everything the result depends on (model weights, data,
plan, runner, device, measurement settings). Entries live in memory and, when a
directory is given, as JSON files there, so a resumed search reuses earlier work.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

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
