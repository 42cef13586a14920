"""Evaluations per second of msc/Quantize-v0 on digits-cnn with and without the cache,
and the cost of one env step against a direct ``task.evaluate`` call.

Run: python benchmarks/gym_overhead.py [--plans 12] [--repeat 5]
Prints ratios measured in this run (median of repeats).

``--breakdown MODEL`` instead splits uncached quantize evaluations of MODEL (e.g.
digits-cnn, resnet18) into codegen, session build, profiling, the eval-set run, quantize
planning and the rest (identity hashes, graph bookkeeping), by timing the functions the
evaluation calls, and compares the identity hashes a task now computes once with what
re-hashing them on every ``plan_key`` cost.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mscgym.envs.compression_env import CompressionEnv
from mscgym.runtime.runners import ort_runner
from mscgym.tasks import builder as builder_module
from mscgym.tasks import measure as measure_module
from mscgym.tasks.cache import EvaluationCache
from mscgym.tasks.sources import params_hash
from mscgym.tasks.task import Task


def _median_seconds(fn, repeat: int) -> float:  # noqa: ANN001
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@contextlib.contextmanager
def _timed(spent: dict[str, float], targets: dict[str, tuple[Any, str]]) -> Iterator[None]:
    """Wrap ``module.name`` for each phase so every call adds its wall time to the phase."""
    originals = {phase: getattr(module, name) for phase, (module, name) in targets.items()}

    def wrap(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - start
        return timed

    for phase, (module, name) in targets.items():
        setattr(module, name, wrap(phase, originals[phase]))
    try:
        yield
    finally:
        for phase, (module, name) in targets.items():
            setattr(module, name, originals[phase])


def breakdown(model: str, n_plans: int, repeat: int) -> None:
    """Where an uncached quantize evaluation of ``model`` spends its time."""
    start = time.perf_counter()
    task = Task(model, "quantize", profile_repeat=10, profile_warmup=2)
    task.baseline  # noqa: B018 - baseline and teacher outputs once
    setup = time.perf_counter() - start
    rng = np.random.default_rng(0)
    plans: list[dict[str, Any]] = []
    while len(plans) < n_plans + 1:  # distinct plans: the in-process ONNX cache never answers
        plan = task.space.decode(rng.integers(0, task.space.sizes))
        if plan not in plans and any(v != "float" for v in plan.values()):
            plans.append(plan)
    start = time.perf_counter()
    task.evaluate(plans[0], use_cache=False)  # builds the calibration pool (once per task)
    first = time.perf_counter() - start

    spent: dict[str, float] = defaultdict(float)
    targets = {
        "codegen (to_onnx)": (ort_runner, "to_onnx"),
        "artifact fingerprint": (ort_runner, "fingerprint"),
        "runner build": (measure_module, "build_runner"),
        "profiling": (measure_module, "profile_runner"),
        "paired profiling": (measure_module, "profile_paired"),
        "eval-set run": (measure_module, "graph_batched"),
        "quantize planning (compose_plan)": (builder_module, "compose_plan"),
    }
    start = time.perf_counter()
    with _timed(spent, targets):
        for plan in plans[1:]:
            task.evaluate(plan, use_cache=False)
    total = (time.perf_counter() - start) / n_plans
    per = defaultdict(float, {phase: seconds / n_plans for phase, seconds in spent.items()})
    session = per["runner build"] - per["codegen (to_onnx)"] - per["artifact fingerprint"]
    rows = [("codegen (to_onnx)", per["codegen (to_onnx)"]),
            ("session build", session),
            ("artifact fingerprint", per["artifact fingerprint"]),
            ("profiling (paired)", per["profiling"] + per["paired profiling"]),
            ("eval-set run", per["eval-set run"]),
            ("quantize planning (compose_plan)", per["quantize planning (compose_plan)"])]
    rest = total - sum(seconds for _, seconds in rows)
    rows.append(("rest (hashes, bookkeeping)", rest))
    print(f"{model}: {len(task.space)} layers, {n_plans} distinct uncached quantize plans; "
          f"task + baseline {setup:.1f} s, first evaluation (builds the calibration pool) "
          f"{first:.2f} s")
    print(f"{'phase':<34}{'s / evaluation':>15}{'share':>8}")
    for phase, seconds in rows:
        print(f"{phase:<34}{seconds:>15.3f}{seconds / total:>8.1%}")
    print(f"{'total':<34}{total:>15.3f}{1:>8.0%}")

    def rehash() -> None:  # what every plan_key call computed before the task kept it
        params_hash(task.params)
        _ = task.data.data_hash

    keyed = plans[1]
    cached = _median_seconds(lambda: task.plan_key(keyed), repeat)
    uncached = _median_seconds(lambda: (rehash(), task.plan_key(keyed)), repeat)
    print(f"plan_key (median of {repeat}): {cached * 1e3:.2f} ms with the task's identity "
          f"hashes, {uncached * 1e3:.1f} ms re-hashing weights and data each call "
          f"({uncached / cached:.0f}x); the calibration pool key re-hashed them too")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--breakdown", metavar="MODEL",
                        help="split uncached evaluations of this zoo model into phases instead")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.breakdown, min(args.plans, 4), args.repeat)
        return

    task = Task("digits-cnn", "quantize", profile_repeat=10, profile_warmup=2)
    rng = np.random.default_rng(0)
    plans = [task.space.decode(rng.integers(0, task.space.sizes)) for _ in range(args.plans)]
    task.baseline  # noqa: B018 - warm the baseline and teacher outputs once

    start = time.perf_counter()
    for plan in plans:
        task.evaluate(plan, use_cache=False)
    uncached = len(plans) / (time.perf_counter() - start)
    start = time.perf_counter()
    for plan in plans:
        task.evaluate(plan)
    cached = len(plans) / (time.perf_counter() - start)

    env = CompressionEnv(task, mode="oneshot")
    indices = [task.space.encode(p) for p in plans]

    def env_steps() -> None:
        for action in indices:
            env.reset()
            env.step(np.asarray(action))

    def direct() -> None:
        for plan in plans:
            task.score(task.evaluate(plan))

    env_time = _median_seconds(env_steps, args.repeat)
    direct_time = _median_seconds(direct, args.repeat)

    def env_uncached_steps() -> None:
        task.cache = EvaluationCache()
        env_steps()

    def direct_uncached() -> None:
        for plan in plans:
            task.score(task.evaluate(plan, use_cache=False))

    env_miss = _median_seconds(env_uncached_steps, args.repeat)
    direct_miss = _median_seconds(direct_uncached, args.repeat)

    print(f"plans: {len(plans)} (digits-cnn, onnxruntime, {len(task.space)} layers)")
    print(f"evaluations/s without cache: {uncached:8.2f}")
    print(f"evaluations/s with cache:    {cached:8.2f}   ({cached / uncached:.0f}x)")
    print(f"cache hit rate: {task.cache.hit_rate:.2f}")
    print(f"env step vs direct evaluate, cached (median of {args.repeat}): "
          f"{env_time * 1e3 / len(plans):.3f} ms vs {direct_time * 1e3 / len(plans):.3f} ms "
          f"per plan")
    print(f"env step vs direct evaluate, uncached: {env_miss / len(plans) * 1e3:.1f} ms vs "
          f"{direct_miss / len(plans) * 1e3:.1f} ms per plan -> gym overhead "
          f"{(env_miss / direct_miss - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
