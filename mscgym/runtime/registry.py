"""Runner registry: a runner name in a config -> a checked, ready-to-build runner.

Runner modules are imported on first use, so a config naming ``tvm`` never imports
onnxruntime, and a missing optional framework (TensorRT) only matters to a config
that asks for it, and then as a clear :class:`RunnerUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from mscgym.compiler.errors import MSCError
from mscgym.runtime.runner import BaseRunner

_RUNNERS = {
    "torch": ("mscgym.runtime.runners.torch_runner", "TorchRunner"),
    "tvm": ("mscgym.runtime.runners.tvm_runner", "TVMRunner"),
    "onnxruntime": ("mscgym.runtime.runners.ort_runner", "ORTRunner"),
    "tensorrt": ("mscgym.runtime.runners.trt_runner", "TensorRTRunner"),
}
DEVICES = ("cpu", "cuda")


def runner_names() -> list[str]:
    return list(_RUNNERS)


def runner_class(name: str) -> type[BaseRunner]:
    """The class of runner ``name``; an unknown name is an error listing the known ones."""
    if name not in _RUNNERS:
        raise MSCError(f"unknown runner {name!r}; known runners: {runner_names()}")
    module, attr = _RUNNERS[name]
    return getattr(import_module(module), attr)


def create_runner(
    name: str, device: str = "cpu", options: Mapping[str, Any] | None = None
) -> BaseRunner:
    """A runner for ``device``, after checking that its framework and device exist here.

    ``options`` are runner specific (e.g. ``intra_op_threads`` for onnxruntime,
    ``precision`` for tensorrt); an unknown option is an error naming the known ones.
    """
    cls = runner_class(name)
    if device not in DEVICES:
        raise MSCError(f"runner {name!r}: unknown device {device!r}; expected one of "
                       f"{list(DEVICES)}")
    options = dict(options or {})
    known = getattr(cls, "OPTIONS", {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise MSCError(f"runner {name!r}: unknown runner_options {unknown}; known options: "
                       f"{sorted(known)}")
    cls.check_available(device)
    return cls(device, options)
