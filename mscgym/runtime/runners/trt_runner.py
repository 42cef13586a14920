"""TensorRT runner: MSCGraph -> ONNX with QDQ -> TensorRT engine, run on a CUDA GPU.

TensorRT is optional (``pip install mscgym[trt]``) and needs a CUDA GPU, so this
module never imports ``tensorrt`` at import time: ``check_available`` tries it and
raises :class:`RunnerUnavailableError` with the reason, which keeps every process
without TensorRT alive. Quantized layers arrive as explicit QuantizeLinear /
DequantizeLinear pairs, so TensorRT takes the int8 scales from the model (explicit
quantization, no calibrator). Buffers are torch CUDA tensors; execution is
``execute_async_v3`` on torch's current stream (the TensorRT 10 named-tensor API).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.runner import BaseRunner, RunnerUnavailableError
from mscgym.runtime.runners.ort_runner import onnx_bytes
from mscgym.utils.files import atomic_write_bytes

PRECISIONS = ("fp32", "fp16", "int8")


def _import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except (ImportError, OSError) as err:
        raise RunnerUnavailableError(
            "TensorRT runner needs the `tensorrt` package (pip install mscgym[trt]) and a CUDA "
            f"GPU; tensorrt is not installed ({err})") from None
    return tensorrt


class TensorRTRunner(BaseRunner):
    """Builds a TensorRT engine from the ONNX codegen's model and runs it on the GPU."""

    name = "tensorrt"
    artifact_suffix = ".plan"  # a serialized engine, not ONNX
    OPTIONS: ClassVar[dict[str, str]] = {
        "precision": "float layers in fp32 (default) or fp16; int8 requires a quant plan",
        "workspace_mb": "builder workspace limit in MiB (default 1024)",
        "max_batch": "largest size of symbolic (batch) dims the engine accepts (default 64)",
        "opt_batch": "size of symbolic dims the engine is tuned for (default 1)",
    }

    @classmethod
    def check_available(cls, device: str) -> None:
        _import_tensorrt()
        if not torch.cuda.is_available():
            raise RunnerUnavailableError(
                "TensorRT runner needs a CUDA GPU, but torch sees no CUDA device here")
        if device != "cuda":
            raise RunnerUnavailableError(
                f"TensorRT runner runs on device 'cuda' only, got {device!r}")

    def __init__(self, device: str = "cuda", options: Mapping[str, Any] | None = None) -> None:
        super().__init__(device, options)
        self.precision = str(self.options.get("precision", "fp32"))
        if self.precision not in PRECISIONS:
            raise MSCError(f"tensorrt runner: precision {self.precision!r} is not one of "
                           f"{list(PRECISIONS)}")
        self.workspace_mb = _positive(self.options, "workspace_mb", 1024)
        self.max_batch = _positive(self.options, "max_batch", 64)
        self.opt_batch = _positive(self.options, "opt_batch", 1)
        if self.opt_batch > self.max_batch:
            raise MSCError(f"tensorrt runner: opt_batch {self.opt_batch} exceeds max_batch "
                           f"{self.max_batch}")
        self._engine_bytes: bytes | None = None
        self._context: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, torch.dtype] = {}
        self._keep: tuple[Any, ...] = ()

    @property
    def target(self) -> str:
        return f"cuda/{self.precision}"

    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        trt = _import_tensorrt()
        _check_quant(quant, self.precision)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes(graph, params, quant, quantize_bias=False)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise MSCError(f"tensorrt runner: TensorRT cannot parse the ONNX model of graph "
                           f"{graph.name!r}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        for flag in _builder_flags(trt, self.precision, bool(quant)):
            config.set_flag(flag)
        self._add_profile(builder, network, config)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise MSCError(f"tensorrt runner: building the engine of graph {graph.name!r} "
                           "failed (see the TensorRT log above)")
        self._engine_bytes = bytes(serialized)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self._engine_bytes)
        if engine is None:
            raise MSCError(f"tensorrt runner: the engine of graph {graph.name!r} cannot be "
                           "deserialized")
        self._context = engine.create_execution_context()
        self._keep = (logger, runtime, engine)
        self._inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        self._outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        self._dtypes = {name: getattr(torch, np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                                      .name) for name in self._inputs + self._outputs}

    def _add_profile(self, builder: Any, network: Any, config: Any) -> None:
        """Symbolic dims (the batch) get the range 1..max_batch, tuned for opt_batch."""
        profile = builder.create_optimization_profile()
        dynamic = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(tensor.shape)
            if all(d >= 0 for d in dims):
                continue
            dynamic = True
            shapes = [tuple(d if d >= 0 else size for d in dims)
                      for size in (1, self.opt_batch, self.max_batch)]
            profile.set_shape(tensor.name, *shapes)
        if dynamic:
            config.add_optimization_profile(profile)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        context = self._context
        if context is None:
            raise MSCError("tensorrt runner: call build() before run()")
        buffers = []
        for name, array in zip(self._inputs, inputs, strict=True):
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(
                device="cuda", dtype=self._dtypes[name]).contiguous()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            buffers.append(tensor)
        outputs = []
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            outputs.append(tensor)
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise MSCError("tensorrt runner: execute_async_v3 failed (see the TensorRT log)")
        return [tensor.cpu().numpy() for tensor in outputs]

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def export(self, path: str) -> str:
        """Write the serialized engine (a plan file for this GPU and TensorRT version)."""
        if self._engine_bytes is None:
            raise MSCError("tensorrt runner: call build() before export()")
        atomic_write_bytes(path, self._engine_bytes)
        return os.path.abspath(path)


def _positive(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MSCError(f"tensorrt runner: {key} must be an integer >= 1, got {value!r}")
    return value


def _check_quant(quant: QuantPlan, precision: str) -> None:
    """TensorRT quantizes symmetric int8 only; int8 precision needs the plan's scales."""
    if precision == "int8" and not quant:
        raise MSCError("tensorrt runner: precision 'int8' takes its scales from the quant "
                       "plan (explicit QDQ), but the plan is empty; quantize the model first "
                       "or use precision fp32/fp16")
    for layer, spec in quant.items():
        for role, params in (("input", spec.input), ("weight", spec.weight)):
            if params is None:
                continue
            if params.dtype != "int8" or any(z != 0 for z in params.zero_point):
                raise MSCError(f"tensorrt runner: layer {layer!r} {role} is quantized as "
                               f"{params.dtype} with zero points {params.zero_point[:4]}; "
                               "TensorRT takes symmetric int8 only (zero point 0)")


def _builder_flags(trt: ModuleType, precision: str, quantized: bool) -> list[Any]:
    """fp16 lets float layers run in half precision; QDQ layers need INT8 on TensorRT 10
    (TensorRT 11 dropped both flags: it reads precisions from the network itself)."""
    flags = []
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise MSCError(f"tensorrt runner: precision 'fp16' needs BuilderFlag.FP16, which "
                           f"TensorRT {trt.__version__} no longer has; use TensorRT 10")
        flags.append(trt.BuilderFlag.FP16)
    if (quantized or precision == "int8") and hasattr(trt.BuilderFlag, "INT8"):
        flags.append(trt.BuilderFlag.INT8)
    return flags
