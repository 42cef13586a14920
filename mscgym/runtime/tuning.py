"""MetaSchedule tuning for the TVM runner, with a persistent database per target.

A bare ``tvm.compile`` on CPU emits naive loop nests; TVM's MetaSchedule
(``tvm.s_tir.meta_schedule``) searches schedules per fused TIR workload and records
the best in a database, and ``relax.transform.MetaScheduleApplyDatabase`` then swaps
the tuned schedules in before the build. Workloads are the fused PrimFuncs after
legalization (weights are function arguments, not constants), so a pruned variant with
the same conv shapes, another process, or the gym's thousandth evaluation finds them in
the database and pays no tuning.

The database is a ``JSONDatabase`` under ``<cache dir>/runtime/tvm_tuning/<target key>/``
(``MSCGYM_CACHE_DIR``, see :mod:`mscgym.runtime.cache`): records are keyed by the
workload's structural hash inside a directory keyed by the target.

Candidates are built and measured in this process (:class:`InProcessBuilder`,
:class:`InProcessRunner`) rather than with MetaSchedule's ``LocalBuilder`` /
``LocalRunner``: their popen workers each import ``tvm.s_tir.tensor_intrin`` again,
which takes longer than the workers' 30 s timeout on a loaded 2-core machine, so every
candidate came back as a build error.

Requires ``apache-tvm-ffi<0.1.15`` with the apache-tvm 0.27.0.post1 wheel: with
0.1.15 every ``TuneContext`` that initializes a space generator segfaults (a
reference-count decrement on a bad pointer inside libtvm_ffi, symbolized as
``tvm::ffi::ToJSONGraph``): an ABI mismatch between the wheel and the newer FFI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
from tvm.s_tir.meta_schedule.runner.local_runner import (
    LocalRunnerFuture,
    default_alloc_argument,
)
from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

from mscgym.compiler.errors import MSCError
from mscgym.runtime import tuning_ledger
from mscgym.runtime.cache import runtime_cache_dir
from mscgym.runtime.channels_last import to_channels_last
from mscgym.utils.files import atomic_write_text, read_json

logger = logging.getLogger(__name__)

DEFAULT_TRIALS = 32
"""Trials per new workload when a build asks for tuning without a budget."""
TRIALS_PER_ITER = 16
POPULATION = 256
"""Candidates the evolutionary search evolves and ranks with its cost model before each
measured batch. MetaSchedule's default of 512 spent 70% of a resnet18 tuning run (48
trials per workload) in the search itself on 2 cores; 256 finds schedules as fast (on
resnet18's two slowest convs: 2.9 / 3.0 ms against 3.1 / 2.8 ms at 512) in two thirds of
the time, and 128 was 5-10% slower."""
FALLBACKS = ("default", "dlight")
"""Schedules for workloads without a tuning record: TVM's default lowering (one thread,
naive loop nests) or dlight's CPU rules (GEMV, Reduction) where they match."""


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """The host CPU as an llvm target: detected ``mcpu`` (its vector ISA) and core count."""
    cores = num_cores or len(os.sched_getaffinity(0))
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores})


def target_key(target: tvm.target.Target) -> str:
    """A short stable name for the target, used as the database directory.

    The core count only decides how many threads a tuned kernel was measured with;
    it stays in the key so records measured on a different thread count are not mixed.
    """
    text = json.dumps({k: str(v) for k, v in target.export().items() if k != "tag"},
                      sort_keys=True)
    return f"{target.kind.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def database_dir(target: tvm.target.Target, root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` (default ``<cache dir>/runtime/tvm_tuning``) / the target's key."""
    base = Path(root) if root is not None else runtime_cache_dir() / "tvm_tuning"
    return base / target_key(target)


def database_exists(path: Path) -> bool:
    return (path / "database_workload.json").exists()


def open_database(path: Path) -> ms.database.JSONDatabase:
    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        path_workload=str(path / "database_workload.json"),
        path_tuning_record=str(path / "database_tuning_record.json"),
        allow_missing=True,
    )


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse: the form MetaSchedule extracts tasks from and the build uses.

    ``extract_tasks`` on an un-legalized module finds no TIR and returns no tasks.
    The weights are constants of the module, so each kernel marks them layout-free
    (``AttachAttrLayoutFreeBuffers``): MetaSchedule's ``RewriteLayout`` may then store a
    weight in the tiled order its schedule reads (what TVM's CPU tuning pipeline calls
    weight prepacking), and :func:`schedule` packs it once at build time. Measured on
    resnet18's 3x3 convs at 512 and 256 channels, 48 trials each: 3.6 and 3.7 ms with
    OIHW weights, 3.1 and 2.8 ms prepacked.

    Convolutions are computed channels-last (:mod:`mscgym.runtime.channels_last`),
    behind the module's NCHW interface.
    """
    with target:
        mod = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
        ])(mod)
        return tvm.transform.Sequential([
            relax.get_pipeline("zero"),
            relax.transform.AttachAttrLayoutFreeBuffers(),
        ])(to_channels_last(mod))


def extract_tasks(fused: tvm.IRModule, target: tvm.target.Target) -> list[Any]:
    """One ExtractedTask per distinct workload (structurally equal PrimFuncs share one)."""
    return list(ms.relax_integration.extract_tasks(fused, target))


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds candidates in this process (see the module docstring for why)."""

    def build(self, build_inputs: list[Any]) -> list[BuilderResult]:
        results = []
        for item in build_inputs:
            try:
                path = default_export(default_build(item.mod, item.target, None))
                results.append(BuilderResult(path, None))
            except Exception as exc:  # noqa: BLE001 - a bad candidate is a result, not a crash
                results.append(BuilderResult(None, f"{type(exc).__name__}: {exc}"))
        return results


@derived_object
class InProcessRunner(PyRunner):
    """Measures built candidates in this process with TVM's own time evaluator."""

    def __init__(self, number: int = 3, repeat: int = 1, min_repeat_ms: int = 40) -> None:
        super().__init__()
        self.config = EvaluatorConfig(number=number, repeat=repeat,
                                      min_repeat_ms=min_repeat_ms,
                                      enable_cpu_cache_flush=False)

    def run(self, runner_inputs: list[Any]) -> list[Any]:
        futures = []
        for item in runner_inputs:
            try:
                rt_mod = tvm.runtime.load_module(item.artifact_path)
                device = tvm.runtime.device(item.device_type, 0)
                args = default_alloc_argument(
                    device, [info.as_json() for info in item.args_info], 1)
                costs = run_evaluator_common(rt_mod, device, self.config, args)
                futures.append(LocalRunnerFuture(res=costs))
            except Exception as exc:  # noqa: BLE001 - a failing candidate is a result
                futures.append(LocalRunnerFuture(error_message=f"{type(exc).__name__}: {exc}"))
            finally:
                if item.artifact_path and os.path.exists(item.artifact_path):
                    os.remove(item.artifact_path)
        return futures


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Reports each measured batch to ``on_batch(n_measured)`` (drives the progress bar)."""

    def __init__(self, on_batch: Callable[[int], None]) -> None:
        super().__init__()
        self.on_batch = on_batch

    def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any,
              builder_results: Any, runner_results: Any) -> None:
        self.on_batch(len(runner_results))


@dataclass
class TuningReport:
    """What a tuning call did: the numbers a search summary and a profile report."""

    target: str
    database: str
    workloads: int = 0
    already_tuned: int = 0
    tuned: int = 0
    trials: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    names: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "names"}


def tune(fused: tvm.IRModule, target: tvm.target.Target, db_path: Path,
         trials: int = DEFAULT_TRIALS, cost_model: str = "xgb",
         progress: bool = True, seed: int = 0) -> TuningReport:
    """Tune the workloads of ``fused`` that the database lacks, ``trials`` each.

    Records are committed to the JSON database after every measured batch, so Ctrl-C
    keeps what was tuned so far (the report then says ``interrupted``).
    """
    if trials <= 0:
        raise MSCError(f"tuning: trials must be positive, got {trials}")
    database = open_database(db_path)
    tasks = extract_tasks(fused, target)
    report = TuningReport(str(target), str(db_path), workloads=len(tasks))
    # A workload tuned with a smaller budget than asked (a search's few trials) gets the
    # trials it lacks, starting from its measured schedules: MetaSchedule counts only the
    # trials of the current call, so asking for the full budget would pay it all again.
    budgets = _read_budgets(db_path)
    groups: dict[int, list[Any]] = {}  # trials lacking -> the workloads lacking them
    for t in tasks:
        done = (budgets.get(_workload_key(t), _measured(database, t, trials))
                if _has_record(database, t, target) else 0)
        if done < trials:
            groups.setdefault(trials - done, []).append(t)
    new = [t for group in groups.values() for t in group]
    report.already_tuned = len(tasks) - len(new)
    report.names = [t.task_name for t in new]
    if not new:
        return report
    # Timed from here: the first TuneContext in a process imports tvm.s_tir.tensor_intrin
    # (minutes on loaded cores), which a search pays like the trials themselves.
    start = time.perf_counter()
    work_dir = tempfile.mkdtemp(prefix="mscgym-tune-")
    # Without a cost model an evolutionary search only ranks at random: sample traces.
    strategy = ("replay-trace" if cost_model == "random"
                else ms.search_strategy.EvolutionarySearch(population_size=POPULATION))
    total = sum(lacking * len(group) for lacking, group in groups.items())
    bar = _progress_bar(total, f"tuning {len(new)} workloads", progress)
    measured = [0]

    def on_batch(n: int) -> None:
        measured[0] += n
        bar.update(n)

    try:
        for lacking, group in sorted(groups.items(), reverse=True):
            with _unnamed_log_handlers_set_aside():
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    group, work_dir, strategy=strategy,
                    num_threads=int(target.attrs.get("num-cores", 1)), seed=seed)
            ms.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=work_dir,
                max_trials_global=lacking * len(group), max_trials_per_task=lacking,
                num_trials_per_iter=min(TRIALS_PER_ITER, lacking),
                builder=InProcessBuilder(), runner=InProcessRunner(), database=database,
                cost_model=cost_model,
                measure_callbacks=[*ms.MeasureCallback.create("default"),
                                   _Progress(on_batch)],
            )
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    report.trials = measured[0]
    report.tuned = sum(_has_record(database, t, target) for t in new)
    tuning_ledger.add(report.tuned, report.trials, report.seconds)
    if not report.interrupted:
        budgets = _read_budgets(db_path)
        for t in new:
            if _has_record(database, t, target):
                key = _workload_key(t)
                budgets[key] = max(budgets.get(key, 0), trials)
        atomic_write_text(db_path / BUDGETS_FILE, json.dumps(budgets, indent=0, sort_keys=True))
    return report


@contextmanager
def _unnamed_log_handlers_set_aside() -> Iterator[None]:
    """Detach unnamed handlers from MetaSchedule's logger while it configures its logging.

    Each tuning call re-configures that logger with ``logging.config.dictConfig`` and lists
    the handlers already on it by name; an unnamed one (pytest's capture handler, which
    lands there after the first tuning in a process, or a user's own) makes it fail with
    ``'NoneType' object has no attribute 'format'``. They are attached again afterwards.
    """
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in ms_logger.handlers if h.get_name() is None]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            ms_logger.addHandler(handler)


BUDGETS_FILE = "trial_budgets.json"
"""Per workload (structural hash), the largest trial budget it was tuned with: a workload
whose design space holds fewer candidates than the budget is not tuned again each build."""


def _workload_key(task: Any) -> str:
    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def _read_budgets(db_path: Path) -> dict[str, int]:
    path = db_path / BUDGETS_FILE
    if not path.exists():
        return {}
    budgets = read_json(path, MSCError, "tuning budgets")
    if not all(isinstance(v, int) for v in budgets.values()):
        raise MSCError(f"tuning budgets {path}: expected workload hash -> trials (integers)")
    return budgets


def _measured(database: Any, task: Any, cap: int) -> int:
    """Valid measured records of the task's workload in the database, counted up to ``cap``."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), cap))


def _has_record(database: Any, task: Any, target: tvm.target.Target) -> bool:
    """Whether the database holds a measured schedule for the task's workload."""
    return database.query_tuning_record(task.dispatched[0], target, task.task_name) is not None


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=not enabled)


def count_tuned(fused: tvm.IRModule, target: tvm.target.Target,
                db_path: Path) -> tuple[int, int]:
    """(workloads with a record, workloads) for ``fused`` in the database at ``db_path``."""
    tasks = extract_tasks(fused, target)
    if not database_exists(db_path):
        return 0, len(tasks)
    database = open_database(db_path)
    return sum(_has_record(database, t, target) for t in tasks), len(tasks)


def _scheduled(mod: tvm.IRModule) -> set[str]:
    """Names of the PrimFuncs that carry a schedule (a database record or a dlight rule)."""
    return {gv.name_hint for gv, func in mod.functions.items()
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None
            and bool(func.attrs.get("tirx.is_scheduled", False))}


def schedule(fused: tvm.IRModule, target: tvm.target.Target, db_path: Path,
             fallback: str = "default") -> tuple[tvm.IRModule, dict[str, Any]]:
    """Tuned schedules from the database, then ``fallback`` for the kernels left over.

    Returns the scheduled module and what a profile reports: distinct workloads and how
    many had a record, and per kernel (PrimFunc) how many run tuned, ``fallback``
    (dlight) or TVM's default schedule.
    """
    if fallback not in FALLBACKS:
        raise MSCError(f"TVM runner option 'fallback': expected one of {list(FALLBACKS)}, "
                       f"got {fallback!r}")
    tuned, workloads = count_tuned(fused, target, db_path)
    mod = apply_database(fused, target, db_path)
    from_db = _scheduled(mod)
    if fallback == "dlight":
        from tvm.s_tir import dlight

        with target:
            mod = dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())(mod)
    scheduled = _scheduled(mod)
    kernels = sum(isinstance(f, tvm.tirx.PrimFunc) for f in mod.functions.values())
    mod, prepacked = prepack_weights(mod, target)
    return mod, {"workloads": workloads, "tuned_workloads": tuned, "fallback": fallback,
                 "kernels": kernels, "tuned_kernels": len(from_db),
                 "fallback_kernels": len(scheduled - from_db),
                 "default_kernels": kernels - len(scheduled),
                 "prepacked_kernels": prepacked}


PREPACK_SUFFIX = "_weight_prepack"
"""Name suffix ``SplitLayoutRewritePreproc`` gives the kernel that packs a kernel's weights."""


def prepack_weights(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Pack the weights of tuned kernels into the layout their schedules chose, at build time.

    A tuned schedule with a rewritten weight layout carries the packing as a preprocessing
    block; ``SplitLayoutRewritePreproc`` moves it into a kernel of its own, which
    ``FoldConstant`` evaluates on the constant weights, so the packing runs once here and
    never per inference. Returns the module and how many kernels read weights packed at
    build time.
    """
    with target:
        split = relax.transform.SplitLayoutRewritePreproc()(mod)
        packers = _packers(split)
        if not packers:
            return mod, 0
        folded = tvm.transform.Sequential([
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ])(split)
    left = _packers(folded)
    if left:
        logger.warning("TVM weight prepacking: %s pack their weights on every inference "
                       "(the weights are not constants of the module)", left)
    return folded, len(packers) - len(left)


def _packers(mod: tvm.IRModule) -> list[str]:
    """Names of the weight-packing kernels ``SplitLayoutRewritePreproc`` made in ``mod``."""
    return [gv.name_hint for gv in mod.functions if gv.name_hint.endswith(PREPACK_SUFFIX)]


def apply_database(fused: tvm.IRModule, target: tvm.target.Target,
                   db_path: Path) -> tvm.IRModule:
    """Replace every workload that has a record by its best tuned schedule."""
    if not database_exists(db_path):
        return fused
    database = open_database(db_path)
    with target, database, tvm.transform.PassContext(opt_level=3):
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
