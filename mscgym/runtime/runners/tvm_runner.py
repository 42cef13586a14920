"""TVM runner: MSCGraph -> Relax (QDQ for quantized layers) -> tvm.compile -> Relax VM.

Compiling is the expensive step of an evaluation, so compiled libraries are kept in
the disk cache (``mscgym.runtime.cache``) under the fingerprint of what was compiled
and for which target: the same compressed model built twice, in this process or
another, is compiled once. On CUDA, TVM 0.27's default CUDA pipeline already applies
the dlight default GPU schedules (``tvm.s_tir.dlight``) while legalizing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tvm
from tvm import relax

from mscgym.compiler.codegen.relax_codegen import to_relax
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.cache import (
    artifact_path,
    fingerprint,
    record,
    store_artifact,
    verified_artifact,
)
from mscgym.runtime.runner import BaseRunner, RunnerUnavailableError
from mscgym.utils.files import atomic_write

ENTRY = "main"
CODEGEN_MODULES = tuple(f"mscgym.compiler.{m}" for m in (
    "graph", "dims", "codegen.common", "codegen.relax_codegen", "normalize", "ops", "quant_spec",
    "relax_codec"))
"""The modules that turn a graph into Relax: their source is part of the cache key."""


class TVMRunner(BaseRunner):
    """Runs the Relax build of a graph on the Relax virtual machine (llvm or cuda)."""

    name = "tvm"
    artifact_suffix = ".so"
    OPTIONS: ClassVar[dict[str, str]] = {
        "target": "TVM target overriding the device's default (host CPU or the CUDA GPU)",
        "cache": "reuse compiled libraries from the disk cache (default true)",
    }

    @classmethod
    def check_available(cls, device: str) -> None:
        if device == "cuda" and not (tvm.runtime.enabled("cuda") and tvm.cuda().exist):
            why = ("this TVM build has no CUDA support" if not tvm.runtime.enabled("cuda")
                   else "no CUDA GPU is visible")
            raise RunnerUnavailableError(f"TVM runner cannot use device 'cuda': {why}")

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        super().__init__(device, options)
        self._dev = tvm.cuda() if device == "cuda" else tvm.cpu()
        chosen = self.options.get("target")
        self._target = (tvm.target.Target(chosen) if chosen is not None
                        else tvm.target.Target.from_device(self._dev))
        self._use_cache = bool(self.options.get("cache", True))
        self._main: Any = None
        self._library_path: str | None = None
        self._executable: Any = None

    @property
    def target(self) -> str:
        return str(self._target)

    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        self._library_path, self._executable = None, None
        if not self._use_cache:
            self._executable = self._compile(graph, params, quant)
            module = self._executable
        else:
            key = fingerprint(graph, params, quant, self.name, self.target, tvm.__version__,
                              CODEGEN_MODULES)
            path = str(artifact_path("tvm", key, ".so"))
            module = _load_library(path, key)
            record("tvm", module is not None)
            if module is None:
                executable = self._compile(graph, params, quant)
                store_artifact(path, key, executable.export_library)
                module = executable
            self._library_path = path
        self._main = relax.VirtualMachine(module, self._dev)[ENTRY]

    def _compile(self, graph: MSCGraph, params: Mapping[str, np.ndarray],
                 quant: QuantPlan) -> Any:
        mod = to_relax(graph, params, ENTRY, quant=quant)
        return tvm.compile(mod, target=self._target)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self._main is None:
            raise MSCError("TVM runner: call build() before run()")
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=self._dev) for x in inputs]
        result = self._main(*args)
        if isinstance(result, tvm.runtime.Tensor):
            return [result.numpy()]
        return [item.numpy() for item in result]

    def synchronize(self) -> None:
        if self.device != "cpu":
            self._dev.sync()

    def export(self, path: str) -> str:
        """Write the compiled shared library (load it with ``tvm.runtime.load_module``)."""
        if not path.endswith(".so"):
            raise MSCError(f"TVM runner exports a shared library; name the file '*.so', "
                           f"got {path!r}")
        if self._library_path is not None:
            source = self._library_path
            atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))
        elif self._executable is not None:
            atomic_write(path, self._executable.export_library)
        else:
            raise MSCError("TVM runner: call build() before export()")
        return os.path.abspath(path)


def _load_library(path: str, key: str) -> Any | None:
    """The cached library at ``path``, or None when absent, not the verified artifact of
    ``key`` (checked before it is mapped) or unloadable (rebuilt then)."""
    if not verified_artifact(path, key):
        return None
    try:
        return tvm.runtime.load_module(path)
    except RuntimeError:
        return None
