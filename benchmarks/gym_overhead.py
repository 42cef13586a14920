"""Evaluations per second of msc/Quantize-v0 on digits-cnn with and without the cache,
and the cost of one env step against a direct ``task.evaluate`` call.

Run: python benchmarks/gym_overhead.py [--plans 12] [--repeat 5]
Prints ratios measured in this run (median of repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mscgym.envs.compression_env import CompressionEnv
from mscgym.tasks.cache import EvaluationCache
from mscgym.tasks.task import Task


def _median_seconds(fn, repeat: int) -> float:  # noqa: ANN001
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

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
