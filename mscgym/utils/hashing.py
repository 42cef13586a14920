"""Content hashes of named arrays: the identity of weights and data in caches and records."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np


def arrays_hash(arrays: Mapping[str, Any]) -> str:
    """sha256 over named arrays in name order: each name, dtype, shape and raw bytes.

    Renaming, reshaping or retyping an array changes the hash even when the bytes agree;
    a ``None`` entry is hashed as such.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        if value is None:
            digest.update(f"{name}|none|".encode())
            continue
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
