"""Torch runner: MSCGraph -> generated ``torch.nn.Module`` (fake-quant layers), CPU or CUDA.

It is the trainable runner: ``module`` is the live network, so the distiller can
fine-tune it and hand the weights back through ``RuntimeManager.update_weights``.
Generated modules are kept in the in-process cache; each build gets its own copy so
training one never changes another.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file

from mscgym.compiler.codegen.torch_codegen import to_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.cache import MemoryCache, fingerprint
from mscgym.runtime.runner import BaseRunner, RunnerUnavailableError
from mscgym.utils.files import atomic_write

_MODULES = MemoryCache("torch")


class TorchRunner(BaseRunner):
    """Runs the generated torch module in eval mode under ``torch.no_grad``."""

    name = "torch"
    artifact_suffix = ".safetensors"
    OPTIONS: ClassVar[dict[str, str]] = {}

    @classmethod
    def check_available(cls, device: str) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise RunnerUnavailableError(
                f"torch runner cannot use device 'cuda': torch {torch.__version__} sees no CUDA "
                "device (a CPU-only build, or no GPU/driver); use device 'cpu'")

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        super().__init__(device, options)
        self._device = torch.device(device)
        self._module: torch.nn.Module | None = None

    @property
    def module(self) -> torch.nn.Module:
        """The built network (trainable; ``run`` uses it as it is)."""
        if self._module is None:
            raise MSCError("torch runner: call build() first")
        return self._module

    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        key = fingerprint(graph, params, quant, self.name, "torch", torch.__version__)
        cached = _MODULES.get(key)
        if cached is None:
            cached = to_torch(graph, params, quant).eval()
            _MODULES.put(key, cached)
        self._module = copy.deepcopy(cached).to(self._device).eval()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        module = self.module
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(self._device) for x in inputs]
        with torch.no_grad():
            result = module(*tensors)
        items = result if isinstance(result, tuple | list) else (result,)
        return [item.detach().cpu().numpy() for item in items]

    def synchronize(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def export(self, path: str) -> str:
        """Write the module's state_dict as safetensors (weights only, no code)."""
        state = {key: value.detach().cpu().contiguous().clone()
                 for key, value in self.module.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"runner": self.name}))
        return os.path.abspath(path)
