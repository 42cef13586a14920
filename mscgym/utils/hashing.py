"""Content hashes of named arrays and files: the identity of weights, data and model files
in caches and records.

One walk for both forms: numpy arrays (:func:`arrays_hash`: task data, graph weights) and
torch state_dicts (:func:`state_dict_hash`: zoo weights, whose hashes records and the
weight cache already store, so their dtype spelling stays torch's own).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

_Entry = tuple[str, tuple[str, tuple[int, ...], bytes] | None]


def _digest(entries: Iterable[_Entry]) -> str:
    """sha256 over (name, (dtype, shape, raw bytes) or None) entries, in the given order.

    Renaming, reshaping or retyping an entry changes the hash even when the bytes agree.
    """
    digest = hashlib.sha256()
    for name, content in entries:
        if content is None:
            digest.update(f"{name}|none|".encode())
            continue
        dtype, shape, data = content
        digest.update(f"{name}|{dtype}|{shape}|".encode())
        digest.update(data)
    return digest.hexdigest()


def arrays_hash(arrays: Mapping[str, Any]) -> str:
    """sha256 over named arrays in name order: each name, dtype, shape and raw bytes.

    A ``None`` entry is hashed as such.
    """
    def entries() -> Iterable[_Entry]:
        for name in sorted(arrays):
            value = arrays[name]
            if value is None:
                yield name, None
                continue
            array = np.ascontiguousarray(np.asarray(value))
            yield name, (array.dtype.str, array.shape, array.tobytes())

    return _digest(entries())


def state_dict_hash(state_dict: Mapping[str, Any]) -> str:
    """sha256 of a torch state_dict in key order; the dtype as torch names it
    (``torch.float32``), so the zoo's stored weight hashes keep matching."""
    import torch  # only callers holding torch tensors get here

    def entries() -> Iterable[_Entry]:
        for key in sorted(state_dict):
            tensor = state_dict[key].detach().cpu().contiguous()
            data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
            yield key, (str(tensor.dtype), tuple(tensor.shape), data)

    return _digest(entries())


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in chunks (cached artifacts, model files in records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
