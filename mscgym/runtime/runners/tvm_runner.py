"""TVM runner: MSCGraph -> Relax (QDQ for quantized layers) -> tvm.compile -> Relax VM.

Compiling is the expensive step of an evaluation, so compiled libraries are kept in
the disk cache (``mscgym.runtime.cache``) under the fingerprint of what was compiled
and for which target: the same compressed model built twice, in this process or
another, is compiled once. On CUDA, TVM 0.27's default CUDA pipeline already applies
the dlight default GPU schedules (``tvm.s_tir.dlight``) while legalizing.

On the CPU the runner builds for the host (``llvm`` with the detected ``mcpu`` and core
count) and applies MetaSchedule's tuned schedules from the persistent database of
:mod:`mscgym.runtime.tuning`; with ``tune={"trials": N}`` it first tunes the workloads
the database lacks (each distinct workload once: a later build, in any process, finds
the records). Kernels without a record get the ``fallback`` schedule: TVM's default
lowering or dlight's CPU rules. ``build_info`` says which target was built, how many
workloads had records and how many kernels ran tuned, fallback or default schedules;
the database contents are part of the library's cache key.

MetaSchedule tunes static shapes, so a graph with a symbolic batch gets two builds on
the CPU once a tuning database exists: the symbolic one runs batched inputs, and a
static batch-1 build (tuned, and reported under ``build_info["batch1"]``) runs batch-1
inputs, which is what latency is profiled on. ``mscgym search --runner tvm`` tunes each
new workload with a small budget (``--tune-trials``); the search summary reports the
tuning it paid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tvm
from tvm import relax

from mscgym.compiler.analysis import resolve_symbols
from mscgym.compiler.codegen.relax_codegen import to_relax
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime import tuning
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
CODEGEN_MODULES = (*(f"mscgym.compiler.{m}" for m in (
    "graph", "dims", "codegen.common", "codegen.relax_codegen", "normalize", "ops", "quant_spec",
    "relax_codec")), "mscgym.runtime.tuning", "mscgym.runtime.channels_last")
"""The modules that turn a graph into Relax and schedule it: their source is part of the
cache key."""

logger = logging.getLogger(__name__)


class TVMRunner(BaseRunner):
    """Runs the Relax build of a graph on the Relax virtual machine (llvm or cuda)."""

    name = "tvm"
    artifact_suffix = ".so"
    OPTIONS: ClassVar[dict[str, str]] = {
        "target": "TVM target overriding the device's default (host CPU or the CUDA GPU)",
        "cache": "reuse compiled libraries from the disk cache (default true)",
        "tune": "MetaSchedule-tune workloads missing from the database: true or "
                "{'trials': N, 'cost_model': 'xgb'|'random'} (CPU only; default: no tuning)",
        "db": "tuning database root (default <cache dir>/runtime/tvm_tuning)",
        "fallback": "schedule of workloads without a tuning record (CPU): 'default' (TVM's "
                    "default lowering) or 'dlight' (dlight's CPU rules where they match); "
                    "default 'default'",
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
        if chosen is not None:
            self._target = tvm.target.Target(chosen)
        elif device == "cpu":
            self._target = tuning.host_target()
        else:
            self._target = tvm.target.Target.from_device(self._dev)
        self._tuning = self._target.kind.name == "llvm"
        self._tune = _tune_option(self.options.get("tune"))
        self._db_path = tuning.database_dir(self._target, self.options.get("db"))
        self._fallback = str(self.options.get("fallback", "default"))
        if self._fallback not in tuning.FALLBACKS:
            raise MSCError(f"TVM runner option 'fallback': expected one of "
                           f"{list(tuning.FALLBACKS)}, got {self._fallback!r}")
        self.build_info: dict[str, Any] = {}
        self.tuning_report: tuning.TuningReport | None = None
        self._use_cache = bool(self.options.get("cache", True))
        self._main: Any = None
        self._library_path: str | None = None
        self._executable: Any = None
        self._batch1: Any = None

    @property
    def target(self) -> str:
        return str(self._target)

    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        """Build the graph; on the CPU, with a tuning database, a graph with a symbolic
        batch also gets a static batch-1 build, which runs batch-1 inputs (latency) with
        the batch-1 records ``mscgym tune`` and the ``tune`` option write (MetaSchedule
        tunes static shapes)."""
        self._library_path, self._executable, self._batch1 = None, None, None
        # Without tuning records there is nothing for a second, static build to gain.
        static = self._tuning and (self._tune is not None
                                   or tuning.database_exists(self._db_path))
        symbols = resolve_symbols(graph, 1) if static else {}
        if self._tune is not None:
            self._tune_graph(graph, params, quant, symbols)
        module, info = self._build_module(graph, params, quant, {}, keep=True)
        self.build_info = info
        self._main = relax.VirtualMachine(module, self._dev)[ENTRY]
        if symbols:
            batch1, info1 = self._build_module(graph, params, quant, symbols, keep=False)
            self._batch1 = relax.VirtualMachine(batch1, self._dev)[ENTRY]
            self.build_info = {**info, "batch1": info1}
        if self._use_cache:  # one cache event per build: a hit when nothing was compiled
            record("tvm", all(i["cached"] for i in (info, self.build_info.get("batch1", info))))

    def _build_module(self, graph: MSCGraph, params: Mapping[str, np.ndarray],
                      quant: QuantPlan, symbols: Mapping[str, int], keep: bool
                      ) -> tuple[Any, dict[str, Any]]:
        """The compiled module (from the disk cache when allowed) and its build info."""
        if not self._use_cache:
            executable, info = self._compile(graph, params, quant, symbols)
            if keep:
                self._executable = executable
            return executable, info
        key = self.cache_key(graph, params, quant, symbols)
        path = str(artifact_path("tvm", key, ".so"))
        module = _load_library(path, key)
        if keep:
            self._library_path = path
        if module is not None:
            return module, {"target": self.target, "cached": True}
        executable, info = self._compile(graph, params, quant, symbols)
        store_artifact(path, key, executable.export_library)
        return executable, info

    def cache_key(self, graph: MSCGraph, params: Mapping[str, np.ndarray],
                  quant: QuantPlan, symbols: Mapping[str, int] | None = None) -> str:
        """The disk-cache key of the library ``build`` makes: what is compiled (with
        ``symbols`` bound for the static batch-1 build), for which target, with which
        tuning records and fallback schedule, by which TVM and codegen sources."""
        bound = f"|bound={sorted(symbols.items())}" if symbols else ""
        return fingerprint(graph, params, quant, self.name,
                           f"{self.target}|{self._database_state()}|{self._fallback}{bound}",
                           tvm.__version__, CODEGEN_MODULES)

    def _relax(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan,
               symbols: Mapping[str, int]) -> tvm.IRModule:
        mod = to_relax(graph, params, ENTRY, quant=quant)
        return relax.transform.BindSymbolicVars(dict(symbols))(mod) if symbols else mod

    def _compile(self, graph: MSCGraph, params: Mapping[str, np.ndarray],
                 quant: QuantPlan, symbols: Mapping[str, int]) -> tuple[Any, dict[str, Any]]:
        mod = self._relax(graph, params, quant, symbols)
        info: dict[str, Any] = {"target": self.target, "cached": False}
        if not self._tuning:
            return tvm.compile(mod, target=self._target), info
        fused = tuning.fuse(mod, self._target)
        scheduled, counts = tuning.schedule(fused, self._target, self._db_path,
                                            self._fallback)
        info.update(counts, database=str(self._db_path))
        tuned, workloads = counts["tuned_workloads"], counts["workloads"]
        if not tuning.database_exists(self._db_path):
            logger.info("TVM runner: no tuning database at %s; building %d workloads "
                        "with the %s schedules", self._db_path, workloads, self._fallback)
        elif tuned < workloads:
            logger.info("TVM runner: %d of %d workloads tuned in %s; the rest use the %s "
                        "schedules", tuned, workloads, self._db_path, self._fallback)
        with self._target:
            return tvm.compile(scheduled, target=self._target), info

    def _tune_graph(self, graph: MSCGraph, params: Mapping[str, np.ndarray],
                    quant: QuantPlan, symbols: Mapping[str, int]) -> None:
        """Tune the graph's static workloads the database lacks (batch 1 when the graph
        has a symbolic batch); the report is ``tuning_report``."""
        if not self._tuning:
            raise MSCError(f"TVM runner: tuning needs an llvm (CPU) target, got {self.target}")
        fused = tuning.fuse(self._relax(graph, params, quant, symbols), self._target)
        trials, cost_model = self._tune
        report = tuning.tune(fused, self._target, self._db_path, trials=trials,
                             cost_model=cost_model, progress=False)
        self.tuning_report = report

    def _database_state(self) -> str:
        """A hash of the tuning records (a library built before tuning is not reused)."""
        path = self._db_path / "database_tuning_record.json"
        if not self._tuning or not path.exists():
            return "no-tuning-database"
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self._main is None:
            raise MSCError("TVM runner: call build() before run()")
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=self._dev) for x in inputs]
        batch1 = self._batch1 is not None and all(x.ndim and x.shape[0] == 1 for x in inputs)
        result = (self._batch1 if batch1 else self._main)(*args)
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


def _tune_option(value: Any) -> tuple[int, str] | None:
    """``tune`` option -> (trials per workload, cost model), or None for no tuning."""
    if value is None or value is False:
        return None
    if value is True:
        return tuning.DEFAULT_TRIALS, "xgb"
    if isinstance(value, Mapping):
        unknown = set(value) - {"trials", "cost_model"}
        if unknown:
            raise MSCError(f"TVM runner option 'tune': unknown keys {sorted(unknown)}; "
                           "expected 'trials' and 'cost_model'")
        return int(value.get("trials", tuning.DEFAULT_TRIALS)), str(value.get("cost_model", "xgb"))
    raise MSCError(f"TVM runner option 'tune': expected true or a dict like "
                   f"{{'trials': 32}}, got {value!r}")


def _load_library(path: str, key: str) -> Any | None:
    """The cached library at ``path``, or None when absent, not the verified artifact of
    ``key`` (checked before it is mapped) or unloadable (rebuilt then)."""
    if not verified_artifact(path, key):
        return None
    try:
        return tvm.runtime.load_module(path)
    except RuntimeError:
        return None
