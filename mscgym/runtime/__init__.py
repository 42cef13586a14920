"""Runtime: run an MSCGraph on torch, TVM, ONNX Runtime or TensorRT, with tools in the loop."""

from mscgym.utils.lazy import lazy_exports

# Loaded on first use, so the runner registry (names, options) imports without TVM.
__all__ = lazy_exports(__name__, {
    "mscgym.runtime.cache": ("cache_stats", "fingerprint"),
    "mscgym.runtime.factory": ("CONFIG_KEYS", "create_runtime_manager"),
    "mscgym.runtime.manager": ("PartitionedRuntimeManager", "RuntimeManager"),
    "mscgym.runtime.profiling": ("LatencyStats", "PairedStats", "profile_paired",
                                 "profile_runner"),
    "mscgym.runtime.registry": ("DEVICES", "create_runner", "runner_class"),
    "mscgym.runtime.runner": ("BaseRunner", "RunnerUnavailableError"),
})
