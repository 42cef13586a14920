"""On-disk cache of zoo weights, as safetensors files written atomically.

Training every digits model and setting the BatchNorm statistics of the big ones takes
seconds to minutes; the cache makes every later ``load`` cheap. Files are safetensors
(never pickle, so loading a file cannot run code) and carry the model name, the recipe
version and the weight hash as metadata; a file that cannot be read, does not fit the
network or does not match its recorded hash is refused with an error naming the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from mscgym.errors import MSCError
from mscgym.utils.hashing import state_dict_hash

CACHE_ENV_VAR = "MSCGYM_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/mscgym/zoo")


class ZooCacheError(MSCError, RuntimeError):
    """A cached weights file is unreadable or does not belong to the network it is for."""


class UnknownModelError(MSCError, ValueError):
    """A model name that is not in the zoo (the message lists the names that are)."""


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache directory: the argument, else ``$MSCGYM_CACHE_DIR``, else the default."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    return Path(cache_dir).expanduser()


def weights_path(cache_dir: Path, name: str, recipe_version: int) -> Path:
    """Return the file for ``name``; the recipe version in the name retires stale files."""
    return cache_dir / f"{name}.recipe{recipe_version}.safetensors"


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """Write ``model``'s state_dict (plus its hash in the metadata) to ``path`` atomically.

    The tensors go to a temporary file in the same directory that then replaces ``path``
    in one step, so concurrent loaders never see a half-written file.
    """
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={**metadata, "weight_hash": state_dict_hash(state)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    """Load ``path`` into ``model`` after checking metadata, keys, shapes, dtypes and hash."""

    def refuse(problem: str) -> ZooCacheError:
        return ZooCacheError(
            f"zoo cache file {path} {problem}; delete the file so it is rebuilt on next load"
        )

    try:
        with safe_open(str(path), framework="pt") as handle:
            stored_metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise refuse(f"is not a readable safetensors file ({exc})") from exc
    for key, expected in metadata.items():
        if stored_metadata.get(key) != expected:
            raise refuse(f"has {key}={stored_metadata.get(key)!r}, expected {expected!r}")
    expected_state = model.state_dict()
    if set(tensors) != set(expected_state):
        missing = sorted(set(expected_state) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected_state))
        raise refuse(f"does not fit the network (missing {missing}, unexpected {unexpected})")
    for key, tensor in tensors.items():
        reference = expected_state[key]
        if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
            raise refuse(
                f"has {key} as {tensor.dtype}{list(tensor.shape)}, "
                f"expected {reference.dtype}{list(reference.shape)}"
            )
    if state_dict_hash(tensors) != stored_metadata.get("weight_hash"):
        raise refuse("does not match the weight hash recorded in it")
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
