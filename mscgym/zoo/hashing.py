"""Content hashes for zoo weights and data.

Records name a model and its data by these hashes so a replayed plan can prove it ran on
the same weights and the same samples; they must therefore depend only on tensor contents
(names, dtypes, shapes, bytes), never on object identity, dict order or pickling details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_dict_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return the sha256 hex digest of a state_dict, visiting keys in sorted order.

    Each entry contributes its key, dtype, shape and raw bytes, so renaming, reshaping or
    retyping a tensor changes the hash even when the bytes happen to agree.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
