"""Ray Tune sweeps over a task: the trials behind ``run_sweep(task, ...) -> SearchResult``
and the ``ray`` agent (both in :mod:`mscgym.tune.agent`).

Each trial evaluates one plan in a Ray worker (:mod:`mscgym.tune.trainable`), which
rebuilds the task from its JSON description (:mod:`mscgym.tune.spec`). The searcher
(Optuna TPE, Optuna random, or Tune's own random variant generator) proposes choice
indices over :func:`mscgym.tune.space.search_space`, never more than
``max_concurrent`` at once; the first trial is always the uncompressed baseline, as
with the other agents.

Ray starts on demand, locally (``num_cpus`` CPUs, 2 by default, one per trial, one
OpenMP thread per worker) or attached to a cluster (``address``), and stays up for
later sweeps (``ray.shutdown()`` ends it). A failed trial is retried once; if it fails
again it is reported in the result's ``extra["failed_trials"]`` (plan and error),
never silently dropped. With ``resume=True`` an experiment found under
``storage_path``/``name`` is restored (``Tuner.restore``, errored trials retried)
instead of started again: its finished trials count as the first steps (recorded as
cached, phase ``resumed``) and only the missing ones run, scored against the baseline
the first run stored in the experiment folder (``mscgym_baseline.json``), not against
a newly measured one. The experiment name defaults
to one derived from the task, so resuming needs no name; a fresh sweep under an
existing name replaces that experiment's state (its old trial folders stay). A sweep
stopped early (Ctrl-C: Tune saves its state and returns) raises an MSCError saying how
to resume it rather than returning a partial result, and a resume cannot ask for more
trials than the experiment was started with (``mscgym_sweep.json`` keeps the count).
On a cluster, every node needs mscgym, the zoo cache and any model file at the same path.
A cluster started with Ray's token authentication (``RAY_AUTH_MODE=token``) takes the
token from where Ray reads it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
``~/.ray/auth_token``); with one of them set, the driver turns token mode on itself, and a
missing or wrong token is an MSCError saying how to give it.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mscgym.compiler.errors import MSCError
from mscgym.tasks.cache import fingerprint
from mscgym.tasks.metrics import Metrics
from mscgym.tasks.task import Task
from mscgym.tune.deps import check_ray, import_tune
from mscgym.tune.space import config_plan, plan_config, search_space
from mscgym.tune.spec import TaskSpec, task_spec
from mscgym.tune.trainable import evaluate_trial
from mscgym.utils.files import atomic_write_text, read_json

if TYPE_CHECKING:
    from mscgym.agents.evaluator import Evaluator

SEARCH_ALGS = ("optuna", "random", "basic")
SCHEDULERS = ("asha",)
DEFAULT_NUM_CPUS = 2
MAX_FAILURES = 1
"""Times a failed trial is started again before it counts as failed."""


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MSCError(f"ray sweep: {key} must be a positive int, got {value!r}")
    return int(value)


@dataclass
class SweepSettings:
    """How a sweep runs; checked on construction so a bad option fails before Ray starts."""

    search_alg: str = "optuna"
    max_concurrent: int = 2
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    storage_path: str | None = None
    name: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    scheduler: str | None = None
    seed: int = 0
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.search_alg not in SEARCH_ALGS:
            raise MSCError(f"ray sweep: unknown search_alg {self.search_alg!r}; expected one "
                           f"of {list(SEARCH_ALGS)}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise MSCError(f"ray sweep: unknown scheduler {self.scheduler!r}; expected None or "
                           f"one of {list(SCHEDULERS)}")
        self.max_concurrent = _positive_int(self.max_concurrent, "max_concurrent")
        if self.num_cpus is not None:
            self.num_cpus = _positive_int(self.num_cpus, "num_cpus")
            if self.address is not None:
                raise MSCError("ray sweep: num_cpus sizes a local Ray; a cluster at address "
                               f"{self.address!r} has its own CPUs, so give one or the other")
        if not isinstance(self.resources_per_trial, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and v >= 0 for k, v in self.resources_per_trial.items()):
            raise MSCError("ray sweep: resources_per_trial must map resource names to "
                           f"numbers >= 0, e.g. {{'cpu': 1}}; got {self.resources_per_trial!r}")
        self.resources_per_trial = dict(self.resources_per_trial)
        if self.storage_path is not None:
            self.storage_path = os.fspath(self.storage_path)
            if "://" not in self.storage_path:
                self.storage_path = os.path.abspath(self.storage_path)

    def to_json(self) -> dict[str, Any]:
        return {"search_alg": self.search_alg, "max_concurrent": self.max_concurrent,
                "resources_per_trial": dict(self.resources_per_trial),
                "storage_path": self.storage_path, "name": self.name,
                "address": self.address, "num_cpus": self.num_cpus,
                "scheduler": self.scheduler, "seed": self.seed, "resume": self.resume}


def ensure_ray(settings: SweepSettings) -> None:
    """Start a local Ray, or attach to the cluster at ``settings.address``, unless up."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    if settings.address is not None:
        _connect(settings.address, runtime_env)
    else:
        ray.init(num_cpus=settings.num_cpus or DEFAULT_NUM_CPUS, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False, runtime_env=runtime_env)


AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"
TOKEN_HOW_TO = (
    "give this process the cluster's token the way Ray reads it: the RAY_AUTH_TOKEN "
    "environment variable, a file named by RAY_AUTH_TOKEN_PATH, or the default file "
    "~/.ray/auth_token (`ray get-auth-token` on the head node prints the token)")


def auth_token_source() -> str | None:
    """Where Ray will read this process's auth token from, in Ray's order of precedence
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), in words; None when no
    source is set. Never the token itself.

    A RAY_AUTH_TOKEN_PATH that names a missing or empty file is an MSCError here:
    Ray treats it as a fatal misconfiguration and aborts the process.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            empty = not Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise MSCError(f"RAY_AUTH_TOKEN_PATH names {path}, which cannot be read as a "
                           f"Ray auth token ({err}); {TOKEN_HOW_TO}") from None
        if empty:
            raise MSCError(f"RAY_AUTH_TOKEN_PATH names {path}, which is empty; "
                           f"{TOKEN_HOW_TO}")
        return f"the file {path} (RAY_AUTH_TOKEN_PATH)"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return f"the default token file {default}"
    return None


def _enable_token_auth() -> None:
    """Turn on Ray's token mode for this driver when a token is at hand and the user has
    not chosen a mode (RAY_AUTH_MODE unset).

    Ray 2.60 does this itself only for a cluster it finds locally (``address="auto"``);
    for an explicit address the driver stays in disabled mode, and a cluster started
    with token auth answers every call with ``InvalidAuthToken``. This is Ray's own step
    for the local case (it also refreshes Ray's cached config). A token sent to a cluster
    without auth is ignored, so turning the mode on cannot break such a connection.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _connect(address: str, runtime_env: dict[str, Any]) -> None:
    """Attach to the cluster at ``address``, authenticating with Ray's token where one is
    set; a refused or unreachable cluster is an MSCError saying how to give the token."""
    import ray
    from ray.exceptions import AuthenticationError

    source = auth_token_source()
    if source is not None:
        _enable_token_auth()
    mode = os.environ.get("RAY_AUTH_MODE", "disabled")
    used = (f"token mode is {mode!r} (RAY_AUTH_MODE) and the token comes from {source}"
            if source is not None else "no token is set")
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                 ignore_reinit_error=True)
    except AuthenticationError:
        ray.shutdown()
        raise MSCError(f"the Ray cluster at {address} cannot be reached with token "
                       f"authentication: {used}; {TOKEN_HOW_TO}. See {AUTH_DOCS}") from None
    except ConnectionError as err:
        ray.shutdown()
        raise MSCError(
            f"could not connect to the Ray cluster at {address} ({err}). If the cluster runs "
            f"with token authentication (RAY_AUTH_MODE=token on its nodes), the token was "
            f"missing or wrong: here {used}; {TOKEN_HOW_TO}. Otherwise check the address "
            f"and that the cluster is up (`ray status --address {address}`). "
            f"See {AUTH_DOCS}") from None


def _trial_dirname(trial: Any) -> str:
    """``trial_<creation number>_<id>``: short (Tune's default spells the whole config
    out) and sorting in creation order, which a restored result grid does not keep.
    Tune's searchers start each trial's tag with its creation number."""
    number = str(trial.experiment_tag).split("_", 1)[0]
    return f"trial_{number.zfill(5)}_{trial.trial_id}"


def _creation_order(result: Any) -> str:
    return os.path.basename(os.path.normpath(result.path))


def _search_alg(task: Task, settings: SweepSettings) -> Any:
    baseline = [plan_config(task.space, task.space.baseline_plan())]
    if settings.search_alg == "basic":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=baseline,
                                     max_concurrent=settings.max_concurrent,
                                     random_state=settings.seed)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    sampler = (optuna.samplers.TPESampler(seed=settings.seed) if settings.search_alg == "optuna"
               else optuna.samplers.RandomSampler(seed=settings.seed))
    return ConcurrencyLimiter(OptunaSearch(points_to_evaluate=baseline, sampler=sampler),
                              max_concurrent=settings.max_concurrent)


def _scheduler(settings: SweepSettings) -> Any:
    if settings.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", grace_period=1)


def experiment_name(task: Task, settings: SweepSettings) -> str:
    """``settings.name``, or one derived from the task (the same task resumes it)."""
    return settings.name or f"mscgym-{task.tool}-{fingerprint(task.describe())[:16]}"


def _tuner(task: Task, spec: TaskSpec, settings: SweepSettings, num_samples: int
           ) -> tuple[Any, str, bool]:
    """The Tuner (restored where asked and possible), its experiment path, and whether
    it was restored."""
    tune = import_tune()
    trainable = tune.with_resources(tune.with_parameters(evaluate_trial, spec=spec),
                                    settings.resources_per_trial)
    run_config = tune.RunConfig(
        name=experiment_name(task, settings), storage_path=settings.storage_path,
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        verbose=1 if settings.progress else 0)
    path = os.path.join(run_config.storage_path, run_config.name)
    if settings.resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_errored=True), path, True
    tune_config = tune.TuneConfig(
        search_alg=_search_alg(task, settings), scheduler=_scheduler(settings),
        metric="score", mode="max", num_samples=num_samples, reuse_actors=True,
        trial_dirname_creator=_trial_dirname)
    return (tune.Tuner(trainable, param_space=search_space(task), tune_config=tune_config,
                       run_config=run_config), path, False)


SAMPLES_FILE = "mscgym_sweep.json"
"""How many trials the experiment was started with: a restored Tune experiment keeps
its ``num_samples``, so a resume asking for more is refused instead of running none."""

BASELINE_FILE = "mscgym_baseline.json"
"""The driver's baseline metrics, kept in the experiment folder so a resumed sweep scores
its old and new trials (and the summary) against one baseline."""


def experiment_path(task: Task, settings: SweepSettings) -> str:
    """Where Tune keeps this sweep's experiment (its storage path and name)."""
    tune = import_tune()
    run_config = tune.RunConfig(name=experiment_name(task, settings),
                                storage_path=settings.storage_path)
    return os.path.join(run_config.storage_path, run_config.name)


def stored_baseline(path: str) -> Metrics | None:
    """The baseline an earlier run of the experiment at ``path`` measured, if any."""
    file = os.path.join(path, BASELINE_FILE)
    if "://" in path or not os.path.isfile(file):
        return None
    return Metrics.from_json(read_json(file, MSCError, "sweep baseline"))


def _store_baseline(path: str, baseline: Metrics) -> None:
    if "://" in path:
        return
    os.makedirs(path, exist_ok=True)
    atomic_write_text(os.path.join(path, BASELINE_FILE),
                      json.dumps(baseline.to_json(), indent=1, sort_keys=True))


def _check_samples(path: str, restored: bool, budget: int) -> int | None:
    """The number of trials the experiment runs: stored on a fresh start; on a resume,
    read back, and a budget above it refused (Tune would silently run nothing more).
    None when unknown (remote storage, or an experiment from before this file)."""
    file = os.path.join(path, SAMPLES_FILE)
    if not restored:
        if "://" not in path:
            os.makedirs(path, exist_ok=True)
            atomic_write_text(file, json.dumps({"num_samples": budget}))
        return budget
    if "://" in path or not os.path.isfile(file):
        return None
    stored = read_json(file, MSCError, "sweep settings").get("num_samples")
    if not isinstance(stored, int) or isinstance(stored, bool):
        return None
    if budget > stored:
        raise MSCError(f"ray experiment {path} was started with {stored} trials; a resumed "
                       f"experiment cannot grow to {budget}. Resume it with num_samples <= "
                       f"{stored}, or start another sweep (another name or storage_path)")
    return stored


def _finished(result: Any) -> bool:
    """Whether a trial result is a final report (only those carry the task key)."""
    return result.error is None and "metrics" in (result.metrics or {}) and not (
        result.metrics.get("intermediate"))


def _error_text(error: BaseException) -> str:
    """The last line of a trial's error (Ray wraps it in the worker's traceback)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _check_task(result: Any, spec: TaskSpec, path: str) -> None:
    found = result.metrics.get("task_key")
    if found != spec["key"]:
        raise MSCError(f"ray experiment {path} holds trials of another task (task key {found}, "
                       f"this task's is {spec['key']}); resume it with that task, or give this "
                       "sweep another name or storage_path")


def run_trials(task: Task, evaluator: Evaluator, settings: SweepSettings) -> dict[str, Any]:
    """Run the sweep and record each finished trial, in trial order, as an evaluator step.

    Returns facts for the result: the experiment path, trial counts, the failed trials
    (plan and last error line) and whether the experiment was restored.
    """
    spec = task_spec(task)
    check_ray()
    ensure_ray(settings)
    tuner, path, restored = _tuner(task, spec, settings, evaluator.budget)
    samples = _check_samples(path, restored, evaluator.budget)
    if not restored or stored_baseline(path) is None:
        _store_baseline(path, task.baseline)
    finished_before: set[str] = set()
    if restored:
        for result in tuner.get_results():
            if _finished(result):
                _check_task(result, spec, path)
                finished_before.add(result.path)
    grid = tuner.fit()
    unfinished = [r for r in grid if r.error is None and not (r.metrics or {}).get(
        "intermediate") and "metrics" not in (r.metrics or {})]
    missing = (samples - len(grid)) if samples is not None else 0
    if unfinished or missing > 0:  # Tune returns early, without an error, on Ctrl-C
        raise MSCError(f"ray sweep {path}: interrupted with {len(unfinished) + max(missing, 0)} "
                       f"of {samples or len(grid)} trials unfinished; its state is saved, run "
                       "it again with resume=True to finish it")
    failed: list[dict[str, Any]] = []
    over_budget = 0
    stopped: list[dict[str, Any]] = []
    for result in sorted(grid, key=_creation_order):
        plan = config_plan(task.space, result.config)
        if result.error is None and (result.metrics or {}).get("intermediate"):
            stopped.append({"plan": plan, "epoch": result.metrics.get("epoch"),
                            "distill_loss": result.metrics.get("distill_loss")})
            continue  # stopped early by the scheduler after an intermediate epoch
        if result.error is not None or "metrics" not in result.metrics:
            error = ("the trial reported no result" if result.error is None
                     else _error_text(result.error))
            failed.append({"plan": plan, "error": error, "path": result.path})
            continue
        _check_task(result, spec, path)
        if evaluator.done:  # a restored experiment can hold more trials than the budget
            over_budget += 1
            continue
        resumed = result.path in finished_before
        evaluator.record(plan, Metrics.from_json(result.metrics["metrics"]),
                         cached=resumed or bool(result.metrics["cached"]),
                         phase="resumed" if resumed else f"ray:{settings.search_alg}")
    if evaluator.best is None:
        first = failed[0]["error"] if failed else "no trial ran"
        raise MSCError(f"ray sweep {path}: no trial finished ({len(failed)} failed); first "
                       f"error: {first}")
    return {"experiment_path": path, "trials": len(grid), "failed_trials": failed,
            "stopped_trials": stopped,
            "over_budget_trials": over_budget, "resumed": restored,
            "resumed_trials": len(finished_before),
            "search_alg": settings.search_alg, "scheduler": settings.scheduler}
